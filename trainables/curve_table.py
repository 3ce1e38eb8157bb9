"""Recorded RRA learning curves (benchmarks/data/rra_curves.parquet, made by
`python -m benchmarks.tables.curves`) as a replayed trial sees them.

A trial's configuration is looked up among the table's configurations: the recorded one of the
same kind (global-only, or with the local stream; in a table that varies them, with the same
refine and patch size) nearest to it, in the space's coordinates scaled to [0, 1] (recursion
steps, crop scale, log temperature), is the surrogate whose curve
the trial reports (a nearest-neighbour surrogate, as Syne Tune's blackbox repository uses for
points off its grid). The curve it reports is drawn for its training seed from the table's
generative model (trainables.curve_model: the configuration's mean curve, the seed's shared
effect, the run's own path), fitted to the recorded runs, or the model a drawn table was drawn
from: fresh noise, never a recorded run, so that no replay reuses the noise the truth (each
configuration's mean) was computed from. A study's trials, which all train with its one seed,
share that seed's effect, as real seeds are shared; re-runs with the next seeds draw new ones.
`CurveTable.held_out` says how good the surrogate is: each configuration's mean final accuracy
predicted from its nearest other configuration.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from trainables.curve_model import CurveModel

METRICS = ("val_acc", "val_loss", "val_acc_global", "val_acc_local", "train_loss", "train_acc")
# what a configuration must match exactly where the table varies it (a cost table's; see
# benchmarks.tables.curves DESIGNS): the nearest configuration is looked for among those alike in these
CATEGORICAL = ("refine", "patch_size")
COST = ("cost_flops_per_image", "cost_parameters", "cost_latency_ms_batch1", "cost_latency_ms_per_image")


class CurveTableError(ValueError):
    """A table that cannot be read, or a study it cannot replay."""


def coordinates(values: dict[str, Any]) -> tuple[float, float, float]:
    """A configuration in [0, 1]^3: recursion steps over 1-10, crop scale over 0.2-1.0,
    log10 temperature over 0.1-10 (0.5, the middle, where one step makes it moot)."""
    steps = float(values.get("recursion_steps", 1))
    temperature = values.get("attention_temperature")
    temp = 0.5 if steps <= 1 or temperature is None or (isinstance(temperature, float) and math.isnan(temperature)) \
        else (math.log10(float(temperature)) + 1.0) / 2.0
    return ((steps - 1.0) / 9.0, (float(values.get("crop_scale", 0.6)) - 0.2) / 0.8, temp)


def seed_adjusted(finals: Mapping[tuple[str, int], float]) -> tuple[dict[str, float], dict[str, float]]:
    """Each configuration's mean over every seed of the table, and its standard error, from
    finals recorded on unequal sets of seeds.

    A seed moves every configuration alike (its shared effect is many points here), so the plain
    mean of a configuration recorded on more seeds, or on other ones, is not comparable with
    another's. An additive configuration + seed least-squares fit estimates the seeds' shared
    effects from every configuration, and a configuration's mean is its effect plus the mean
    seed effect: the mean it would have over all the table's seeds. With the same seeds for
    all, this is the plain mean. The standard error is the configuration's own residual sd
    (the noise differs between configurations) over the square root of its seeds; infinite
    with one seed.
    """
    import numpy as np

    names = sorted({n for n, _ in finals})
    seeds = sorted({s for _, s in finals})
    col = {n: i for i, n in enumerate(names)}
    seed_col = {s: len(names) + i - 1 for i, s in enumerate(seeds) if i > 0}  # the first seed's effect is 0
    keys = sorted(finals)
    design = np.zeros((len(keys), len(names) + len(seeds) - 1))
    for row, (name, seed) in enumerate(keys):
        design[row, col[name]] = 1.0
        if seed in seed_col:
            design[row, seed_col[seed]] = 1.0
    y = np.array([finals[k] for k in keys])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    shift = float(coef[len(names):].sum()) / len(seeds)  # the mean seed effect
    residual = y - design @ coef
    means = {n: float(coef[col[n]]) + shift for n in names}
    own: dict[str, list[float]] = {}
    for (name, _), r in zip(keys, residual, strict=True):
        own.setdefault(name, []).append(float(r))
    # a configuration's residuals have about n - 1 degrees of freedom (the seed effects are
    # estimated from all the others)
    errors = {n: math.sqrt(sum(r * r for r in own[n]) / (len(own[n]) - 1) / len(own[n])) if len(own[n]) > 1
              else math.inf for n in names}
    return means, errors


@dataclass(frozen=True)
class Match:
    """The recorded configuration a trial replays, the training seed its draw is for, and how far
    the configuration is from the trial's."""

    config: str
    seed: int
    distance: float
    run: str = ""  # the trial's own values: what its residual noise is drawn for


