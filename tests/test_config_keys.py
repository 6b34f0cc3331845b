"""configs/default.py (= lumbarjax/defaults.py) is the one source of defaults: every key the
library reads is there, every key there is read, and library code never falls back to a
default of its own.

Scope (static, by reading the source; pragmatic rather than complete):

* Reads: every ``setting(<x>, "a.b")`` literal in
  lumbarjax/, and every attribute chain on a config variable (``config.a.b``, ``cfg.x``,
  ``task_cfg.train.num_steps`` …: the names in ``CONFIG_NAMES``) in lumbarjax/ and launch.py.
  A read must resolve from the root of ``get_config()`` or from one of its sections (the
  library hands sections around: a task section, ``config.levels`` …). Method calls on a
  config (``.to_dict()``, ``.update()`` …) end a chain. Reads through a computed key
  (``setting(c, f"optim.{k}")``, ``config[kind]``) are not followed: the field tuples they
  iterate are checked against the sections where the library checks them itself
  (``make_optimizer``, ``train_config``, ``xray_levels.check_config``).
* Dead keys: the name of every leaf of ``get_config()`` (a map-valued setting such as
  ``clinical.column_map`` counts as one leaf) is read somewhere in lumbarjax/ (outside
  lumbarjax/defaults.py), launch.py or configs/*.py other than default.py: as an attribute
  (``.name``), a string literal (``"name"``: a field tuple, a dotted ``setting`` path) or a
  field of a flax module built from its section with ``**`` (the model sections).
  ``DEAD_KEY_EXCEPTIONS`` lists the keys allowed to be read by nothing, with the reason.
* No fallbacks: no ``<config>.get("key")`` / ``<config>.get("key", default)`` on a config
  variable in lumbarjax/ (plain-dict ``.get`` on model cards, JSON summaries and DataFrames is
  not config and is not matched: those variables have other names), and no dotted-key reader
  besides ``lumbarjax.settings.setting``.
"""

from __future__ import annotations

import ast
import pathlib
import re

import ml_collections
import pytest

from lumbarjax import defaults

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "lumbarjax"

# Variables that hold a config or one of its sections in library code.
CONFIG_NAMES = {"config", "cfg", "task_cfg", "pc", "lc", "mc", "run_cfg", "ccfg"}
# Methods of ConfigDict / dict: a chain ends before them.
METHODS = {"to_dict", "to_json", "to_json_best_effort", "to_yaml", "update", "get", "items", "keys", "values", "copy", "lock",
           "unlock", "copy_and_resolve_references", "ignore_type", "pop", "setdefault"}
# Settings whose value is a mapping the user fills (their keys are data, not settings).
MAP_VALUED = {"clinical.pain_scale_columns", "clinical.column_map", "clinical.sex_map",
              "clinical.id_map"}
# Keys no library code reads, each with the reason it is kept.
DEAD_KEY_EXCEPTIONS: dict[str, str] = {}


def _library_files():
    return sorted(p for p in PKG.rglob("*.py") if p.name != "defaults.py")


def leaf_paths(node=None, prefix=()) -> list[tuple[str, ...]]:
    node = defaults.get_config() if node is None else node
    out = []
    for key in node.keys():
        path = prefix + (key,)
        value = node[key]
        if isinstance(value, ml_collections.ConfigDict) and ".".join(path) not in MAP_VALUED:
            out += leaf_paths(value, path)
        else:
            out.append(path)
    return out


def _sections(node=None, prefix=()):
    """Every ConfigDict node of get_config() (the root included), as (path, node)."""
    node = defaults.get_config() if node is None else node
    yield prefix, node
    for key in node.keys():
        if isinstance(node[key], ml_collections.ConfigDict) and ".".join(prefix + (key,)) not in MAP_VALUED:
            yield from _sections(node[key], prefix + (key,))


def resolves(parts, config=None) -> bool:
    """Whether the chain ``parts`` resolves from the root or from some section of the config."""
    for _, node in _sections(config):
        cur, ok = node, True
        for p in parts:
            if isinstance(cur, ml_collections.ConfigDict) and p in cur.keys():
                cur = cur[p]
            else:
                ok = False
                break
        if ok:
            return True
    return False


