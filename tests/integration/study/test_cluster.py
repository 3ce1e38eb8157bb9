"""A real two-node Ray cluster on loopback (head 127.0.0.2, worker 127.0.0.3, token
authentication on), started by clusters/onprem.yaml's own start commands, with the MLflow
server the head starts. As on a cloud cluster, the nodes share no folder: each has its own Ray
temporary folder, and Tune's storage and MLflow's artifacts are in an S3-compatible store
(moto's server, started here). A smoke study submitted as a Ray job runs trials on both nodes
and reports; a worker node dying mid-trial costs the trial only the epoch in flight (it resumes
from its checkpoint in the bucket)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import replay_space, small_space
from tests.servers import MLFLOW_SERVER_ENV, S3Server, free_port, wait_for_http

# One cluster at a time (each takes the machine's two cores): under pytest-xdist these tests
# share one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("two-node-cluster")]

ROOT = Path(__file__).resolve().parents[3]
RAY = str(Path(sys.executable).parent / "ray")
PARAMETERS = "parameters:\n  crop_scale: {type: float, low: 0.3, high: 1.0}"
# Epochs of a few seconds: a trial process outlives its killed raylet for a moment, and must
# not be able to finish its remaining epochs in that moment.
SPACE = small_space("metric: val_acc, mode: max, max_epochs: 6, grace_period: 6, reduction_factor: 2, num_samples: 2",
                    1000, PARAMETERS)


def _env(tmpdir: str) -> dict[str, str]:
    """`ray start --head` turns token authentication on and every client must use it too. The
    token is the test's own, in its temporary folder: nothing is read from or left in HOME."""
    token = Path(tmpdir) / "auth_token"
    if not token.is_file():
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
    return {**os.environ, "RAY_TMPDIR": tmpdir, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
            "PYTHONPATH": str(ROOT)}


def _ray_pids(tmpdir: str, groups: frozenset[int]) -> list[int]:
    """Every live process of the test's Ray: those whose command line names its own temporary
    folder, and those in the process groups its node commands started (`groups`: each command ran
    in a session of its own). Some of Ray's processes rename themselves ("ray::RuntimeEnvAgent")
    or name no folder (its client server): only their group finds them. Never matched by a broad
    name: the user's other Ray processes are left alone."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                state, _, group = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:3]
                if state != "Z" and (int(group) in groups or tmpdir.encode() in (proc / "cmdline").read_bytes()):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _stop_ray(tmpdir: str, groups: frozenset[int]) -> None:
    """Stops the test's Ray by PID: TERM, then KILL what is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _ray_pids(tmpdir, groups):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + 5
        while _ray_pids(tmpdir, groups) and time.time() < deadline:
            time.sleep(0.3)


def _raylet_pid(node_ip: str) -> int:
    """The raylet of one node, found by its exact command line (never by a broad name)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"/raylet") and f"--node_ip_address={node_ip}".encode() in argv:
            return int(proc.name)
    raise AssertionError(f"no raylet for {node_ip}")


def _nodes(env: dict[str, str], address: str) -> list[dict[str, Any]]:
    """The cluster's nodes as its GCS sees them (address, alive, CPUs), asked from a client of
    its own: the test process never joins the cluster."""
    probe = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(json.dumps([{'ip': n['NodeManagerAddress'], 'alive': n['Alive'], "
             "'cpus': n['Resources'].get('CPU', 0)} for n in ray.nodes()]))")
    done = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def _wait_for_nodes(env: dict[str, str], address: str, ips: set[str], timeout: float = 120) -> None:
    """Waits until every node in `ips` is alive with its CPU: `ray start` may return before a
    loaded machine's worker shows its resources, and a study started then runs on the head alone."""
    deadline = time.time() + timeout
    while True:
        nodes = _nodes(env, address)
        if {n["ip"] for n in nodes if n["alive"] and n["cpus"] > 0} >= ips:
            return
        assert time.time() < deadline, f"nodes not all up after {timeout:.0f} s: {nodes}"
        time.sleep(2)


def _start_commands(key: str) -> list[str]:
    return list(yaml.safe_load((ROOT / "clusters" / "onprem.yaml").read_text())[key])


