"""The one ranking of a study's trials, used by the summary, the MLflow tags and the report.

Sampled trials only (baselines and confirmation runs are not candidates). Trials that reached
max_t (without an error) come first, ranked by the metric at their last epoch; then the others,
by theirs. Ties (common on small validation sets) go to the name, then to the trial id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from study.keys import ERRORED, SEARCH, sign


def ranking(trials: Iterable[Mapping[str, Any]], metric: str, mode: str, max_epochs: int) -> list[str]:
    """The ids of `ranked` trials, best first: the study's ranking."""
    return [str(t["trial_id"]) for t in ranked(trials, metric, mode, max_epochs)]


def ranked(trials: Iterable[Mapping[str, Any]], metric: str, mode: str, max_epochs: int) -> list[Mapping[str, Any]]:
    """Sampled trials with a value, best first.

    Args:
        trials: one mapping per trial with keys trial_id, name, kind, outcome, epochs (the last
            epoch it reported) and `metric` (its value at that epoch).
    """
    direction = sign(mode)
    candidates = [t for t in trials if t["kind"] == SEARCH and _number(t.get(metric))]
    return sorted(candidates, key=lambda t: (not (int(t["epochs"]) >= max_epochs and t.get("outcome") != ERRORED),
                                             -direction * float(t[metric]), str(t["name"]), str(t["trial_id"])))


# The rank agreement between two epochs (the report's early-stopping check and the adaptive
# policy's trust in a rung are this one measure): Spearman's rho over the trials that reached
# both, not computed with fewer than MIN_TRIALS of them or when either side is constant.
MIN_TRIALS = 4
LOW_AGREEMENT = 0.5  # below this, a rung's ranking is not trusted to predict a later one


def rank_agreement(early: Sequence[float], late: Sequence[float]) -> float:
    """Spearman's rank correlation between the metric of the same trials at an early and a
    later epoch (NaN with fewer than MIN_TRIALS trials or a constant side)."""
    if len(early) != len(late):
        raise ValueError(f"rank_agreement: {len(early)} early values for {len(late)} late ones")
    if len(early) < MIN_TRIALS or len(set(early)) < 2 or len(set(late)) < 2:
        return math.nan
    from scipy.stats import spearmanr

    return float(spearmanr(early, late).statistic)


def _number(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
