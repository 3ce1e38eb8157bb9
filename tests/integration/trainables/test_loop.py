from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import tiny_config
from tests.unit.trainables.test_loop import TIMING, _abort_while_decoding, _jpegs, _Parent, _PidLog, _run, _run_until  # noqa: F401
from trainables.data.build import DataSplits, build_datasets
from trainables.loop import (
    SeededItems,
    SeededSampler,
    fit,
    make_loader,
)


@pytest.mark.slow  # loader workers
def test_loader_workers_live_for_the_whole_trial(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=3, num_workers=1)
    data = build_datasets(cfg)
    logs = tmp_path / "train", tmp_path / "val"
    splits = DataSplits(_PidLog(data.train, logs[0]), _PidLog(data.val, logs[1]), data.test, data.num_classes)
    fit(cfg, lambda m, s: None, data=splits)
    for log in logs:
        pids = set(log.read_text().split())
        assert len(pids) == 1 and str(os.getpid()) not in pids  # one worker, started once


@pytest.mark.slow  # loader workers
def test_the_numbers_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=2, augment="flip_crop", device="cpu", **_jpegs(tmp_path))
    by_workers = [_run(tiny_config(**{**cfg.to_dict(), "num_workers": n}))[0] for n in (0, 2)]
    assert by_workers[0] == by_workers[1]


@pytest.mark.slow  # loader workers
def test_images_decoded_in_memory_are_read_without_workers(tmp_path: Path) -> None:
    # Workers would only copy the cache's (or the synthetic set's) batches between processes.
    on_disk = {**_jpegs(tmp_path), "num_workers": 2}
    for overrides, workers in (({"num_workers": 2}, 0), ({**on_disk, "image_cache": str(tmp_path / "c")}, 0),
                               (on_disk, 2)):
        cfg = tiny_config(**overrides)
        data = build_datasets(cfg)
        assert make_loader(data.train, cfg, torch.device("cpu"), True).num_workers == workers
        assert make_loader(data.val, cfg, torch.device("cpu"), False).num_workers == workers


@pytest.mark.slow  # spawned loader workers
def test_training_items_load_in_spawned_workers() -> None:
    # A worker started with spawn (macOS; Linux from Python 3.14) gets the dataset pickled and
    # makes the same items as the main process.
    data = build_datasets(tiny_config(augment="flip_crop"))
    batches = []
    for workers, context in ((0, None), (1, "spawn")):
        loader = DataLoader(SeededItems(data.train), batch_size=8, num_workers=workers, multiprocessing_context=context,
                            sampler=SeededSampler(len(data.train), True, torch.Generator().manual_seed(3)))  # type: ignore[arg-type]
        batches.append(next(iter(loader)))
    assert all(torch.equal(a, b) for a, b in zip(*batches, strict=True))


@pytest.mark.slow
def test_a_short_run_beats_chance_by_a_wide_margin() -> None:
    # The embedded default made smaller (4 classes, so chance is 0.25) and easier (fainter
    # distractors), so that ten short epochs show learning.
    cfg = tiny_config(epochs=10, synthetic_images_per_class=100, image_size=64, patch_size=64, lstm_hidden=32,
                      recursion_steps=4, val_fraction=0.15, threads=0, synthetic_distractor_contrast=0.45)
    metrics, _ = _run(cfg)
    best = max(m["val_acc"] for m in metrics)
    assert best > 0.25 + 0.3, metrics
    assert all(math.isfinite(m["train_loss"]) for m in metrics)


@pytest.mark.slow  # the fork server and its workers
def test_workers_start_from_a_fork_server_not_from_the_trials_process() -> None:
    # a fork of the trial's threaded process would copy the locks its other threads hold
    # (docs/reliability.md): the workers are the children of a server that runs no other thread
    loader = make_loader(_Parent(), tiny_config(num_workers=2), torch.device("cpu"), False)
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    parents = {int(p) for batch in loader for p in batch}
    assert len(parents) == 1 and os.getpid() not in parents


@pytest.mark.slow  # a process of its own, with a loader worker
def test_a_worker_that_aborts_leaves_its_python_stack_in_the_trials_log() -> None:
    # the loader reports only the worker's signal; the stack says what the worker was doing
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", "from tests.unit.trainables.test_loop import _read_aborting; "
                           "_read_aborting()"], cwd=root, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "Fatal Python error: Aborted" in done.stderr and "_abort_while_decoding" in done.stderr


def test_resume_equals_an_uninterrupted_run_with_a_loader_worker(tmp_path: Path) -> None:
    """The unit test's resume, with images decoded by a DataLoader worker (a process)."""
    from tests.unit.trainables import test_loop as unit

    unit.test_resume_equals_an_uninterrupted_run({"augment": "flip_crop", "num_workers": 1, "on_disk": True}, tmp_path)
