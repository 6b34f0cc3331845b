"""configs/: plain ml_collections files starting from the single source of defaults
(lumbarjax/defaults.py, re-exported as configs/default.py); unknown keys are errors."""

import glob
import os
import re

import pytest

from configs import default, demo
from lumbarjax import defaults
from lumbarjax.data import clinical, sanity
from lumbarjax.errors import ConfigError
from lumbarjax.train.loop import train_config
from lumbarjax.train.state import make_optimizer
from lumbarjax.pipelines.tasks import TASKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_files_import_no_library_code():
    """configs/*.py import nothing of the library but lumbarjax.defaults, which imports only the
    vocabulary constants of lumbarjax.schema (plain ml_collections): a config file never runs
    library code."""
    for path in glob.glob(os.path.join(ROOT, "configs", "*.py")):
        src = open(path).read()
        imported = re.findall(r"^\s*(?:from|import)\s+(lumbarjax[\w.]*)", src, re.M)
        assert set(imported) <= {"lumbarjax.defaults"}, (path, imported)
    src = open(os.path.join(ROOT, "lumbarjax", "defaults.py")).read()
    imported = re.findall(r"^\s*(?:from|import)\s+(lumbarjax[\w.]*)", src, re.M)
    assert imported == ["lumbarjax.schema"], imported
    schema = open(os.path.join(ROOT, "lumbarjax", "schema.py")).read()
    assert not re.search(r"^\s*(from|import)\s", schema, re.M)   # constants only
    assert default.get_config is defaults.get_config


def test_clinical_defaults_match_the_data_layer():
    """The data layer's own schema (used when it is called without a config) is the config
    file's clinical section, so an experiment and a direct call read a table the same way."""
    assert default.clinical_config().to_dict() == clinical.default_outcome_config().to_dict()
    assert default.get_config().clinical.to_dict() == clinical.default_outcome_config().to_dict()
    assert clinical.DEFAULT_GRADE_COLUMNS == tuple(default.clinical_config().grade_columns)


def test_spacing_limits_match_the_data_layer():
    # sanity.default_limits serves library calls made without a config; the config must not drift.
    assert sanity.spacing_limits(default.get_config()) == sanity.default_limits()
    limits = sanity.default_limits()
    c = default.get_config()
    assert tuple(c.mri.plausible_spacing_mm.in_plane) == tuple(limits["in_plane"])
    assert tuple(c.mri.plausible_spacing_mm.between_slices) == tuple(limits["between_slices"])
    assert tuple(c.xray.plausible_spacing_mm) == tuple(limits["xray"])
    # a config is read strictly: no fallback to the defaults for a key it lacks
    del c.xray["plausible_spacing_mm"]
    with pytest.raises(ConfigError, match="xray.plausible_spacing_mm"):
        sanity.spacing_limits(c)


def test_every_task_section_is_complete_and_pretrain_has_the_same_loop_and_optimiser():
    c = default.get_config()
    assert set(c.pretrain.train) == set(c.grader.train) == set(c.outcome.train)
    assert set(c.pretrain.optim) == set(c.outcome.optim)
    for section in (c.grader, c.outcome, c.pretrain):
        train_config(section)                       # every loop setting present and valid
        make_optimizer(section, int(section.train.num_steps))
    src = open(os.path.join(ROOT, "lumbarjax", "defaults.py")).read()
    mode_line = next(ln for ln in src.splitlines() if ln.strip().startswith("c.mode ="))
    assert "index | crossval | report | predict | demo" in mode_line   # no "evaluate" mode yet
    for kind in ("grader", "outcome"):
        TASKS[kind].build_model(demo.get_config()[kind])


def test_unknown_keys_are_errors_naming_them():
    c = default.get_config()
    c.clinical.zcq_rul = "all"
    with pytest.raises(ConfigError, match=r"config.clinical: unknown key\(s\) \['zcq_rul'\]"):
        clinical.resolve_config(c.clinical)
    t = default.get_config().grader
    t.train.num_step = 3
    with pytest.raises(ConfigError, match=r"config.train: unknown key\(s\) \['num_step'\]"):
        train_config(t)
    t = default.get_config().grader
    t.optim.learning_rate = 3e-3
    with pytest.raises(ConfigError, match=r"config.optim: unknown key\(s\) \['learning_rate'\]"):
        make_optimizer(t, 10)
    t = default.get_config().grader
    del t.train["on_nonfinite"]
    with pytest.raises(ConfigError, match="config.train.on_nonfinite is missing"):
        train_config(t)
