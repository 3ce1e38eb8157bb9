"""Faults a study survives: trials that raise (a NaN loss, an out-of-memory error) and an MLflow
server that goes away mid-study, hangs mid-study, or hangs for the whole study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import replay_space, small_space
from tests.servers import free_port, start_mlflow_server, stop_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
# one baseline diverges (NaN loss), one trial runs out of memory at epoch 2
FAILING = small_space("metric: val_acc, mode: max, max_epochs: 3, grace_period: 3, reduction_factor: 2, num_samples: 3",
                      16, """
parameters:
  crop_scale: {type: float, low: 0.3, high: 1.0}
baselines:
  diverging: {local_stream: false, lr: 1e9}
enqueue:
  - {crop_scale: 0.7}
""")


def _study(cwd: Path, *args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "study.run", "--quiet", "--no-report", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_trials_that_raise_are_retried_then_errored_and_the_study_goes_on(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(FAILING)
    proc = _study(tmp_path, "--space", "space.yaml", "--name", "faulty", "--policy", "fifo", "--max-failures", "1",
                  env={"RRA_INJECT_FAULT": "oom@2:crop_scale=0.7"})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    summary = json.loads((tmp_path / "runs" / "faulty" / "summary.json").read_text())
    assert summary["counts"] == {"completed": 2, "stopped_early": 0, "errored": 1}
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("faulty")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags}
    assert len(runs) == 4  # one run per trial, retries included
    oom, nan = runs["s0.7"], runs["baseline-diverging"]
    for run in (oom, nan):
        assert run.info.status == "FAILED" and run.data.tags["outcome"] == "errored"
        assert run.data.tags["retries"] == "1"  # retried up to --max-failures, then errored
    assert "OutOfMemoryError" in oom.data.tags["error"] and "NonFiniteLossError" in nan.data.tags["error"]
    # the out-of-memory trial resumed from its epoch-1 checkpoint and failed at epoch 2 again
    assert [m.step for m in client.get_metric_history(oom.info.run_id, "val_acc")] == [1]
    others = [r for name, r in runs.items() if name not in ("s0.7", "baseline-diverging")]
    assert all(r.info.status == "FINISHED" and r.data.tags["outcome"] == "completed" for r in others)


# two replayed trials (a recorded curve, 1.5 s an epoch, next to no CPU): the outages below are
# about MLflow, not training, and a trial that sleeps keeps its pace on a loaded machine
REPLAYED = ("--policy", "fifo", "--no-test", "--trainable", "replay", "--replay-epoch-s", "1.5")


def _epochs_ended_after(folder: Path, since: float, at_least: int) -> bool:
    """Whether the trials' result files record `at_least` epochs ended after `since` (epoch s)."""
    ended = 0
    for path in folder.glob("*/result.json"):
        for line in path.read_text().splitlines():
            try:
                ended += json.loads(line)["timestamp"] > since
            except (ValueError, KeyError):
                continue  # a line being written
    return ended >= at_least


def test_an_mlflow_outage_loses_no_metrics(tmp_path: Path) -> None:
    """The server goes down while the trials run, and comes back once they have ended epochs
    without it: every epoch reaches MLflow, those of the outage included."""
    (tmp_path / "space.yaml").write_text(replay_space(max_epochs=8, num_samples=2, baselines=False))
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path, port)
    try:
        proc = _study(tmp_path, "--space", "space.yaml", "--name", "outage", *REPLAYED, "--tracking-uri", uri)
        client = MlflowClient(uri)
        deadline = time.time() + 300
        while time.time() < deadline:  # wait until the trials are logging epochs
            exp = client.get_experiment_by_name("outage")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if any(r.data.metrics.get("epoch", 0) >= 1 for r in runs):
                break
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(0.5)
        down_at = time.time()
        stop_server(server)
        # the server stays down until the trials have ended epochs without it (Tune's own record)
        done = tmp_path / "runs" / "outage"
        while time.time() < deadline and not _epochs_ended_after(done, down_at, at_least=2):
            assert proc.poll() is None, "the study ended (or crashed) while MLflow was down"
            time.sleep(0.2)
        assert proc.poll() is None, "the study ended (or crashed) while MLflow was down"
        up_at = time.time()
        server = start_mlflow_server(tmp_path, port)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        assert "unreachable" in out and "answers again" in out
        runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(children) == 2 and all(r.info.status == "FINISHED" for r in runs)
        for run in children:
            history = client.get_metric_history(run.info.run_id, "val_acc")
            assert sorted(m.step for m in history) == list(range(1, 9))  # the outage's epochs arrived
        stamps = [m.timestamp / 1000 for r in children for m in client.get_metric_history(r.info.run_id, "epoch")]
        assert sum(down_at < t < up_at for t in stamps) >= 2, (down_at, up_at, sorted(stamps))  # ended while down
    finally:
        stop_server(server)


