"""Shared test helpers: small trial configs that train in seconds on the CPU."""

from __future__ import annotations

import multiprocessing.forkserver
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from trainables.config import TrialConfig

# A native crash in any process the tests start (studies, Ray workers, DataLoader workers)
# prints its Python stack: a segfault or an abort once seen is then more than an exit code
# (docs/reliability.md).
os.environ.setdefault("PYTHONFAULTHANDLER", "1")

TINY: dict[str, Any] = {
    "synthetic_classes": 4,
    "synthetic_images_per_class": 16,
    "synthetic_test_images_per_class": 4,
    "image_size": 32,
    "patch_size": 32,
    "batch_size": 16,
    "epochs": 2,
    "lstm_hidden": 16,
    "recursion_steps": 3,
    "val_fraction": 0.25,
    "threads": 1,
}


UNIT_TESTS_START_NO_PROCESS = ("a unit test started a process: tests that start subprocesses, fork servers, forked "
                               "workers, Ray or servers belong in tests/integration (`make test` runs them, `make "
                               "check` runs tests/unit only)")
UNIT, INTEGRATION = Path(__file__).resolve().parent / "unit", Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The lane is the folder: every test of tests/integration is marked slow (what
    `-m "not slow"` leaves out, and what may start processes); a test of tests/unit marked slow
    is an error that says to move it."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.slow)
        elif path.is_relative_to(UNIT) and item.get_closest_marker("slow") is not None:
            raise pytest.UsageError(f"{item.nodeid} is marked slow: a test that starts processes belongs in "
                                    "tests/integration")
# Commands that read a fact and exit at once, which code under unit test may run (the git
# revision a record names, the CPU a result names): no Python, no fork of the test process.
FACT_COMMANDS = frozenset({"git", "lscpu", "uname"})


class _RefusedProcess(subprocess.Popen):  # type: ignore[type-arg]
    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        command = args if isinstance(args, str) else str(next(iter(args)))
        if os.path.basename(command.split()[0]) not in FACT_COMMANDS:
            raise AssertionError(f"{UNIT_TESTS_START_NO_PROCESS}: {args!r:.120}")
        super().__init__(args, *rest, **kwargs)


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(UNIT_TESTS_START_NO_PROCESS)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast lane stays fast and free of scheduling: a test not marked slow that starts a
    process (subprocess, a fork, a fork server's child) fails at once, naming the rule."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setattr(subprocess, "Popen", _RefusedProcess)
        monkeypatch.setattr(os, "fork", _refuse)
        monkeypatch.setattr(multiprocessing.forkserver.ForkServer, "ensure_running", _refuse)


def tiny_config(**overrides: Any) -> TrialConfig:
    """A trial that runs an epoch in well under a second."""
    return TrialConfig.from_dict({**TINY, **overrides})


@pytest.fixture(autouse=True)
def _environment_restored() -> Any:
    """What a test, or code it runs in-process (the study's `execution.set_ray_env`), sets in
    os.environ is undone after it: a variable left behind changes the tests that run after it
    in the same process. (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS left by one test made Tune write no
    result.json in a later one, in whichever xdist worker ran both.)"""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _image_cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """On-disk datasets' decoded-image caches go to the session's temporary folder (the
    variable reaches the processes that tests start, Ray workers included)."""
    import os

    before = os.environ.get("RRA_IMAGE_CACHE")
    os.environ["RRA_IMAGE_CACHE"] = str(tmp_path_factory.mktemp("image-cache"))
    yield
    if before is None:
        del os.environ["RRA_IMAGE_CACHE"]
    else:
        os.environ["RRA_IMAGE_CACHE"] = before


@pytest.fixture(scope="module")
def s3() -> Any:
    """A local S3-compatible server (tests.servers.S3Server) for the tests of one module."""
    from tests.servers import S3Server

    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


def small_space(study: str, images: int, rest: str) -> str:
    """A search space file for study tests: a small synthetic set (4 classes, `images` per class,
    32 px) and a small model; `study` is the study block's flow mapping, `rest` the YAML after
    the constants (parameters, baselines, enqueue). The noise-aware ending is off unless `study`
    names `finalists` (tests/integration/study/test_study_e2e.py and test_noise.py test it); the policy is
    ASHA unless `study` names one (the tests check its stops; the default is adaptive)."""
    if "finalists" not in study:
        study += ", finalists: 0"
    if "policy" not in study:
        study += ", policy: asha"
    return f"""study: {{{study}}}
constants:
  synthetic_classes: 4
  synthetic_images_per_class: {images}
  synthetic_test_images_per_class: 4
  val_fraction: 0.25
  image_size: 32
  patch_size: 32
  lstm_hidden: 16
  batch_size: 16
{rest.strip()}
"""


def replay_space(max_epochs: int, num_samples: int, baselines: bool = True, finalists: int = 0) -> str:
    """A search space file for replayed studies (`--trainable replay`): two parameters, ASHA with
    grace 1 and reduction factor 2, a checkpoint every 2 epochs, the global-only baseline, and
    `finalists` re-run with 2 new seeds (0: the noise-aware ending off)."""
    space = f"""\
description: replayed curves
study: {{metric: val_acc, mode: max, max_epochs: {max_epochs}, grace_period: 1, reduction_factor: 2,
        num_samples: {num_samples}, checkpoint_every: 2, finalists: {finalists}, policy: asha}}
constants: {{backbone: tiny, image_size: 32, patch_size: 32, synthetic_classes: 4}}
parameters:
  recursion_steps: {{type: int, low: 1, high: 6}}
  crop_scale: {{type: float, low: 0.1, high: 1.0}}
"""
    return space + "baselines:\n  global_only: {local_stream: false}\n" if baselines else space


_CACHES = (".venv/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", "__pycache__/", ".egg-info/")


def _checkout_files() -> set[str] | None:
    """Untracked and ignored files in the checkout (caches left out); None outside a git checkout."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=root,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    paths = {line[3:] for line in out.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not any(c in p or p.startswith(c) for c in _CACHES)}


@pytest.fixture(autouse=True, scope="session")
def _tests_leave_no_file_in_the_checkout() -> Any:
    """Tests write into temporary folders only: a file they leave in the source tree fails the run."""
    before = _checkout_files()
    yield
    after = _checkout_files()
    if before is not None and after is not None:
        left = sorted(after - before)
        assert not left, f"tests left files in the checkout: {left[:10]}"