@contextlib.contextmanager
def _two_nodes(folder: Path, s3: S3Server) -> Iterator[dict[str, str]]:
    """The on-prem file's head and worker start commands, run as `ray up` would on each node,
    each node with its own Ray temporary folder; the MLflow server's artifacts and Tune's
    storage (`storage`: a fresh bucket) on the S3 server."""
    tmpdir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    mlflow_dir, mlflow_port = folder / "mlflow-server", free_port()
    # fresh ports for each cluster: a port of the last one may not be free yet
    ray_port, dashboard_port = free_port(), free_port()
    bucket = s3.bucket(f"rra-{folder.name.lower().replace('_', '-')[:40]}")
    env = {**_env(tmpdir), **s3.env, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "RRA_RAY_PORT": str(ray_port), "RRA_RAY_START_ARGS": "--num-cpus 1",
           "RRA_MLFLOW_DIR": str(mlflow_dir), "RRA_MLFLOW_PORT": str(mlflow_port),
           "RRA_MLFLOW_ARTIFACTS": f"s3://{bucket}/mlflow", **MLFLOW_SERVER_ENV}
    groups: set[int] = set()
    try:
        # `ray stop` (each file's first command) would end every Ray process of the user: never run here.
        for node, key, extra in (("head", "head_start_ray_commands", {"RRA_NODE_IP": "127.0.0.2"}),
                                 ("worker", "worker_start_ray_commands",
                                  {"RRA_NODE_IP": "127.0.0.3", "RAY_HEAD_IP": "127.0.0.2"})):
            own = Path(tmpdir) / node  # this node's own folder
            own.mkdir()
            # the dashboard agent's HTTP port (where jobs are submitted) is fixed by default: another
            # Ray on this machine (a test running beside this one) may hold it
            args = f"{env['RRA_RAY_START_ARGS']} --temp-dir {own} --dashboard-agent-listen-port {free_port()}"
            if node == "head":  # and so is Ray's client server's (10001)
                args += f" --dashboard-port {dashboard_port} --ray-client-server-port {free_port()}"
            for command in [c for c in _start_commands(key) if not c.endswith("ray stop")]:
                node_env = {**env, **extra, "RRA_RAY_START_ARGS": args}
                done = subprocess.Popen(["bash", "-c", command], env=node_env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
                groups.add(done.pid)  # what the command starts stays in its group: the teardown's handle
                out, _ = done.communicate(timeout=180)
                assert done.returncode == 0, f"{node}: {command}\n{out[-3000:]}"
        for node in ("head", "worker"):  # each node keeps its sessions in its own folder
            assert list((Path(tmpdir) / node).glob("session_*")), f"no Ray session in the {node}'s folder"
        _wait_for_nodes(env, f"127.0.0.2:{ray_port}", {"127.0.0.2", "127.0.0.3"})
        uri = f"http://127.0.0.1:{mlflow_port}"
        wait_for_http(f"{uri}/health", "the MLflow server the head starts")
        yield {**env, "tracking_uri": uri, "bucket": bucket, "storage": s3.uri(bucket, "tune"),
               "address": f"127.0.0.2:{ray_port}", "dashboard": f"http://127.0.0.1:{dashboard_port}"}
    finally:
        _stop_ray(tmpdir, frozenset(groups))
        pid_file = mlflow_dir / "server.pid"
        if pid_file.is_file():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
        shutil.rmtree(tmpdir, ignore_errors=True)


class _Clusters:
    """The module's two-node clusters: one, started on first use, serves every test that leaves
    it whole (each study has its own experiment, Tune folder and working folder); a test that
    kills a node spends it, and the next test gets a fresh one."""

    def __init__(self, factory: pytest.TempPathFactory, s3: S3Server) -> None:
        self.factory, self.s3 = factory, s3
        self.stack: contextlib.ExitStack | None = None
        self.current: dict[str, str] | None = None

    def get(self) -> dict[str, str]:
        if self.current is None:
            self.stack = contextlib.ExitStack()
            self.current = self.stack.enter_context(_two_nodes(self.factory.mktemp("cluster"), self.s3))
        return self.current

    def spend(self) -> None:
        if self.stack is not None:
            self.stack.close()
        self.stack, self.current = None, None


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[_Clusters]:
    pool = _Clusters(tmp_path_factory, s3)
    try:
        yield pool
    finally:
        pool.spend()


@pytest.fixture
def two_nodes(clusters: _Clusters) -> dict[str, str]:
    """A two-node cluster whose nodes are both alive (the module's, or a fresh one)."""
    return clusters.get()


@pytest.fixture
def two_nodes_to_kill(clusters: _Clusters) -> Iterator[dict[str, str]]:
    """A two-node cluster the test may break (the module's, spent after it; the test is last)."""
    try:
        yield clusters.get()
    finally:
        clusters.spend()


def _rows(s3: S3Server, bucket: str, experiment: str) -> dict[str, list[dict[str, object]]]:
    """Each trial's result rows, read from Tune's storage in the bucket."""
    out = {}
    client = s3.client()
    for key in s3.keys(bucket, f"tune/{experiment}/"):
        if key.endswith("/result.json"):
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            out[key.split("/")[-2].rsplit("_", 1)[-1]] = [json.loads(x) for x in body.splitlines() if x.strip()]
    return out


def _children(client: MlflowClient, experiment: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else [r for r in client.search_runs([exp.experiment_id])
                                    if "mlflow.parentRunId" in r.data.tags]


# The studies that must run on both nodes give each trial an actor of its own. With reuse (the
# default), a trial that ends hands its actor to a trial still waiting for its own to start, and
# Tune drops the one starting (TuneController._maybe_reuse_cached_actor): on a loaded machine,
# every trial may then run on the node whose actors came up first. CI ran the Ray-job study's four
# trials all on the worker (at 816a25f), and a fresh-clone .ci/run the replayed study's sixteen all on the
# head (at 73e2871).
PLACED = "--no-reuse-actors"

SMOKE_ON_TWO_NODES = small_space("metric: val_acc, mode: max, max_epochs: 2, grace_period: 2, reduction_factor: 2, "
                                 "num_samples: 4", 40, PARAMETERS)


def test_a_smoke_study_submitted_as_a_ray_job_runs_on_both_nodes(two_nodes: dict[str, str], tmp_path: Path,
                                                                  s3: S3Server) -> None:
    """The README's submission: a Ray job whose driver runs on the head, MLflow on the head with
    its artifacts in the bucket; the report is written and logged there, and the best trial's
    checkpoint reads back from MLflow. Two trials at a time on two one-CPU nodes: one on each."""
    (tmp_path / "space.yaml").write_text(SMOKE_ON_TWO_NODES)
    entry = (f"cd {tmp_path} && {sys.executable} -m study.run --quiet --space space.yaml --name jobs "
             f"--address auto --tracking-uri {two_nodes['tracking_uri']} --concurrency 2 {PLACED} "
             f"--storage '{two_nodes['storage']}'")
    deadline = time.time() + 300
    while True:  # the head's job agent may come up after its dashboard answers (a loaded machine)
        proc = subprocess.run([RAY, "job", "submit", "--address", two_nodes["dashboard"], "--", "bash", "-c", entry],
                              env=two_nodes, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in proc.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Best configurations" in proc.stdout and "Report:" in proc.stdout
    client = MlflowClient(two_nodes["tracking_uri"])
    children = _children(client, "jobs")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    ran_on = {n for c in children for n in c.data.tags["nodes"].split(",")}  # a retried trial may move
    nodes = ran_on == {"127.0.0.2", "127.0.0.3"} or _nodes(two_nodes, two_nodes["address"])
    assert nodes is True, f"trials ran on {ran_on}; nodes now: {nodes}; the driver printed: {proc.stdout[-2000:]}"
    stored = s3.keys(two_nodes["bucket"], "mlflow/")
    assert any(k.endswith("report/report.html") for k in stored)
    best = next(c for c in children if c.data.tags.get("best") == "true")
    local = Path(client.download_artifacts(best.info.run_id, "checkpoint", str(tmp_path / "best")))
    assert (local / "checkpoint.pt").stat().st_size > 0


REPLAY_ON_TWO_NODES = replay_space(max_epochs=6, num_samples=16, baselines=False)


def test_a_replayed_study_on_two_nodes_keeps_its_checkpoints_in_the_bucket(
        two_nodes: dict[str, str], tmp_path: Path, s3: S3Server) -> None:
    """What a cluster adds to a local study, at scale without training: trials on both nodes
    (four slots each), Tune's storage in the bucket apart from the study folder, checkpoints at
    the policy's epochs written there from either node, the Optuna study and MLflow complete at
    the end."""
    import optuna

    from study.execution import checkpoint_epochs
    from study.policies.asha import rungs
    from study.spaces import load_space

    (tmp_path / "space.yaml").write_text(REPLAY_ON_TWO_NODES)
    args = [sys.executable, "-m", "study.run", "--quiet", "--space", "space.yaml", "--name", "many",
            "--address", two_nodes["address"], "--trainable", "replay", "--replay-epoch-s", "0.5",
            "--cpus-per-trial", "0.25", "--concurrency", "8", PLACED, "--storage", two_nodes["storage"], "--no-baselines",
            "--no-report", "--tracking-uri", two_nodes["tracking_uri"]]
    proc = subprocess.run(args, cwd=tmp_path, env=two_nodes, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    policy = set(checkpoint_epochs(2, rungs(load_space(str(tmp_path / "space.yaml")).study), 6))
    bucket = two_nodes["bucket"]
    trials = _rows(s3, bucket, "many")
    assert len(trials) == 16
    assert {r["node_ip"] for rows in trials.values() for r in rows} == {"127.0.0.2", "127.0.0.3"}
    keys = s3.keys(bucket, "tune/many/")
    client = s3.client()
    for trial_id, rows in trials.items():
        saved = {int(str(r["epoch"])) for r in rows if r.get("checkpoint_dir_name")}
        assert saved == {e for e in policy if e <= len(rows)}, trial_id
        # the kept checkpoints are in the bucket, whichever node wrote them
        states = [k for k in keys if f"_{trial_id}/checkpoint_" in k and k.endswith("/replay.json")]
        kept = [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read())["epoch"] for k in states]
        assert kept and max(kept) == len(rows) and set(kept) <= policy, (trial_id, kept)
    study = optuna.load_study(study_name="many", storage=f"sqlite:///{tmp_path / 'runs' / 'many' / 'optuna.db'}")
    assert len(study.trials) == 16 and all(t.state.is_finished() for t in study.trials)
    children = _children(MlflowClient(two_nodes["tracking_uri"]), "many")
    assert len(children) == 16 and all(c.info.status == "FINISHED" for c in children)


def test_worker_node_death_resumes_the_trial_from_its_checkpoint(two_nodes_to_kill: dict[str, str], tmp_path: Path,
                                                                  s3: S3Server) -> None:
    two_nodes = two_nodes_to_kill
    (tmp_path / "space.yaml").write_text(SPACE)
    args = [sys.executable, "-m", "study.run", "--quiet", "--space", "space.yaml", "--name", "nodes",
            "--address", two_nodes["address"], "--policy", "fifo", "--max-failures", "3", "--concurrency", "2",
            "--no-test", "--no-report", "--tracking-uri", two_nodes["tracking_uri"], "--storage", two_nodes["storage"]]
    proc = subprocess.Popen(args, cwd=tmp_path, env=two_nodes, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    client = MlflowClient(two_nodes["tracking_uri"])
    victim = None
    deadline = time.time() + 300
    while victim is None and time.time() < deadline:  # the trials' epochs, as MLflow receives them
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        for run in _children(client, "nodes"):
            on_worker = "127.0.0.3" in run.data.tags.get("nodes", run.data.tags.get("node_ip", ""))
            if on_worker and run.data.metrics.get("epoch", 0) >= 2:
                victim = run.data.tags["tune_trial_id"]  # it has a checkpoint in the bucket to resume from
        time.sleep(0.5)
    assert victim is not None, "no trial checkpointed on the worker node in time"
    os.kill(_raylet_pid("127.0.0.3"), signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]

    rows = _rows(s3, two_nodes["bucket"], "nodes")[victim]
    epochs = [int(str(r["epoch"])) for r in rows]
    assert epochs[-1] == 6 and epochs.count(1) == 1  # continued, not restarted from epoch 1
    assert rows[-1]["node_ip"] == "127.0.0.2", [(r["epoch"], r["node_ip"]) for r in rows]
    children = _children(client, "nodes")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    run = next(c for c in children if c.data.tags["tune_trial_id"] == victim)
    assert run.data.tags["nodes"] == "127.0.0.3,127.0.0.2"
    assert run.data.tags["outcome"] == "completed" and int(run.data.tags["retries"]) >= 1
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "epoch"))
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not list(tmp_path.rglob("result.json"))  # nothing of Tune's on a local disk of the driver's
