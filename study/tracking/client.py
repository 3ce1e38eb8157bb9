"""The study's MLflow experiment and parent run (`Tracker`), and a Tune result as MLflow
metrics."""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

# Keys Tune adds to every result; the rest of a result's numbers are the trial's metrics.
_TUNE_KEYS = {
    "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "pid", "hostname",
    "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint",
}
PARENT_TAG = "mlflow.parentRunId"
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved TrialConfig of a trial config dict (defaults filled in)."""
    from trainables.config import TrialConfig, settings

    return TrialConfig.from_dict(settings(config)).to_dict()



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
        self.log_texts(artifacts, "study")
        return self.parent_run_id

    def log_texts(self, files: dict[str, str], under: str) -> None:
        """Text files (name -> text) as the parent run's artifacts under `under` (replacing
        those of the same name)."""
        assert self.parent_run_id is not None
        with tempfile.TemporaryDirectory() as folder:
            for name, text in files.items():
                (Path(folder) / name).write_text(text)
            self.client.log_artifacts(self.parent_run_id, folder, under)

    def reopen(self, counter: str = "resumes") -> None:
        """Continues the parent run after a resume (or an extension: `counter` names the tag that
        counts them)."""
        assert self.parent_run_id is not None
        run = self.client.get_run(self.parent_run_id)
        count = int(run.data.tags.get(counter, "0")) + 1
        self.client.set_tag(self.parent_run_id, counter, str(count))
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
