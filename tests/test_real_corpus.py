"""Every file of pydicom's bundled test corpus (real vendor / codec files, tests/real_corpus.py)
gets its verdict from lumbarjax's public readers and indexer: exact pixels, a DicomError naming
the cause, or a counted skip."""

import os

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.uid import JPEGExtended12Bit

import real_corpus as corpus
from lumbarjax.data import dicom, index
from lumbarjax.errors import DicomError


def _id(e):
    return e.name


def test_table_lists_every_file_in_the_wheel():
    """A new pydicom release with new (or removed) test files fails here, not silently."""
    names = [e.name for e in corpus.ENTRIES]
    assert len(names) == len(set(names)), "duplicate rows"
    on_disk = corpus.all_files()
    assert sorted(names) == on_disk, (
        f"not in the table: {sorted(set(on_disk) - set(names))}; "
        f"in the table but gone: {sorted(set(names) - set(on_disk))}")


@pytest.mark.parametrize("entry", corpus.ENTRIES, ids=_id)
def test_file_gets_its_verdict(entry, tmp_path):
    """Readers, header check, pydicom claim and indexer all agree with the table row."""
    got = corpus.problems(entry.path, entry.verdict, entry.expected_skip, str(tmp_path))
    assert not got, f"{entry.name}: " + "; ".join(got)


def test_whole_corpus_scan_matches_table():
    """scan_files over the whole folder (nested DICOMDIR trees included) indexes exactly the
    table's files and counts every skipped one under the table's reason."""
    infos, skipped = index.scan_files(corpus.ROOT)
    indexed, skips = corpus.expected_scan()
    assert {i.path.replace(os.sep, "/") for i in infos} == indexed
    assert {k: v for k, v in skipped.items() if v} == dict(skips)


@pytest.mark.parametrize("series", corpus.SERIES, ids=lambda s: s.folder)
def test_real_series_verdict(series):
    """Whole real series: sorted along the normal with exact pixels, or refused by name."""
    folder = corpus.path(series.folder)
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    if isinstance(series.verdict, corpus.Refused):
        with pytest.raises(DicomError, match=series.verdict.fragment):
            dicom.read_series(paths)
        return
    vol = dicom.read_series(paths)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    iop = np.asarray(headers[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    pos = [float(np.asarray(h.ImagePositionPatient, float) @ normal) for h in headers]
    order = np.argsort(pos)
    assert vol.paths == [paths[i] for i in order]
    assert vol.paths != paths  # the file names do not give the order in this series
    np.testing.assert_allclose(vol.spacing[0], np.mean(np.diff(np.sort(pos))), rtol=1e-6)
    for k, i in enumerate(order):
        assert np.array_equal(vol.array[k], corpus.modality_reference(paths[i]))


def test_xray_monochrome1_is_inverted_to_higher_brighter():
    """The real MONOCHROME1 CRs: display value never increases with the stored value (the
    lowest stored value is the brightest pixel) and the window keeps some contrast."""
    rows = [e for e in corpus.ENTRIES if isinstance(e.verdict, corpus.Decodes)
            and e.verdict.reader == "read_xray"]
    assert len(rows) == 3
    for e in rows:
        stored = corpus.pydicom_pixels(e.path).ravel()
        shown = dicom.read_xray(e.path).pixels.ravel()
        ranked = shown[np.argsort(stored, kind="stable")]
        assert np.all(np.diff(ranked) <= 0), e.name
        assert ranked[0] > ranked[-1], e.name


def test_jpeg_extended_12bit_decodes_with_pylibjpeg_libjpeg():
    """JPGExtended.dcm (1.2.840.10008.1.2.4.51, 12 bits) decodes through pylibjpeg's libjpeg
    plugin (package pylibjpeg-libjpeg) to the values read_pixels returns; Pillow refuses 12-bit."""
    from pylibjpeg.utils import get_pixel_data_decoders

    p = corpus.path("JPGExtended.dcm")
    ds = pydicom.dcmread(p)
    assert ds.file_meta.TransferSyntaxUID == JPEGExtended12Bit and int(ds.BitsStored) == 12
    assert get_pixel_data_decoders()[JPEGExtended12Bit].__module__.split(".")[0] == "libjpeg"
    stored = pixel_array(p, decoding_plugin="pylibjpeg")
    assert stored.max() > 255  # really 12-bit samples, not an 8-bit decode
    ref = np.asarray(apply_modality_lut(stored, ds), np.float32)
    assert np.array_equal(dicom.read_pixels(p), ref)
    with pytest.raises(RuntimeError, match="12-bit"):
        pixel_array(p, decoding_plugin="pillow")


def test_listing_names_every_file_with_its_verdict(tmp_path):
    """corpus_listing(): one line per file with transfer syntax, SOP class and verdict, plus the
    totals line; written to a file it reads back the same."""
    text = corpus.corpus_listing()
    out = tmp_path / "real_corpus.txt"
    out.write_text(text + "\n")
    lines = out.read_text().splitlines()
    assert len(lines) == len(corpus.ENTRIES) + 2  # header + rows + totals
    by_name = {line.split(" | ")[0].strip(): line for line in lines[1:-1]}
    assert sorted(by_name) == corpus.all_files()
    assert "1.2.840.10008.1.2.4.51 JPEGExtended12Bit" in by_name["JPGExtended.dcm"]
    assert "decodes (read_pixels)" in by_name["JPGExtended.dcm"]
    assert "CT Image Storage" in by_name["CT_small.dcm"]
    assert "refused" in by_name["MR_truncated.dcm"] and "truncated" in by_name["MR_truncated.dcm"]
    assert "not an image" in by_name["test-SR.dcm"]
    assert "not DICOM" in by_name["zipMR.gz"]
    assert "not an image" in by_name["rtstruct.dcm"]
    assert "refused" in by_name["examples_palette.dcm"]
    c = corpus.counts()
    assert lines[-1].startswith(f"{len(corpus.ENTRIES)} files: {c['Decodes']} decode, "
                                f"{c['Refused']} refused, {c['NotImage']} not images, "
                                f"{c['NotDicom']} not DICOM")
    assert sum(c.values()) == len(corpus.ENTRIES)


def test_contracts_doc_quotes_the_table_counts():
    """docs/CONTRACTS.md "Real vendor files" states the counts this table has."""
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "CONTRACTS.md")).read()
    section = doc.split("### Real vendor files", 1)[1].split("\n## ", 1)[0]
    c = corpus.counts()
    for phrase in (f"{len(corpus.ENTRIES)} files", f"{c['Decodes']} decode",
                   f"{c['Refused']} are refused", f"{c['NotImage']} are DICOM but not images",
                   f"{c['NotDicom']} are not DICOM"):
        assert phrase in section, phrase
