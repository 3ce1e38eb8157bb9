"""`python -m study.run --space smoke` end to end: real local Ray, the real trainable, MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import replay_space, small_space
from tests.servers import PostgresServer, free_port, start_mlflow_server, stop_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
# smoke, slowed down enough to be interrupted mid-study
SLOWER_SMOKE = small_space("metric: val_acc, mode: max, max_epochs: 4, grace_period: 4, reduction_factor: 2, "
                           "num_samples: 4", 200, """
parameters:
  recursion_steps: {type: int, low: 1, high: 4}
  crop_scale: {type: float, low: 0.3, high: 1.0}
baselines:
  global_only: {local_stream: false}
""")


def _study(cwd: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "study.run", "--quiet", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, **kw)


def _runs(cwd: Path, name: str) -> tuple[MlflowClient, Any, list[Any]]:
    client = MlflowClient(f"sqlite:///{cwd / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    return client, parents[0], children


def test_smoke_study_end_to_end(tmp_path: Path) -> None:
    proc = _study(tmp_path, "--space", "smoke", "--name", "e2e")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Best configurations" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout
    assert "optuna-dashboard sqlite:///" in proc.stdout
    # the printed MLflow page shows this study's trial runs, best first: its filter and order,
    # applied through MLflow's own search, give the trials with the best first
    url = next(line.strip() for line in proc.stdout.splitlines() if "#/experiments/" in line)
    query = parse_qs(urlsplit(url.split("#", 1)[1]).query)
    assert query["orderByKey"] == ["metrics.`study_rank`"] and query["orderByAsc"] == ["true"]
    summary = json.loads((tmp_path / "runs" / "e2e" / "summary.json").read_text())
    client, parent, runs = _runs(tmp_path, "e2e")
    # one child per trial (4 sampled + 1 baseline), all ended, named from their values; and the
    # noise-aware ending's re-runs: smoke's 2 finalists with 1 new seed each
    children = [c for c in runs if c.data.tags["kind"] != "finalist"]
    reruns = [c for c in runs if c.data.tags["kind"] == "finalist"]
    assert len(children) == 5 == len(summary["trials"]) and len(reruns) == 2
    assert {c.data.tags["tune_trial_id"] for c in children} == {t["trial_id"] for t in summary["trials"]}
    assert all(c.info.status == "FINISHED" for c in runs) and parent.info.status == "FINISHED"
    # the best is named on the new seed (1): the run that made it a finalist (seed 0) is left out
    named = summary["finalists"]
    assert len(named) == 2 and all(f["seeds"] == 1 for f in named) and summary["best"]["noise_aware"] == named[0]
    assert named[0]["mean"] >= named[1]["mean"] and summary["ranking"][:2] == [f["trial_id"] for f in named]
    by_trial = {t["trial_id"]: t for t in summary["trials"]}
    for finalist in named:
        assert finalist["selection"] == pytest.approx(by_trial[finalist["trial_id"]]["val_acc"])  # seed 0: its own run
        mine = [r for r in reruns if r.info.run_name.startswith(f"finalist-{by_trial[finalist['trial_id']]['name']}-")]
        assert len(mine) == 1 and mine[0].data.params["seed"] == "1" and mine[0].data.params["epochs"] == "3"
        assert finalist["values"] == [pytest.approx(mine[0].data.metrics["val_acc"])]
    assert "Named on several seeds" in proc.stdout and f"Best: {summary['best']['name']}, val_acc" in proc.stdout
    assert parent.data.metrics["best_val_acc_mean"] == pytest.approx(named[0]["mean"])
    assert (tmp_path / "runs" / "e2e" / "finalists.parquet").is_file()
    names = {c.info.run_name for c in children}
    assert "baseline-global_only" in names and "T3-s0.5-tau1" in names
    outcomes = {c.data.tags["outcome"] for c in children}
    assert outcomes <= {"completed", "stopped_early"} and "completed" in outcomes
    # the policy's own record of its rungs: every sampled trial judged there, the early stops among them
    judged = [json.loads(line) for line in (tmp_path / "runs" / "e2e" / "rungs.jsonl").read_text().splitlines()]
    stopped = {c.data.tags["tune_trial_id"] for c in children if c.data.tags["outcome"] == "stopped_early"}
    assert {e["trial"] for e in judged} == {c.data.tags["tune_trial_id"] for c in children} - {
        c.data.tags["tune_trial_id"] for c in children if c.info.run_name.startswith("baseline")}
    assert {e["trial"] for e in judged if e["stopped"]} == stopped
    # every trial measured its inference cost once: in the summary and on its MLflow run
    flops = {t["trial_id"]: t["cost_flops_per_image"] for t in summary["trials"]}
    assert all(f > 0 for f in flops.values()) and len(set(flops.values())) >= 2  # global-only is cheaper
    for child in children:
        assert child.data.metrics["cost_flops_per_image"] == flops[child.data.tags["tune_trial_id"]]
        assert child.data.metrics["cost_latency_ms_batch1"] > 0
        params = child.data.params
        assert params["epochs"] == "3" and params["backbone"] == "tiny" and "crop_scale" in params
        history = client.get_metric_history(child.info.run_id, "val_acc")
        steps = sorted(m.step for m in history)
        expected = 3 if child.data.tags["outcome"] == "completed" else steps[-1]
        assert steps == list(range(1, expected + 1))
        assert child.data.tags["node_ip"]
    # the parent: flags, git revision, versions; at the end the best config and its test accuracy
    assert parent.data.tags["space"] == "smoke" and parent.data.tags["git_revision"]
    assert parent.data.tags["version.ray"]
    assert parent.data.params["setting.searcher"] == "optuna" and parent.data.params["setting.policy"] == "asha"
    best = summary["best"]
    assert parent.data.metrics["best_val_acc"] == pytest.approx(best["val_acc"])
    assert parent.data.metrics["best_test_acc"] == pytest.approx(best["test_acc"])
    assert parent.data.tags["best_trial"] == best["name"]
    shown = client.search_runs([parent.info.experiment_id], filter_string=query["searchFilter"][0],
                               order_by=["metrics.study_rank ASC"])
    assert {r.info.run_id for r in shown} == {c.info.run_id for c in runs}
    order = [r.data.tags["tune_trial_id"] for r in shown]
    assert order[:len(summary["ranking"])] == summary["ranking"] and order[0] == best["trial_id"]
    best_run = next(c for c in children if c.data.tags["tune_trial_id"] == best["trial_id"])
    artifacts = [a.path for a in client.list_artifacts(best_run.info.run_id, "checkpoint")]
    assert artifacts == ["checkpoint/checkpoint.pt"]
    # the Optuna study holds the sampled trials only, with the contract's states
    import optuna

    study = optuna.load_study(study_name="e2e", storage=summary["optuna_storage"])
    assert len(study.trials) == 4
    by_id = {t["trial_id"]: t for t in summary["trials"]}
    for t in study.trials:
        row = by_id[t.user_attrs["tune_trial_id"]]
        assert t.state.name == {"completed": "COMPLETE", "stopped_early": "PRUNED"}[row["outcome"]]
    # the same command again refuses to overwrite
    again = _study(tmp_path, "--space", "smoke", "--name", "e2e")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_resume_after_the_driver_is_stopped(tmp_path: Path, how: str) -> None:
    space = tmp_path / "slow.yaml"
    space.write_text(SLOWER_SMOKE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the study's own budget, set by flags at its start; the resume below does not repeat them
    args = [sys.executable, "-m", "study.run", "--quiet", "--space", str(space), "--name", "killed",
            "--policy", "fifo", "--no-test", "--no-report", "--num-samples", "3", "--max-epochs", "3"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    folder = tmp_path / "runs" / "killed"
    deadline = time.time() + 300
    # wait until at least one trial has written a checkpoint past its first epoch
    while time.time() < deadline and not list(folder.glob("*/checkpoint_000001")):
        assert proc.poll() is None, "the study ended before it could be interrupted"
        time.sleep(0.2)
    if how == "sigkill":
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    else:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune stops the trials and saves its state
        assert proc.wait(timeout=120) == 130
    checkpointed = {p.parent.name.rsplit("_", 1)[-1] for p in folder.glob("*/checkpoint_000001")}
    assert checkpointed
    _, parent, children = _runs(tmp_path, "killed")
    if how == "sigkill":
        assert parent.info.status == "RUNNING"  # SIGKILL left no chance to end it
    else:
        assert parent.info.status == "KILLED"
        assert not [c for c in children if c.info.status == "RUNNING"]

    contradicting = _study(tmp_path, "--name", "killed", "--resume", "--max-epochs", "4")
    assert contradicting.returncode == 2
    assert contradicting.stderr.strip().splitlines() == [
        "error: --resume: --max-epochs 4 contradicts study 'killed', which was started with 3; drop the flag "
        "(the study keeps its own settings)"]
    resumed = _study(tmp_path, "--name", "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, parent, children = _runs(tmp_path, "killed")
    assert parent.info.status == "FINISHED"
    ids = [c.data.tags["tune_trial_id"] for c in children]
    assert len(ids) == len(set(ids)) == 4  # 3 sampled + 1 baseline: one run per trial, no duplicates
    assert all(c.info.status == "FINISHED" and c.data.tags["outcome"] == "completed" for c in children)
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "epoch")]
        assert sorted(steps) == [1, 2, 3]  # each epoch logged once, to the study's own max_epochs
    # trials with a checkpoint continued from it: their epoch-1 row was not written again
    for trial_dir in folder.iterdir():
        trial_id = trial_dir.name.rsplit("_", 1)[-1]
        if trial_id in checkpointed:
            rows = [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines()]
            assert [r["epoch"] for r in rows].count(1) == 1
    import optuna

    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_smoke_study_with_optuna_and_mlflow_on_postgresql_behind_a_tracking_server(tmp_path: Path) -> None:
    """The cluster option: Optuna's storage on PostgreSQL, and MLflow through its server (its
    store on PostgreSQL too): every run, checkpoint and report file goes through the server, none
    to the local default stores. (A server on SQLite is the fault tests' own, tests/integration/study/test_faults.py.)"""
    pg = PostgresServer()
    try:
        optuna_url, mlflow_url = pg.create("optuna"), pg.create("mlflow")
        port = free_port()
        server = start_mlflow_server(tmp_path, port, backend=mlflow_url)
        try:
            uri = f"http://127.0.0.1:{port}"
            proc = _study(tmp_path, "--space", "smoke", "--name", "pg", "--tracking-uri", uri,
                          "--optuna-storage", optuna_url)
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert f"{uri}/#/experiments/" in proc.stdout
            summary = json.loads((tmp_path / "runs" / "pg" / "summary.json").read_text())
            import optuna

            study = optuna.load_study(study_name="pg", storage=optuna_url)
            assert len(study.trials) == 4 and {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
            assert not (tmp_path / "runs" / "pg" / "optuna.db").exists()
            assert not (tmp_path / "runs" / "mlflow.db").exists()  # nothing went to the local default store
            client = MlflowClient(uri)
            runs = client.search_runs([client.get_experiment_by_name("pg").experiment_id])
            assert len(runs) == 1 + len(summary["trials"]) + 2 and all(r.info.status == "FINISHED" for r in runs)
            parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
            children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
            assert len(children) == 5 + 2  # 5 trials, 2 finalist re-runs
            assert "best_test_acc" in parent.data.metrics
            best = next(c for c in children if c.data.tags.get("best") == "true")
            assert [a.path for a in client.list_artifacts(best.info.run_id, "checkpoint")] == \
                ["checkpoint/checkpoint.pt"]
            # the report's files go through the server too
            assert {"report/report.html", "report/trials.parquet"} <= \
                {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
            report = (tmp_path / "runs" / "pg" / "report" / "report.md").read_text()
            assert "one run per trial, same outcome" in report  # MLflow (on PostgreSQL) agrees with Tune
        finally:
            stop_server(server)
    finally:
        pg.stop()


REPLAY_SPACE = replay_space(max_epochs=5, num_samples=8)


def test_a_replayed_study_checkpoints_where_the_policy_says(tmp_path: Path) -> None:
    from study.execution import checkpoint_epochs
    from study.policies.asha import rungs
    from study.spaces import load_space

    space_file = tmp_path / "replay.yaml"
    space_file.write_text(REPLAY_SPACE)
    proc = _study(tmp_path, "--space", str(space_file), "--name", "rp", "--trainable", "replay",
                  "--replay-epoch-s", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "rp" / "summary.json").read_text())
    assert len(summary["trials"]) == 9 and summary["best"]["test_acc"] > 0
    decisions = rungs(load_space(str(space_file)).study)
    policy = set(checkpoint_epochs(2, decisions, 5))
    assert 3 not in policy and {2, 4, 5} <= policy  # every 2nd epoch, the rungs, the last
    lengths = set()
    for result in (tmp_path / "runs" / "rp").glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines()]
        epochs = [int(r["epoch"]) for r in rows]
        assert epochs == list(range(1, len(rows) + 1))
        lengths.add(len(rows))
        saved = {int(r["epoch"]) for r in rows if r.get("checkpoint_dir_name")}
        assert saved == {e for e in policy if e <= len(rows)}
    assert len(lengths) > 1  # some trials were stopped early, some ran to the end
    report = (tmp_path / "runs" / "rp" / "report" / "report.md").read_text()
    assert "replayed curve" in report
    # --resume may not change what the study simulates
    again = _study(tmp_path, "--space", str(space_file), "--name", "rp", "--resume", "--trainable", "rra")
    assert again.returncode == 2 and "--trainable rra contradicts" in again.stderr


def _epochs_reached(folder: Path) -> dict[str, int]:
    """Each trial's last epoch in its Tune result file."""
    out = {}
    for result in folder.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows:  # (a trial started as the budget ran out may have reported nothing)
            out[rows[0]["trial_id"]] = max(int(r["training_iteration"]) for r in rows)
    return out


def test_an_epoch_budget_ends_the_study_and_a_resumed_one_counts_what_it_had_run(tmp_path: Path) -> None:
    space_file = tmp_path / "replay.yaml"
    space_file.write_text(REPLAY_SPACE)
    too_small = _study(tmp_path, "--space", str(space_file), "--name", "tiny", "--epoch-budget", "4")
    assert too_small.returncode == 2 and "less than one full trial (5 epochs)" in too_small.stderr
    assert not (tmp_path / "runs" / "tiny").exists()
    args = ("--space", str(space_file), "--name", "eb", "--trainable", "replay", "--replay-epoch-s", "0.2",
            "--num-samples", "200", "--epoch-budget", "40", "--policy", "fifo", "--num-cpus", "2",
            "--concurrency", "2", "--no-test", "--no-report")
    proc = subprocess.Popen([sys.executable, "-m", "study.run", "--quiet", *args], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    folder = tmp_path / "runs" / "eb"
    deadline = time.time() + 300
    while time.time() < deadline and sum(_epochs_reached(folder).values()) < 15:
        assert proc.poll() is None, "the study ended before it could be interrupted"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert sum(_epochs_reached(folder).values()) < 40
    resumed = _study(tmp_path, *args[2:4], "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "interrupted" not in resumed.stdout
    # the budget over both runs, and no more than the epochs of the trials running when it ran out
    epochs = _epochs_reached(folder)
    assert 40 <= sum(epochs.values()) < 40 + 2 * 5 and len(epochs) < 201
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["epoch_budget"] == 40 and summary["epochs_spent"] == sum(epochs.values())
    assert f"stopped early by the scheduler or the epoch budget (40; {sum(epochs.values())} run)" in resumed.stdout
    import optuna

    study = optuna.load_study(study_name="eb", storage=f"sqlite:///{folder / 'optuna.db'}")
    states = {t.state for t in study.get_trials(deepcopy=False)}
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.COMPLETE in states
    # the budget defines the study: --resume may not change it
    again = _study(tmp_path, *args[2:4], "--resume", "--epoch-budget", "60")
    assert again.returncode == 2 and "--epoch-budget 60 contradicts" in again.stderr


def test_an_interrupted_noise_aware_ending_continues_on_resume(tmp_path: Path) -> None:
    # Replayed trials (1.5 s an epoch): Ctrl-C while the finalists re-run; --resume runs what is
    # left of the ending (not the search again) and names the best on every seed
    space = tmp_path / "ending.yaml"
    space.write_text(replay_space(max_epochs=3, num_samples=4, baselines=False, finalists=2))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "study.run", "--quiet", "--space", str(space), "--name", "ending", "--no-test",
            "--no-report", "--policy", "fifo", "--trainable", "replay", "--replay-epoch-s", "1.5",
            "--num-cpus", "2", "--cpus-per-trial", "0.5"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    finalists = tmp_path / "runs" / "ending-finalists"
    deadline = time.time() + 300
    while time.time() < deadline and not list(finalists.glob("*/result.json")):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "Noise-aware ending: the 2 best trial(s) again with seeds 1, 2" in out
    assert not (tmp_path / "runs" / "ending" / "summary.json").exists()  # not finished: no best named yet
    searched = len(list((tmp_path / "runs" / "ending").glob("*/result.json")))
    resumed = _study(tmp_path, "--name", "ending", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(list((tmp_path / "runs" / "ending").glob("*/result.json"))) == searched == 4  # no new search trial
    summary = json.loads((tmp_path / "runs" / "ending" / "summary.json").read_text())
    assert len(summary["finalists"]) == 2 and all(f["seeds"] == 2 for f in summary["finalists"])
    assert summary["best"]["trial_id"] == summary["finalists"][0]["trial_id"]
    reruns = {p.parent.name.rsplit("_", 1)[0] for p in finalists.glob("*/result.json")}
    assert len(reruns) == 4  # 2 finalists x 2 seeds, each run once


def test_a_multi_objective_study_names_its_front(tmp_path: Path) -> None:
    """Accuracy (max) and FLOPs (min) by flag: ASHA judges on both (its rung log holds both
    values), Optuna's study has both directions, and the summary, the printed table, MLflow's
    tags and its printed page give the Pareto front of the trials that reached max_t."""
    proc = _study(tmp_path, "--space", "smoke", "--name", "mo", "--num-samples", "6", "--finalists", "0",
                  "--objectives", "val_acc:max,cost_flops_per_image:min")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "mo" / "summary.json").read_text())
    assert summary["objectives"] == [["val_acc", "max"], ["cost_flops_per_image", "min"]]
    done = [t for t in summary["trials"] if t["kind"] == "search" and t["outcome"] == "completed"]
    front = summary["front"]
    assert front and {e["trial_id"] for e in front} <= {t["trial_id"] for t in done}
    for entry in front:  # none of the trials that reached max_t dominates a point of the front
        assert not any(t["val_acc"] >= entry["val_acc"] and t["cost_flops_per_image"] <= entry["cost_flops_per_image"]
                       and (t["val_acc"], t["cost_flops_per_image"]) != (entry["val_acc"],
                                                                         entry["cost_flops_per_image"])
                       for t in done)
    assert [e["cost_flops_per_image"] for e in front] == sorted(e["cost_flops_per_image"] for e in front)
    assert "Pareto front (val_acc max, cost_flops_per_image min" in proc.stdout
    assert "report failed" not in proc.stdout + proc.stderr and "Report:" in proc.stdout  # importance of the metric
    facts = json.loads((tmp_path / "runs" / "mo" / "report" / "report.json").read_text())
    assert facts["cost"]["fronts"]["cost_flops_per_image"] == [e["trial_id"] for e in front]  # one front everywhere
    assert "the study's own front, on its objectives" in (tmp_path / "runs" / "mo" / "report" / "report.md").read_text()
    judged = [json.loads(line) for line in (tmp_path / "runs" / "mo" / "rungs.jsonl").read_text().splitlines()]
    assert judged and all(len(e["values"]) == 2 and e["values"][1] < 0 for e in judged)
    stored = optuna.load_study(study_name="mo", storage=summary["optuna_storage"])
    assert stored.metric_names == ["val_acc", "cost_flops_per_image"] and len(stored.directions) == 2
    complete = [t for t in stored.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(len(t.values) == 2 for t in complete)
    client, parent, children = _runs(tmp_path, "mo")
    tagged = {c.data.tags["tune_trial_id"] for c in children if c.data.tags.get("pareto") == "true"}
    assert tagged == {e["trial_id"] for e in front}
    assert parent.data.tags["front"] == ", ".join(e["name"] for e in front)
    url = next(line.strip() for line in proc.stdout.splitlines() if "#/experiments/" in line)
    query = parse_qs(urlsplit(url.split("#", 1)[1]).query)
    shown = client.search_runs([parent.info.experiment_id], filter_string=query["searchFilter"][0])
    assert {r.data.tags["tune_trial_id"] for r in shown} == tagged
    assert query["orderByKey"] == ["metrics.`cost_flops_per_image`"]
