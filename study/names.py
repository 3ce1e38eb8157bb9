"""The names of what a study plugs in (policies, searchers), without importing them: `--help`
and the space's checks read them here. Each plug-in's registry (`study.policies.POLICIES`,
`study.searchers.SEARCHERS`, and for trainables `trainables.registry.TRAINABLES`) refuses a name
that is not listed, and a test checks that every listed name has an entry."""

from __future__ import annotations

POLICIES: tuple[str, ...] = ("asha", "fifo", "hyperband", "adaptive")
SEARCHERS: tuple[str, ...] = ("optuna", "random", "optuna-stock")
