"""MLflow tracking helpers on a real (SQLite) MLflow store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException

from study.tracking import PARENT_TAG, Tracker, backfill, unreachable


def test_backfill_sends_the_epochs_a_run_lacks_once(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", (tmp_path / "art").as_uri())
    tracker.start({}, {}, {})
    run = tracker.client.create_run(tracker.experiment_id, tags={PARENT_TAG: tracker.parent_run_id,
                                                                 "tune_trial_id": "t1"})
    for epoch in (1, 2, 5):  # epochs 3 and 4 never reached MLflow
        tracker.client.log_metric(run.info.run_id, "epoch", epoch, step=epoch)
        tracker.client.log_metric(run.info.run_id, "val_acc", epoch / 10, step=epoch)
    frame = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "val_acc": [0.1, 0.2, 0.3, 0.4, 0.5],
                          "timestamp": [1_700_000_000 + e for e in range(5)], "trial_id": ["t1"] * 5})
    assert backfill(tracker, {"t1": frame, "unknown": frame}) == 2
    history = {int(m.step): m.value for m in tracker.client.get_metric_history(run.info.run_id, "val_acc")}
    assert history == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4, 5: 0.5}
    assert "trial_id" not in tracker.client.get_run(run.info.run_id).data.metrics  # Tune's bookkeeping stays out
    assert backfill(tracker, {"t1": frame}) == 0  # nothing twice


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (requests.ConnectionError("refused"), True),
        (MlflowException("API request to http://h/api failed with exception HTTPConnectionPool"), True),
        (MlflowException("RESOURCE_DOES_NOT_EXIST: run not found"), False),
        (ValueError("bad value"), False),
    ],
)
def test_only_an_unreachable_server_is_worth_retrying(error: Exception, retry: bool) -> None:
    assert unreachable(error) is retry