class CurveTable:
    """The curves of a table file, by (configuration, seed)."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as err:
            raise CurveTableError(f"cannot read the curve table {path}: {err}") from None
        missing = {"config", "seed", "epoch", "local_stream", *METRICS} - set(table.column_names)
        if missing:
            raise CurveTableError(f"{path} is not a curve table: no column {', '.join(sorted(missing))}")
        self.path = path
        self.metadata = json.loads((table.schema.metadata or {}).get(b"rra_curves", b"{}"))
        rows = table.to_pylist()
        self.curves: dict[tuple[str, int], list[dict[str, float]]] = {}
        self.values: dict[str, dict[str, Any]] = {}
        self.costs: dict[str, dict[str, float]] = {}  # each configuration's inference cost, where recorded
        for row in sorted(rows, key=lambda r: (r["config"], r["seed"], r["epoch"])):
            self.costs.setdefault(row["config"], {k: float(row[k]) for k in COST if row.get(k) is not None})
            self.curves.setdefault((row["config"], row["seed"]), []).append({k: float(row[k]) for k in METRICS})
            self.values.setdefault(row["config"], {
                "local_stream": bool(row["local_stream"]),
                **{k: row[k] for k in ("recursion_steps", "crop_scale", "attention_temperature", *CATEGORICAL)
                   if row.get(k) is not None}})
        self.seeds = sorted({seed for _, seed in self.curves})
        # the seeds every configuration has (more were recorded for some: the best ones)
        self.shared_seeds = [s for s in self.seeds if all((n, s) in self.curves for n in self.values)]
        if not self.shared_seeds:
            raise CurveTableError(f"{path}: no seed is recorded for every configuration")
        self.epochs = min(len(c) for c in self.curves.values())
        self._errors = seed_adjusted({k: c[self.epochs - 1]["val_acc"] for k, c in self.curves.items()})[1]
        self.drawn = "model" in self.metadata  # drawn from a model, which is then the truth itself
        if self.drawn:
            self.model = CurveModel.from_dict(self.metadata["model"])
            self._errors = dict.fromkeys(self.values, 0.0)
        else:
            self.model = CurveModel.fit(self.curves, METRICS, validation_images(self.metadata))
        self._draws: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        self._points = {name: coordinates(v) for name, v in self.values.items() if v["local_stream"]}

    def match(self, values: dict[str, Any], seed: int = 0) -> Match:
        """The recorded configuration nearest to `values` (a trial's config), for training seed
        `seed`."""
        if not values.get("local_stream", True):
            names = [n for n, v in self.values.items() if not v["local_stream"]]
            if not names:
                raise CurveTableError(f"{self.path} holds no global-only curve")
            return Match(names[0], seed, 0.0, _run_key(values))
        if not self._points:
            raise CurveTableError(f"{self.path} holds no curve with the local stream")
        alike = {k: values.get(k) for k in CATEGORICAL if any(k in self.values[n] for n in self._points)}
        points = {n: p for n, p in self._points.items() if all(self.values[n].get(k) == v for k, v in alike.items())}
        if not points:
            raise CurveTableError(f"{self.path} holds no configuration with "
                                  + ", ".join(f"{k}={v}" for k, v in alike.items()))
        here = coordinates(values)
        name, point = min(points.items(), key=lambda item: (math.dist(here, item[1]), item[0]))
        return Match(name, seed, math.dist(here, point), _run_key(values))

    def metrics(self, match: Match, epoch: int) -> dict[str, float]:
        """The metrics of a match at `epoch` (1-based), drawn from the model for its configuration
        and seed; with the first epoch, the configuration's inference cost where the table
        records it (as a trial reports it)."""
        if not 1 <= epoch <= self.epochs:
            raise CurveTableError(f"{self.path} records epochs 1-{self.epochs}, not {epoch}")
        key = (match.config, match.seed, match.run)
        if key not in self._draws:
            self._draws[key] = self.model.draw(match.config, match.seed, run=match.run)
        out = dict(self._draws[key][epoch - 1])
        if epoch == 1:
            out.update(self.costs.get(match.config, {}))
        return out

    def finals(self, config: str) -> list[float]:
        """A configuration's final validation accuracy of every seed recorded."""
        return [self.curves[(config, s)][self.epochs - 1]["val_acc"] for s in self.seeds if (config, s) in self.curves]

    def true_final(self, config: str) -> float:
        """A configuration's quality: its mean final validation accuracy in the model replays draw
        from. Fitted to recorded runs, that is the mean over every seed of the table
        (`seed_adjusted`: seeds it lacks count by their shared effect); in a drawn table, the
        model's own."""
        return self.model.true_final(config)

    def standard_error(self, config: str) -> float:
        """How far `true_final` may be from the configuration's real mean (`seed_adjusted`;
        infinite with one seed); 0 in a drawn table, whose truth is its model's."""
        return self._errors[config]

    def difference_error(self, a: str, b: str) -> float:
        """The standard error of `true_final(a) - true_final(b)` against the real difference: on
        the seeds both have the seed's shared effect cancels, so the two errors add as
        independent ones."""
        return math.hypot(self._errors[a], self._errors[b])

    def recorded(self, config: str, seed: int) -> list[dict[str, float]]:
        """A recorded run's metrics by epoch (what no replay reports)."""
        return self.curves[(config, seed)]

    def held_out(self) -> dict[str, float]:
        """How good the nearest-neighbour surrogate is on points it has not seen: each
        configuration's mean final accuracy predicted by its nearest other configuration (mean
        absolute error in points, and Spearman's rank correlation), beside the seed noise (mean
        absolute difference in points between two seeds of one configuration)."""
        from scipy.stats import spearmanr

        names = sorted(self._points)
        truth, guess = [], []
        for name in names:
            others = [n for n in names if n != name]
            near = min(others, key=lambda n: (math.dist(self._points[name], self._points[n]), n))
            truth.append(self.true_final(name))
            guess.append(self.true_final(near))
        noise = [abs(self.curves[(n, self.seeds[0])][-1]["val_acc"] - self.curves[(n, self.seeds[1])][-1]["val_acc"])
                 for n in names if len(self.seeds) > 1 and (n, self.seeds[1]) in self.curves]
        return {"configs": len(names),
                "mae_points": round(100 * sum(abs(a - b) for a, b in zip(truth, guess, strict=True)) / len(names), 2),
                "spearman": round(float(spearmanr(truth, guess).statistic), 3),
                "seed_noise_points": round(100 * sum(noise) / len(noise), 2) if noise else float("nan")}


def _run_key(values: dict[str, Any]) -> str:
    """A trial's own values, as its replay's noise is drawn for them (rounded: a value read back
    from a store may differ in its last digits)."""
    keys = ("local_stream", "recursion_steps", "crop_scale", "attention_temperature", *CATEGORICAL)
    out = []
    for key in keys:
        value = values.get(key)
        if isinstance(value, float):
            value = None if math.isnan(value) else round(value, 9)
        out.append(f"{key}={value}")
    return ",".join(out)


def validation_images(metadata: dict[str, Any]) -> int | None:
    """The validation split's size a table was recorded with (from its space, as the stratified
    split takes it: a rounded share of each class); its accuracies are multiples of one over it."""
    constants = metadata.get("space", {}).get("constants", {})
    try:
        return int(constants["synthetic_classes"]) * round(int(constants["synthetic_images_per_class"])
                                                           * float(constants["val_fraction"]))
    except KeyError:
        return None


@cache
def load(path: str) -> CurveTable:
    """The table at `path`, read once per process."""
    return CurveTable(Path(path))
