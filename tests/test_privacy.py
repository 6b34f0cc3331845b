"""Nothing written under a work directory holds DICOM PHI: every byte of every file (CSV, JSON,
HTML, PNG metadata, NIfTI headers, .npy caches, orbax checkpoints, TensorBoard events) is
scanned for every PatientName, PatientBirthDate, PatientAddress, InstitutionName,
AccessionNumber and original hospital PatientID (OtherPatientIDs) planted in the synthetic
headers, after the shared tiny cross-validated run (with pretraining) and after a prediction."""

import glob
import os
import shutil

import pandas as pd
import pydicom
import pytest

from lumbarjax.jobs import predict

PHI_KEYS = ("PatientName", "PatientBirthDate", "PatientAddress", "InstitutionName",
            "AccessionNumber", "OtherPatientIDs", "ReferringPhysicianName")


def planted_phi(folder) -> dict[str, set[str]]:
    """PHI key -> values found in the DICOM headers below ``folder``."""
    found: dict[str, set[str]] = {k: set() for k in PHI_KEYS}
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        if not os.path.isfile(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM
            continue
        for key in PHI_KEYS:
            v = str(ds.get(key, "") or "").strip()
            if v:
                found[key].add(v)
    return found


def phi_patterns(found: dict[str, set[str]]) -> list[tuple[str, bytes, bool]]:
    """(label, lower-cased bytes, bounded) for every planted value and the forms a writer might
    give it: names as "LAST^FIRST", "LAST FIRST", "FIRST LAST"; dates as 19580312 / 1958-03-12
    / 12.03.1958. ``bounded`` values (numbers, ids) only count when not inside a longer run of
    digits or letters (so a float 0.4519580312 is not a birth date)."""
    pats = []

    def add(label, text, bounded=False):
        pats.append((label, text.lower().encode("latin-1"), bounded))

    for name in found["PatientName"] | found["ReferringPhysicianName"]:
        parts = [p for p in name.split("^") if p]
        add("name", name)
        if len(parts) >= 2:
            add("name", " ".join(parts))
            add("name", f"{parts[1]} {parts[0]}")
    for d in found["PatientBirthDate"]:
        add("birth date", d, bounded=True)
        if len(d) == 8:
            add("birth date", f"{d[:4]}-{d[4:6]}-{d[6:]}", bounded=True)
            add("birth date", f"{d[6:]}.{d[4:6]}.{d[:4]}", bounded=True)
    for a in found["PatientAddress"]:
        add("address", a)
        for part in a.split("^"):
            if len(part) >= 8:
                add("address", part)
    for v in found["InstitutionName"]:
        add("institution", v)
    for v in found["AccessionNumber"]:
        add("accession", v, bounded=True)
    for v in found["OtherPatientIDs"]:
        add("original PatientID", v, bounded=True)
    return pats


def _alnum(b: int) -> bool:
    return 48 <= b <= 57 or 97 <= b <= 122  # data are lower-cased


def find_phi(data: bytes, patterns) -> list[tuple[str, int]]:
    """(label, length) of every occurrence (case-insensitive, one bytes.find per pattern)."""
    low = data.lower()
    hits = []
    for label, lit, bounded in patterns:
        i = low.find(lit)
        while i != -1:
            j = i + len(lit)
            if not bounded or ((i == 0 or not _alnum(low[i - 1])) and (j >= len(low) or not _alnum(low[j]))):
                hits.append((label, len(lit)))
            i = low.find(lit, i + 1)
    return hits


def scan(workdir, patterns) -> tuple[int, int, list[str]]:
    """(files scanned, bytes scanned, hits 'path: label (n bytes)')."""
    n_files = n_bytes = 0
    hits = []
    for path in glob.glob(os.path.join(workdir, "**", "*"), recursive=True):
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        n_files += 1
        n_bytes += len(data)
        hits += [f"{os.path.relpath(path, workdir)}: {label} ({n} bytes)"
                 for label, n in find_phi(data, patterns)]
    return n_files, n_bytes, hits


def _copy_patient(workdir, root, pid, dest) -> str:
    man = pd.read_csv(os.path.join(workdir, "manifest.csv"), dtype=str)
    paths = [p for ps in man.loc[man["patient_id"] == pid, "paths"] for p in ps.split(";")]
    shutil.copytree(os.path.join(root, os.path.commonpath(paths)), dest)
    clin = pd.read_csv(os.path.join(root, "clinical.csv"), dtype={"patient_id": str})
    clin[clin["patient_id"] == pid].to_csv(os.path.join(dest, "clinical.csv"), index=False)
    return str(dest)


@pytest.fixture(scope="module")
def run_and_prediction(tiny_run, tiny_pretrain_cohort, tmp_path_factory):
    workdir, root = tiny_run["workdir"], tiny_run["root"]
    man = pd.read_csv(os.path.join(workdir, "manifest.csv"), dtype=str)
    both = man.groupby("patient_id")["role"].nunique()
    pid = sorted(both[both == 2].index)[0]
    folder = _copy_patient(workdir, root, pid, tmp_path_factory.mktemp("new") / "one_patient")
    out_dir = os.path.join(workdir, "predictions", pid)  # where --mode=predict writes by default
    predict.predict_patient(tiny_run["config"], workdir, folder, out_dir=out_dir)
    return workdir, out_dir, [root, tiny_pretrain_cohort, folder]


def test_synthetic_headers_plant_every_kind_of_phi(run_and_prediction):
    _, _, sources = run_and_prediction
    found = planted_phi(sources[0])
    for key in PHI_KEYS:
        assert found[key], f"the synthetic cohort plants no {key}"
    # the original (hospital) id differs from the pseudonymous PatientID the workflow uses
    assert all(v.startswith("MRN") for v in found["OtherPatientIDs"])
    # PHI lives in the DICOM headers only: the tables written beside the export hold none
    patterns = phi_patterns(found)
    for table in ("clinical.csv", "ground_truth.csv", "ground_truth_summary.json"):
        with open(os.path.join(sources[0], table), "rb") as f:
            assert not find_phi(f.read(), patterns), table


def test_no_phi_byte_anywhere_in_the_workdir(run_and_prediction, capsys):
    workdir, out_dir, sources = run_and_prediction
    found: dict[str, set[str]] = {k: set() for k in PHI_KEYS}
    for src in sources:
        for k, v in planted_phi(src).items():
            found[k] |= v
    patterns = phi_patterns(found)
    assert len(patterns) > 50
    # the scan itself finds PHI where it is (no silent pass): the patient's copied export
    n_src, _, src_hits = scan(sources[2], patterns)
    assert src_hits and n_src
    n_files, n_bytes, hits = scan(workdir, patterns)
    kinds = {os.path.splitext(p)[1] for p in glob.glob(os.path.join(workdir, "**", "*"), recursive=True)}
    assert {".csv", ".json", ".png", ".npy", ".gz", ".html"} <= kinds, kinds
    assert glob.glob(os.path.join(workdir, "**", "*tfevents*"), recursive=True)
    assert os.path.exists(os.path.join(out_dir, "prediction.json"))
    phi_bytes = sum(int(h.rsplit("(", 1)[1].split()[0]) for h in hits)
    with capsys.disabled():
        print(f"\nPHI bytes found {phi_bytes} ({len(patterns)} patterns, {n_files} files, "
              f"{n_bytes / 2**20:.1f} MiB scanned)")
    assert not hits, hits[:10]
