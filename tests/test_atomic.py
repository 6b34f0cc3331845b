"""lumbarjax.atomic: a file is complete under its final name or absent; folder markers."""

import os

import pandas as pd
import pytest

from lumbarjax import atomic


def test_failed_write_leaves_old_content_and_no_temporary(tmp_path):
    path = tmp_path / "table.csv"
    atomic.write_csv(pd.DataFrame({"a": [1, 2]}), path)
    assert path.read_text() == "a\n1\n2\n"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as tmp:
            assert tmp.endswith(".csv") and os.path.dirname(tmp) == str(tmp_path)
            with open(tmp, "w") as f:
                f.write("half a ta")
            raise RuntimeError("killed")
    assert path.read_text() == "a\n1\n2\n"
    assert sorted(os.listdir(tmp_path)) == ["table.csv"]
    with atomic.atomic_path(tmp_path / "v.nii.gz") as tmp:
        assert tmp.endswith(".nii.gz")
        open(tmp, "wb").close()


def test_permissions_like_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic.write_text(tmp_path / "atomic.txt", "x")
    assert os.stat(tmp_path / "atomic.txt").st_mode == os.stat(plain).st_mode


def test_completion_marker(tmp_path):
    folder = tmp_path / "cohort"
    folder.mkdir()
    (folder / "clinical.csv").write_text("patient_id\n")
    assert not atomic.is_complete(folder)
    atomic.mark_complete(folder, {"n": 3, "sizes": (1, 2)})
    assert atomic.is_complete(folder) and atomic.is_complete(folder, {"n": 3, "sizes": [1, 2]})
    assert not atomic.is_complete(folder, {"n": 4, "sizes": [1, 2]})
    os.remove(folder / atomic.MARKER)
    atomic.clear_incomplete(folder)
    assert not folder.exists()


def test_sweep_removes_only_the_temporaries_a_killed_writer_left(tmp_path):
    kept = [tmp_path / "manifest.csv", tmp_path / "grader" / "oof.csv", tmp_path / ".complete.json",
            tmp_path / "cache" / ".hidden_setting"]
    for p in kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    # what atomic_path makes, at two depths; a killed process leaves them behind
    with pytest.raises(KeyboardInterrupt), atomic.atomic_path(str(tmp_path / "x.csv")) as tmp:
        raise KeyboardInterrupt  # (a clean exception removes its temporary: not what a kill does)
    assert not os.path.exists(tmp)
    left = [tmp_path / ".oof.tmp-abc123.csv", tmp_path / "cache" / "p1" / ".mri.tmp-zz9.nii.gz"]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    removed = atomic.sweep_temporary(str(tmp_path))
    assert removed == sorted(os.path.relpath(p, tmp_path) for p in left)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in left)
    assert atomic.sweep_temporary(str(tmp_path / "absent")) == []
