"""What several seeds of a few configurations say: which is best, and how sure that is.

The study's finalists (its best trials at max_t) are each trained again with the same new
seeds. A finalist's value is then the mean over its seeds (the study's own run and the
re-runs), with a t interval from its own seeds' spread. Which finalist is best is judged on
the seeds all of them share: the seed moves every configuration's result alike (the same
initialisation and data order), so a two-way fit (finalist + seed) takes the seed's effect
out, and its residual is the seed noise that remains between configurations. The probability
that each finalist is the best is drawn from a multivariate t around the finalists' means
with that noise (scipy.stats.multivariate_t). With one seed each, or one finalist, nothing is
measured and the fields are None.

Pure functions of plain values (scipy is imported when called).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

CONFIDENCE = 0.95
DRAWS = 20_000


@dataclass(frozen=True)
class Noise:
    """The seed noise measured among the finalists: the residual sd of one run after the seed's
    shared effect, with its degrees of freedom (0: not measured), and whether it was paired."""

    sd: float | None
    df: int
    paired: bool


@dataclass(frozen=True)
class Finalist:
    """One finalist under noise: its mean over seeds, the t interval of that mean, its seeds
    and their values, and the probability that it is the best of the finalists."""

    key: str
    mean: float
    sd: float | None
    seeds: int
    low: float | None
    high: float | None
    p_best: float | None
    values: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "mean": self.mean, "sd": self.sd, "seeds": self.seeds, "low": self.low,
                "high": self.high, "p_best": self.p_best, "values": list(self.values)}


def seed_noise(values: Mapping[str, Mapping[int, float]]) -> Noise:
    """The seed noise among configurations: the residual sd of a two-way (configuration + seed)
    fit over the seeds every configuration has; without two such seeds, the pooled sd within
    configurations (unpaired)."""
    keys = list(values)
    common = sorted(set.intersection(*(set(v) for v in values.values()))) if keys else []
    if len(keys) >= 2 and len(common) >= 2:
        grid = [[values[k][s] for s in common] for k in keys]
        rows = [statistics.fmean(r) for r in grid]
        cols = [statistics.fmean(c) for c in zip(*grid, strict=True)]
        grand = statistics.fmean(rows)
        resid = sum((x - rows[i] - cols[j] + grand) ** 2 for i, r in enumerate(grid) for j, x in enumerate(r))
        df = (len(keys) - 1) * (len(common) - 1)
        return Noise(math.sqrt(resid / df), df, True)
    groups = [list(v.values()) for v in values.values() if len(v) >= 2]
    df = sum(len(g) - 1 for g in groups)
    if df == 0:
        return Noise(None, 0, False)
    pooled = sum((len(g) - 1) * statistics.variance(g) for g in groups) / df
    return Noise(math.sqrt(pooled), df, False)


def finalists(values: Mapping[str, Mapping[int, float]], mode: str = "max", confidence: float = CONFIDENCE,
              draws: int = DRAWS, seed: int = 0) -> tuple[list[Finalist], Noise]:
    """The finalists best first (by mean over their seeds; ties by key), and the seed noise.

    Args:
        values: finalist key -> seed -> final value of the study's metric.
        mode: "max" or "min", as the study's.
    """
    from scipy import stats

    noise = seed_noise(values)
    sign = 1.0 if mode == "max" else -1.0
    means = {k: statistics.fmean(v.values()) for k, v in values.items()}
    order = sorted(values, key=lambda k: (-sign * means[k], k))
    p_best: dict[str, float | None] = dict.fromkeys(order)
    if len(order) == 1:
        p_best[order[0]] = 1.0
    elif noise.sd is not None and noise.sd > 0:
        import numpy as np

        loc = np.array([means[k] for k in order])
        scale = np.array([noise.sd ** 2 / len(values[k]) for k in order])
        draw = stats.multivariate_t(loc=loc, shape=np.diag(scale), df=noise.df, seed=seed).rvs(size=draws)
        wins = np.bincount(np.argmax(sign * draw.reshape(draws, len(order)), axis=1), minlength=len(order))
        p_best.update({k: float(w) / draws for k, w in zip(order, wins, strict=True)})
    elif noise.sd == 0:  # every difference is exact: the best is certain, or shared by a tie
        top = [k for k in order if means[k] == means[order[0]]]
        p_best.update({k: 1.0 / len(top) if k in top else 0.0 for k in order})
    out = []
    for key in order:
        seen = tuple(values[key][s] for s in sorted(values[key]))
        sd = statistics.stdev(seen) if len(seen) > 1 else None
        low = high = None
        if sd is not None:
            if sd > 0:
                low, high = (float(x) for x in stats.t.interval(confidence, len(seen) - 1, loc=means[key],
                                                                   scale=sd / math.sqrt(len(seen))))
            else:
                low = high = means[key]
        out.append(Finalist(key, means[key], sd, len(seen), low, high, p_best[key], seen))
    return out, noise
