"""MLflow tracking of a study: one experiment, a parent run, one nested child run per trial.

The parent run holds the space, dataset, flags, git revision and library versions, and at the
end the best config with its validation and test accuracy. Each child run is named from its
searched values (T4-s0.35-tau0.7), holds the resolved TrialConfig as params and per-epoch
metrics, and a tag `outcome` (completed / stopped_early / errored). Runs are found again by
their `tune_trial_id` tag, so a resumed study or a retried trial keeps exactly one run per
trial, and `reconcile` leaves none RUNNING once Tune is done with them.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ray.tune import Callback

from study.search import KIND, NAME, PARAMS

log = logging.getLogger(__name__)

# Keys Tune adds to every result; the rest of a result's numbers are the trial's metrics.
_TUNE_KEYS = {
    "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "pid", "hostname",
    "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint",
}
PARENT_TAG = "mlflow.parentRunId"


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


def outcome(last_result: dict[str, Any] | None, max_epochs: int, errored: bool) -> str:
    """completed (reached max_epochs), stopped_early, or errored."""
    if errored:
        return "errored"
    if last_result and int(last_result.get("epoch", 0)) >= max_epochs:
        return "completed"
    return "stopped_early"


class Tracker:
    """The study's MLflow experiment and parent run, and lookups of its child runs.

    Holds only plain values, so Tune can pickle it (inside the callback) and a resumed driver
    reconnects.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @classmethod
    def of_study(cls, state: dict[str, Any]) -> Tracker:
        """The tracker of an existing study, from its study.json state (nothing is changed)."""
        tracker = cls(state["tracking_uri"], state["name"], state.get("artifact_location"))
        tracker.experiment_id = state["experiment_id"]
        tracker.parent_run_id = state["parent_run_id"]
        return tracker

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def exists(self) -> bool:
        """Whether the experiment already has runs."""
        exp = self.client.get_experiment_by_name(self.experiment)
        return exp is not None and bool(self.client.search_runs([exp.experiment_id], max_results=1))

    def start(self, tags: dict[str, str], params: dict[str, Any], artifacts: dict[str, str]) -> str:
        """Creates the experiment (if new) and the parent run; returns its id."""
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

    def reopen(self, parent_run_id: str) -> None:
        """Continues a study's parent run after a resume."""
        run = self.client.get_run(parent_run_id)
        self.experiment_id = run.info.experiment_id
        self.parent_run_id = parent_run_id
        resumes = int(run.data.tags.get("resumes", "0")) + 1
        self.client.set_tag(parent_run_id, "resumes", str(resumes))
        self.client.update_run(parent_run_id, status="RUNNING")

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


def _params(values: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)[:6000]) for k, v in values.items()]


