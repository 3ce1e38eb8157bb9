"""MLflow tracking of a study: one experiment, a parent run, one nested child run per trial.

The parent run holds the space, dataset, settings, git revision and library versions, and at
the end the best config with its validation and test accuracy. Each child run is named from
its searched values (T4-s0.35-tau0.7), holds the resolved TrialConfig as params and per-epoch
metrics, and a tag `outcome` (completed / stopped_early / errored). Runs are found again by
their `tune_trial_id` tag, so a resumed study or a retried trial keeps exactly one run per
trial.

Every MLflow call of a study goes through `MlflowQueue`: one background thread that sends the
calls in order, merges consecutive metrics of a run into `log_batch` calls, and waits out a
server that is down or hung (accepts connections, never answers) by retrying the same call.
Tune's event loop only puts calls in the queue, so it never waits on MLflow. What a queue could
not send before the study ended is sent by `sync`, from Tune's results, the next time the study
(or its report) runs.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ray.tune import Callback

from study.history import final_attempt
from study.keys import ERRORED, INTERRUPTED, KIND, NAME, PARAMS, SEARCH, outcome

log = logging.getLogger(__name__)

# Keys Tune adds to every result; the rest of a result's numbers are the trial's metrics.
_TUNE_KEYS = {
    "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "pid", "hostname",
    "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint",
}
PARENT_TAG = "mlflow.parentRunId"
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def git_revision() -> str:
    """The checkout's commit (with -dirty when it has changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=here,
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return rev or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries a study's numbers depend on."""
    out = {}
    for name in ("torch", "torchvision", "ray", "optuna", "mlflow", "pandas", "pyarrow", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved TrialConfig of a trial config dict (defaults filled in)."""
    from trainables.config import TrialConfig, settings

    return TrialConfig.from_dict(settings(config)).to_dict()


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


# ---------------------------------------------------------------- the study's experiment


class Tracker:
    """The study's MLflow experiment and parent run, and lookups of its child runs.

    Holds only plain values, so Tune can pickle it (inside the callback) and a resumed driver
    reconnects.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None,
                 experiment_id: str | None = None, parent_run_id: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @classmethod
    def of_record(cls, record: Any) -> Tracker:
        """The tracker of a study record (nothing is sent)."""
        s = record.stores
        return cls(s.tracking_uri, record.name, s.artifact_location, record.experiment_id, record.parent_run_id)

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def start(self, tags: dict[str, str], params: dict[str, Any], artifacts: dict[str, str]) -> str:
        """Creates the experiment (if new) and the parent run, unless it exists; returns its id."""
        if self.parent_run_id is not None:
            return self.parent_run_id
        exp = self.client.get_experiment_by_name(self.experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
            self.experiment, artifact_location=self.artifact_location)
        run = self.client.create_run(self.experiment_id, run_name=f"study {self.experiment}", tags=tags)
        self.parent_run_id = run.info.run_id
        self.client.log_batch(self.parent_run_id, params=_params(params))
        with tempfile.TemporaryDirectory() as folder:
            for name, text in artifacts.items():
                (Path(folder) / name).write_text(text)
            self.client.log_artifacts(self.parent_run_id, folder, "study")
        return self.parent_run_id

    def reopen(self) -> None:
        """Continues the parent run after a resume."""
        assert self.parent_run_id is not None
        run = self.client.get_run(self.parent_run_id)
        resumes = int(run.data.tags.get("resumes", "0")) + 1
        self.client.set_tag(self.parent_run_id, "resumes", str(resumes))
        self.client.update_run(self.parent_run_id, status="RUNNING")

    def child_runs(self) -> list[Any]:
        """Every trial run of the study."""
        assert self.experiment_id is not None
        return list(self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'", max_results=10000))

    def find_child(self, trial_id: str) -> Any | None:
        """The child run of a Tune trial, if it has one."""
        assert self.experiment_id is not None
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.tune_trial_id = '{trial_id}'",
            max_results=2)
        return runs[0] if runs else None

    def finish(self, status: str = "FINISHED") -> None:
        """Ends the parent run."""
        if self.parent_run_id:
            self.client.set_terminated(self.parent_run_id, status=status)

    def runs_url(self, rank_metric: str, front: tuple[str, str] | None = None) -> str:
        """The MLflow UI page of this study's trial runs, best first: filtered to the study's
        child runs, ordered by their place in the study's ranking (`rank_metric`, 1 = best; the
        baselines after). With `front` (the tag marking a multi-objective study's front, and
        the cost to order by): its front, cheapest first. A server's own UI; for a local store,
        the `mlflow ui` that the summary says how to start."""
        from urllib.parse import quote

        base = self.tracking_uri.rstrip("/") if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        search = f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'"
        order = f"metrics.`{rank_metric}`"
        if front is not None:
            search += f" and tags.`{front[0]}` = 'true'"
            order = f"metrics.`{front[1]}`"
        query = f"searchFilter={quote(search, safe='')}&orderByKey={quote(order, safe='')}&orderByAsc=true"
        return f"{base}/#/experiments/{self.experiment_id}/runs?{query}"


def _params(values: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)[:6000]) for k, v in values.items()]


def _metrics(result: dict[str, Any], step: int) -> list[Any]:
    """A Tune result's own numbers as MLflow metrics at `step` (Tune's bookkeeping left out)."""
    from mlflow.entities import Metric

    stamp = int(float(result.get("timestamp", 0) or 0) * 1000) or int(time.time() * 1000)
    return [Metric(k, float(v), stamp, step) for k, v in result.items()
            if k not in _TUNE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v))]


