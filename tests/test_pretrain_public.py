"""The pretraining stage reads an RSNA 2024-layout folder and writes / loads an encoder file."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from lumbarjax.jobs import mri_stages
from lumbarjax.errors import ConfigError


@pytest.fixture(scope="module")
def rsna_run(tmp_path_factory):
    from lumbarjax.synthetic.rsna_layout import write_synthetic_pretraining
    root = str(tmp_path_factory.mktemp("rsna_pre") / "rsna")
    write_synthetic_pretraining(root, n_patients=12, seed=4, mri_size=(48, 48))
    workdir = str(tmp_path_factory.mktemp("rsna_run"))
    cfg = tiny_config(root)
    cfg.pretrain.update(enabled=True, format="rsna2024", cohort_dir=root)
    params, summary = mri_stages.stage_pretrain(cfg, workdir, outcome_ids=["LJ0001"])
    return cfg, workdir, params, summary


def test_stage_pretrain_reads_the_rsna_folder_and_writes_a_model_card(rsna_run):
    cfg, workdir, params, summary = rsna_run
    assert summary["patients_train"] + summary["patients_val"] == 12
    path = os.path.join(workdir, "pretrain", "mri_encoder.msgpack")
    card = json.load(open(os.path.join(workdir, "pretrain", "mri_encoder.card.json")))
    assert card["architecture"] == cfg.outcome.model.mri.arch == "lesion2d"
    assert card["encoder_kwargs"]["width"] == cfg.outcome.model.mri.width
    assert card["input"]["shape"] == list(cfg.mri.shape) and card["input"]["spacing_mm"] == list(cfg.mri.spacing)
    assert card["labels"]["names"] == ["normal/mild", "moderate", "severe"]
    td = card["training_data"]
    assert td["format"] == "rsna2024" and td["patients_labelled"] == 12 and sum(td["grade_counts"]) == 12
    assert card["validation"]["qwk"] == summary["val_qwk"]
    assert os.path.exists(os.path.join(workdir, "pretrain", "rsna2024", "coordinates.csv"))
    assert os.path.getsize(path) > 1000


def test_encoder_file_is_loaded_instead_of_pretraining(rsna_run, tmp_path):
    cfg, workdir, params, _ = rsna_run
    path = os.path.join(workdir, "pretrain", "mri_encoder.msgpack")
    cfg2 = tiny_config(cfg.data.cohort_dir)
    cfg2.pretrain.update(enabled=True, format="rsna2024", cohort_dir="/nonexistent", encoder_file=path)
    got, summary = mri_stages.stage_pretrain(cfg2, str(tmp_path), outcome_ids=[])
    assert summary["encoder_file"] == path and summary["training_data"]["format"] == "rsna2024"
    assert not os.path.exists(tmp_path / "pretrain")   # nothing trained, nothing read
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    cfg2.outcome.model.mri.width = 8
    with pytest.raises(ConfigError, match="encoder field 'width' differs: the file has 4"):
        mri_stages.stage_pretrain(cfg2, str(tmp_path), outcome_ids=[])
    cfg2.outcome.model.mri.width = 4
    cfg2.mri.shape = (4, 48, 32)
    with pytest.raises(ConfigError, match=r"input geometry differs: the file expects mri.shape=\[4, 32, 32\]"):
        mri_stages.stage_pretrain(cfg2, str(tmp_path), outcome_ids=[])
