"""A study session: one run of a study in this process. It owns what the run knows that the
record does not (the trials allowed at once, the epochs the saved trials had reached, the MLflow
queue); it starts Ray and tracking on entry, and settles and clears them on exit.

Tune pickles the searcher, the epoch budget's stopper and the MLflow callback into its
experiment and unpickles them on `--resume`, without this process's state: they find it through
`active(study)`, the innermost session this process runs for that study (as MLflow's
`active_run()`). A session that has exited is found by nothing.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

from study import execution
from study.record import StudyRecord
from study.tracking.parent import settle, start
from study.tracking.queue import MlflowQueue

_ACTIVE: list[StudySession] = []  # the sessions this process runs, innermost last
_RESOURCES: Any = object()  # concurrency: as the record's resources allow


def mlflow_wait_s() -> float:
    """How long the end of a study waits for MLflow to take the calls still queued
    (RRA_MLFLOW_WAIT_S, default 60): a hung server does not hold the study longer; what is left
    is sent by the next resume or report."""
    return float(os.environ.get("RRA_MLFLOW_WAIT_S", "60"))


def active(study: str) -> StudySession | None:
    """The innermost session this process runs for `study`, if any."""
    return next((s for s in reversed(_ACTIVE) if s.record.name == study), None)


class StudySession:
    """One run of a study (`with StudySession(record) as session:`).

    With `services` (the command line, the confirmation), entry opens the study's MLflow queue
    (the parent run first) and starts Ray unless this process has it; exit settles MLflow (after
    an error: the parent run KILLED, the trials' runs made true to `analysis`, the unfinished ones
    interrupted) and stops the Ray it started. Without (a simulated study, a benchmark driving a
    searcher), it only holds the state.

    Attributes:
        concurrency: trials at once as this run's flags say (`--concurrency` may change on
            `--resume`; a restored Tuner keeps its start's TuneConfig): the searcher's limit.
        reached: trial id -> epochs its saved trial had reached, for the epoch budget.
        queue: the study's MLflow queue (None without services).
        analysis: Tune's saved experiment once the search has run, for the MLflow sync at exit.
    """

    def __init__(self, record: StudyRecord, resume: bool = False, services: bool = True,
                 concurrency: int | None = _RESOURCES, wait_s: float | None = None, extending: bool = False) -> None:
        self.record = record
        self.resume = resume
        self.extending = extending  # the run starts an extension of a finished study (--extend)
        self.services = services
        self.concurrency: int | None = execution.concurrency(record.resources) if concurrency is _RESOURCES \
            else concurrency
        self.reached: dict[str, int] = {}
        self.queue: MlflowQueue | None = None
        self.analysis: Any = None
        self.wait_s = mlflow_wait_s() if wait_s is None else wait_s
        self.healthy = True  # every queued MLflow call was sent
        self._ray = False
        self._settled = False

    def __enter__(self) -> StudySession:
        _ACTIVE.append(self)
        if self.services:
            try:
                execution.set_ray_env()
                self.queue = start(self.record, resume=self.resume, extending=self.extending)
                self._ray = execution.init_ray(self.record.resources)  # a caller's own Ray is left running
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def settle(self, analysis: Any = None, interrupted: bool = False, status: str | None = None) -> bool:
        """Ends the run's tracking, once: `status` (if given) ends the parent run, `analysis`
        (if given) is synced, the queue is drained (up to `wait_s`) and closed, and the record is
        saved with its MLflow ids. Returns whether every queued call was sent."""
        queue = self.queue
        if queue is None or self._settled:
            return self.healthy
        self._settled = True
        if status is not None:
            queue.put(lambda: queue.tracker.finish(status))
        self.record, self.healthy = settle(self.record, queue, analysis, interrupted, self.wait_s)
        self.record.save()
        return self.healthy

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            if err is not None:
                self.settle(self.analysis, interrupted=True, status="KILLED")
            else:
                self.settle(self.analysis)
        finally:
            if self._ray:
                import ray

                ray.shutdown()
                self._ray = False
            if self in _ACTIVE:
                _ACTIVE.remove(self)
