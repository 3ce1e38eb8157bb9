"""What several seeds of a few configurations say: which is best, and how sure that is.

The study's finalists (its best trials at max_t) are each trained again with the same new
seeds. The run that made a trial a finalist is the luckiest of many (the winner's curse: it was
chosen for being high), so it is left out: a finalist's value is the mean over its new seeds
only. Which finalist is best is judged on the seeds all of them share: the seed moves every
configuration's result alike (the same initialisation and data order), so a two-way fit
(finalist + seed) takes the seed's effect out, and its residual is the noise that remains
between configurations. From it: each finalist's interval (its mean on these seeds, the seed's
shared effect out), the interval of its gap to the best, and the probability that each is the
best, drawn from a multivariate t around the finalists' means (scipy.stats.multivariate_t);
with `shrink`, around means shrunk towards their average by how much of their spread the noise
explains (empirical Bayes: finalists are chosen for being alike, and a flat prior reads their
spread as all real). With `widen`, the intervals are that much wider than the fit's t
intervals: the fit assumes one noise for every finalist, and real curves' spreads differ (the
study widens them by `WIDEN`). With `recalibrate`, that share of the probability is then spread
evenly over the finalists: the model (normal noise of one spread for every finalist, a few
seeds) is surer than fresh noise bears out (the study spreads `RECALIBRATION`). Both were
measured on the benchmark's replays (benchmarks/calibration.py). With one new seed each, or one
finalist, nothing is measured and the fields are None.

Pure functions of plain values (scipy is imported when called; study.keys is standard library only).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from study.keys import sign as direction

CONFIDENCE = 0.95
DRAWS = 20_000
# The study's P(best) shrinks the means (see `finalists`): measured better calibrated on fresh
# noise (benchmarks/results/calibration.json)
SHRINK = True
# The share of the study's P(best) spread evenly over its finalists (see `finalists`): fitted on
# the efficiency table's replayed studies (the even ones; checked on the odd ones and on the
# steady table's: benchmarks/results/calibration*.json)
RECALIBRATION = 0.3
# How much wider than the t interval the study states its intervals (see `finalists`): fitted on
# the efficiency table's replayed studies to hold 95% of the truths there, checked on the steady
# table's (benchmarks/results/calibration*.json, `interval_scales`)
WIDEN = 1.2
# One line on how well the study's P(best) held on the benchmark's fresh noise, from these files
# (benchmarks/calibration.py; tests/unit/benchmarks/test_calibration.py keeps them equal)
CALIBRATION_FILES = ("benchmarks/results/calibration.json", "benchmarks/results/calibration_steady.json")
CALIBRATION = ("on replayed studies' fresh noise (600 and 398 studies of the tables rra_curves and rra_steady_curves), "
               "the named best was stated at P(best) 0.53 and 0.54 on average and was truly the best in 57% and 60% of "
               "them; expected calibration error 0.010 and 0.013 (benchmarks/results/calibration.json and "
               "benchmarks/results/calibration_steady.json)")


@dataclass(frozen=True)
class Noise:
    """The seed noise measured among the finalists: the residual sd of one run after the seed's
    shared effect, with its degrees of freedom (0: not measured), and whether it was paired."""

    sd: float | None
    df: int
    paired: bool


@dataclass(frozen=True)
class Finalist:
    """One finalist under noise: its mean over its new seeds, the interval of that mean (the
    seeds' shared effect out), its gap to the best and that gap's interval, its new seeds and
    their values, the run that chose it (left out), and the probability that it is the best."""

    key: str
    mean: float
    sd: float | None
    seeds: int
    low: float | None
    high: float | None
    p_best: float | None
    values: tuple[float, ...]
    gap: float = 0.0
    gap_low: float | None = None
    gap_high: float | None = None
    selection: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "mean": self.mean, "sd": self.sd, "seeds": self.seeds, "low": self.low,
                "high": self.high, "p_best": self.p_best, "values": list(self.values), "gap": self.gap,
                "gap_low": self.gap_low, "gap_high": self.gap_high, "selection": self.selection}


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


@dataclass(frozen=True)
class Fit:
    """A two-way (configuration + seed) least-squares fit of values on any seeds: each
    configuration's mean on the fit's seeds (its effect plus their mean effect, so that a
    configuration that missed a hard seed is not flattered), the covariance of those means per
    unit of noise variance, and the residual noise (sd None without degrees of freedom)."""

    keys: list[str]
    means: list[float]
    unit_cov: list[list[float]]
    sd: float | None
    df: int


def two_way(values: Mapping[str, Mapping[int, float]]) -> Fit:
    """The two-way fit of `values` (configuration -> seed -> value; seeds may differ)."""
    import numpy as np

    keys = list(values)
    seeds = sorted({s for v in values.values() for s in v})
    cells = [(i, s, x) for i, k in enumerate(keys) for s, x in values[k].items()]
    col = {s: len(keys) + j - 1 for j, s in enumerate(seeds) if j > 0}
    design = np.zeros((len(cells), len(keys) + len(seeds) - 1))
    for row, (i, s, _) in enumerate(cells):
        design[row, i] = 1.0
        if s in col:
            design[row, col[s]] = 1.0
    y = np.array([x for _, _, x in cells])
    inverse = np.linalg.pinv(design.T @ design)
    coef = inverse @ design.T @ y
    # a mean: the configuration's effect plus the mean effect of the fit's seeds (the first's is 0)
    pick = np.zeros((len(keys), design.shape[1]))
    pick[:, :len(keys)] = np.eye(len(keys))
    pick[:, len(keys):] = 1.0 / len(seeds)
    df = len(cells) - int(np.linalg.matrix_rank(design))
    rss = float(np.sum(np.square(y - design @ coef)))
    if rss <= 1e-24 * (1.0 + float(np.sum(np.square(y)))):  # an exact fit, up to rounding
        rss = 0.0
    return Fit(keys, (pick @ coef).tolist(), (pick @ inverse @ pick.T).tolist(),
               math.sqrt(rss / df) if df > 0 else None, df)


def finalists(values: Mapping[str, Mapping[int, float]], mode: str = "max", confidence: float = CONFIDENCE,
              draws: int = DRAWS, seed: int = 0, selection_seed: int | None = None, shrink: bool = False,
              noise_from_selection: bool = False, recalibrate: float = 0.0,
              widen: float = 1.0) -> tuple[list[Finalist], Noise]:
    """The finalists best first (by their mean on their new seeds, from the two-way fit; ties by
    key), and the noise.

    Args:
        values: finalist key -> seed -> final value of the study's metric.
        mode: "max" or "min", as the study's.
        selection_seed: the seed of the runs that chose the finalists, left out of every figure
            (kept as `selection`); None: every value counts.
        shrink: P(best) from means shrunk by empirical Bayes (see the module's text).
        noise_from_selection: where the new seeds alone measure no noise (one each), measure it
            with the choosing runs in (they are biased high, alike for every finalist, which the
            seed's term of the fit takes out): what a race decides its next runs on.
        recalibrate: the share of P(best) spread evenly over the finalists (0: the model's own).
        widen: the intervals' half-widths times this (1: the t intervals of the fit).
    """
    if not 0.0 <= recalibrate <= 1.0:
        raise ValueError(f"recalibrate is a share, from 0 to 1, not {recalibrate}")
    from scipy import stats

    chosen_by = {k: v.get(selection_seed) for k, v in values.items()} if selection_seed is not None else {}
    fresh = {k: {s: x for s, x in v.items() if s != selection_seed} or dict(v) for k, v in values.items()}
    fit = two_way(fresh)
    sd, df = fit.sd, fit.df
    if sd is None and noise_from_selection and selection_seed is not None:
        whole = two_way(values)
        sd, df = whole.sd, whole.df
    noise = Noise(sd, df, True)
    sign = direction(mode)
    means = dict(zip(fit.keys, fit.means, strict=True))
    index = {k: i for i, k in enumerate(fit.keys)}
    order = sorted(fresh, key=lambda k: (-sign * means[k], k))
    p_best = _p_best(order, means, fit, noise, sign, shrink, draws, seed)
    if recalibrate and len(order) > 1:
        p_best = {k: None if p is None else (1 - recalibrate) * p + recalibrate / len(order) for k, p in p_best.items()}
    best = order[0]
    quantile = float(stats.t.ppf(0.5 + confidence / 2, df)) if sd is not None and df else None
    out = []
    for key in order:
        seen = tuple(fresh[key][s] for s in sorted(fresh[key]))
        own = statistics.stdev(seen) if len(seen) > 1 else None
        low = high = gap_low = gap_high = None
        gap = means[key] - means[best]
        i, b = index[key], index[best]
        if quantile is not None and sd is not None:
            half = widen * quantile * sd * math.sqrt(fit.unit_cov[i][i])
            low, high = means[key] - half, means[key] + half
            if key != best:
                spread = fit.unit_cov[i][i] + fit.unit_cov[b][b] - 2 * fit.unit_cov[i][b]
                gap_half = widen * quantile * sd * math.sqrt(max(spread, 0.0))
                gap_low, gap_high = gap - gap_half, gap + gap_half
        out.append(Finalist(key, means[key], own, len(seen), low, high, p_best[key], seen, gap, gap_low, gap_high,
                            chosen_by.get(key)))
    return out, noise


def _p_best(order: list[str], means: Mapping[str, float], fit: Fit, noise: Noise, sign: float, shrink: bool,
            draws: int, seed: int) -> dict[str, float | None]:
    """The probability that each finalist is the best (see `finalists`)."""
    p_best: dict[str, float | None] = dict.fromkeys(order)
    if len(order) == 1:
        p_best[order[0]] = 1.0
    elif noise.sd is not None and noise.sd > 0:
        import numpy as np
        from scipy import stats

        index = [fit.keys.index(k) for k in order]
        loc = np.array([means[k] for k in order])
        cov = noise.sd ** 2 * np.asarray(fit.unit_cov)[np.ix_(index, index)]
        if shrink:
            # the spread of the true means: what the means' spread leaves after the noise's share
            variance = np.diag(cov)
            spread = max(0.0, float(np.var(loc, ddof=1)) - float(variance.mean()))
            weight = spread / (spread + variance)
            loc = loc.mean() + weight * (loc - loc.mean())
            cov = cov * np.outer(weight, weight)
        if float(np.max(np.diag(cov))) == 0.0:  # the means are alike up to the noise: no finalist is favoured
            p_best.update(dict.fromkeys(order, 1.0 / len(order)))
            return p_best
        draw = stats.multivariate_t(loc=loc, shape=cov, df=noise.df, seed=seed, allow_singular=True).rvs(size=draws)
        wins = np.bincount(np.argmax(sign * draw.reshape(draws, len(order)), axis=1), minlength=len(order))
        p_best.update({k: float(w) / draws for k, w in zip(order, wins, strict=True)})
    elif noise.sd == 0:  # every difference is exact: the best is certain, or shared by a tie
        top = [k for k in order if abs(means[k] - means[order[0]]) <= 1e-12]
        p_best.update({k: 1.0 / len(top) if k in top else 0.0 for k in order})
    return p_best
