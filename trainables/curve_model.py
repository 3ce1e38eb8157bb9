"""A generative model of a curve table's runs, from which a replayed run draws fresh noise.

A run's curve of a metric, configuration c and training seed s, over epochs e = 1..E:

    y(c, s, e) = mean(c, e) + seed(s, e) + sigma(c) * residual(c, s, e)

- `mean`: the configuration's mean curve over seeds (the seed-adjusted mean at each epoch: an
  additive configuration + seed fit, `fit`); its last value is the configuration's truth;
- `seed`: the seed's effect, shared by every configuration trained with that seed (a study's
  trials share its one seed), a path over the epochs drawn from a normal distribution with the
  covariance of the recorded seeds' effects;
- `residual`: the run's own path, drawn from a normal distribution with the covariance, over the
  epochs, of the recorded residual paths (each scaled by its configuration's spread), times
  `sigma(c)`, the configuration's own residual spread (shrunk towards the table's, as few seeds
  estimate it poorly).

Accuracies are then rounded to the validation split's grid (k / images) and kept in [0, 1], as
a real run's are, and losses at least 0. A draw depends on (salt, metric, configuration, seed, run)
only, `run` naming the trial's own values: the same trial and seed replay the same curve (as
training with a seed is repeatable), two trials that replay one configuration draw their own
residuals (their seed's effect is shared), and no draw is a recorded run or a part of the truth. A model is
fitted from recorded runs (`fit`) or written with a table drawn from it (`benchmarks.tables.curves
draw`), whose truth is then known exactly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ACCURACIES = ("val_acc", "val_acc_global", "val_acc_local")  # on the validation split's grid
BOUNDED = ("train_acc",)  # in [0, 1], no grid (the training split's size is not recorded)
# how many seeds' worth of the table's residual spread a configuration's own is shrunk towards
PRIOR_SEEDS = 2.0
REPLAY_SALT = "replay"  # the replays' noise; a drawn table's own runs use another salt


def _stream(*key: Any) -> np.random.Generator:
    import numpy as np

    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _factor(cov: np.ndarray) -> np.ndarray:
    """A lower-triangular L with L L^T = cov (cov made positive definite by a small ridge)."""
    import numpy as np

    size = cov.shape[0]
    ridge = 1e-10 + 1e-9 * float(np.trace(cov)) / max(size, 1)
    return np.linalg.cholesky(cov + ridge * np.eye(size))


@dataclass(frozen=True)
class MetricModel:
    """One metric's model: per-configuration mean curves and spreads, and the Cholesky factors
    of the seed effect's and the standardized residual's covariance over epochs."""

    mean: dict[str, list[float]]
    sigma: dict[str, float]
    seed_factor: list[list[float]]
    residual_factor: list[list[float]]

    def draw(self, config: str, seed: int, metric: str, salt: str, run: str = "") -> np.ndarray:
        import numpy as np

        epochs = len(self.seed_factor)
        shared = np.asarray(self.seed_factor) @ _stream(salt, metric, "seed", seed).standard_normal(epochs)
        noise = _stream(salt, metric, "run", config, run, seed).standard_normal(epochs)
        own = np.asarray(self.residual_factor) @ noise
        return np.asarray(self.mean[config]) + shared + self.sigma[config] * own


@dataclass(frozen=True)
class CurveModel:
    """The generative model of a table's runs (see the module's text)."""

    epochs: int
    metrics: dict[str, MetricModel]
    grid: int | None = None  # validation images: accuracies are multiples of 1 / grid
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def configs(self) -> list[str]:
        return sorted(next(iter(self.metrics.values())).mean)

    def true_final(self, config: str, metric: str = "val_acc") -> float:
        """The configuration's truth: its mean curve's last value."""
        return float(self.metrics[metric].mean[config][-1])

    def seed_effect(self, seed: int, metric: str = "val_acc", salt: str = REPLAY_SALT) -> list[float]:
        """The shared effect of training seed `seed` at every epoch, in the draws of `salt`: what
        every configuration trained with that seed is moved by (before the grid and bounds)."""
        import numpy as np

        model = self.metrics[metric]
        z = _stream(salt, metric, "seed", seed).standard_normal(self.epochs)
        return [float(x) for x in np.asarray(model.seed_factor) @ z]

    def draw(self, config: str, seed: int, salt: str = REPLAY_SALT, run: str = "") -> list[dict[str, float]]:
        """A run's metrics at every epoch, drawn for (configuration, seed); `run` tells apart the
        runs of different trials that replay one configuration (their own noise differs)."""
        import numpy as np

        columns = {}
        for metric, model in self.metrics.items():
            values = model.draw(config, seed, metric, salt, run)
            if metric in ACCURACIES or metric in BOUNDED:
                values = np.clip(values, 0.0, 1.0)
                if metric in ACCURACIES and self.grid:
                    values = np.round(values * self.grid) / self.grid
            elif "loss" in metric:
                values = np.maximum(values, 0.0)
            columns[metric] = values
        return [{metric: float(columns[metric][e]) for metric in columns} for e in range(self.epochs)]

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "grid": self.grid, "notes": self.notes,
                "metrics": {m: {"mean": v.mean, "sigma": v.sigma, "seed_factor": v.seed_factor,
                                "residual_factor": v.residual_factor} for m, v in self.metrics.items()}}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CurveModel:
        return cls(epochs=int(raw["epochs"]), grid=raw.get("grid"), notes=dict(raw.get("notes", {})),
                   metrics={m: MetricModel(mean={c: [float(x) for x in v] for c, v in d["mean"].items()},
                                           sigma={c: float(s) for c, s in d["sigma"].items()},
                                           seed_factor=d["seed_factor"], residual_factor=d["residual_factor"])
                            for m, d in raw["metrics"].items()})

    @classmethod
    def simple(cls, means: Mapping[str, Mapping[str, Sequence[float]]], seed_sd: float, residual_sd: float,
               correlation: float = 0.8, grid: int | None = None) -> CurveModel:
        """A model made up rather than fitted: `means` by configuration and metric, every
        configuration's residual spread `residual_sd`, a seed effect of spread `seed_sd`, both
        with the same sd at every epoch and `correlation` ** lag between epochs."""
        import numpy as np

        metrics = sorted({m for by_metric in means.values() for m in by_metric})
        epochs = len(next(iter(next(iter(means.values())).values())))
        lags = np.abs(np.subtract.outer(np.arange(epochs), np.arange(epochs)))
        shape = np.power(correlation, lags)
        seed_factor = _factor(seed_sd ** 2 * shape).tolist()
        residual_factor = _factor(shape).tolist()
        return cls(epochs=epochs, grid=grid, notes={"simple": {"seed_sd": seed_sd, "residual_sd": residual_sd,
                                                               "correlation": correlation}},
                   metrics={m: MetricModel(mean={c: [float(x) for x in means[c][m]] for c in means},
                                           sigma=dict.fromkeys(means, residual_sd), seed_factor=seed_factor,
                                           residual_factor=residual_factor) for m in metrics})

    @classmethod
    def fit(cls, curves: Mapping[tuple[str, int], Sequence[Mapping[str, float]]], metrics: Sequence[str],
            grid: int | None = None) -> CurveModel:
        """The model of recorded runs: `curves` maps (configuration, seed) to a run's metrics by
        epoch (the table's first `epochs` epochs, the fewest any run has)."""
        epochs = min(len(c) for c in curves.values())
        return cls(epochs=epochs, grid=grid,
                   metrics={m: _fit_metric({k: [float(row[m]) for row in c[:epochs]] for k, c in curves.items()})
                            for m in metrics},
                   notes={"fitted_on_runs": len(curves), "prior_seeds": PRIOR_SEEDS})


def _fit_metric(paths: Mapping[tuple[str, int], list[float]]) -> MetricModel:
    """One metric: the additive configuration + seed fit at every epoch at once (the first seed's
    effect 0), the seed effects centred, the residuals."""
    import numpy as np

    keys = sorted(paths)
    names = sorted({n for n, _ in keys})
    seeds = sorted({s for _, s in keys})
    col = {n: i for i, n in enumerate(names)}
    seed_col = {s: len(names) + i - 1 for i, s in enumerate(seeds) if i > 0}
    design = np.zeros((len(keys), len(names) + len(seeds) - 1))
    for row, (name, seed) in enumerate(keys):
        design[row, col[name]] = 1.0
        if seed in seed_col:
            design[row, seed_col[seed]] = 1.0
    y = np.array([paths[k] for k in keys])  # runs x epochs
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    effects = np.vstack([np.zeros(y.shape[1]), coef[len(names):]])  # seeds x epochs
    shift = effects.mean(axis=0)
    mean = {n: (coef[col[n]] + shift).tolist() for n in names}
    centred = effects - shift
    residual = y - design @ coef
    # the seeds' effects are estimated from the runs of each seed, so their spread holds that
    # estimate's noise too (the residual covariance over the number of runs of the seed): taken
    # out, and what is left kept positive semi-definite
    runs_of = np.bincount([seeds.index(s) for _, s in keys], minlength=len(seeds))
    noise_cov = residual.T @ residual / max(len(keys) - design.shape[1], 1)
    seed_cov = centred.T @ centred / max(len(seeds) - 1, 1) - float(np.mean(1.0 / runs_of)) * noise_cov
    values, vectors = np.linalg.eigh(seed_cov)
    seed_cov = (vectors * np.clip(values, 0.0, None)) @ vectors.T
    own: dict[str, list[np.ndarray]] = {}
    for (name, _), r in zip(keys, residual, strict=True):
        own.setdefault(name, []).append(r)
    # a configuration's residual spread: RMS over its runs and epochs, with n - 1 degrees of freedom
    spread = {n: (math.sqrt(float(np.sum(np.square(rs))) / ((len(rs) - 1) * y.shape[1])), len(rs) - 1)
              for n, rs in own.items() if len(rs) > 1}
    dof = sum(d for _, d in spread.values())
    pooled = math.sqrt(sum(s * s * d for s, d in spread.values()) / dof) if dof else 0.0
    sigma = {n: math.sqrt((spread[n][0] ** 2 * spread[n][1] + PRIOR_SEEDS * pooled ** 2) / (spread[n][1] + PRIOR_SEEDS))
             if n in spread else pooled for n in names}
    standardized = [r * math.sqrt(len(rs) / (len(rs) - 1)) / spread[n][0]
                    for n, rs in own.items() if n in spread and spread[n][0] > 0 for r in rs]
    if standardized:
        stacked = np.array(standardized)
        residual_cov = stacked.T @ stacked / len(stacked)
        residual_cov /= float(np.mean(np.diag(residual_cov)))  # sigma carries the scale
    else:
        residual_cov = np.eye(y.shape[1])
    return MetricModel(mean=mean, sigma=sigma, seed_factor=_factor(seed_cov).tolist(),
                       residual_factor=_factor(residual_cov).tolist())
