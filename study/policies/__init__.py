"""Search policies: a scheduler together with the searcher it owns, chosen by name.

A multi-fidelity scheduler decides when a trial stops; the searcher must know whether a trial
that ended early was stopped (PRUNED) or interrupted. So the two are built together, by one
policy, which hands the scheduler the searcher it tells (as Syne Tune's multi-fidelity
schedulers own their searcher). A policy is a module of this package that meets `Policy`,
registered below under a name listed in `study.names.POLICIES` (the command line reads the
names there, without importing the policies).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import study.policies.adaptive as adaptive
import study.policies.asha as asha
import study.policies.fifo as fifo
import study.policies.hyperband as hyperband
from study import names
from trainables.names import Registry

if TYPE_CHECKING:
    from study.spaces import StudySettings


class Policy(Protocol):
    """What a policy module provides."""

    def build(self, record: Any) -> tuple[Any, Any]:
        """The searcher and the Tune scheduler of a study (its StudyRecord)."""

    def rungs(self, settings: StudySettings) -> list[int]:
        """The epochs at which the scheduler may stop a trial, and max_t (a trial checkpoints
        there)."""


POLICIES: Registry[Policy] = Registry("policy", names.POLICIES, "study.names")
POLICIES.register("asha", asha)
POLICIES.register("fifo", fifo)
POLICIES.register("hyperband", hyperband)
POLICIES.register("adaptive", adaptive)


def load_policy(name: str) -> Policy:
    """Policy `name` (an unknown name raises ValueError listing the known ones)."""
    return POLICIES[name]
