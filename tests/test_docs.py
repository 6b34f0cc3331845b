"""The documentation: the site builds in strict mode, every public name has a docstring, the
Python examples of the README and the user guide run, and every link and repository path named
in the Markdown files exists.

(a) ``mkdocs build --strict`` (mkdocs.yml; the API reference is rendered from the docstrings by
    mkdocstrings): a warning — a broken link between pages, a docstring section griffe cannot
    parse, an unresolved cross-reference — fails the build.
(b) every public module under ``lumbarjax/`` and every public function and class defined in it
    has a docstring; ``__all__`` decides what is public where a module defines it. mkdocstrings
    hides an undocumented name from the site instead of failing, hence this check.
(c) every fenced ``python`` block of README.md and docs/guide/*.md that imports lumbarjax runs,
    in a fresh process with an empty working directory (the repository root on PYTHONPATH, as
    for a user in a checkout). A block preceded by ``<!-- no-test -->`` is skipped.
(d) every relative Markdown link and every backticked repository path (``docs/X.md``,
    ``benchmarks/Y.py``, ``lumbarjax/z.py``, ``configs/w.py`` …) in README.md, docs/**/*.md and
    benchmarks/*.md points at a file or folder that exists.
"""

from __future__ import annotations

import ast
import glob
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "lumbarjax")
NO_TEST = "<!-- no-test -->"


def _rel(path: str) -> str:
    return os.path.relpath(path, REPO)


# -- (a) the site ---------------------------------------------------------------------------

def test_site_builds_in_strict_mode(tmp_path):
    # mkdocs and mkdocstrings come with the test extra (pip install -e '.[test]'): no skip, a
    # missing package fails here as a missing dependency should
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    problems = [line for line in out.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert proc.returncode == 0, (
        "mkdocs build --strict failed; fix each line below (a docstring's file:line is named):\n"
        + ("\n".join(problems) if problems else out))
    assert os.path.exists(tmp_path / "site" / "api" / "data" / "index.html")


# -- (b) docstrings -------------------------------------------------------------------------

def _public_modules():
    """(path, dotted module name) of every public module of the package."""
    for path in sorted(glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True)):
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        yield path, ".".join(parts)


def _dunder_all(tree: ast.Module) -> set | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
            try:
                return set(ast.literal_eval(node.value))
            except ValueError:
                return None
    return None


def missing_docstrings() -> list[str]:
    """``path:line: name`` of every public module, and every public module-level function and
    class, without a docstring."""
    gaps = []
    for path, modname in _public_modules():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        rel = _rel(path)
        if not ast.get_docstring(tree):
            gaps.append(f"{rel}:1: module {modname}")
        exported = _dunder_all(tree)
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            public = node.name in exported if exported is not None else not node.name.startswith("_")
            if not public:
                continue
            if not ast.get_docstring(node):
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                gaps.append(f"{rel}:{node.lineno}: {kind} {node.name}")
    return gaps


def test_every_public_name_has_a_docstring():
    gaps = missing_docstrings()
    assert not gaps, (f"{len(gaps)} public names without a docstring (the API reference would "
                      "leave them out; add one, or make the name private):\n" + "\n".join(gaps))


def test_every_module_is_on_an_api_page():
    """Each top-level module is named on docs/api/core.md and each subpackage has a page that
    renders it (its submodules come with it: show_submodules)."""
    pages = {}
    for page in glob.glob(os.path.join(REPO, "docs", "api", "*.md")):
        with open(page, encoding="utf-8") as f:
            pages[_rel(page)] = set(re.findall(r"^:::\s*(\S+)", f.read(), flags=re.M))
    shown = set().union(*pages.values()) if pages else set()
    wanted = []
    for entry in sorted(os.listdir(PACKAGE)):
        if entry.startswith(("_", ".")):
            continue
        full = os.path.join(PACKAGE, entry)
        if entry.endswith(".py"):
            wanted.append("lumbarjax." + entry[:-3])
        elif os.path.exists(os.path.join(full, "__init__.py")):
            wanted.append("lumbarjax." + entry)
    missing = [m for m in wanted if m not in shown]
    assert not missing, f"not rendered by any docs/api/*.md page (add `::: {missing[0]}`): {missing}"


# -- (c) the Python examples ----------------------------------------------------------------