def _chain(node: ast.Attribute):
    """``config.a.b`` -> ("config", ["a", "b"]); None when the chain does not start at a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return node.id, parts[::-1]


def config_reads(files=None) -> list[tuple[str, int, tuple[str, ...]]]:
    """(file, line, dotted parts) of every static config read in ``files``."""
    files = _library_files() + [ROOT / "launch.py"] if files is None else files
    reads = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                if name == "setting" and len(node.args) >= 2 \
                        and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                    reads.append((str(path), node.lineno, tuple(node.args[1].value.split("."))))
            elif isinstance(node, ast.Attribute) and not isinstance(parents.get(node), ast.Attribute):
                got = _chain(node)
                if got is None or got[0] not in CONFIG_NAMES:
                    continue
                parts = []
                for p in got[1]:
                    if p in METHODS or p.startswith("_"):
                        break
                    parts.append(p)
                if parts and not isinstance(getattr(node, "ctx", None), ast.Store):
                    reads.append((str(path), node.lineno, tuple(parts)))
    return reads


def test_every_key_the_library_reads_is_in_default_py():
    reads = config_reads()
    assert len(reads) > 100  # the collector sees the library's reads
    missing = sorted({f"{pathlib.Path(f).relative_to(ROOT)}:{line}: {'.'.join(p)}"
                      for f, line, p in reads if not resolves(p)})
    assert not missing, "config keys read by the library but absent from configs/default.py:\n" \
        + "\n".join(missing)


def test_field_tuples_match_their_sections():
    from lumbarjax.pipelines.xray_levels import LEVELS_KEYS
    from lumbarjax.train.state import OPTIM_FIELDS
    c = defaults.get_config()
    assert set(LEVELS_KEYS) == set(c.levels.keys())
    for path, node in _sections():
        if path and path[-1] == "optim":
            assert set(node.keys()) == set(OPTIM_FIELDS), path


def _read_names() -> set[str]:
    sources = [p.read_text() for p in _library_files()] + [(ROOT / "launch.py").read_text()]
    sources += [p.read_text() for p in (ROOT / "configs").glob("*.py") if p.name != "default.py"]
    names = set()
    for src in sources:
        names |= set(re.findall(r"\.([A-Za-z_]\w*)", src))
        for lit in re.findall(r"[\"']([A-Za-z_][\w.]*)[\"']", src):
            names |= set(lit.split("."))
    return names


def dead_keys(config=None) -> list[str]:
    names = _read_names()
    return sorted(".".join(p) for p in leaf_paths(config)
                  if p[-1] not in names and ".".join(p) not in DEAD_KEY_EXCEPTIONS)


def test_no_dead_keys_in_default_py():
    dead = dead_keys()
    assert not dead, f"keys in configs/default.py that nothing reads: {dead}"


def test_the_checks_catch_a_missing_and_a_dead_key(tmp_path):
    """The two checks above fail for a key read but absent, and for a key present but unread."""
    c = defaults.get_config()
    c.data.never_read_by_anything = 1
    assert dead_keys(c) == ["data.never_read_by_anything"]
    probe = tmp_path / "probe.py"
    probe.write_text("def f(config):\n    return config.data.not_a_setting, setting(config, 'train.nope')\n")
    reads = config_reads([probe])
    assert [p for _, _, p in reads if not resolves(p)] == [("data", "not_a_setting"), ("train", "nope")]


_GET = re.compile(r"\b(?:" + "|".join(sorted(CONFIG_NAMES)) + r"|mri)(?:\.\w+)*\.get\(\s*[\"'][\w.]+[\"']")
_GETATTR = re.compile(r"getattr\(\s*(?:" + "|".join(sorted(CONFIG_NAMES)) + r")\b[^)]*,[^)]*,")


@pytest.mark.parametrize("pattern", [_GET, _GETATTR], ids=["get", "getattr"])
def test_no_config_fallbacks_in_the_library(pattern):
    """No ``<config>.get("key"[, default])`` / ``getattr(<config>, "key", default)``: a setting
    is read with ``lumbarjax.settings.setting`` and its default is in configs/default.py.
    (``mri`` is matched too: the preprocessing settings' section in models.encoder_file.)"""
    sites = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
             for p in _library_files() for i, line in enumerate(p.read_text().splitlines(), 1)
             if pattern.search(line)]
    assert not sites, "config fallbacks (read with settings.setting instead):\n" + "\n".join(sites)


def test_one_dotted_key_reader():
    """lumbarjax.settings is the only code that walks a dotted config path."""
    sites = [f"{p.relative_to(ROOT)}:{i}"
             for p in _library_files() if p.name != "settings.py"
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"""\.split\(\s*["']\.["']\s*\)""", line)]
    assert not sites, f"dotted-key readers besides lumbarjax.settings.setting: {sites}"
