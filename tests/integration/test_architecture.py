"""The import contracts of the codebase, checked over its import graph (every `import` of the
project's own modules, at module level or inside a function; `if TYPE_CHECKING:` blocks are
not imports at run time):

- no cycle among the project's modules;
- trainables/ (inside a trial) never imports study/ (the driver);
- the report never imports the search phase, and no phase imports the command line;
- the modules the command line needs before it reports a typo import nothing heavy.

The tests that start processes; the rest are in tests/unit/test_architecture.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.unit.test_architecture import HEAVY, LIGHT, ROOT


@pytest.mark.slow  # a fresh interpreter
def test_what_the_command_line_needs_first_imports_nothing_heavy() -> None:
    code = (f"import importlib, sys\nfor m in {LIGHT!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
