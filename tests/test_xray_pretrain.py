"""The X-ray grader's backbone pretrained on VinDr-SpineXR (as downloaded) and handed on as a file."""

import json
import os

import jax
import numpy as np
import pytest

from lumbarjax.jobs import workflow
from lumbarjax.data.public import vindr_spinexr
from lumbarjax.errors import ConfigError
from lumbarjax.models import encoder_file
from lumbarjax.models.fusion import build_grader
from lumbarjax.pipelines import crossval, xray_pretrain
from lumbarjax.pipelines.pretrain import with_encoder
from tests.conftest import tiny_config
from tests.dicom_factory import write_xray_dcm

N_FILMS = 14


def _write_vindr(root, n=N_FILMS):
    """A VinDr-SpineXR download in its published layout: annotations/train.csv (one row per box,
    a "No finding" row per reader of a normal film) + train_images/<image_id>.dicom. Films with
    disc space narrowing carry a bright band where the box is; the last listed film is missing
    (a partial download: a counted exclusion)."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    (root / "train_images").mkdir()
    rows = ["image_id,lesion_type,xmin,ymin,xmax,ymax,rad_id"]
    for k in range(n + 1):
        image_id = f"{k:02d}" + "ab" * 15
        px = rng.integers(200, 600, size=(120, 100)).astype(np.uint16)
        if k % 2:
            px[50:70, 20:80] = 3000
            rows.append(f"{image_id},Disc space narrowing,20,50,80,70,rad{k % 3}")
            if k % 4 == 1:
                rows.append(f"{image_id},Osteophytes,10,40,30,60,rad{k % 3}")
        else:
            rows.append(f"{image_id},No finding,,,,,rad{k % 3}")
        if k < n:
            write_xray_dcm(root / "train_images" / f"{image_id}.dicom", px, pixel_spacing=(0.2, 0.2),
                           bits_stored=12, patient_id=f"VINDR{k}")
    (root / "annotations" / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def _config(tmp_path, root):
    c = tiny_config(str(tmp_path / "unused"))
    c.xray_pretrain.enabled = True
    c.xray_pretrain.root = str(root)
    c.xray_pretrain.train.update(num_steps=4, eval_every=4, checkpoint_every=4, batch_size=4,
                                 progress_bar=False)
    c.xray_pretrain.optim.warmup_steps = 1
    c.data.num_workers = 0
    return c


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xray_pretrain")
    root = _write_vindr(tmp / "vindr-spinexr")
    cfg = _config(tmp, root)
    workdir = str(tmp / "run" / "xray_pretrain")
    params, summary = xray_pretrain.pretrain_backbone(cfg, workdir)
    return cfg, workdir, params, summary


def test_pretraining_reads_the_download_and_writes_a_backbone_file_with_its_card(pretrained):
    cfg, workdir, params, summary = pretrained
    data = summary["training_data"]
    assert data["films_listed"] == N_FILMS and data["films_used"] == N_FILMS
    assert data["films_excluded_by_reader"] == 1                    # the missing film, counted
    assert data["films_train"] + data["films_val"] == N_FILMS
    assert data["positives"] == {"Osteophytes": 4, "Disc space narrowing": 7,
                                 "Spondylolysthesis": 0, "Foraminal stenosis": 0}
    path = os.path.join(workdir, xray_pretrain.BACKBONE_FILE)
    loaded, card = encoder_file.load_encoder_file(path, fmt=encoder_file.XRAY_FORMAT)
    assert card["format"] == encoder_file.XRAY_FORMAT and card["architecture"] == "resnet2d"
    assert card["backbone_kwargs"] == xray_pretrain.backbone_kwargs(cfg)
    assert card["input"]["shape"] == list(cfg.xray.shape)
    assert card["labels"]["names"] == list(cfg.xray_pretrain.findings)
    assert "auc_mean" in card["validation"] and card["validation"]["films"] == data["films_val"]
    assert card["validation"]["auc_spondylolysthesis"] is None          # no positive film: no AUC
    assert "NaN" not in open(encoder_file.card_path_for(path)).read()
    text = open(encoder_file.card_path_for(path)).read()
    assert "abab" not in text and "VINDR" not in text               # no image or patient id
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # the same settings load the saved backbone instead of training again
    n_lines = len(open(os.path.join(workdir, "metrics.jsonl")).read().splitlines())
    _, again = xray_pretrain.pretrain_backbone(cfg, workdir)
    assert again == json.loads(json.dumps(summary))
    assert len(open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()) == n_lines


def test_backbone_file_drops_into_the_grader_and_mismatches_name_the_field(pretrained, tmp_path):
    cfg, workdir, params, _ = pretrained
    path = os.path.join(workdir, xray_pretrain.BACKBONE_FILE)
    grader = build_grader(cfg.grader.model)
    h, w = cfg.xray.shape
    init = grader.init(jax.random.PRNGKey(0), {"xray": np.zeros((2, h, w, 1), np.float32)})["params"]
    swapped = with_encoder(params, "backbone")(init)
    assert set(swapped) == set(init)
    for a, b in zip(jax.tree.leaves(swapped["backbone"]), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    cfg.xray_pretrain.backbone_file = path
    wide = tiny_config(cfg.data.cohort_dir)
    wide.xray_pretrain.backbone_file = path
    wide.grader.model.width = 8
    with pytest.raises(ConfigError, match=r"backbone field 'width' differs: the file has 4, .* gives 8"):
        xray_pretrain.stage_xray_pretrain(wide, str(tmp_path))
    big = tiny_config(cfg.data.cohort_dir)
    big.xray_pretrain.backbone_file = path
    big.xray.shape = (64, 64)
    with pytest.raises(ConfigError, match=r"input geometry differs: the file expects xray.shape=\[32, 32\]"):
        xray_pretrain.stage_xray_pretrain(big, str(tmp_path))
    mri_file = str(tmp_path / "mri_encoder.msgpack")
    encoder_file.save_encoder_file(mri_file, params, {"architecture": "lesion2d"})
    big.xray.shape = cfg.xray.shape
    big.xray_pretrain.backbone_file = mri_file
    with pytest.raises(ConfigError, match="not a lumbarjax X-ray backbone file"):
        xray_pretrain.stage_xray_pretrain(big, str(tmp_path))


def test_bad_settings_are_config_errors(pretrained, tmp_path):
    cfg = _config(tmp_path, pretrained[0].xray_pretrain.root)
    cfg.xray_pretrain.findings = ("Disc space narowing",)
    with pytest.raises(ConfigError, match=r"unknown lesion type\(s\) \['Disc space narowing'\]"):
        xray_pretrain.read_films(cfg, str(tmp_path))
    cfg.xray_pretrain.root = ""
    with pytest.raises(ConfigError, match="root: the downloaded VinDr-SpineXR folder is not set"):
        xray_pretrain.read_films(cfg, str(tmp_path))
    assert vindr_spinexr.finding_column("Disc space narrowing") == "finding_disc_space_narrowing"


def test_grader_folds_start_from_the_pretrained_backbone(pretrained, tiny_cohort, tmp_path):
    """With a learning rate of ~0 the fold's trained grader keeps the file's backbone exactly:
    the backbone is what every fold starts from (and only the head is new)."""
    _, workdir, params, _ = pretrained
    cfg = tiny_config(tiny_cohort)
    cfg.tasks = ("grader",)
    cfg.explain.xray_patients = 0
    cfg.xray_pretrain.backbone_file = os.path.join(workdir, xray_pretrain.BACKBONE_FILE)
    cfg.grader.optim.lr = 1e-12
    cohort = workflow.stage_cohort(cfg, str(tmp_path), workflow.stage_index(cfg, str(tmp_path)))
    encoder, summary = xray_pretrain.stage_xray_pretrain(cfg, str(tmp_path))
    assert summary["backbone_file"] == cfg.xray_pretrain.backbone_file
    td = crossval.prepare_task("grader", cfg, cohort.records, cohort.cache)
    states = []
    crossval.run_fold(td, 0, cfg, str(tmp_path / "grader"), encoder_params=encoder,
                      after_fold=lambda **kw: states.append(kw["state"]))
    got = jax.device_get(states[0].params["backbone"])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_synthetic_vindr_layout_is_read_back_with_the_generator_findings(tmp_path):
    from lumbarjax.synthetic import vindr_layout
    import pandas as pd
    import pydicom
    root = tmp_path / "vindr"
    out = vindr_layout.write_synthetic_vindr(root, n_films=8, seed=5, readers=1, miss_rate=0.0,
                                             xray_size=(96, 80))
    assert out["n_films"] == 8 and not out["reused"]
    split = vindr_spinexr.read_split(root, "train")
    assert len(split.findings) == 8 and len(split.excluded) == 0
    truth = pd.read_csv(root / "ground_truth.csv", dtype={"image_id": str}).set_index("image_id")
    f = split.findings.set_index("image_id")
    worst = truth.loc[f.index, [f"grade_{lv}" for lv in ("L1L2", "L2L3", "L3L4", "L4L5", "L5S1")]].max(axis=1)
    np.testing.assert_array_equal(f["finding_disc_space_narrowing"].to_numpy(), (worst >= 2).to_numpy())
    np.testing.assert_array_equal(f["finding_osteophytes"].to_numpy(), (worst >= 3).to_numpy())
    ds = pydicom.dcmread(f["path"].iloc[0])
    assert ds.PatientID == f.index[0] and "PatientName" not in ds and "InstitutionName" not in ds
    assert vindr_layout.write_synthetic_vindr(root, n_films=8, seed=5, readers=1, miss_rate=0.0,
                                              xray_size=(96, 80))["reused"]
