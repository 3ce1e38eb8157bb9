"""Cluster storage as a cloud cluster has it: the tests that start processes (the rest, and what they share,
are in tests/unit/study/test_storage.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.servers import S3Server, free_port, start_mlflow_server, stop_server
from tests.unit.study.test_storage import ROOT, _run, _trial_config  # noqa: F401


@pytest.mark.slow
def test_a_study_with_tune_and_mlflow_on_s3_reports_and_reports_again_from_s3(s3: S3Server, tmp_path: Path) -> None:
    """The endpoint in the URI (pyarrow's form for MinIO and other S3-compatible stores), the
    MLflow server's artifacts on the same store: Tune's experiment, the checkpoints, the report
    and the best checkpoint are all in the bucket, and read back from it."""
    tune_bucket, mlflow_bucket = s3.bucket("rra-tune"), s3.bucket("rra-mlflow")
    port = free_port()
    server = start_mlflow_server(tmp_path, port, artifacts=f"s3://{mlflow_bucket}/artifacts",
                                 env={**s3.env, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint})
    uri = f"http://127.0.0.1:{port}"
    storage = s3.uri(tune_bucket, "tune")
    try:
        proc = _run(tmp_path, s3.env, "--quiet", "--space", "smoke", "--name", "cloud", "--storage", storage,
                    "--tracking-uri", uri)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        summary = json.loads((tmp_path / "runs" / "cloud" / "summary.json").read_text())
        assert summary["tune_path"] == s3.uri(tune_bucket, "tune/cloud")
        keys = s3.keys(tune_bucket, "tune/cloud/")
        assert any("experiment_state" in k for k in keys), keys[:20]  # Tune's saved experiment, to restore from
        assert sum(k.endswith("/checkpoint.pt") for k in keys) >= len(summary["trials"])  # from every trial
        assert not list((tmp_path / "runs").rglob("result.json"))  # nothing of Tune's in the study folder

        # MLflow's artifacts went through the server into the bucket: the report and the best checkpoint
        stored = s3.keys(mlflow_bucket, "artifacts/")
        assert any(k.endswith("report/report.html") for k in stored) and any(k.endswith("checkpoint/checkpoint.pt")
                                                                             for k in stored)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("cloud")
        best = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("best") == "true")
        assert best.data.tags["tune_trial_id"] == summary["best"]["trial_id"]
        local = Path(client.download_artifacts(best.info.run_id, "checkpoint", str(tmp_path / "best")))
        from trainables.trainable import evaluate_checkpoint

        record = json.loads((tmp_path / "runs" / "cloud" / "study.json").read_text())
        assert record["stores"]["storage_path"] == storage
        trial_config = _trial_config(s3, tune_bucket, summary["best"]["trial_id"])
        tested = evaluate_checkpoint(trial_config, str(local))
        assert tested["test_acc"] == pytest.approx(summary["best"]["test_acc"])  # the checkpoint the study tested

        # the report again, its Tune results read from the bucket alone
        shutil.rmtree(tmp_path / "runs" / "cloud" / "report")
        again = _run(tmp_path, s3.env, "--name", "cloud", "--no-pictures", module="study.report")
        assert again.returncode == 0, again.stderr[-3000:]
        facts = json.loads((tmp_path / "runs" / "cloud" / "report" / "report.json").read_text())
        assert facts["best"]["name"] == summary["best"]["name"] and facts["mlflow_disagreements"] == []
    finally:
        stop_server(server)


@pytest.mark.slow
def test_the_endpoint_in_aws_endpoint_url_works_too(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.bucket("rra-env-form")
    env = {**s3.env, "AWS_ENDPOINT_URL": s3.endpoint}
    proc = _run(tmp_path, env, "--quiet", "--space", "smoke", "--name", "envform", "--trainable", "replay",
                "--replay-epoch-s", "0.05", "--storage", f"s3://{bucket}/studies", "--no-report")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((tmp_path / "runs" / "envform" / "summary.json").read_text())
    assert summary["tune_path"] == f"s3://{bucket}/studies/envform"
    keys = s3.keys(bucket, "studies/envform/")
    assert sum(k.endswith("/result.json") for k in keys) == len(summary["trials"])
    report = _run(tmp_path, env, "--name", "envform", "--no-pictures", "--no-mlflow", module="study.report")
    assert report.returncode == 0, report.stderr[-3000:]


@pytest.mark.slow
def test_a_missing_bucket_is_a_one_line_error_before_ray_starts(s3: S3Server, tmp_path: Path) -> None:
    proc = _run(tmp_path, s3.env, "--space", "smoke", "--name", "nobucket", "--storage", s3.uri("rra-missing", "t"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: --storage {s3.uri('rra-missing', 't')}: bucket 'rra-missing' does not exist (create it first; the "
        "study does not create buckets)"]
    assert not (tmp_path / "runs" / "nobucket").exists()  # nothing was started


@pytest.mark.slow  # the command, as a user starts it
def test_an_unreachable_endpoint_is_a_one_line_error_before_ray_starts(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    storage = f"s3://rra-tune/t?endpoint_override=127.0.0.1:{port}&scheme=http"
    proc = _run(tmp_path, {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}, "--space", "smoke", "--storage",
                storage)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: --storage {storage}: the storage endpoint 127.0.0.1:{port} is unreachable")
    assert not (tmp_path / "runs").exists()
