"""A soak of DataLoader workers decoding JPEGs where the study starts them: inside Ray trials (a
Ray worker process, which holds Ray's gRPC threads), and in a driver process after Ray, Tune and
MLflow have run in it (the situation of the test that once saw a worker die of "double free or
corruption").

    python -m benchmarks.diagnostics.worker_soak [--trials 8] [--rounds 4] [--workers 2] [--driver-rounds 20]
        [--train] [--malloc-check] [--start-method trial|fork] [--out benchmarks/results/worker_soak.json]

Each round builds the trial's own loader (trainables.loop.make_loader over an image folder of
JPEGs, `image_cache: off`, so the workers decode) and reads it to the end: `workers` worker
starts a round. A worker that dies fails the round with DataLoader's error, which is recorded
with the worker's exit signal. `--malloc-check` runs everything under glibc's malloc checking
(MALLOC_CHECK_=3 with libc_malloc_debug preloaded), which aborts at the first double free
instead of corrupting the heap silently; PYTHONFAULTHANDLER prints the Python stack of a worker
that dies of a signal. Under `--malloc-check` only a death is evidence: the checking allocator's
lock is not safe across fork, so a worker forked while another thread allocates can hang in its
first allocation, whatever code makes it (benchmarks/diagnostics/fork_race.py measures it).
`--train` makes each round a fresh trial that runs one epoch
(trainables.loop.run_epoch: its train and validation loaders start their workers, then the
process trains), so that workers start from a process that has trained, with torch's thread
pools made and resized (`threads` alternates between 1 and 2), as in the test that saw the crash.
The loaders start their workers as the trial's do (trainables.data.base.worker_context: from a fork
server since 8832f7b; forked from the process before), or with `--start-method fork` forked
from the process that reads them, as before (the condition the crash was seen in); the
results record which, in the driver and in every trial.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

from benchmarks.machine import machine

MALLOC_DEBUG = Path("/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")


def _start_method() -> str:
    """How a loader made now (trainables.data.base.worker_settings) starts its workers."""
    import trainables.data.base as base

    context = base.worker_context()
    return "fork (torch's default on Linux)" if context is None else str(context.get_start_method())


def starting(method: str) -> contextlib.AbstractContextManager[Any]:
    """Within it, the trial's loaders (trainables.data.base.worker_settings) start their workers
    by `method`: "trial", as they do (trainables.data.base.worker_context), or "fork", forked
    from the process that reads them, as they did before 8832f7b; nothing else differs."""
    import multiprocessing
    from unittest import mock

    import trainables.data.base as base

    if method == "fork":
        return mock.patch.object(base, "worker_context", lambda: multiprocessing.get_context("fork"))
    return contextlib.nullcontext()


def write_jpegs(root: Path, classes: int = 4, per_class: int = 24, size: int = 96) -> Path:
    """An image folder (train/ and test/, one folder per class) of random JPEGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", per_class // 4)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def trial_config(data_dir: str, workers: int) -> Any:
    from trainables.config import TrialConfig

    return TrialConfig.from_dict({"dataset": "imagefolder", "data_dir": data_dir, "image_cache": "off",
                                  "num_workers": workers, "image_size": 64, "patch_size": 32, "batch_size": 8,
                                  "val_fraction": 0.25, "threads": 1, "device": "cpu"})


def soak(data_dir: str, workers: int, rounds: int, train: bool = False, method: str = "trial") -> dict[str, Any]:
    """`rounds` fresh loaders over the training split, each read to its end, in this process;
    with `train`, `rounds` fresh trials of one epoch each (two loaders a round); the workers
    started by `method` (`starting`)."""
    with starting(method):
        return {**_soak(data_dir, workers, rounds, train), "start_method": _start_method()}


def _soak(data_dir: str, workers: int, rounds: int, train: bool) -> dict[str, Any]:
    import dataclasses

    import torch

    from trainables.data.build import build_datasets
    from trainables.loop import make_loader, run_epoch, setup_trial

    cfg = trial_config(data_dir, workers)
    data = build_datasets(cfg)
    failures, images = [], 0
    if train:
        for i in range(rounds):
            trial = setup_trial(dataclasses.replace(cfg, seed=i, threads=1 + i % 2), data)
            try:
                run_epoch(trial)
                images += len(cast(Sized, data.train)) + len(cast(Sized, data.val))
            except RuntimeError as err:
                failures.append({"round": i, "error": str(err).splitlines()[0][:300]})
            finally:
                del trial  # its persistent workers end with its loaders
        return {"pid": os.getpid(), "rounds": rounds, "worker_starts": 2 * rounds * workers, "images": images,
                "failures": failures}
    for i in range(rounds):
        loader = make_loader(data.train, cfg, torch.device("cpu"), shuffle=True,
                             generator=torch.Generator().manual_seed(i))
        try:
            for batch in loader:
                images += int(batch[1].shape[0])
        except RuntimeError as err:  # DataLoader's report of a worker that died
            failures.append({"round": i, "error": str(err).splitlines()[0][:300]})
    return {"pid": os.getpid(), "rounds": rounds, "worker_starts": rounds * workers, "images": images,
            "failures": failures}