def test_a_hung_mlflow_server_never_holds_the_study_and_every_metric_arrives(tmp_path: Path) -> None:
    """A tracking server that accepts connections and never answers (a hung host): Tune goes on
    (trials record their epochs while MLflow has received nothing), and once the server answers
    again, every epoch of every trial reaches it before the study ends."""
    from tests.servers import HangingProxy

    (tmp_path / "space.yaml").write_text(replay_space(max_epochs=4, num_samples=2, baselines=False))
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    proxy = HangingProxy(port)
    try:
        proc = _study(tmp_path, "--space", "space.yaml", "--name", "hung", *REPLAYED,
                      "--tracking-uri", f"http://127.0.0.1:{proxy.port}", env={"MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
        deadline = time.time() + 300
        while time.time() < deadline:  # Tune's own record of the trials' epochs
            epochs = sum(len(p.read_text().splitlines()) for p in (tmp_path / "runs" / "hung").glob("*/result.json"))
            if epochs >= 4:
                break
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(0.5)
        assert epochs >= 4, "the trials did not go on while MLflow hung"
        client = MlflowClient(f"http://127.0.0.1:{port}")
        assert client.get_experiment_by_name("hung") is None and proxy.accepted >= 1  # MLflow got nothing yet
        proxy.hang.clear()  # the server answers again
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        runs = client.search_runs([client.get_experiment_by_name("hung").experiment_id])
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(children) == 2 and all(r.info.status == "FINISHED" for r in runs)
        for run in children:
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc")) == [1, 2, 3, 4]
    finally:
        proxy.close()
        stop_server(server)


def test_a_server_hung_for_the_whole_study_delays_nothing_and_the_report_sends_it_all(tmp_path: Path) -> None:
    """MLflow never answers during the study: the study waits a bounded time at its end, says
    so, exits 0; the report, run once the server answers, creates the runs and sends every epoch."""
    from tests.servers import HangingProxy

    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    proxy = HangingProxy(port)
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "3", "RRA_MLFLOW_WAIT_S": "5"}
    try:
        proc = _study(tmp_path, "--space", "smoke", "--name", "dark", "--trainable", "replay", "--replay-epoch-s", "0",
                      "--tracking-uri", f"http://127.0.0.1:{proxy.port}", env=env)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        assert "did not answer within 5 s" in out and "python -m study.report --name dark" in out
        # the summary and the paths come first, then the wait, saying what for and how to skip it
        assert out.index("Best configurations") < out.index("Study folder:") < out.index("Waiting up to 5 s for MLflow")
        assert "Ctrl-C skips it" in out
        client = MlflowClient(f"http://127.0.0.1:{port}")
        assert client.get_experiment_by_name("dark") is None
        proxy.hang.clear()
        report = subprocess.run([sys.executable, "-m", "study.report", "--name", "dark", "--no-pictures"], cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
                                timeout=600)
        assert report.returncode == 0, report.stderr[-3000:]
        summary = json.loads((tmp_path / "runs" / "dark" / "summary.json").read_text())
        runs = client.search_runs([client.get_experiment_by_name("dark").experiment_id])
        children = {r.data.tags["tune_trial_id"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
        assert set(children) == {t["trial_id"] for t in summary["trials"]}
        assert all(r.info.status == "FINISHED" for r in runs)
        for trial in summary["trials"]:
            history = client.get_metric_history(children[trial["trial_id"]].info.run_id, "val_acc")
            assert sorted(m.step for m in history) == list(range(1, trial["epochs"] + 1))
        parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
        assert parent.data.tags["best_trial"] == summary["best"]["name"] and "report" in parent.data.tags
    finally:
        proxy.close()
        stop_server(server)
