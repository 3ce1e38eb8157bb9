"""Cluster storage as a cloud cluster has it: no shared disk, Tune's storage and MLflow's
artifacts in an S3-compatible store (moto's server, started here), in both of pyarrow's forms
(the endpoint in the URI's query, or in AWS_ENDPOINT_URL); a bad endpoint or bucket is a one-line
error before Ray starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.servers import S3Server

ROOT = Path(__file__).resolve().parents[3]


def _run(cwd: Path, env: dict[str, str], *args: str, module: str = "study.run") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _trial_config(s3: S3Server, bucket: str, trial_id: str) -> dict[str, object]:
    """A trial's config as Tune saved it in the bucket (its params.json)."""
    (key,) = [k for k in s3.keys(bucket, "tune/cloud/") if k.endswith(f"_{trial_id}/params.json")]
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
    return dict(json.loads(body))


def test_the_experiment_path_keeps_the_uris_query_after_its_path() -> None:
    from study.record import join_uri

    assert join_uri("s3://b/tune?endpoint_override=h:9000&scheme=http", "s") == \
        "s3://b/tune/s?endpoint_override=h:9000&scheme=http"
    assert join_uri("s3://b/tune/", "s") == "s3://b/tune/s" and join_uri("s3://b", "s") == "s3://b/s"
    assert join_uri("/data/runs/", "s") == "/data/runs/s"
