"""The study's queue of MLflow calls: one background thread that sends them in order, merges
consecutive metrics of a run into `log_batch` calls, and waits out a server that is down or hung
by retrying the same call. `_RunBook` is its view of the trials' child runs."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from study.keys import ERRORED, KIND, NAME, PARAMS, SEARCH
from study.tracking.client import MAX_BATCH, PARENT_TAG, Tracker, _params, trial_params

log = logging.getLogger(__name__)


def unreachable(err: BaseException) -> bool:
    """Whether an MLflow call failed because the tracking server could not be reached or did
    not answer (worth retrying later), rather than because the call itself was wrong."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(err, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(err, MlflowException):
        text = str(err)
        return ("failed with exception" in text or "Max retries exceeded" in text or "timed out" in text.lower()
                or err.get_http_status_code() in (502, 503, 504))
    return False


@dataclass
class _Metrics:
    """One epoch of one trial (merged with its neighbours into one log_batch)."""

    trial: dict[str, Any]
    step: int
    metrics: list[Any]
    node: str


Operation = Callable[[], None]


class MlflowQueue:
    """A bounded, ordered queue of MLflow calls, sent by one background thread.

    `put` never blocks: when the queue is full (a very long outage), the call is dropped and
    counted, and `sync` sends its content later from Tune's results. A call that fails because
    the server is unreachable or does not answer is retried, in place, until it goes through;
    any other failure is logged and the call dropped (the study goes on whatever MLflow says).
    """

    def __init__(self, tracker: Tracker, capacity: int = 100_000, retry_s: float = 2.0, fresh: bool = False) -> None:
        self.tracker = tracker
        self.capacity = capacity
        self.retry_s = retry_s
        self.dropped = 0
        self.outage_since: float | None = None
        self.runs = _RunBook(tracker, fresh)
        self._items: collections.deque[Operation | _Metrics] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="mlflow-queue", daemon=True)
        self._thread.start()

    def put(self, item: Operation | _Metrics) -> None:
        with self._cond:
            if len(self._items) >= self.capacity:
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("MLflow queue full (%d calls): further calls are dropped until it drains; the "
                                "study's end sends what MLflow lacks from Tune's results", self.capacity)
                return
            self._items.append(item)
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._items) + int(self._busy)

    def drain(self, timeout: float) -> bool:
        """Waits until every call was sent (True) or `timeout` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self, timeout: float) -> bool:
        """Drains for up to `timeout` seconds, then stops the thread; True if all was sent."""
        done = self.drain(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return done

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = list(self._items)
                self._items.clear()
                self._busy = True
            try:
                for group in _merged(batch):
                    self._send(group)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, item: Operation | list[_Metrics]) -> None:
        while True:
            try:
                if isinstance(item, list):
                    self.runs.log_epochs(item)
                else:
                    item()
                break
            except Exception as err:  # classified: the study goes on whatever MLflow says
                if not unreachable(err):
                    log.error("MLflow call dropped: %s", str(err).splitlines()[0][:300] if str(err) else repr(err))
                    break
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                    log.warning("MLflow at %s is unreachable or does not answer; its calls wait, in order (%s)",
                                self.tracker.tracking_uri, str(err).splitlines()[0][:200])
                with self._cond:
                    if self._closed:
                        return
                    self._cond.wait(self.retry_s)
        if self.outage_since is not None:
            log.warning("MLflow answers again after %.0f s; the calls it missed were sent",
                        time.monotonic() - self.outage_since)
            self.outage_since = None


def _merged(batch: list[Operation | _Metrics]) -> list[Operation | list[_Metrics]]:
    """The batch in order, with each run of consecutive epochs merged into one group."""
    out: list[Operation | list[_Metrics]] = []
    for item in batch:
        if isinstance(item, _Metrics) and out and isinstance(out[-1], list):
            out[-1].append(item)
        else:
            out.append([item] if isinstance(item, _Metrics) else item)
    return out


class _RunBook:
    """The queue thread's view of the child runs: trial id -> run id, last step, nodes."""

    def __init__(self, tracker: Tracker, fresh: bool = False) -> None:
        self.tracker = tracker
        self.fresh = fresh  # a study this process started: no earlier run to look for
        self.runs: dict[str, str] = {}
        self.last_step: dict[str, int] = {}
        self.nodes: dict[str, list[str]] = {}
        self.confirmed: dict[str, set[int]] = {}  # trial id -> epochs MLflow took from this book

    def run_id(self, trial: dict[str, Any], existing: Any = None, reopen: bool = True) -> str:
        """The trial's run: known, else found again (and reopened, for a trial that runs on),
        else created."""
        trial_id = trial["trial_id"]
        if trial_id in self.runs:
            return self.runs[trial_id]
        client = self.tracker.client
        if existing is None and not self.fresh:
            existing = self.tracker.find_child(trial_id)
        if existing is not None:  # a resumed study or a retried trial: continue the same run
            run_id = existing.info.run_id
            if reopen:
                client.update_run(run_id, status="RUNNING")
            history = client.get_metric_history(run_id, "epoch")
            self.last_step[trial_id] = max((int(m.value) for m in history), default=0)
            nodes = existing.data.tags.get("nodes", "")
            self.nodes[trial_id] = nodes.split(",") if nodes else []
        else:
            config = trial["config"]
            tags = {PARENT_TAG: self.tracker.parent_run_id, "tune_trial_id": trial_id,
                    "kind": str(config.get(KIND, SEARCH)), "outcome": "running"}
            run = client.create_run(self.tracker.experiment_id, run_name=str(config.get(NAME, trial_id)), tags=tags)
            run_id = run.info.run_id
            searched = {f"searched.{k}": v for k, v in config.get(PARAMS, {}).items() if v is not None}
            client.log_batch(run_id, params=_params({**trial_params(config), **searched}))
            self.last_step[trial_id] = 0
        self.runs[trial_id] = run_id
        return run_id

    def ensure(self, trial: dict[str, Any]) -> None:
        """Creates (or finds again) the trial's run."""
        self.run_id(trial)

    def log_epochs(self, group: list[_Metrics]) -> None:
        """Sends a group of epochs, one log_batch per run (split at MLflow's batch limit)."""
        by_run: dict[str, list[Any]] = {}
        steps: dict[str, tuple[str, list[int]]] = {}
        tags: dict[str, list[Any]] = {}
        for item in group:
            trial_id = item.trial["trial_id"]
            run_id = self.run_id(item.trial)
            if item.step <= self.last_step.get(trial_id, 0):
                continue  # already logged before a resume
            by_run.setdefault(run_id, []).extend(item.metrics)
            steps.setdefault(run_id, (trial_id, []))[1].append(item.step)
            self.last_step[trial_id] = item.step
            new_node = self._node_tags(trial_id, item.node)
            if new_node:  # the node tags ride with the epoch's batch (the latest node, all nodes)
                tags[run_id] = new_node
        for run_id, metrics in by_run.items():
            for i in range(0, len(metrics), MAX_BATCH):
                self.tracker.client.log_batch(run_id, metrics=metrics[i:i + MAX_BATCH],
                                              tags=tags.pop(run_id, []) if i == 0 else [])
            trial_id, sent = steps[run_id]
            self.confirmed.setdefault(trial_id, set()).update(sent)

    def _node_tags(self, trial_id: str, node: str) -> list[Any]:
        """The node tags of a node the trial had not run on (a retried trial may move), else none."""
        from mlflow.entities import RunTag

        nodes = self.nodes.setdefault(trial_id, [])
        if not node or node in nodes:
            return []
        nodes.append(node)
        return [RunTag("node_ip", node), RunTag("nodes", ",".join(nodes))]

    def node(self, trial: dict[str, Any], run_id: str, node: str) -> None:
        tags = self._node_tags(trial["trial_id"], node)
        if tags:
            self.tracker.client.log_batch(run_id, tags=tags)

    def end(self, trial: dict[str, Any], how: str, error: str = "") -> None:
        run_id = self.run_id(trial)
        self.tracker.client.set_tag(run_id, "outcome", how)
        if error:
            self.tracker.client.set_tag(run_id, "error", error)
        self.tracker.client.set_terminated(run_id, status="FAILED" if how == ERRORED else "FINISHED")


def snapshot(trial: Any) -> dict[str, Any]:
    """What the queue needs of a trial, copied now (Tune keeps changing the Trial object)."""
    return {"trial_id": trial.trial_id, "config": dict(trial.config)}
