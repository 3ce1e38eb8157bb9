"""cluster.yaml and clusters/onprem.yaml pass the checks `ray up` runs before it connects
anywhere (Ray's own config preparation and schema validation), and keep the project's rules."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "cluster.yaml", ROOT / "clusters" / "onprem.yaml"]


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _validate(config: dict[str, Any]) -> dict[str, Any]:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_ray_accepts_the_cluster_config(path: Path) -> None:
    prepared = _validate(_load(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_ray_rejects_a_broken_copy(path: Path) -> None:
    broken = _load(path)
    broken["head_start_ray_commands"] = "ray start --head"  # a string where a list is required
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)


def test_the_aws_cluster_declares_gpu_workers_and_a_cpu_head() -> None:
    config = _load(ROOT / "cluster.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # trials never land on the head
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] == 1 and t["min_workers"] == 0 for t in workers)
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in workers)
    # every node type uses the project's security group, so Ray does not create one with SSH
    # open to the world
    assert all(t["node_config"].get("SecurityGroupIds") for t in types.values())


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_servers_listen_on_loopback_and_token_auth_stays_on(path: Path) -> None:
    config = _load(path)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "mlflow server" in head and "--host 127.0.0.1" in head
    for command in [*config["head_start_ray_commands"], *config["worker_start_ray_commands"]]:
        if "ray st" in command:
            assert "RAY_AUTH_MODE=token" in command
        if "ray start" in command:  # the trials' processes inherit it from the raylet
            assert "ARROW_REGISTER_ATFORK=0 ray start" in command
    assert "0.0.0.0" not in path.read_text()
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # from the user's machine


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_credentials_in_the_cluster_config(path: Path) -> None:
    text = path.read_text().lower()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "password", "begin rsa", "begin openssh"):
        assert secret not in text
