"""Tune's side: a callback that puts each trial's start, epochs and end in the study's queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback

from study.keys import ERRORED, outcome
from study.tracking.client import _metrics
from study.tracking.queue import MlflowQueue, _Metrics, snapshot


class TrialRunsCallback(Callback):
    """Tune callback: one nested MLflow run per trial, per-epoch metrics, how it ended.

    Each event only puts a call in the study's `MlflowQueue`; Tune's loop never waits on MLflow.
    """

    def __init__(self, study: str, max_epochs: int, queue: MlflowQueue | None = None) -> None:
        self.study = study
        self.max_epochs = max_epochs
        self._queue = queue

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_queue": None}

    @property
    def queue(self) -> MlflowQueue:
        """The queue it was given, else that of the study's session in this process (a callback
        Tune restores on --resume is unpickled without it)."""
        if self._queue is not None:
            return self._queue
        from study.session import active

        session = active(self.study)
        if session is None or session.queue is None:
            raise RuntimeError(f"no session of study {self.study!r} with an MLflow queue runs in this process")
        return session.queue

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        snap = snapshot(trial)
        self.queue.put(lambda: self.queue.runs.ensure(snap))

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self.queue.put(_Metrics(snapshot(trial), step, _metrics(result, step), str(result.get("node_ip", ""))))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        snap, how = snapshot(trial), outcome(trial.last_result, self.max_epochs, False)
        self.queue.put(lambda: self.queue.runs.end(snap, how))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        snap, error = snapshot(trial), _last_error_line(trial)
        self.queue.put(lambda: self.queue.runs.end(snap, ERRORED, error))

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        snap, retries = snapshot(trial), str(trial.num_failures)
        self.queue.put(lambda: self.queue.tracker.client.set_tag(self.queue.runs.run_id(snap), "retries", retries))


def _last_error_line(trial: Any) -> str:
    """The exception line of a trial's error (Tune keeps the traceback in its error file)."""
    text = str(getattr(trial, "error_message", "") or "")
    path = getattr(trial, "error_file", None)
    if not text and path:
        try:
            text = Path(path).read_text()
        except OSError:
            return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found = [line for line in lines if "Error" in line.split(":")[0]]
    return (found[-1] if found else lines[-1] if lines else "")[:500]
