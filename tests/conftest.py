import json
import os
import sys

import pytest

# The repository root (configs/, launch.py) importable from tests.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# JAX's persistent compilation cache (lumbarjax.compile_cache) for this process and the worker
# processes tests start: set before jax is imported, through the environment jax reads.
# LUMBARJAX_TEST_COMPILATION_CACHE=off runs the suite without it.
if os.environ.get("LUMBARJAX_TEST_COMPILATION_CACHE", "auto").lower() not in ("", "off"):
    from lumbarjax import compile_cache as _compile_cache

    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _compile_cache.resolve("auto"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def decoded_data_uris(data: bytes) -> bytes:
    """``data`` with every base64 ``data:`` URI (a report's embedded PNGs) replaced by the bytes
    it encodes: the image bytes are what could carry PHI (e.g. PNG text chunks), while base64
    text holds any 4-letter upper-case name by chance (reports once held "MARK", "KARL", "GREY")."""
    import base64
    import re
    return re.sub(rb"data:[\w/+.-]+;base64,([A-Za-z0-9+/=]+)",
                  lambda m: base64.b64decode(m.group(1)), data)


def phi_strings(folder) -> set:
    """Fake-PHI strings (names, birth dates, institution …) found in the DICOM headers below
    ``folder``: nothing lumbarjax writes may contain any of them."""
    import glob
    import pydicom
    phi = set()
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        if not os.path.isfile(path) or path.endswith((".txt", ".jpg")):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM: nothing to collect
            continue
        for key in ("PatientName", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName"):
            v = str(ds.get(key, "") or "")
            if len(v) >= 4:
                phi.add(v)
                phi.update(p for p in v.split("^") if len(p) >= 4)
    return phi


def tiny_config(cohort_dir):
    """The demo config shrunk to seconds: 2 folds, 3 steps, 32-pixel images."""
    from configs import demo as demo_config
    c = demo_config.get_config()
    c.data.cohort_dir = cohort_dir
    c.mri.shape = (4, 32, 32)
    c.mri.spacing = (4.0, 8.0, 8.0)
    c.xray.shape = (32, 32)
    for t in (c.grader, c.outcome):
        t.train.num_steps = 3
        t.train.eval_every = 3
        t.train.batch_size = 4
        t.train.progress_bar = False
        t.optim.warmup_steps = 1
        t.cv.num_folds = 2
    c.grader.model.width = 4
    c.grader.model.stage_sizes = (1, 1)
    c.outcome.model.mri.width = 4
    c.outcome.model.mri.stage_sizes = (1, 1)
    c.explain.max_patients = 2
    c.explain.xray_patients = 4
    c.explain.steps = 4
    c.explain.chunk_size = 2
    c.eval.n_boot = 20
    c.pretrain.enabled = False   # tiny_run turns it on with a tiny pretraining cohort
    c.pretrain.format = "lumbarjax"  # the tiny pretraining cohort's layout (the demo reads RSNA 2024)
    c.levels.enabled = False     # the level pipeline: tests/test_xray_levels.py (slow end-to-end test)
    c.pretrain.train.update(num_steps=3, eval_every=3, checkpoint_every=3, batch_size=4, progress_bar=False)
    c.pretrain.optim.warmup_steps = 1
    c.pretrain.levels.enabled = True    # tiny_run walks the level-by-level MRI path end to end
    c.pretrain.levels.localiser.update(steps=3, batch_size=4, width=4)
    return c


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    from lumbarjax.synthetic import make_cohort
    root = str(tmp_path_factory.mktemp("cohort"))
    make_cohort(root, n_patients=16, seed=3, xray_size=(96, 80), mri_size=(48, 48), n_mc=2000)
    return root


@pytest.fixture(scope="session")
def tiny_pretrain_cohort(tmp_path_factory):
    from lumbarjax.synthetic import make_pretraining_cohort
    root = str(tmp_path_factory.mktemp("pretrain_cohort"))
    make_pretraining_cohort(root, n_patients=12, seed=4, mri_size=(48, 48))
    return root


@pytest.fixture(scope="session")
def tiny_pretrain_loaded(tiny_pretrain_cohort, tmp_path_factory):
    """``(config, cohort)``: the tiny pretraining cohort indexed and preprocessed at the tiny
    config's sizes, its labels table as the clinical table (for ``pretrain.pretrain_encoder``)."""
    from lumbarjax.jobs import workflow
    workdir = str(tmp_path_factory.mktemp("pre"))
    cfg = tiny_config(tiny_pretrain_cohort)
    cfg.data.clinical_file = os.path.join(tiny_pretrain_cohort, "stenosis_labels.csv")
    cfg.clinical.mri_label_columns = ("stenosis_grade",)
    return cfg, workflow.stage_cohort(cfg, workdir, workflow.stage_index(cfg, workdir))


@pytest.fixture(scope="session")
def tiny_run(tiny_cohort, tiny_pretrain_cohort, tmp_path_factory):
    """One tiny cross-validated run of the whole job (with a pretrained, frozen MRI encoder),
    shared by the tests that read its outputs."""
    from lumbarjax.jobs import workflow
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(tiny_cohort)
    config.pretrain.enabled = True
    config.pretrain.cohort_dir = tiny_pretrain_cohort
    # The heat-map tests need fold networks that use the MRI. With outcome.clinical_offset="glm"
    # the inner split of this 16-patient cohort keeps step 0 (the clinical regression alone,
    # MRI attribution exactly 0) in every fold; test_tasks covers "glm" through the CV.
    config.outcome.clinical_offset = "none"
    results = workflow.run(config, workdir, "crossval")
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)   # before anything re-draws the report
    return dict(root=tiny_cohort, workdir=workdir, config=config, results=results, metrics=metrics)