def _trainable(config: dict[str, Any]) -> None:
    from ray import tune

    tune.report({"done": 1, **soak(config["data_dir"], config["workers"], config["rounds"], config["train"],
                                   config["method"])})


def in_trials(data_dir: str, trials: int, workers: int, rounds: int, storage: str,
              train: bool = False, method: str = "trial") -> list[dict[str, Any]]:
    """The soak inside Ray trials (two at a time), through Tune as a study runs them."""
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(_trainable, {"cpu": 1}),
        param_space={"data_dir": data_dir, "workers": workers, "rounds": rounds, "train": train, "method": method,
                     "i": tune.grid_search(range(trials))},
        run_config=tune.RunConfig(name="soak", storage_path=storage, verbose=0))
    results = tuner.fit()
    out: list[dict[str, Any]] = []
    for i in range(len(results)):
        result = results[i]
        if result.error is not None:
            out.append({"error": str(result.error).splitlines()[0][:300]})
        else:
            metrics = result.metrics or {}
            out.append({k: metrics.get(k) for k in ("pid", "rounds", "worker_starts", "images", "failures",
                                                    "start_method")})
    return out


def after_ray_in_driver(data_dir: str, workers: int, rounds: int, folder: Path, train: bool = False,
                        method: str = "trial") -> dict[str, Any]:
    """The test's situation: Ray has run in this process and ended, MLflow runs in it (the
    threads they leave live on), then loaders start workers from it."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    with mlflow.start_run():
        mlflow.log_metric("x", 1.0)
    return soak(data_dir, workers, rounds, train, method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="fresh loaders per trial")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--driver-rounds", type=int, default=20, help="fresh loaders in the driver after Ray")
    parser.add_argument("--train", action="store_true", help="a one-epoch trial a round")
    parser.add_argument("--malloc-check", action="store_true", help="glibc's malloc checks (MALLOC_CHECK_=3)")
    parser.add_argument("--start-method", choices=("trial", "fork"), default="trial",
                        help="trial: as the trial's loaders start their workers (from a fork server); "
                             "fork: forked from the reading process, as before 8832f7b")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/worker_soak.json"))
    args = parser.parse_args()
    if args.malloc_check and os.environ.get("MALLOC_CHECK_") != "3":
        # the variables must be set before the interpreter (and Ray's workers, started from it) start
        env = {**os.environ, "MALLOC_CHECK_": "3", "LD_PRELOAD": str(MALLOC_DEBUG), "PYTHONFAULTHANDLER": "1"}
        os.execvpe(sys.executable, [sys.executable, "-m", "benchmarks.diagnostics.worker_soak", *sys.argv[1:]], env)
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")

    import logging

    import ray

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rra-soak-") as tmp:
        folder = Path(tmp)
        data_dir = str(write_jpegs(folder / "data"))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        try:
            trials = in_trials(data_dir, args.trials, args.workers, args.rounds, str(folder / "tune"), args.train,
                               args.start_method)
        finally:
            ray.shutdown()  # as in the test that saw the crash: Ray had run in the process and ended
        driver = after_ray_in_driver(data_dir, args.workers, args.driver_rounds, folder, args.train,
                                     args.start_method)
    in_trial_starts = sum(int(t.get("worker_starts", 0)) for t in trials)
    failures = [f for t in trials for f in t.get("failures", [])] + driver["failures"]
    result = {
        "command": "python -m benchmarks.diagnostics.worker_soak " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "malloc_check": os.environ.get("MALLOC_CHECK_") == "3",
        "start_method": driver["start_method"],
        "trial_start_methods": sorted({str(t.get("start_method")) for t in trials}),
        "trains_between_forks": args.train,
        # "0": Arrow's at-fork handlers off (as studies run: study.execution); unset: on
        "arrow_register_atfork": os.environ.get("ARROW_REGISTER_ATFORK"),
        "worker_starts_in_trials": in_trial_starts,
        "worker_starts_in_driver_after_ray": driver["worker_starts"],
        "trials_errored": sum("error" in t for t in trials),
        "failures": failures,
        "seconds": round(time.perf_counter() - began, 1),
        "trials": trials,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("trials", "machine")}, indent=2))


if __name__ == "__main__":
    main()
