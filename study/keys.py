"""Names both sides of a study share: the keys the driver adds to a trial's config, and the
names of the metrics a trial reports. No imports beyond the standard library.

The trainable drops every config key that starts with "_" (`trainables.config.settings`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Keys the searcher adds to a trial's config. PARAMS holds every parameter of the space, None
# where inactive (a baseline, a condition not met), so tables have the same columns for every
# trial. VARIANT and LEVEL: a confirmation run's varied factor and its level.
KIND, NAME, OPTUNA_NUMBER, PARAMS = "_kind", "_name", "_optuna_trial", "_params"
VARIANT, LEVEL = "_variant", "_level"
# Kinds of trial: sampled by the searcher, a baseline of the space, a confirmation rerun, a
# finalist's rerun with a new seed (FINALIST_OF: the searched trial it re-runs).
SEARCH, BASELINE, CONFIRM, FINALIST = "search", "baseline", "confirm", "finalist"
FINALIST_OF = "_finalist_of"

# What a trial reports once per epoch (trainables.loop); EPOCH is the schedulers' time axis.
EPOCH = "epoch"
TEST_METRICS = ("test_acc", "test_acc_global", "test_acc_local")
# A trial's inference cost, reported once with its first epoch (trainables.cost).
COST_METRICS = ("cost_flops_per_image", "cost_parameters", "cost_latency_ms_batch1", "cost_latency_ms_per_image",
                "cost_batch_size", "cost_peak_memory_mb")

# How a trial ended, as the summary, MLflow's `outcome` tag and the report name it.
COMPLETED, STOPPED_EARLY, ERRORED, INTERRUPTED = "completed", "stopped_early", "errored", "interrupted"

SHORT_NAMES = {"recursion_steps": "T", "crop_scale": "s", "attention_temperature": "tau"}


def run_name(values: dict[str, Any]) -> str:
    """A readable name from searched values: T4-s0.35-tau0.7 (other keys as key=value)."""
    parts = []
    for key, value in values.items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{SHORT_NAMES[key]}{text}" if key in SHORT_NAMES else f"{key}={text}")
    return "-".join(parts) or "fixed"


def searched_values(parameters: Iterable[str], values: dict[str, Any]) -> dict[str, Any]:
    """PARAMS of a trial: every parameter of the space with its value, None where it has none."""
    return {name: values.get(name) for name in parameters}


def outcome(last_result: dict[str, Any] | None, max_epochs: int, errored: bool) -> str:
    """COMPLETED (reached max_epochs), STOPPED_EARLY, or ERRORED."""
    if errored:
        return ERRORED
    if last_result and int(last_result.get(EPOCH, 0)) >= max_epochs:
        return COMPLETED
    return STOPPED_EARLY


def sign(mode: str) -> float:
    """+1 for a metric to maximise ("max"), -1 for one to minimise: sign x value is better higher."""
    return 1.0 if mode == "max" else -1.0
