"""Successive halving's records, kept by the policy itself: each bracket's rungs, what every
rung saw and whom it stopped, and which bracket each trial is in.

Nothing here knows Ray: the ASHA family's schedulers (study/policies/asha.py) feed it the
results Tune hands them through its public scheduler interface, and a loop in simulated time
could feed it the same results from a curve table. A trial's values are a tuple of objectives,
each signed so that larger is better: one objective is ASHA (keep a trial at a rung unless it
is below the (1 - 1/rf) quantile of what the rung saw before, as Ray's ASHA decides); several
are MO-ASHA (Schmucker et al. 2021): keep it if it is in the best 1/rf of the rung by
non-dominated sorting, ties within a front broken by crowding distance (NSGA-II; the sorting
is `study.pareto`'s, which the summary's and the report's fronts share).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.pareto import Values, order


def bracket_milestones(grace_period: float, max_t: float, reduction_factor: float, bracket: int) -> list[float]:
    """The milestones of bracket `bracket` (0: ASHA's own), lowest first: grace_period x
    reduction_factor^(k + bracket), as many as fit below max_t (the count Ray's ASHA gives)."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) - bracket + 1)
    return [grace_period * reduction_factor ** (k + bracket) for k in range(count)]


def keeps(value: Values, seen: list[Values], reduction_factor: float) -> bool:
    """Whether a rung that saw `seen` before keeps a trial that reaches it with `value`.

    One objective: unless the value is below the (1 - 1/rf) quantile of `seen` (linear
    interpolation; a NaN never stops a trial), as Ray's ASHA. Several: if the trial is among
    the best ceil(n / rf) of the n trials the rung has seen with it (`order`)."""
    if not seen:
        return True
    if len(value) == 1:
        import numpy as np

        cutoff = float(np.nanpercentile([s[0] for s in seen], (1 - 1 / reduction_factor) * 100))
        return not value[0] < cutoff
    points = [*seen, value]
    return order(points).index(len(seen)) < math.ceil(len(points) / reduction_factor)


@dataclass
class Rung:
    """A rung: its milestone, every trial's values when it reached it, the trials it stopped."""

    milestone: float
    seen: dict[str, Values] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)


class Bracket:
    """One bracket's rungs, lowest first."""

    def __init__(self, milestones: list[float], reduction_factor: float) -> None:
        self.rungs = [Rung(m) for m in milestones]
        self.reduction_factor = reduction_factor

    def judge(self, trial_id: str, epoch: float, value: Values) -> Rung | None:
        """Records a trial's result at `epoch` at the highest rung it reached and has not been
        judged at; that rung (None if none judged it)."""
        for rung in reversed(self.rungs):
            if epoch < rung.milestone or trial_id in rung.seen:
                continue
            kept = keeps(value, list(rung.seen.values()), self.reduction_factor)
            rung.seen[trial_id] = value
            if not kept:
                rung.stopped.append(trial_id)
            return rung
        return None

    def cuts(self, max_t: float) -> list[float]:
        """The milestones at which it may stop a trial (below max_t), lowest first."""
        return [r.milestone for r in self.rungs if r.milestone < max_t]


class Records:
    """The brackets of a successive-halving policy and the bracket of each trial; with `log`, each
    judgement is appended to that file as it is made (one JSON line: trial, bracket, milestone,
    epoch, values, stopped), so what the policy saw and decided outlives the driver."""

    def __init__(self, grace_period: float, max_t: float, reduction_factor: float, brackets: int = 1,
                 log: str | None = None) -> None:
        self.log = log
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        self.brackets = [Bracket(bracket_milestones(grace_period, max_t, reduction_factor, s), reduction_factor)
                         for s in range(brackets)]
        self.placed: dict[str, int] = {}  # trial id -> its bracket's index

    def place(self, trial_id: str, index: int) -> None:
        self.placed[trial_id] = index

    def judge(self, trial_id: str, epoch: float, value: Values) -> bool:
        """A placed trial's result: True if a rung of its bracket stops it."""
        index = self.placed[trial_id]
        rung = self.brackets[index].judge(trial_id, epoch, value)
        if rung is None:
            return False
        stopped = bool(rung.stopped) and rung.stopped[-1] == trial_id
        if self.log is not None:
            with Path(self.log).open("a") as sink:
                sink.write(json.dumps({"trial": trial_id, "bracket": index, "milestone": rung.milestone,
                                       "epoch": epoch, "values": list(value), "stopped": stopped}) + "\n")
        return stopped

    def to_dict(self) -> dict[str, Any]:
        """What every rung saw and stopped, and where each trial is (JSON-ready)."""
        return {"max_t": self.max_t, "reduction_factor": self.reduction_factor, "placed": dict(self.placed),
                "brackets": [[{"milestone": r.milestone, "seen": {t: list(v) for t, v in r.seen.items()},
                               "stopped": list(r.stopped)} for r in b.rungs] for b in self.brackets]}
