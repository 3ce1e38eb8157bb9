"""The report's pictures (matplotlib, written as PNG files; no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colors, ticker
from matplotlib.patches import Rectangle

from study.policies.asha import rungs
from study.reporting.analysis import at_epoch, searched
from study.results import trials
from study.spaces import Parameter, SearchSpace

DPI = 110


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _axes(n: int, width: float = 4.2, height: float = 3.2) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _positions(values: pd.Series, param: Parameter) -> pd.Series:
    """x positions of a factor's values: the number, or the index of a categorical choice."""
    if param.type == "categorical":
        return values.map(lambda v: param.choices.index(v) if v in param.choices else np.nan)
    return values.astype(float)


def _baselines(ax: Any, table: pd.DataFrame, metric: str) -> None:
    per_trial = trials(table)
    for _name, row in per_trial[per_trial["kind"] == "baseline"].iterrows():
        ax.axhline(row[metric], color="black", ls="--", lw=1, label=f"{row['name']} (epoch {row['epochs_run']})")


def _x_axis(ax: Any, param: Parameter) -> None:
    if param.log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    if param.type == "int":
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


def metric_by_factor(table: pd.DataFrame, space: SearchSpace, path: Path) -> Path:
    """The metric against each factor, one colour per rung (equal fidelity), baselines dashed."""
    metric, rows = space.study.metric, searched(table)
    per_trial = trials(rows)
    fig, axes = _axes(len(space.parameters))
    cmap = plt.get_cmap("viridis")
    milestones = rungs(space.study)
    for ax, (name, param) in zip(axes, space.parameters.items(), strict=True):
        for i, rung in enumerate(milestones):
            values = at_epoch(rows, rung, metric)
            x = _positions(per_trial.loc[values.index, name], param)
            ax.scatter(x, values, s=22, color=cmap(i / max(1, len(milestones) - 1)), label=f"epoch {rung}",
                       alpha=0.85, edgecolors="none")
        _baselines(ax, table, metric)
        _x_axis(ax, param)
        if param.type == "categorical":
            ax.set_xticks(range(len(param.choices)), [str(c) for c in param.choices])
        ax.set_xlabel(name + (f" (when {param.when})" if param.when else ""))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{metric} at each rung against each factor")
    return _save(fig, path)


def learning_curves(table: pd.DataFrame, space: SearchSpace, path: Path) -> Path:
    """Every trial's learning curve, coloured by each factor in turn; baselines in black."""
    metric, rows = space.study.metric, searched(table)
    fig, axes = _axes(len(space.parameters), width=5.2)
    for ax, (name, param) in zip(axes, space.parameters.items(), strict=True):
        values = trials(rows)[name]
        present = values.dropna().astype(float) if param.type != "categorical" else values.dropna()
        if param.type == "categorical":
            norm: Any = colors.Normalize(0, max(1, len(param.choices) - 1))
            code = {c: i for i, c in enumerate(param.choices)}
        else:
            low, high = float(param.low or 0), float(param.high or 1)
            norm = colors.LogNorm(low, high) if param.log else colors.Normalize(low, high)
        cmap = plt.get_cmap("plasma")
        for trial_id, curve in rows.dropna(subset=["epoch"]).groupby("trial_id"):
            value = values.get(trial_id)
            if value is None or pd.isna(value):
                color: Any = "0.7"
            else:
                color = cmap(norm(code[value] if param.type == "categorical" else float(value)))
            ax.plot(curve["epoch"], curve[metric], color=color, lw=1, alpha=0.8)
        for _, curve in table[table["kind"] == "baseline"].groupby("trial_id"):
            ax.plot(curve["epoch"], curve[metric], color="black", ls="--", lw=1.2)
        if len(present):
            fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle("Learning curves (grey: factor inactive; dashed: baseline)")
    return _save(fig, path)


def rung_survival(table: pd.DataFrame, space: SearchSpace, path: Path) -> Path:
    """How many sampled trials reached each rung."""
    rows = searched(table)
    milestones = rungs(space.study)
    counts = [int((rows["epoch"] == r).sum()) for r in milestones]
    fig, (ax,) = _axes(1, 5, 3)
    bars = ax.bar([str(r) for r in milestones], counts, color="tab:blue")
    ax.bar_label(bars)
    ax.set_xlabel("rung (epoch)")
    ax.set_ylabel("trials that reached it")
    ax.set_title(f"{trials(rows).shape[0]} sampled trials")
    return _save(fig, path)


def attention_pictures(expl: Any, names: list[str], path: Path) -> Path:
    """Per image: the image with each step's crop (and the part box, dashed) and, per step,
    the crop it saw with its Grad-CAM and its attention weight."""
    n, steps = expl.attention.shape
    fig, grid = plt.subplots(n, steps + 1, figsize=(1.9 * (steps + 1), 2.0 * n), squeeze=False)
    cmap = plt.get_cmap("autumn")
    for i in range(n):
        ax = grid[i][0]
        ax.imshow(expl.images[i])
        for t in range(steps):
            x1, y1, x2, y2 = expl.boxes[i, t]
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.5,
                                   color=cmap(t / max(1, steps - 1))))
        if not np.isnan(expl.part_boxes[i]).any():
            x1, y1, x2, y2 = expl.part_boxes[i]
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1, ls="--", color="cyan"))
        label, pred = int(expl.labels[i]), int(expl.predictions[i])
        ax.set_title(f"{names[label] if label < len(names) else label} -> "
                     f"{names[pred] if pred < len(names) else pred}", fontsize=8)
        for t in range(steps):
            ax = grid[i][t + 1]
            ax.imshow(expl.patches[i, t])
            ax.imshow(expl.cams[i, t], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_title(f"t={t + 1}  a={expl.attention[i, t]:.2f}", fontsize=8)
    for ax in np.ravel(grid):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Crops (box colour: step; dashed cyan: the part that decides the class), "
                 "Grad-CAM per step and attention a", fontsize=9)
    return _save(fig, path)


def accuracy_against_cost(candidates: pd.DataFrame, fronts: dict[str, pd.DataFrame], metric: str,
                          path: Path) -> Path:
    """The metric against each cost (FLOPs an image, latency of one image): every trial that
    reached max_t (finalists at their mean over seeds, with their interval), coloured by its
    recursion steps, and the front."""
    labels = {"cost_flops_per_image": "FLOPs an image", "cost_latency_ms_batch1": "latency of one image (ms)"}
    fig, axes = _axes(len(fronts), 4.6, 3.4)
    steps = candidates["recursion_steps"] if "recursion_steps" in candidates else pd.Series(1, candidates.index)
    for ax, (cost, front) in zip(axes, fronts.items(), strict=True):
        points = ax.scatter(candidates[cost], candidates[metric], c=steps, cmap="viridis", s=18, zorder=2)
        named = candidates[candidates["seeds"] > 1]
        if not named.empty:
            ax.errorbar(named[cost], named[metric], yerr=[named[metric] - named["low"], named["high"] - named[metric]],
                        fmt="none", ecolor="grey", elinewidth=1, zorder=1)
        ax.step(front[cost], front[metric], where="post", color="tab:red", linewidth=1.2, label="front")
        ax.set_xscale("log")
        ax.set_xlabel(labels.get(cost, cost))
        ax.set_ylabel(metric)
        ax.legend(fontsize=7, loc="lower right")
    fig.colorbar(points, ax=axes, label="recursion steps T")
    fig.suptitle("Accuracy against inference cost (trials at max_t)")
    return _save(fig, path)
