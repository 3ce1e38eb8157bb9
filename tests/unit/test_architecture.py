"""The import contracts of the codebase, checked over its import graph (every `import` of the
project's own modules, at module level or inside a function; `if TYPE_CHECKING:` blocks are
not imports at run time):

- no cycle among the project's modules;
- trainables/ (inside a trial) never imports study/ (the driver);
- the report never imports the search phase, and no phase imports the command line;
- the modules the command line needs before it reports a typo import nothing heavy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("study", "trainables", "benchmarks")
HEAVY = ("torch", "torchvision", "ray", "mlflow", "optuna", "pandas", "numpy", "matplotlib")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph() -> dict[str, set[str]]:
    """Each project module -> the project modules it imports."""
    files = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    out = {}
    for name, path in files.items():
        raw = _imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
        out[name] = {m for m in raw if m in files and m != name}
    return out


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), set()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_sees_the_projects_imports() -> None:
    edges = graph()
    assert "study.record" in edges["study.cli"] and "study.keys" in edges["study.phases.search"]
    assert "study.policies.asha" in edges["study.policies.fifo"]  # `from study.policies.asha import ...`


def test_no_import_cycle() -> None:
    edges = graph()
    cycles = sorted(m for m in edges if m in reachable(m, edges))
    assert cycles == [], f"modules on an import cycle: {cycles}"


@pytest.mark.parametrize(("source", "forbidden"), [
    ("trainables", "study"),
    ("study.reporting", "study.phases.search"),
    ("study.reporting", "study.phases.finalists"),
    ("study.phases.confirm", "study.phases.search"),
    ("study.phases", "study.cli"),
    ("study.execution", "study.phases"),
    ("study.tracking", "study.phases"),
    ("study.policies", "study.phases"),
    ("study.record", "study.execution"),
    ("study.options", "study.record"),
])
def test_layer_contract(source: str, forbidden: str) -> None:
    edges = graph()
    for module in [m for m in edges if m == source or m.startswith(source + ".")]:
        bad = sorted(m for m in reachable(module, edges) | {module} if m == forbidden or m.startswith(forbidden + "."))
        if module.startswith(forbidden):
            continue
        assert not bad, f"{module} imports {bad} (contract: {source} never imports {forbidden})"


def test_a_broken_contract_is_seen() -> None:
    """The checker itself: a cycle and a forbidden import in a made-up graph are found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert {m for m in edges if m in reachable(m, edges)} == {"a", "b", "c"}
    tree = ast.parse("def f():\n    from study import cli\nif TYPE_CHECKING:\n    import study.record\n")
    assert _imports(tree, "trainables.x", False) == {"study", "study.cli"}


LIGHT = ("study.options", "study.keys", "study.errors", "study.spaces", "study.record", "study.names",
         "study.preflight", "study.cli", "study.run", "study.report", "trainables.names", "trainables.config",
         "trainables.model_options")


# The layers of study/, from docs/architecture.md: a module imports only modules of its own
# layer or of the layers above it (listed first).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("options", ("study", "study.options", "study.keys", "study.errors", "study.spaces", "study.names", "study.pareto",
                 "study.history", "study.ranking", "study.noise")),
    ("record", ("study.record", "study.preflight", "study.warmstart", "study.summary")),
    ("execution", ("study.execution", "study.tracking", "study.tracking.*", "study.session", "study.searchers",
                   "study.policies", "study.policies.*", "study.budget", "study.experiments")),
    ("phases", ("study.phases", "study.phases.*", "study.results", "study.reporting", "study.reporting.*",
                "study.simulate")),
    ("command line", ("study.cli", "study.run", "study.report")),
]


def layer_of(module: str) -> int | None:
    """The index of `module`'s layer in LAYERS (an exact name before a `pkg.*` pattern)."""
    for exact in (True, False):
        for i, (_, members) in enumerate(LAYERS):
            for member in members:
                if (exact and module == member) or (not exact and member.endswith(".*")
                                                    and module.startswith(member[:-1])):
                    return i
    return None


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for module, imported in sorted(edges.items()):
        if not module.startswith("study"):
            continue
        mine = layer_of(module)
        if mine is None:
            out.append(f"{module} is in no layer of docs/architecture.md")
            continue
        for other in sorted(m for m in imported if m.startswith("study")):
            theirs = layer_of(other)
            if theirs is not None and theirs > mine:
                out.append(f"{module} ({LAYERS[mine][0]}) imports {other} ({LAYERS[theirs][0]}), a later layer")
    return out


def test_study_follows_the_layer_table() -> None:
    assert layer_violations(graph()) == []


def test_the_layer_table_is_the_documents() -> None:
    """Every module named in docs/architecture.md's layer table is in LAYERS at the same layer."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    for name, members in LAYERS:
        row = next((line for line in text.splitlines() if line.startswith(f"| {name} |")), None)
        assert row is not None, f"docs/architecture.md has no row for layer {name!r}"
        cells = row.split("|")[2]
        for member in members:
            if member == "study":
                continue
            path = member.removeprefix("study.").replace(".", "/").replace("*", "*.py")
            path = path if path.endswith(".py") else (f"{path}/__init__.py" if (ROOT / "study" / path).is_dir()
                                                      else f"{path}.py")
            assert f"`{path}`" in cells, f"layer {name!r}: docs/architecture.md does not list `{path}`"


def test_a_layer_violation_is_seen() -> None:
    assert layer_violations({"study.keys": {"study.record"}, "study.record": {"study.keys"}}) == [
        "study.keys (options) imports study.record (record), a later layer"]
    assert layer_violations({"study.nowhere": set()}) == ["study.nowhere is in no layer of docs/architecture.md"]
