"""The study's one results model: a tidy table with one row per trial per epoch, and the
per-trial rows that the summary, the ranking and the report all read from it.

Read from Tune's saved experiment (the record the trials wrote, local or remote storage), each
trial's history as its final attempt left it (study.history), with its searched values,
resolved TrialConfig (``config.`` columns), how it ended, and the test accuracy the study
measured (from summary.json). The summary's ranking is the study's ranking
(`StudyResults.ranking`); `study.tracking.disagreements` checks the table against the study's
MLflow runs, so a report says whether the two records agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from study import summary as summaries
from study.errors import StudyInputError
from study.history import final_attempt
from study.keys import (
    COST_METRICS,
    EPOCH,
    FINALIST_OF,
    KIND,
    LEVEL,
    NAME,
    OPTUNA_NUMBER,
    PARAMS,
    SEARCH,
    TEST_METRICS,
    VARIANT,
    outcome,
)
from study.ranking import ranking
from study.record import StudyRecord
from study.spaces import SearchSpace

# Per-epoch numbers kept from a trial's results (Tune's own bookkeeping is dropped).
EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_acc", "val_acc_global", "val_acc_local", "val_loss",
                 "lr", "best_val_acc", "epoch_seconds", "val_seconds", "images_per_second", "time_total_s",
                 "node_ip")
CONFIRM_FILE = "confirm.parquet"
FINALISTS_FILE = "finalists.parquet"  # the noise-aware ending's re-runs (study.phases.finalists)


@dataclass
class StudyResults:
    """What a report reads: the study's record, its summary and its results as one table."""

    record: StudyRecord
    summary: dict[str, Any]
    table: pd.DataFrame
    confirm: pd.DataFrame | None = None
    analysis: Any = None  # Tune's ExperimentAnalysis the table was read from

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def space(self) -> SearchSpace:
        return self.record.space

    @property
    def metric(self) -> str:
        return self.record.metric

    @property
    def folder(self) -> Path:
        return self.record.folder

    @property
    def ranking(self) -> list[str]:
        """The study's ranking (trial ids, best first): the summary's, written when the study
        finished; for a study that has not finished, the same ranking of the table's trials."""
        if "ranking" in self.summary:
            return list(self.summary["ranking"])
        return table_ranking(self.table, self.space, self.record.max_epochs)


def table_ranking(table: pd.DataFrame, space: SearchSpace, max_epochs: int) -> list[str]:
    """The study's ranking (study.ranking) of a table's trials: trial ids, best first."""
    rows = trial_rows(table, space.study.metric, list(space.parameters))
    return ranking(rows, space.study.metric, space.study.mode, max_epochs)


def trials(table: pd.DataFrame) -> pd.DataFrame:
    """One row per trial (its last epoch), with the trial-level columns."""
    ordered = table.sort_values(["trial_id", "epoch"], na_position="first")
    return ordered.groupby("trial_id", sort=False).tail(1).set_index("trial_id")


def trial_rows(table: pd.DataFrame, metric: str, parameters: list[str]) -> list[dict[str, Any]]:
    """One row per trial (its last epoch) as the summary, the ranking and the report read it:
    trial_id, name, kind, outcome, epochs, the metric at that epoch, the searched values and
    the test metrics the table has."""
    if table.empty:
        return []
    last = trials(table).reindex(list(dict.fromkeys(table["trial_id"]))).reset_index()
    rows = []
    for row in last.to_dict("records"):
        out = {"trial_id": row["trial_id"], "name": row["name"], "kind": row["kind"], "outcome": row["outcome"],
               "epochs": int(row["epochs_run"]), metric: _cell(row.get(metric)),
               **{p: _cell(row.get(p)) for p in parameters}}
        out.update({k: _cell(row[k]) for k in (*TEST_METRICS, *COST_METRICS) if _cell(row.get(k)) is not None})
        rows.append(out)
    return rows


