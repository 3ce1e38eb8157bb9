"""Confirmation runs: the best configuration and one-factor-at-a-time variations around it,
each with N seeds at the full budget and without early stopping, plus the baselines with the
same seeds. This is what a paper's ablation table needs: mean and standard deviation per level.

Variations: every other choice of a categorical factor; both ends of a numeric factor's range
(T = 1 is "no recursion", crop scale 1 is "the whole image"). A conditional factor is varied
only where its condition holds at the best point; a variation that switches a condition off
drops the parameter it governs (it falls back to the trial default).

The runs go to a Tune experiment STUDY-confirm beside the study's, to the study's MLflow
experiment as child runs of kind "confirm", and to STUDY/confirm.parquet. Running it again
continues an interrupted confirmation.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from study.errors import StudyInputError
from study.keys import CONFIRM, LEVEL, VARIANT
from study.phases import reruns
from study.record import StudyRecord
from study.spaces import Parameter, SearchSpace


def _levels(param: Parameter) -> list[Any]:
    if param.type == "categorical":
        return list(param.choices)
    assert param.low is not None and param.high is not None
    if param.type == "int":
        return [int(param.low), int(param.high)]
    return [float(param.low), float(param.high)]


def active(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the parameters whose `when:` condition does not hold."""
    out = dict(values)
    for name, param in space.parameters.items():
        if param.when is not None and not param.when.holds(out):
            out.pop(name, None)
    return out


def variations(space: SearchSpace, best: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(factor, level, values) for the best point ("best", None) and each one-factor change."""
    best = active(space, {k: v for k, v in best.items() if v is not None})
    out: list[tuple[str, Any, dict[str, Any]]] = [("best", None, best)]
    for name, param in space.parameters.items():
        if name not in best:
            continue  # inactive at the best point: varying it changes nothing
        for level in _levels(param):
            if level != best[name]:
                out.append((name, level, active(space, {**best, name: level})))
    return out


def confirmation_configs(record: StudyRecord, best: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    """Every trial config of the confirmation: variations and baselines, each with every seed."""
    out = []
    for factor, level, values in variations(record.space, best):
        out += reruns.configs(record, values, seeds, CONFIRM, "confirm", **{VARIANT: factor, LEVEL: level})
    for name, overrides in record.space.baselines.items():
        out += reruns.configs(record, overrides, seeds, CONFIRM, f"confirm-baseline-{name}", searched=False,
                              **{VARIANT: f"baseline-{name}", LEVEL: None})
    return out


def run_confirmation(record: StudyRecord, n_seeds: int) -> pd.DataFrame:
    """Runs (or continues) the confirmation of a finished study; returns its table. Seeds vary
    the training only: the validation split keeps the study's `split_seed`."""
    from study import summary
    from study.record import finished
    from study.results import CONFIRM_FILE, save_table
    from study.session import StudySession

    done = summary.load(record.folder)
    if not finished(record, done):
        raise StudyInputError(f"study {record.name!r} has not finished (no summary of its latest part): resume it "
                              "first")
    assert done is not None
    best = done["best"]
    if best is None:
        raise StudyInputError(f"study {record.name!r} has no sampled trial to confirm")
    values = {k: best.get(k) for k in record.space.parameters}
    configs = confirmation_configs(record, values, reruns.seeds(record, n_seeds))
    print(f"confirmation of {best['name']}: {len(configs)} runs ({n_seeds} seed(s) each), "
          f"{record.max_epochs} epochs, no early stopping", flush=True)
    with StudySession(record, resume=True) as session:
        try:
            table, _ = reruns.run(record, f"{record.name}-confirm", record.confirm_path, configs, test=True)
        finally:
            session.settle(status="FINISHED")
    table.insert(0, "study", record.name)
    save_table(table, record.folder / CONFIRM_FILE)
    return table
