"""The package graph docs/ARCHITECTURE.md draws is the one the code has, and it has no cycle.

Every ``import lumbarjax…`` / ``from lumbarjax… import`` in lumbarjax/ (module level or inside a
function) is an edge between two packages. The modules directly under ``lumbarjax/`` (errors,
schema, settings, atomic, workers, timing, compile_cache) are the package ``core``;
``data.public`` counts as its own package.
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "lumbarjax"


def _package(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts or not (PKG / parts[0]).is_dir():
        return "core"
    if parts[:2] == ["data", "public"]:
        return "data.public"
    return parts[0]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the 'module -> module' imports behind it."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        mod = _module_name(path)
        src = _package(mod)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".")
                    base = base[: len(base) - node.level + (path.name == "__init__.py")]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                else:
                    targets = [node.module or ""]
                if targets[0] == "lumbarjax":  # from lumbarjax import timing, jobs …
                    targets = [f"lumbarjax.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t == "lumbarjax" or t.startswith("lumbarjax."):
                    dst = _package(t)
                    if dst != src:
                        edges.setdefault((src, dst), []).append(f"{mod} -> {t}")
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def documented_graph() -> dict[str, set[str]]:
    """The ``package -> dependencies`` lines of the fenced block under "## Package graph"."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("## Package graph", 1)[1].split("```", 2)[1]
    graph = {}
    for line in block.splitlines():
        m = re.match(r"\s*([a-z_.]+)\s+->\s*(.*)$", line)
        if m:
            deps = re.split(r"[,\s]+", m.group(2).split("#")[0].strip())
            graph[m.group(1)] = {d for d in deps if d}
    return graph


def test_the_packages_import_each_other_without_a_cycle():
    graph: dict[str, set[str]] = {}
    for a, b in package_edges():
        graph.setdefault(a, set()).add(b)
    cycle = find_cycle(graph)
    edges = package_edges()
    detail = [edges[(a, b)][:3] for a, b in zip(cycle, cycle[1:])] if cycle else []
    assert cycle is None, f"package cycle {' -> '.join(cycle or [])}: {detail}"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_architecture_md_draws_the_package_graph_the_code_has():
    actual: dict[str, set[str]] = {}
    for a, b in package_edges():
        actual.setdefault(a, set()).add(b)
    drawn = documented_graph()
    packages = {_package(_module_name(p)) for p in PKG.rglob("*.py")}
    assert set(drawn) == packages, f"packages drawn {sorted(drawn)} vs in the code {sorted(packages)}"
    for pkg in sorted(packages):
        extra, missing = actual.get(pkg, set()) - drawn[pkg], drawn[pkg] - actual.get(pkg, set())
        edges = package_edges()
        assert not extra, f"{pkg} imports {sorted(extra)}, not drawn: " + str(
            [edges[(pkg, e)][:2] for e in sorted(extra)])
        assert not missing, f"{pkg} is drawn depending on {sorted(missing)}, which it does not import"


TASK_NAME_BRANCH = re.compile(
    r"""(==|!=)\s*["'](grader|outcome|pretrain|outcome_clinical_only)["']"""
    r"""|["'](grader|outcome|pretrain|outcome_clinical_only)["']\s*(==|!=|in\b|not in\b)"""
    r"""|\bin\s*[(\[{]\s*["'](grader|outcome|pretrain)["']""")


def test_no_module_branches_on_a_task_name_but_the_task_registry():
    """A task's behaviour lives in its object in pipelines/tasks.py (TASKS); the rest of the
    library asks the task (hooks and attributes), never compares its name."""
    sites = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
             for p in sorted(PKG.rglob("*.py")) if p.relative_to(PKG).as_posix() != "pipelines/tasks.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if TASK_NAME_BRANCH.search(line)]
    assert not sites, "task-name branches outside pipelines/tasks.py:\n" + "\n".join(sites)
    assert TASK_NAME_BRANCH.search('if task.name == "grader":')
    assert TASK_NAME_BRANCH.search('if "outcome" in config.tasks:')