def unreachable(err: BaseException) -> bool:
    """Whether an MLflow call failed because the tracking server could not be reached (worth
    retrying later), rather than because the call itself was wrong."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(err, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(err, MlflowException):
        text = str(err)
        return ("failed with exception" in text or "Max retries exceeded" in text
                or err.get_http_status_code() in (502, 503, 504))
    return False


class TrialRunsCallback(Callback):
    """Tune callback: one nested MLflow run per trial, per-epoch metrics, how it ended.

    Every MLflow call goes through a queue: when the tracking server cannot be reached, the
    calls wait, in order, and are sent once it answers again (each later Tune event retries;
    at the end of the experiment the callback waits up to `flush_timeout` seconds). The study
    itself never waits for MLflow.
    """

    def __init__(self, tracker: Tracker, max_epochs: int, flush_timeout: float = 300.0) -> None:
        self.tracker = tracker
        self.max_epochs = max_epochs
        self.flush_timeout = flush_timeout
        self.runs: dict[str, str] = {}  # trial id -> run id
        self.last_step: dict[str, int] = {}
        self.nodes: dict[str, list[str]] = {}
        self.pending: list[Callable[[], None]] = []
        self.outage_since: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "runs": {}, "last_step": {}, "nodes": {}, "pending": [], "outage_since": None}

    # ------------------------------------------------------------ the queue

    def _do(self, operation: Callable[[], None]) -> None:
        self.pending.append(operation)
        self.flush()

    def flush(self) -> bool:
        """Sends the waiting calls in order; False if the server is still unreachable."""
        while self.pending:
            try:
                self.pending[0]()
            except Exception as err:  # classified below: the study must go on whatever MLflow says
                if unreachable(err):
                    if self.outage_since is None:
                        self.outage_since = time.monotonic()
                        log.warning("MLflow at %s is unreachable; keeping its calls until it answers (%s)",
                                    self.tracker.tracking_uri, str(err).splitlines()[0][:200])
                    return False
                log.error("MLflow call dropped: %s", str(err).splitlines()[0][:300])
            self.pending.pop(0)
        if self.outage_since is not None:
            log.warning("MLflow answers again after %.0f s; the calls it missed were sent",
                        time.monotonic() - self.outage_since)
            self.outage_since = None
        return True

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        deadline = time.monotonic() + self.flush_timeout
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(2.0)
        if self.pending:
            log.error("MLflow stayed unreachable for %.0f s: %d calls were not sent (Tune's results keep "
                      "the metrics)", self.flush_timeout, len(self.pending))

    # ------------------------------------------------------------ Tune's events

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._do(lambda: self._start(trial))

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        snapshot = dict(result)
        self._do(lambda: self._log_result(trial, snapshot))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        how = outcome(trial.last_result, self.max_epochs, False)
        self._do(lambda: self._end(trial, how))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        error = _last_error_line(trial)
        self._do(lambda: self._end(trial, "errored", error))

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        retries = str(trial.num_failures)
        self._do(lambda: self.tracker.client.set_tag(self._run_id(trial), "retries", retries))

    # ------------------------------------------------------------ MLflow calls

    def _run_id(self, trial: Any) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        client = self.tracker.client
        existing = self.tracker.find_child(trial.trial_id)
        if existing is not None:  # a resumed study or a retried trial: continue the same run
            run_id = existing.info.run_id
            client.update_run(run_id, status="RUNNING")
            history = client.get_metric_history(run_id, "epoch")
            self.last_step[trial.trial_id] = max((int(m.value) for m in history), default=0)
            nodes = existing.data.tags.get("nodes", "")
            self.nodes[trial.trial_id] = nodes.split(",") if nodes else []
        else:
            config = trial.config
            tags = {PARENT_TAG: self.tracker.parent_run_id, "tune_trial_id": trial.trial_id,
                    "kind": str(config.get(KIND, "search")), "outcome": "running"}
            run = client.create_run(self.tracker.experiment_id, run_name=str(config.get(NAME, trial.trial_id)),
                                    tags=tags)
            run_id = run.info.run_id
            searched = {f"searched.{k}": v for k, v in config.get(PARAMS, {}).items() if v is not None}
            client.log_batch(run_id, params=_params({**trial_params(config), **searched}))
            self.last_step[trial.trial_id] = 0
        self.runs[trial.trial_id] = run_id
        return run_id

    def _start(self, trial: Any) -> None:
        self._run_id(trial)

    def _log_result(self, trial: Any, result: dict[str, Any]) -> None:
        run_id = self._run_id(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step <= self.last_step.get(trial.trial_id, 0):
            return  # already logged before a resume
        self.tracker.client.log_batch(run_id, metrics=_metrics(result, step))
        self.last_step[trial.trial_id] = step
        node = str(result.get("node_ip", ""))
        nodes = self.nodes.setdefault(trial.trial_id, [])
        if node and node not in nodes:  # a retried trial may move to another node
            self.tracker.client.set_tag(run_id, "node_ip", node)
            self.tracker.client.set_tag(run_id, "nodes", ",".join([*nodes, node]))
            nodes.append(node)

    def _end(self, trial: Any, how: str, error: str = "") -> None:
        run_id = self._run_id(trial)
        self.tracker.client.set_tag(run_id, "outcome", how)
        if error:
            self.tracker.client.set_tag(run_id, "error", error)
        self.tracker.client.set_terminated(run_id, status="FAILED" if how == "errored" else "FINISHED")


def _metrics(result: dict[str, Any], step: int) -> list[Any]:
    """A Tune result's own numbers as MLflow metrics at `step` (Tune's bookkeeping left out)."""
    import math

    from mlflow.entities import Metric

    stamp = int(float(result.get("timestamp", 0)) * 1000)
    return [Metric(k, float(v), stamp, step) for k, v in result.items()
            if k not in _TUNE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v))]


def backfill(tracker: Tracker, frames: dict[str, Any]) -> int:
    """Sends to each trial's MLflow run the epochs of Tune's results it lacks (e.g. when the
    driver died while the MLflow server was unreachable); returns how many epochs were sent.

    Args:
        frames: Tune's per-trial result tables (ExperimentAnalysis.trial_dataframes).
    """
    runs = {r.data.tags.get("tune_trial_id"): r for r in tracker.child_runs()}
    sent = 0
    for trial_id, frame in frames.items():
        run = runs.get(trial_id)
        if run is None or frame is None or frame.empty or "epoch" not in frame:
            continue
        logged = {int(m.step) for m in tracker.client.get_metric_history(run.info.run_id, "epoch")}
        rows = frame.dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last").to_dict("records")
        missing = [r for r in rows if int(r["epoch"]) not in logged]
        for row in missing:
            tracker.client.log_batch(run.info.run_id, metrics=_metrics(row, int(row["epoch"])))
        sent += len(missing)
    return sent


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


def reconcile(tracker: Tracker, trials: list[Any], max_epochs: int, interrupted: bool) -> None:
    """Leaves no child run RUNNING and every run's outcome true to Tune's saved state.

    Args:
        trials: Tune's trials as saved for a resume (a trial Ctrl-C stopped is saved PENDING,
            to be continued, even though Tune reported it complete).
        interrupted: the study stopped before its end; unfinished trials' runs become KILLED
            with outcome "interrupted" until a resume continues them.
    """
    by_trial = {t.trial_id: t for t in trials}
    for run in tracker.child_runs():
        trial = by_trial.get(run.data.tags.get("tune_trial_id", ""))
        status = getattr(trial, "status", None)
        if trial is not None and status in ("TERMINATED", "ERROR"):
            if run.info.status == "RUNNING":
                errored = status == "ERROR"
                tracker.client.set_tag(run.info.run_id, "outcome", outcome(trial.last_result, max_epochs, errored))
                tracker.client.set_terminated(run.info.run_id, status="FAILED" if errored else "FINISHED")
        elif interrupted and (trial is not None or run.info.status == "RUNNING"):
            tracker.client.set_tag(run.info.run_id, "outcome", "interrupted")
            tracker.client.set_terminated(run.info.run_id, status="KILLED")
