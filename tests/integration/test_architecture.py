"""The import contracts of the codebase: the check that starts a fresh interpreter (the rest,
and what they share, are in tests/unit/test_architecture.py)."""

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
