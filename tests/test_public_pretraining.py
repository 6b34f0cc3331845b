"""Public dataset folders -> the pretraining stage's manifest + labels table."""

import ml_collections
import numpy as np
import pandas as pd
import pytest

from lumbarjax.pipelines.public_inputs import label_names, pretraining_inputs
from lumbarjax.errors import ConfigError
from lumbarjax.schema import LEVELS
from tests.public_fixtures import write_rsna_fixture, write_spider_fixture


def _pc(**kw):
    base = dict(format="rsna2024", label_column="stenosis_grade", num_grades=3, make_demo=False,
                demo_patients=10)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_rsna_folder_gives_manifest_and_worst_level_labels(tmp_path):
    root = tmp_path / "rsna"
    info = write_rsna_fixture(root)
    manifest, labels_csv, desc, centres = pretraining_inputs(_pc(), str(root), str(tmp_path / "out"), seed=1)
    assert manifest.attrs["root"] == str(root) and len(manifest) == 3
    labels = pd.read_csv(labels_csv, dtype={"patient_id": str}).set_index("patient_id")
    for g in info["grades"]:
        assert labels.loc[g["study_id"], "stenosis_grade"] == max(
            g[f"spinal_canal_stenosis_{lv}"] for lv in LEVELS)
    assert desc["format"] == "rsna2024" and desc["patients_labelled"] == 3
    assert sum(desc["grade_counts"]) == 3 and "4003253" not in str(desc)
    assert (tmp_path / "out" / "rsna2024" / "coordinates.csv").exists()
    for g in info["grades"]:   # the per-level labels of pretrain.levels, under the label's name
        for lv in LEVELS:
            want = g[f"spinal_canal_stenosis_{lv}"]
            got = labels.loc[g["study_id"], f"stenosis_grade_{lv}"]
            assert (np.isnan(got) and want != want) or got == want
    # disc-level centres for the level grader: one (L, 3) mm array per study, from its coordinates
    assert set(centres) <= set(labels.index) and centres
    c = next(iter(centres.values()))
    assert c.shape == (len(LEVELS), 3) and np.isfinite(c).any()
    with pytest.raises(ConfigError, match="provides 'stenosis_grade'"):
        pretraining_inputs(_pc(label_column="grade"), str(root), str(tmp_path / "out"), seed=1)
    with pytest.raises(ConfigError, match="no train.csv"):
        pretraining_inputs(_pc(), str(tmp_path / "empty"), str(tmp_path / "out"), seed=1)
    with pytest.raises(ConfigError, match="expected one of"):
        pretraining_inputs(_pc(format="kaggle"), str(root), str(tmp_path / "out"), seed=1)
    assert pretraining_inputs(_pc(format="lumbarjax"), str(root), str(tmp_path / "out"), seed=1) is None


def test_spider_folder_gives_worst_pfirrmann(tmp_path):
    root = tmp_path / "spider"
    info = write_spider_fixture(root)
    pc = _pc(format="spider", label_column="pfirrmann_grade", num_grades=5)
    manifest, labels_csv, desc, centres = pretraining_inputs(pc, str(root), str(tmp_path / "out"), seed=1)
    labels = pd.read_csv(labels_csv, dtype={"patient_id": str}).set_index("patient_id")
    want = max(g["Pfirrman grade"] for g in info["gradings"] if g["Patient"] == 1 and g["IVD label"] <= 5)
    assert labels.loc["1", "pfirrmann_grade"] == want - 1
    for g in info["gradings"]:   # per level: Pfirrmann 1..5 -> grades 0..4, like the label
        if g["Patient"] == 1 and g["IVD label"] <= 5:
            lv = LEVELS[::-1][g["IVD label"] - 1]   # IVD label 1 = the lowest disc, L5S1
            assert labels.loc["1", f"pfirrmann_grade_{lv}"] == g["Pfirrman grade"] - 1
    assert "1" in centres and np.isfinite(centres["1"]).any()
    assert list(manifest["source"]) == ["mha", "mha"]
    assert label_names("pfirrmann_grade", 5)[0] == "Pfirrmann 1"
    assert label_names("other", 2) == ("grade 0", "grade 1")
    assert np.isfinite(labels["pfirrmann_grade"]).all()
