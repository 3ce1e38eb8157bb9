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
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
    ("study.phases.report", "study.phases.search"),
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


LIGHT = ("study.options", "study.keys", "study.errors", "study.spaces", "study.record", "study.policies",
         "study.preflight", "study.cli", "study.run", "study.report", "trainables.names", "trainables.config",
         "trainables.model_options")


def test_what_the_command_line_needs_first_imports_nothing_heavy() -> None:
    code = (f"import importlib, sys\nfor m in {LIGHT!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
