"""Adaptive ASHA: Hyperband's brackets, with each bracket's share of the trials following how
far the study's own rungs can be trusted (after Hyper-Tune, Li et al. 2022, in Syne Tune).

Bracket s judges a trial first at grace_period x reduction_factor^s; the last bracket judges
none before max_t (its trials run to the end, as under FIFO). ASHA alone is the first bracket:
when learning curves cross at its first rung, it stops the trials that would have ended best.

As results arrive, the policy measures each rung's **agreement**: the rank agreement
(`study.ranking.rank_agreement`, the measure the report's early-stopping check uses) between
the metric at that rung and at the next decision epoch (the next rung, or max_t), over the
trials that reached both. The trials of the later brackets, which are not cut at the early
rungs, give every rung its pairs. A bracket's **reliability** is the product of the agreements
of the rungs it cuts at (a negative one counts as 0; one not yet measured, with fewer than
MIN_TRIALS pairs, as PRIOR). A new trial joins a bracket drawn with weights proportional to
reliability / (epochs a trial costs in that bracket on average): a bracket that cuts early
screens more trials per epoch, and is worth it only as far as its cuts keep the right trials.
Every bracket keeps at least FLOOR of the draw (half an equal share when there are more than
1 / (2 FLOOR) brackets), so its rungs go on being measured; the rest follows the weights.

With curves that keep their order the weight goes to the first bracket (ASHA); with curves
that cross at the first rung it moves to the brackets that judge later, or not at all. The draw
is fixed by the trial's id and the weights of the moment; the weights are kept (`weights`) and
logged. A resumed study measures the agreements again from the results recorded before.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

from ray.tune.schedulers import TrialScheduler

import study.policies.asha as asha
from study.keys import BASELINE, EPOCH, KIND
from study.policies.asha import BaselineExemptASHA, History, StopListener, rungs, unit_draw
from study.ranking import rank_agreement
from study.spaces import StudySettings

__all__ = ["AdaptiveASHA", "build", "rungs"]

PRIOR = 0.5  # the agreement assumed at a rung before it is measured
FLOOR = 0.1  # each bracket's least share of the draw
log = logging.getLogger(__name__)


def mix(share: list[float]) -> list[float]:
    """Draw weights from merit shares (summing to 1): each bracket gets a floor, FLOOR or half an
    equal share if that is less (so that the floors take at most half the draw, however many
    brackets), and the rest of the draw in proportion to its share. The weights sum to 1, are
    positive, and keep the shares' order."""
    floor = min(FLOOR, 0.5 / len(share))
    return [floor + (1 - floor * len(share)) * s for s in share]


def bracket_cost(cuts: list[float], max_t: int, reduction_factor: float) -> float:
    """The epochs a trial costs on average in a bracket that keeps 1/reduction_factor of the
    trials at each cut (judged at the first epoch at or past it)."""
    cost, kept, start = 0.0, 1.0, 0
    for cut in cuts:
        epoch = math.ceil(cut)
        cost += kept * (epoch - start)
        kept, start = kept / reduction_factor, epoch
    return cost + kept * (max_t - start)


class AdaptiveASHA(BaselineExemptASHA):
    """ASHA with `brackets` brackets, drawn by measured reliability per epoch (see the module)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        max_t = int(self.max_t)
        self.cuts = self.bracket_cuts()
        self.decisions = sorted({*(math.ceil(m) for cuts in self.cuts for m in cuts), max_t})
        self.costs = [bracket_cost(c, max_t, self.records.reduction_factor) for c in self.cuts]
        self.count = 0  # trials placed so far
        self.values: History = {}  # trial id -> {epoch: metric} of every sampled trial
        self.weights: list[tuple[int, list[float]]] = []  # (trials placed so far, weights), at each change

    def agreement(self) -> dict[int, float]:
        """Each decision epoch below max_t -> its rank agreement with the next (NaN: unmeasured)."""
        out = {}
        for early, late in zip(self.decisions, self.decisions[1:], strict=False):
            pairs = [(v[early], v[late]) for v in self.values.values() if early in v and late in v]
            out[early] = rank_agreement([a for a, _ in pairs], [b for _, b in pairs])
        return out

    def bracket_weights(self) -> list[float]:
        """The draw's weights over the brackets, summing to 1."""
        agreement = self.agreement()

        def trust(cut: float) -> float:
            rho = agreement.get(math.ceil(cut), math.nan)
            return PRIOR if math.isnan(rho) else max(rho, 0.0)

        raw = [math.prod(trust(c) for c in cuts) / cost for cuts, cost in zip(self.cuts, self.costs, strict=True)]
        total = sum(raw)
        share = [r / total if total > 0 else 1 / len(raw) for r in raw]
        return mix(share)

    def place(self, trial_id: str) -> None:
        weights = self.bracket_weights()
        if not self.weights or self.weights[-1][1] != weights:
            self.weights.append((self.count, weights))
            log.info("adaptive ASHA: bracket weights %s", [round(w, 3) for w in weights])
        draw = unit_draw(trial_id)
        index = next((i for i, edge in enumerate(itertools.accumulate(weights)) if draw < edge), len(weights) - 1)
        self.records.place(trial_id, index)
        self.count += 1

    def rebuild(self, history: History, measured: dict[str, dict[str, float]] | None = None) -> int:
        """As ASHA's, after taking in the recorded values; a trial recorded before goes back to
        a bracket drawn with the weights of the whole history (the weights it was drawn with
        are not saved, so it may land in another bracket than before the interruption)."""
        for trial_id, values in history.items():
            self.values.setdefault(trial_id, {}).update(values)
        for trial_id in history:
            if not self.placed(trial_id):
                self.place(trial_id)
        return super().rebuild(history, measured)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if trial.config.get(KIND) == BASELINE:
            return TrialScheduler.CONTINUE
        value = result.get(str(self._metric))
        if value is not None and EPOCH in result:
            self.values.setdefault(trial.trial_id, {})[int(result[EPOCH])] = float(value)
        return super().on_trial_result(tune_controller, trial, result)


def brackets(settings: StudySettings) -> int:
    """As many brackets as the first one has rungs below max_t, plus the one that stops none."""
    return len([r for r in rungs(settings) if r < settings.max_epochs]) + 1


def scheduler(settings: StudySettings, searcher: StopListener | None,
              tune_path: str | tuple[str, ...] | None) -> BaselineExemptASHA:
    """The scheduler alone (metric and mode come from TuneConfig)."""
    return asha.scheduler(settings, searcher, tune_path, AdaptiveASHA, brackets(settings))


def build(record: Any) -> tuple[Any, TrialScheduler]:
    """(searcher, scheduler) of a study: the scheduler tells the searcher what it stops."""
    return asha.build(record, AdaptiveASHA, brackets(record.space.study))