def _fenced_blocks(text: str):
    """(line number, language, code, preceded by the no-test marker) of each fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(2), m.group(3).lower(), i
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        skip = k >= 0 and lines[k].strip() == NO_TEST
        indent = len(m.group(1))
        code = "\n".join(line[indent:] for line in lines[start + 1:j])
        yield start + 1, lang, code, skip
        i = j + 1


def _examples():
    files = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "guide", "*.md")))
    seen = set()
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for line, lang, code, skip in _fenced_blocks(text):
            if lang not in ("python", "py") or not re.search(r"^\s*(from|import)\s+lumbarjax", code, re.M):
                continue
            if code in seen:  # the README's example is repeated in the guide: run it once
                continue
            seen.add(code)
            marks = [pytest.mark.skip(reason=f"marked {NO_TEST}")] if skip else []
            yield pytest.param(code, id=f"{_rel(path)}:{line}", marks=marks)


@pytest.mark.parametrize("code", list(_examples()))
def test_python_example_runs(code, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    script = tmp_path / "example.py"
    script.write_text(code + "\n", encoding="utf-8")
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"the example failed:\n{code}\n\n--- output ---\n{proc.stdout}\n{proc.stderr[-6000:]}"


def test_the_readme_has_a_runnable_api_example():
    """The README shows training + cross-validation from the API, and it is not skipped."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        blocks = [b for b in _fenced_blocks(f.read()) if b[1] == "python"]
    assert any("run_crossval" in code and not skip for _, _, code, skip in blocks)


# -- (d) links and repository paths ---------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
REPO_PATH = re.compile(r"^(?:\./)?(?:docs|benchmarks|lumbarjax|configs|tests|scripts|\.ci)/[\w.\-/]*$"
                       r"|^(?:launch\.py|pyproject\.toml|mkdocs\.yml|README\.md)$")


def _markdown_files():
    files = [os.path.join(REPO, "README.md")]
    files += sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True))
    files += sorted(glob.glob(os.path.join(REPO, "benchmarks", "*.md")))
    return files


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(```+|~~~+)", line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif line.strip().startswith(fence):
                fence = None
            continue
        if fence is None:
            yield n, line


def broken_references() -> list[str]:
    broken = []
    for path in _markdown_files():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        here = os.path.dirname(path)
        for n, line in _prose_lines(text):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][\w+.-]*:", target) or target.startswith("#"):
                    continue  # http:, mailto:, an anchor on the same page
                target = target.split("#", 1)[0].split("?", 1)[0]
                if target and not os.path.exists(os.path.normpath(os.path.join(here, target))):
                    broken.append(f"{_rel(path)}:{n}: link ({target})")
            for span in CODE_SPAN.findall(line):
                span = span.strip()
                if REPO_PATH.match(span) and not os.path.exists(os.path.join(REPO, span)):
                    broken.append(f"{_rel(path)}:{n}: path `{span}`")
    return broken


def test_links_and_repository_paths_exist():
    broken = broken_references()
    assert not broken, (f"{len(broken)} links / repository paths point at nothing (moved? "
                        "update the reference):\n" + "\n".join(broken))


def test_no_citation_of_a_missing_design_document():
    """DESIGN.md is not in the repository: neither the documents nor the docstrings (which the
    site renders) may send readers to it."""
    hits = []
    for path in _markdown_files() + [p for p, _ in _public_modules()]:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if re.search(r"\bDESIGN(\.md| §)", line):
                    hits.append(f"{_rel(path)}:{n}: {line.strip()[:100]}")
    assert not hits, "cites DESIGN.md, which is not in the repository:\n" + "\n".join(hits)


def test_benchmarks_readme_lists_every_entry():
    """benchmarks/README.md names every file and folder of benchmarks/, every study folder and
    every archived probe, so nothing there is undocumented."""
    bench = os.path.join(REPO, "benchmarks")
    with open(os.path.join(bench, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    tracked = subprocess.run(["git", "ls-files", "benchmarks"], cwd=REPO, capture_output=True,
                             text=True).stdout.split()
    entries = set()
    for path in tracked or [os.path.relpath(p, REPO) for p in glob.glob(os.path.join(bench, "*"))]:
        parts = path.split("/")[1:]
        if parts[0] in ("README.md", "results", "history"):
            continue           # the README itself; dated JSONs and history, linked from RESULTS.md
        entries.add(parts[1] if parts[0] in ("studies", "archive") and len(parts) > 1 else parts[0])
    missing = sorted(e for e in entries if e not in readme)
    assert not missing, f"benchmarks/README.md does not name {missing}"
