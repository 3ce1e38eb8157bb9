"""The one results model: a retried trial's history, and the summary, the report and MLflow's
sync reading the same trials from it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from study import summary
from study.cli import resolve
from study.history import final_attempt
from study.keys import KIND, NAME, PARAMS, SEARCH
from study.options import parse_options
from study.reporting.analysis import best_configs
from study.results import StudyResults, trial_rows, trials_table

MAX_T = 6


def _frame(epochs: list[int], values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"epoch": epochs, "val_acc": values, "training_iteration": range(1, len(epochs) + 1)})


def test_a_retry_replaces_the_epochs_it_ran_again() -> None:
    # attempt 1 reported 1-6 and died; attempt 2 restored epoch 4's checkpoint, re-ran 5 and died
    frame = _frame([1, 2, 3, 4, 5, 6, 5], [0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.45])
    history = final_attempt(frame)
    assert list(history["epoch"]) == [1, 2, 3, 4, 5]
    assert list(history["val_acc"]) == [0.1, 0.2, 0.3, 0.4, 0.45]  # the re-run's value, not the void 0.5 or 0.9
    # a retry that ran past where the first attempt had reached keeps every epoch once
    assert list(final_attempt(_frame([1, 2, 3, 2, 3, 4], [0.1] * 6))["epoch"]) == [1, 2, 3, 4]
    assert final_attempt(None).empty and final_attempt(pd.DataFrame()).empty


def _trial(trial_id: str, t: int, status: str, last_epoch: int) -> Any:
    config = {KIND: SEARCH, NAME: f"T{t}", PARAMS: {"recursion_steps": t, "crop_scale": 0.5,
                                                   "attention_temperature": 1.0}}
    return SimpleNamespace(trial_id=trial_id, config=config, status=status,
                           last_result={"epoch": last_epoch, "training_iteration": last_epoch})


def _analysis() -> Any:
    """Three trials: a completed one; a retried one (see above) that errored at epoch 5 after an
    earlier attempt reached max_t with 0.9; one stopped early at epoch 2."""
    trials = [_trial("a", 2, "TERMINATED", MAX_T), _trial("b", 4, "ERROR", 5), _trial("c", 6, "TERMINATED", 2)]
    frames = {"a": _frame(list(range(1, 7)), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
              "b": _frame([1, 2, 3, 4, 5, 6, 5], [0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.45]),
              "c": _frame([1, 2], [0.2, 0.3])}
    return SimpleNamespace(trials=trials, trial_dataframes=frames)


def test_the_summary_and_the_report_read_one_model(tmp_path: Path) -> None:
    record = resolve(parse_options(["--space", "ablation", "--name", "s", "--out", str(tmp_path), "--max-epochs",
                                    str(MAX_T), "--no-baselines"]))
    space = record.space
    table = trials_table(_analysis(), space)
    rows = trial_rows(table, "val_acc", list(space.parameters))
    result = summary.build(record, rows, {"a": {"test_acc": 0.55}})
    by_id = {r["trial_id"]: r for r in result["trials"]}
    # the retried trial: Tune's last result (epoch 5), not its void first attempt's max_t and 0.9
    assert (by_id["b"]["epochs"], by_id["b"]["val_acc"], by_id["b"]["outcome"]) == (5, 0.45, "errored")
    assert result["ranking"] == ["a", "b", "c"] and result["best"]["test_acc"] == 0.55
    # the report reads the summary's ranking and the same rows
    tested = {"a": {"test_acc": 0.55}}
    results = StudyResults(record, result, trials_table(_analysis(), space, tested))
    assert results.ranking == result["ranking"]
    best = best_configs(results.table, space, results.ranking)
    assert list(best["trial_id"]) == ["a", "b", "c"]
    report_b = best.set_index("trial_id").loc["b"]
    assert (report_b["epochs_run"], report_b["val_acc"], report_b["outcome"]) == (5, 0.45, "errored")
    assert best.iloc[0]["test_acc"] == pytest.approx(0.55)
    # a report without a summary (a study that has not finished) ranks the table the same way
    assert StudyResults(record, {}, results.table).ranking == result["ranking"]


def test_the_report_follows_the_summarys_ranking_not_its_own(tmp_path: Path) -> None:
    record = resolve(parse_options(["--space", "ablation", "--name", "s", "--out", str(tmp_path), "--max-epochs",
                                    str(MAX_T), "--no-baselines"]))
    table = trials_table(_analysis(), record.space)
    results = StudyResults(record, {"ranking": ["c", "a", "b"]}, table)
    assert list(best_configs(table, record.space, results.ranking)["trial_id"]) == ["c", "a", "b"]


def test_mlflow_sync_settles_a_retried_trial_by_its_final_attempt() -> None:
    from study import tracking

    calls: list[tuple[str, ...]] = []
    client = SimpleNamespace(
        get_metric_history=lambda run_id, key: [],
        log_batch=lambda run_id, metrics: calls.append(("batch", run_id, *sorted({str(m.step) for m in metrics}))),
        set_tag=lambda run_id, key, value: calls.append(("tag", run_id, key, value)),
        set_terminated=lambda run_id, status: calls.append(("end", run_id, status)))
    tracker = SimpleNamespace(client=client, child_runs=lambda: [])
    book = SimpleNamespace(run_id=lambda trial, existing, reopen: f"run-{trial['trial_id']}", confirmed={},
                           node=lambda *a: None)
    analysis = _analysis()
    tracking.sync(tracker, analysis.trials, analysis.trial_dataframes, MAX_T, False, book=book)  # type: ignore[arg-type]
    assert ("batch", "run-b", "1", "2", "3", "4", "5") in calls  # epoch 6 of the void attempt is not sent
    assert ("tag", "run-b", "outcome", "errored") in calls and ("tag", "run-a", "outcome", "completed") in calls


def test_trial_rows_give_plain_values() -> None:
    table = pd.DataFrame({"trial_id": ["x", "x"], "name": ["x", "x"], "kind": ["search"] * 2,
                          "outcome": ["stopped_early"] * 2, "epochs_run": [2, 2], "epoch": [1, 2],
                          "val_acc": [0.1, float("nan")], "crop_scale": [None, None], "test_acc": [None, None]})
    (row,) = trial_rows(table, "val_acc", ["crop_scale"])
    assert row == {"trial_id": "x", "name": "x", "kind": "search", "outcome": "stopped_early", "epochs": 2,
                   "val_acc": None, "crop_scale": None}


def test_reports_are_every_result_in_the_order_reported(tmp_path: Path) -> None:
    import json

    from study.results import reports

    for trial, epochs in (("a", [1, 2, 3, 2, 3]), ("b", [1])):  # a: retried from its epoch-1 checkpoint
        folder = tmp_path / f"T_{trial}"
        folder.mkdir()
        lines = [json.dumps({"trial_id": trial, "epoch": e, "val_acc": 0.1 * i}) for i, e in enumerate(epochs)]
        (folder / "result.json").write_text("\n".join(lines) + "\n")
    found = reports(tmp_path)
    assert sorted(found) == ["a", "b"]
    assert [r["epoch"] for r in found["a"]] == [1, 2, 3, 2, 3]  # what it spent, void epochs included
    assert list(final_attempt(pd.DataFrame(found["a"]))["epoch"]) == [1, 2, 3]
