"""Search policies: a scheduler together with the searcher it owns, chosen by name.

A multi-fidelity scheduler decides when a trial stops; the searcher must know whether a
trial that ended early was stopped (PRUNED) or interrupted. So the two are built together, by
one policy, which hands the scheduler the searcher it tells (as Syne Tune's multi-fidelity
schedulers own their searcher). A new policy (HyperBand, BOHB) is one module in this package
with a `build(context) -> (searcher, scheduler)` function and a `rungs(settings)` function,
and one entry below. This file imports nothing heavy: `--help` lists the names from here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module that implements it
POLICIES: dict[str, str] = {
    "asha": "study.policies.asha",
    "fifo": "study.policies.fifo",
    "hyperband": "study.policies.hyperband",
    "adaptive": "study.policies.adaptive",
}


def load_policy(name: str) -> ModuleType:
    """The module of policy `name` (an unknown name lists the known ones)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    return importlib.import_module(POLICIES[name])