def _cell(value: Any) -> Any:
    """A table cell as plain Python (NaN and NA as None, numpy scalars as numbers)."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def trials_table(analysis: Any, space: SearchSpace, tested: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """One row per trial per epoch from Tune's saved experiment (an ExperimentAnalysis)."""
    from study.tracking.client import trial_params

    frames = analysis.trial_dataframes
    tested = tested or {}
    parts = []
    for trial in analysis.trials:
        config = trial.config
        epochs = _epochs(frames.get(trial.trial_id))
        last = int(epochs[EPOCH].max()) if len(epochs) else 0
        head: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "name": str(config.get(NAME, trial.trial_id)),
            "kind": str(config.get(KIND, SEARCH)),
            "status": trial.status,
            "outcome": outcome({EPOCH: last}, space.study.max_epochs, trial.status == "ERROR"),
            "optuna_number": config.get(OPTUNA_NUMBER),
            **{p: config.get(PARAMS, {}).get(p) for p in space.parameters},
            **{f"config.{k}": list(v) if isinstance(v, tuple) else v for k, v in trial_params(config).items()},
            **{k: tested.get(trial.trial_id, {}).get(k) for k in TEST_METRICS},
            **({"variant": config[VARIANT], "level": config.get(LEVEL)} if VARIANT in config else {}),
            **({"finalist_of": config[FINALIST_OF]} if FINALIST_OF in config else {}),
        }
        head["epochs_run"] = last
        head.update(_cost(frames.get(trial.trial_id)))
        rows = epochs if len(epochs) else pd.DataFrame({"epoch": [pd.NA]})
        parts.append(rows.assign(**{k: [v] * len(rows) for k, v in head.items()}))
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    first = ["trial_id", "name", "kind", "outcome", "status", "epochs_run", *space.parameters, "epoch"]
    return table[first + [c for c in table.columns if c not in first]]


def _cost(frame: pd.DataFrame | None) -> dict[str, Any]:
    """A trial's inference cost, from the result that carried it (its first epoch's)."""
    out: dict[str, Any] = dict.fromkeys(COST_METRICS)
    if frame is None:
        return out
    for key in COST_METRICS:
        if key in frame.columns:
            values = frame[key].dropna()
            out[key] = float(values.iloc[0]) if len(values) else None
    return out


def _epochs(frame: pd.DataFrame | None) -> pd.DataFrame:
    """A trial's per-epoch rows as its final attempt left them (study.history)."""
    history = final_attempt(frame)
    return history[[c for c in EPOCH_COLUMNS if c in history.columns]]


def reports(tune_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every result each trial reported, in the order reported, keyed by trial id: what the
    trials spent (a retried trial's void epochs included; `final_attempt` is its history).
    Read from the result files of Tune's experiment at a local `tune_path` (the benchmarks'
    timelines and utilisation)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(tune_path).glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            out.setdefault(str(rows[0].get("trial_id", path.parent.name)), []).extend(rows)
    return out


def load_results(record: StudyRecord) -> StudyResults:
    """Reads a study's results (Tune's experiments must be reachable)."""
    from study import experiments

    summary = summaries.load(record.folder) or {}
    tested = {r["trial_id"]: {k: r[k] for k in TEST_METRICS if k in r} for r in summary.get("trials", [])}
    from study.execution import trials_without_results

    try:
        with trials_without_results():  # trials the budget stopped before a result: rows without epochs
            analysis = experiments.read(record.tune_paths)
        table = trials_table(analysis, record.space, tested)
    except (ValueError, FileNotFoundError) as err:
        raise StudyInputError(f"cannot read Tune's results at {', '.join(record.tune_paths)}: {err}") from None
    if table.empty:
        raise StudyInputError(f"study {record.name!r} has no trials yet at {record.tune_path}")
    table.insert(0, "study", record.name)
    confirm = None
    if (record.folder / CONFIRM_FILE).is_file():
        confirm = pd.read_parquet(record.folder / CONFIRM_FILE)
    return StudyResults(record, summary, table, confirm, analysis)


def save_table(table: pd.DataFrame, path: Path) -> Path:
    """Writes the table as Parquet (pyarrow); a column of mixed types becomes text (dicts as JSON)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table.copy()
    for column in table.columns:
        if table[column].dtype == object:
            kinds = {type(v) for v in table[column] if v is not None and v is not pd.NA}
            if len(kinds) > 1 or kinds & {dict}:
                table[column] = [None if v is None or v is pd.NA else json.dumps(v) if isinstance(v, dict) else str(v)
                                 for v in table[column]]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path)
    return path