# ---------------------------------------------------------------- the queue


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


# ---------------------------------------------------------------- Tune's side


def _snapshot(trial: Any) -> dict[str, Any]:
    """What the queue needs of a trial, copied now (Tune keeps changing the Trial object)."""
    return {"trial_id": trial.trial_id, "config": dict(trial.config)}


# The queue of each study this process runs. A callback Tune restores on --resume is unpickled
# without its queue: it finds it here, by the study's name.
QUEUES: dict[str, MlflowQueue] = {}


class TrialRunsCallback(Callback):
    """Tune callback: one nested MLflow run per trial, per-epoch metrics, how it ended.

    Each event only puts a call in the study's `MlflowQueue`; Tune's loop never waits on MLflow.
    """

    def __init__(self, study: str, max_epochs: int) -> None:
        self.study = study
        self.max_epochs = max_epochs

    @property
    def queue(self) -> MlflowQueue:
        return QUEUES[self.study]

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        snap = _snapshot(trial)
        self.queue.put(lambda: self.queue.runs.ensure(snap))

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self.queue.put(_Metrics(_snapshot(trial), step, _metrics(result, step), str(result.get("node_ip", ""))))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        snap, how = _snapshot(trial), outcome(trial.last_result, self.max_epochs, False)
        self.queue.put(lambda: self.queue.runs.end(snap, how))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        snap, error = _snapshot(trial), _last_error_line(trial)
        self.queue.put(lambda: self.queue.runs.end(snap, ERRORED, error))

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        snap, retries = _snapshot(trial), str(trial.num_failures)
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


# ---------------------------------------------------------------- after Tune: MLflow made true to Tune's record


def sync(tracker: Tracker, trials: list[Any], frames: dict[str, Any], max_epochs: int, interrupted: bool,
         book: _RunBook | None = None) -> int:
    """Makes the child runs agree with Tune's saved experiment: a run for every trial, every
    epoch Tune recorded, each run's outcome and status (none left RUNNING). Returns how many
    epochs were sent that MLflow lacked (e.g. when the driver ended during an outage).

    Args:
        trials: Tune's trials as saved for a resume (a trial Ctrl-C stopped is saved PENDING,
            to be continued, even though Tune reported it complete).
        frames: Tune's per-trial result tables (ExperimentAnalysis.trial_dataframes).
        interrupted: the study stopped before its end; unfinished trials' runs become KILLED
            with outcome "interrupted" until a resume continues them.
        book: the study queue's own book (run in the queue's thread): the runs it knows and
            the epochs MLflow took from it are not read back, so a study that ends with every
            call sent costs no call per trial here.
    """
    book = book or _RunBook(tracker)
    existing = {r.data.tags.get("tune_trial_id"): r for r in tracker.child_runs()}
    sent = 0
    for trial in trials:
        frame = frames.get(trial.trial_id)
        if trial.trial_id not in existing and (frame is None or frame.empty):
            continue  # never started: no run to make
        run_id = book.run_id(_snapshot(trial), existing.get(trial.trial_id), reopen=False)
        history = final_attempt(frame)
        if frame is not None and not history.empty:
            rows = history.to_dict("records")
            logged = book.confirmed.get(trial.trial_id, set())
            if any(int(r["epoch"]) not in logged for r in rows):
                logged = {int(m.step) for m in tracker.client.get_metric_history(run_id, "epoch")}
            missing = [r for r in rows if int(r["epoch"]) not in logged]
            metrics = [m for r in missing for m in _metrics(r, int(r["epoch"]))]
            for i in range(0, len(metrics), MAX_BATCH):
                tracker.client.log_batch(run_id, metrics=metrics[i:i + MAX_BATCH])
            sent += len(missing)
            # every node the trial ran on, those of attempts a retry replaced included
            nodes = [str(n) for n in frame.get("node_ip", []) if isinstance(n, str) and n]
            for node in dict.fromkeys(nodes):
                book.node(_snapshot(trial), run_id, node)
        last = int(history["epoch"].iloc[-1]) if not history.empty else 0
        _settle(tracker, run_id, trial, existing.get(trial.trial_id), outcome({"epoch": last}, max_epochs,
                                                                              trial.status == "ERROR"), interrupted)
    known = {t.trial_id for t in trials}
    for trial_id, run in existing.items():
        if trial_id not in known and run.info.status == "RUNNING":  # a trial Tune never saved
            tracker.client.set_tag(run.info.run_id, "outcome", INTERRUPTED)
            tracker.client.set_terminated(run.info.run_id, status="KILLED")
    return sent


def _settle(tracker: Tracker, run_id: str, trial: Any, run: Any, how: str, interrupted: bool) -> None:
    """Ends a finished trial's run with its outcome `how` (an interrupted one's as KILLED)."""
    status = getattr(trial, "status", None)
    if status in ("TERMINATED", "ERROR"):
        errored = status == "ERROR"
        if run is None or run.data.tags.get("outcome") != how or run.info.status == "RUNNING":
            tracker.client.set_tag(run_id, "outcome", how)
            tracker.client.set_terminated(run_id, status="FAILED" if errored else "FINISHED")
    elif interrupted:
        tracker.client.set_tag(run_id, "outcome", INTERRUPTED)
        tracker.client.set_terminated(run_id, status="KILLED")
