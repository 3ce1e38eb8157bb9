"""MLflow tracking on a real (SQLite) MLflow store, and the queue that keeps Tune from ever
waiting on MLflow."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException

from study.tracking import PARENT_TAG, MlflowQueue, Tracker, sync, unreachable


def _trial(trial_id: str, status: str, epoch: int) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, status=status, last_result={"epoch": epoch},
                           config={"_kind": "search", "_name": f"run-{trial_id}", "_params": {}})


def test_sync_makes_mlflow_agree_with_tunes_results_and_sends_nothing_twice(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", (tmp_path / "art").as_uri())
    tracker.start({}, {}, {})
    run = tracker.client.create_run(tracker.experiment_id, tags={PARENT_TAG: tracker.parent_run_id,
                                                                 "tune_trial_id": "t1"})
    for epoch in (1, 2, 5):  # epochs 3 and 4 never reached MLflow
        tracker.client.log_metric(run.info.run_id, "epoch", epoch, step=epoch)
        tracker.client.log_metric(run.info.run_id, "val_acc", epoch / 10, step=epoch)
    frame = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "val_acc": [0.1, 0.2, 0.3, 0.4, 0.5],
                          "timestamp": [1_700_000_000 + e for e in range(5)], "trial_id": ["t1"] * 5,
                          "node_ip": ["127.0.0.1"] * 5})
    # t2's run was never created (MLflow was down when it started): sync creates it
    frames = {"t1": frame, "t2": frame.assign(trial_id="t2").head(2)}
    trials = [_trial("t1", "TERMINATED", 5), _trial("t2", "TERMINATED", 2)]
    assert sync(tracker, trials, frames, max_epochs=5, interrupted=False) == 2 + 2
    history = {int(m.step): m.value for m in tracker.client.get_metric_history(run.info.run_id, "val_acc")}
    assert history == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4, 5: 0.5}
    children = {r.data.tags["tune_trial_id"]: r for r in tracker.child_runs()}
    assert set(children) == {"t1", "t2"}
    assert children["t1"].data.tags["outcome"] == "completed" and children["t1"].info.status == "FINISHED"
    assert children["t2"].data.tags["outcome"] == "stopped_early" and children["t2"].info.run_name == "run-t2"
    assert children["t2"].data.tags["node_ip"] == "127.0.0.1"
    assert sync(tracker, trials, frames, max_epochs=5, interrupted=False) == 0  # nothing twice


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (requests.ConnectionError("refused"), True),
        (requests.Timeout("read timed out"), True),
        (MlflowException("API request to http://h/api failed with exception HTTPConnectionPool"), True),
        (MlflowException("RESOURCE_DOES_NOT_EXIST: run not found"), False),
        (ValueError("bad value"), False),
    ],
)
def test_only_an_unreachable_server_is_worth_retrying(error: Exception, retry: bool) -> None:
    assert unreachable(error) is retry


def test_sync_reads_back_only_the_epochs_the_queue_did_not_see_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from study.tracking import TrialRunsCallback

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", (tmp_path / "art").as_uri())
    tracker.start({}, {}, {})
    queue = MlflowQueue(tracker, fresh=True)
    callback = TrialRunsCallback("sync-book", max_epochs=3, queue=queue)
    trial = _trial("t1", "RUNNING", 0)
    callback.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc": epoch / 10, "node_ip": "127.0.0.1"})
    assert queue.drain(30)
    reads: list[str] = []
    original = tracker.client.get_metric_history
    monkeypatch.setattr(tracker.client, "get_metric_history",
                        lambda run_id, key: reads.append(run_id) or original(run_id, key))

    def frame(epochs: int) -> pd.DataFrame:
        return pd.DataFrame({"epoch": list(range(1, epochs + 1)), "val_acc": [e / 10 for e in range(1, epochs + 1)],
                             "trial_id": ["t1"] * epochs, "node_ip": ["127.0.0.1"] * epochs})

    # every epoch went through the queue: nothing is read back, nothing sent again
    assert sync(tracker, [_trial("t1", "TERMINATED", 2)], {"t1": frame(2)}, 2, False, book=queue.runs) == 0
    assert reads == []
    # an epoch Tune has that the queue never sent: the run's history is read, the epoch sent
    assert sync(tracker, [_trial("t1", "TERMINATED", 3)], {"t1": frame(3)}, 3, False, book=queue.runs) == 1
    assert len(reads) == 1
    run_id = queue.runs.runs["t1"]
    assert sorted(int(m.step) for m in original(run_id, "val_acc")) == [1, 2, 3]
    queue.close(5)
