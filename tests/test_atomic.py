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
