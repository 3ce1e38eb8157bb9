"""How the study's driver holds as a study grows: 100, 300 and 1,000 trials on many slots.

    python -m benchmarks.scale [--sizes 100 300 1000] [--slots 32] [--epoch-s 1.0 [3.0 ...]] [--max-epochs 20]
                               [--storage sqlite|postgresql] [--sections searcher study checkpoint]
                               [--out benchmarks/results/scale.json]

Three sections, each written to the JSON as soon as it ends (a rerun skips what is there unless
--fresh):

- `searcher`: the project's searcher (Optuna TPE over SQLite, ask-and-tell, PRUNED for stopped
  trials) and Ray's stock OptunaSearch on the same storage, driven directly through Tune's
  searcher calls with `--slots` trials open at once and ASHA-like trial lengths. Time per
  `suggest` and per reported result, in windows of the study's size.
- `study`: the real study (`python -m study.run --trainable replay`: the project's searcher,
  its ASHA, its MLflow queue to a real `mlflow server` over HTTP, Tune storage on disk, the
  checkpoint policy) against stock Ray Tune wired by hand (OptunaSearch + ASHAScheduler +
  MLflowLoggerCallback to the same server, a checkpoint every epoch), each a fresh process on a
  local Ray with `--slots` logical CPUs. Both run the same replay trainable, which sleeps
  `--epoch-s` per epoch, so what is measured is the driver. Per run: makespan and its ideal
  (trial time / slots), utilisation (trial time / (slots x span from the first trial's start to
  the last one's end)), start-up (process start to the first trial's start), the time a trial
  waits on each report (median, p99: the driver's turnaround of a result), where the slots'
  time went that was not epochs (waiting on reports, or no trial in the slot), trial starts per
  second, the driver's CPU per result (over the whole study, and the median of 20 s windows),
  its peak memory, and MLflow requests per second (from the server's log). Several --epoch-s
  values make a sweep; --storage postgresql puts MLflow's server and the Optuna study on a
  PostgreSQL server started for the run.
- `checkpoint`: bytes a trial writes per epoch at the paper configuration, every-epoch full
  checkpoints against the checkpoint policy.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")

SPACE = """\
description: scale benchmark (replayed curves of the ablation space's factors)
study: {{metric: val_acc, mode: max, max_epochs: {max_epochs}, grace_period: 1, reduction_factor: 3,
        num_samples: {num_samples}, checkpoint_every: 5}}
constants: {{backbone: tiny, image_size: 32, patch_size: 32, synthetic_classes: 10, lr: 0.01}}
parameters:
  recursion_steps: {{type: int, low: 1, high: 8}}
  crop_scale: {{type: float, low: 0.1, high: 1.0, log: true}}
  attention_temperature: {{type: float, low: 0.1, high: 10.0, log: true}}
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# ---------------------------------------------------------------- searcher section


def _trial_lengths(n: int, max_epochs: int, seed: int = 0) -> list[int]:
    """ASHA-like lengths: 2/3 stop at 1 epoch, then at 3, 9, and the rest run to the end."""
    import random

    rng = random.Random(seed)
    rungs = [1, 3, 9, max_epochs]
    out = []
    for _ in range(n):
        level = 0
        while level < len(rungs) - 1 and rng.random() < 1 / 3:
            level += 1
        out.append(rungs[level])
    return out


def searcher_section(sizes: list[int], slots: int, max_epochs: int) -> dict[str, Any]:
    import yaml

    from study import searchers
    from study.spaces import space_from_raw

    n = max(sizes)
    raw = yaml.safe_load(SPACE.format(max_epochs=max_epochs, num_samples=n))
    space = space_from_raw(raw, "scale", Path("scale.yaml"))
    lengths = _trial_lengths(n, max_epochs)
    rows = {}
    for wiring in ("project", "stock"):
        with tempfile.TemporaryDirectory() as tmp:
            storage = f"sqlite:///{tmp}/optuna.db"
            if wiring == "project":
                searcher = searchers.FidelitySearcher(space, storage, "scale", "tpe", 0, baselines=False)
            else:
                searcher = searchers.stock_optuna_search(space, storage, "scale", 0)
            suggest_ms: list[float] = []
            result_ms: list[tuple[int, float]] = []
            open_trials: dict[str, list[int]] = {}  # trial id -> [epochs done, length, index]
            started = 0
            while started < n or open_trials:
                while started < n and len(open_trials) < slots:
                    tid = f"t{started:05d}"
                    t0 = time.perf_counter()
                    config = searcher.suggest(tid)
                    suggest_ms.append((time.perf_counter() - t0) * 1000)
                    assert config is not None
                    open_trials[tid] = [0, lengths[started], started]
                    started += 1
                for tid in list(open_trials):
                    done, length, index = open_trials[tid]
                    done += 1
                    open_trials[tid][0] = done
                    result = {"val_acc": 0.1 + 0.05 * done + 0.001 * (index % 7), "epoch": done,
                              "training_iteration": done}
                    t0 = time.perf_counter()
                    searcher.on_trial_result(tid, result)
                    if done >= length:
                        if length < max_epochs and hasattr(searcher, "on_trial_stopped"):
                            searcher.on_trial_stopped(tid)
                        searcher.on_trial_complete(tid, result)
                        del open_trials[tid]
                    result_ms.append((index, (time.perf_counter() - t0) * 1000))
            windows = []
            bounds = [0, *sorted(sizes)]
            for lo, hi in itertools.pairwise(bounds):
                ask = suggest_ms[lo:hi]
                res = [ms for i, ms in result_ms if lo <= i < hi]
                windows.append({"trials": f"{lo + 1}-{hi}", "suggest_ms_median": round(statistics.median(ask), 2),
                                "suggest_ms_p99": round(_percentile(ask, 0.99), 2),
                                "result_ms_median": round(statistics.median(res), 2),
                                "result_ms_p99": round(_percentile(res, 0.99), 2)})
            rows[wiring] = windows
            print(json.dumps({"searcher": wiring, "windows": windows}), flush=True)
    return {"trials": n, "slots": slots, "storage": "sqlite (file)", "sampler": "TPE (multivariate, constant liar)",
            "by_wiring": rows}


# ---------------------------------------------------------------- study section


def _watch(proc: subprocess.Popen[bytes], into: dict[str, Any]) -> None:
    """Polls a process's CPU seconds (all threads) and peak resident memory until it exits;
    `into["samples"]` holds (wall time, CPU seconds) pairs."""
    into["samples"] = []
    while proc.poll() is None:
        try:
            stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            into["cpu_s"] = (int(stat[11]) + int(stat[12])) / TICKS
            into["samples"].append((time.time(), into["cpu_s"]))
            status = Path(f"/proc/{proc.pid}/status").read_text()
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            if match:
                into["peak_rss_mb"] = int(match.group(1)) / 1024
        except (OSError, IndexError):
            pass
        time.sleep(0.5)


def _machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS  # all but idle and iowait


def _watch_machine(proc: subprocess.Popen[bytes], into: dict[str, Any]) -> None:
    """Until `proc` exits: the machine's busy CPU seconds over time, and when each Ray worker
    process (a trial's actor, or a worker Ray starts for one) was first seen."""
    into["busy"], into["workers"] = [], {}
    now = 0.0  # processes there before the first look did not start during the study
    while proc.poll() is None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) not in into["workers"]:
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if cmdline.startswith((b"ray::", b"ray_")) or b"default_worker.py" in cmdline:
                    into["workers"][int(entry.name)] = now
        now = time.time()
        into["busy"].append((now, _machine_busy_s()))
        time.sleep(2.0)  # a look at every process costs CPU; a worker starts in seconds here


def _machine_figures(machine_samples: dict[str, Any], first: float, last: float, trials: int) -> dict[str, float]:
    """While trials ran: how many of the machine's cores were busy, and how many Ray worker
    processes started per trial (each costs an interpreter start and Ray's imports)."""
    busy = _cpu_at(machine_samples["busy"], last) - _cpu_at(machine_samples["busy"], first)
    started = sum(1 for t in machine_samples["workers"].values() if first <= t <= last)
    return {"machine_cores_busy": round(busy / (last - first), 2), "cores": os.cpu_count() or 0,
            "worker_processes_started_per_trial": round(started / trials, 2)}


def _mlflow_server(folder: Path, port: int, log: Path, backend: str) -> subprocess.Popen[bytes]:
    import urllib.request

    out = log.open("ab")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend,
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"],
        cwd=folder, stdout=out, stderr=out, start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            if time.time() > deadline:
                raise RuntimeError("the MLflow server did not start") from None
            time.sleep(0.5)


def _requests(log: Path, start: int) -> dict[str, int]:
    """MLflow REST requests in the server's access log from byte `start`, by endpoint."""
    counts: dict[str, int] = {}
    with log.open("rb") as f:
        f.seek(start)
        for line in f.read().decode(errors="replace").splitlines():
            match = re.search(r'"(?:GET|POST|PATCH|DELETE) (/api/[^ ?"]+)', line)
            if match:
                counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def _trial_frames(tune_dir: Path) -> list[list[dict[str, Any]]]:
    from study.results import reports

    return list(reports(tune_dir).values())


def _cpu_at(samples: list[tuple[float, float]], when: float) -> float:
    before = [cpu for t, cpu in samples if t <= when]
    return before[-1] if before else 0.0


def _study_figures(trials: list[list[dict[str, Any]]], slots: int, process_start: float,
                   driver: dict[str, Any]) -> dict[str, Any]:
    starts = [rows[0]["wall_time"] - rows[0]["epoch_seconds"] for rows in trials]
    ends = [rows[-1]["wall_time"] for rows in trials]
    busy = sum(sum(r["epoch_seconds"] for r in rows) for rows in trials)
    results = sum(len(rows) for rows in trials)
    waits = [r["report_wait_s"] for rows in trials for r in rows[1:]]
    span = max(ends) - min(starts)
    # The driver's CPU while trials ran (its start-up, ray.init and imports, left out).
    running_cpu = _cpu_at(driver["samples"], max(ends)) - _cpu_at(driver["samples"], min(starts))
    # Slot time not spent in epochs: waiting on the driver's turnaround of a report, or no
    # trial in the slot at all (a trial ending, the next one starting: process, actor, config).
    slot_time = slots * span
    return {
        **_tail_figures(starts, ends, slots),
        "trials": len(trials), "results": results, "epochs_per_trial": round(results / len(trials), 2),
        "makespan_s": round(span, 1), "ideal_s": round(busy / slots, 1),
        "utilisation": round(busy / slot_time, 3),
        "slot_share_waiting_on_reports": round(sum(waits) / slot_time, 3),
        "slot_share_without_trial": round(1 - (busy + sum(waits)) / slot_time, 3),
        "trial_starts_per_s": round(len(trials) / span, 2),
        "mean_running": round((busy + sum(waits)) / span, 1),
        "startup_s": round(min(starts) - process_start, 1),
        "report_wait_ms_median": round(1000 * statistics.median(waits), 1),
        "report_wait_ms_p99": round(1000 * _percentile(waits, 0.99), 1),
        "driver_cpu_ms_per_result": round(1000 * running_cpu / results, 2),
        **_windowed_cpu(trials, driver["samples"], min(starts), max(ends)),
        "driver_cpu_s_while_trials_ran": round(running_cpu, 1),
        "driver_cpu_s_total": round(driver.get("cpu_s", float("nan")), 1),
        "driver_peak_rss_mb": round(driver.get("peak_rss_mb", float("nan")), 1),
    }


def _tail_figures(starts: list[float], ends: list[float], slots: int) -> dict[str, Any]:
    """The slots' time without a trial, split in two: before the last trial started, the
    turnaround between one trial and the next in a slot (per trial that waited for a slot), and
    after it, the study's tail (the last trials running on while the other slots have no trial
    left to take). A trial occupies its slot from its first epoch's start to its last report."""
    first, last_start, end = min(starts), max(starts), max(ends)

    def occupied(lo: float, hi: float) -> float:
        return sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in zip(starts, ends, strict=True))

    before, after = occupied(first, last_start), occupied(last_start, end)
    waited = max(1, len(starts) - slots)  # trials that started in a slot another trial had left
    gap = slots * (last_start - first) - before
    return {"slot_share_busy_until_last_start": round(before / (slots * (last_start - first)), 3)
            if last_start > first else None,
            "turnaround_s_per_trial": round(gap / waited, 2),
            "tail_s": round(end - last_start, 1),
            "tail_slot_share_without_trial": round((slots * (end - last_start) - after) / (slots * (end - first)), 3)}


def _windowed_cpu(trials: list[list[dict[str, Any]]], samples: list[tuple[float, float]], first: float,
                  last: float, window_s: float = 20.0) -> dict[str, float]:
    """The driver's CPU per result in consecutive windows of the study (the CPU it used in a
    window over the results reported in it): median and p90 over the windows with results."""
    times = sorted(r["wall_time"] for rows in trials for r in rows)
    costs, edge = [], first
    while edge + window_s <= last:
        n = sum(1 for t in times if edge <= t < edge + window_s)
        if n:
            costs.append(1000 * (_cpu_at(samples, edge + window_s) - _cpu_at(samples, edge)) / n)
        edge += window_s
    if not costs:
        return {}
    return {"driver_cpu_ms_per_result_window_median": round(statistics.median(costs), 2),
            "driver_cpu_ms_per_result_window_p90": round(_percentile(costs, 0.9), 2)}


def run_study(wiring: str, size: int, slots: int, epoch_s: float, max_epochs: int, tracking: str,
              log: Path, optuna_storage: str | None = None) -> dict[str, Any]:
    """One study in a fresh driver process (its Optuna study in `optuna_storage`, else SQLite
    in its folder); its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "scale.yaml"
        space.write_text(SPACE.format(max_epochs=max_epochs, num_samples=size))
        out = Path(tmp) / "runs"
        if wiring == "project":
            argv = [sys.executable, "-m", "study.run", "--space", str(space), "--name", "scale", "--trainable",
                    "replay", "--replay-epoch-s", str(epoch_s), "--num-cpus", str(slots), "--out", str(out),
                    "--tracking-uri", tracking, "--no-baselines", "--no-test", "--no-report", "--quiet"]
            if optuna_storage:
                argv += ["--optuna-storage", optuna_storage]
        else:
            argv = [sys.executable, "-m", "benchmarks.scale", "--stock-run", str(space), "--slots", str(slots),
                    "--epoch-s", str(epoch_s), "--tracking-uri", tracking, "--stock-out", str(out)]
        mark = log.stat().st_size if log.exists() else 0
        driver: dict[str, Any] = {}
        machine_samples: dict[str, Any] = {}
        start = time.time()
        with (Path(tmp) / "driver.log").open("wb") as dlog:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=dlog, stderr=subprocess.STDOUT,
                                    env={**os.environ, "RAY_DEDUP_LOGS": "0"})
            watchers = [threading.Thread(target=_watch, args=(proc, driver), daemon=True),
                        threading.Thread(target=_watch_machine, args=(proc, machine_samples), daemon=True)]
            for watcher in watchers:
                watcher.start()
            rc = proc.wait()
            for watcher in watchers:
                watcher.join()
        wall = time.time() - start
        if rc != 0:
            tail = (Path(tmp) / "driver.log").read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"{wiring} study of {size} trials exited with {rc}:\n" + "\n".join(tail))
        time.sleep(2)  # the server's log catches up
        requests = _requests(log, mark)
        trials = _trial_frames(out / "scale")
        figures = _study_figures(trials, slots, start, driver)
        first = min(rows[0]["wall_time"] - rows[0]["epoch_seconds"] for rows in trials)
        figures.update(_machine_figures(machine_samples, first, max(rows[-1]["wall_time"] for rows in trials),
                                        len(trials)))
        figures.update({"wiring": wiring, "size": size, "wall_s": round(wall, 1),
                        "mlflow_requests": sum(requests.values()),
                        "mlflow_requests_per_s": round(sum(requests.values()) / wall, 1),
                        "mlflow_by_endpoint": requests})
        return figures


def stock_run(space_path: Path, slots: int, epoch_s: float, tracking: str, out: Path) -> None:
    """Stock Ray Tune as a user wires it by hand: OptunaSearch (TPE, in memory), ASHAScheduler,
    MLflowLoggerCallback, a checkpoint every epoch; the same replay trainable."""
    import logging

    import ray
    import yaml
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from study.spaces import space_from_raw
    from trainables.replay import train_replay

    raw = yaml.safe_load(space_path.read_text())
    study = raw["study"]
    # the same parameters as the project's study, as the Optuna distributions a user would write
    space = {name: p.distribution() for name, p in space_from_raw(raw, "scale", space_path).parameters.items()}
    ray.init(num_cpus=slots, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    searcher = OptunaSearch(space=space, metric="val_acc", mode="max", seed=0)
    tuner = tune.Tuner(
        tune.with_parameters(train_replay, checkpoint_epochs=None, epoch_seconds=epoch_s),
        param_space={**raw["constants"], "epochs": study["max_epochs"]},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", search_alg=searcher,
                                    scheduler=ASHAScheduler(time_attr="epoch", max_t=study["max_epochs"],
                                                            grace_period=1, reduction_factor=3),
                                    num_samples=study["num_samples"], max_concurrent_trials=slots,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="scale", storage_path=str(out), verbose=0,
                                  callbacks=[MLflowLoggerCallback(tracking_uri=tracking,
                                                                  experiment_name="stock-scale")],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    tuner.fit()
    ray.shutdown()


def study_section(sizes: list[int], slots: int, epochs_s: list[float], max_epochs: int, wirings: list[str],
                  done: list[dict[str, Any]], save: Any, stock_sizes: list[int] | None = None,
                  storage: str = "sqlite") -> list[dict[str, Any]]:
    """Each (size, epoch length, wiring) not in `done`, with MLflow's server and the project's
    Optuna study on `storage`: SQLite files (the embedded default) or one PostgreSQL server.
    The stock wiring runs on SQLite only (its Optuna study is in memory)."""
    rows = list(done)

    def runs(wiring: str, size: int) -> bool:
        return wiring == "project" or (storage == "sqlite" and (stock_sizes is None or size in stock_sizes))

    todo = [(size, epoch_s, wiring) for epoch_s in epochs_s for size in sizes for wiring in wirings
            if runs(wiring, size) and not any((r["wiring"], r["size"], r.get("epoch_s"), r.get("storage", "sqlite"))
                                              == (wiring, size, epoch_s, storage) for r in rows)]
    if not todo:
        return rows
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        postgres = None
        if storage == "postgresql":
            from tests.servers import PostgresServer  # Debian's PostgreSQL, as the storage test starts it

            postgres = PostgresServer()
            stack.callback(postgres.stop)
        port = _free_port()
        log = Path(tmp) / "mlflow.log"
        backend = postgres.create("mlflow") if postgres else f"sqlite:///{Path(tmp) / 'srv.db'}"
        server = _mlflow_server(Path(tmp), port, log, backend)
        stack.callback(_stop, server)
        for i, (size, epoch_s, wiring) in enumerate(todo):
            optuna_storage = postgres.create(f"optuna{i}") if postgres and wiring == "project" else None
            row = {**run_study(wiring, size, slots, epoch_s, max_epochs, f"http://127.0.0.1:{port}", log,
                               optuna_storage), "epoch_s": epoch_s, "slots": slots, "storage": storage}
            print(json.dumps(row), flush=True)
            rows.append(row)
            save(rows)
    return rows


def _stop(server: subprocess.Popen[bytes]) -> None:
    import signal

    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- checkpoint section


def checkpoint_section() -> dict[str, Any]:
    """Bytes of a full checkpoint and of the last (model-only) one at the paper configuration,
    and bytes per trial-epoch: every epoch against the policy, for a 90-epoch trial."""
    import torch

    from study.execution import checkpoint_epochs
    from study.policies.asha import rungs
    from study.spaces import StudySettings
    from trainables.model import RRAConfig, build_model
    from trainables.trainable import final_state

    model = build_model(RRAConfig(num_classes=200, backbone="vgg19", add_on=True, add_on_channels=1024,
                                  patch_size=224, recursion_steps=10, lstm_hidden=512, lstm_layers=2))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    for p in model.parameters():
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": {}, "scaler": None,
             "epoch": 1, "best_val_acc": 0.0, "rng": {"torch": torch.get_rng_state()}, "config": {}}

    def size(obj: Any) -> int:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.tell()

    full, last = size(state), size(final_state(state))
    epochs = 90
    cases = {}
    asha = rungs(StudySettings(max_epochs=epochs, grace_period=10, reduction_factor=3))
    for name, every, decisions in (("paper (fixed point, every 10)", 10, ()),
                                   (f"ablation on the paper model (ASHA rungs {'/'.join(map(str, asha))}, every 10)",
                                    10, asha),
                                   ("every 5 epochs", 5, ())):
        at = checkpoint_epochs(every, decisions, epochs)
        total = (len(at) - 1) * full + last
        cases[name] = {"checkpoints": len(at), "bytes_per_trial_epoch": round(total / epochs),
                       "saving_vs_every_epoch": round(full * epochs / total, 1)}
    return {"parameters": sum(p.numel() for p in model.parameters()), "full_checkpoint_bytes": full,
            "last_checkpoint_bytes": last, "every_epoch_bytes_per_trial_epoch": full,
            "trial_epochs": epochs, "policies": cases}


# ---------------------------------------------------------------- tables and plot


def tables(report: dict[str, Any]) -> str:
    """The README's tables from a result file."""
    lines = []
    study = sorted(report.get("study", []),
                   key=lambda r: (r.get("storage", "sqlite"), r["epoch_s"], r["size"], r["wiring"]))
    if study:
        lines += ["| trials | wiring | storage | epoch s | results | makespan s (ideal) | utilisation | "
                  "report wait ms median / p99 | driver CPU ms per result: all / window median | driver peak MB | "
                  "MLflow req/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in study:
            window = r.get("driver_cpu_ms_per_result_window_median")
            lines.append(f"| {r['size']} | {r['wiring']} | {r.get('storage', 'sqlite')} | {r['epoch_s']:g} | "
                         f"{r['results']} | {r['makespan_s']:.0f} ({r['ideal_s']:.0f}) | {r['utilisation']:.2f} | "
                         f"{r['report_wait_ms_median']:.0f} / {r['report_wait_ms_p99']:.0f} | "
                         f"{r['driver_cpu_ms_per_result']:.1f} / {'-' if window is None else f'{window:.1f}'} | "
                         f"{r['driver_peak_rss_mb']:.0f} | {r['mlflow_requests_per_s']:.1f} |")
        lines += ["", "| trials | wiring | storage | epoch s | utilisation | slot time waiting on reports | "
                  "slot time without a trial | trial starts per s | Ray worker processes started per trial | "
                  "machine cores busy |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in study:
            if "slot_share_without_trial" not in r:
                continue
            lines.append(f"| {r['size']} | {r['wiring']} | {r.get('storage', 'sqlite')} | {r['epoch_s']:g} | "
                         f"{r['utilisation']:.2f} | {r['slot_share_waiting_on_reports']:.2f} | "
                         f"{r['slot_share_without_trial']:.2f} | {r['trial_starts_per_s']:.2f} | "
                         + (f"{r['worker_processes_started_per_trial']:.1f} | {r['machine_cores_busy']:.2f} of "
                            f"{r['cores']} |" if "machine_cores_busy" in r else "- | - |"))
    searcher = report.get("searcher", {}).get("by_wiring", {})
    if searcher:
        lines += ["", "| searcher | trials | suggest ms median / p99 | per result ms median / p99 |",
                  "|---|---|---|---|"]
        for wiring, windows in searcher.items():
            for w in windows:
                lines.append(f"| {wiring} | {w['trials']} | {w['suggest_ms_median']:.1f} / {w['suggest_ms_p99']:.0f} | "
                             f"{w['result_ms_median']:.1f} / {w['result_ms_p99']:.0f} |")
    ckpt = report.get("checkpoint")
    if ckpt:
        lines += ["", f"| checkpoints of a {ckpt['trial_epochs']}-epoch paper-configuration trial | checkpoints | "
                  "MB per trial-epoch | saving |", "|---|---|---|---|",
                  f"| every epoch, full state | {ckpt['trial_epochs']} | "
                  f"{ckpt['every_epoch_bytes_per_trial_epoch'] / 1e6:.0f} | 1x |"]
        for name, case in ckpt["policies"].items():
            lines.append(f"| {name} | {case['checkpoints']} | {case['bytes_per_trial_epoch'] / 1e6:.0f} | "
                         f"{case['saving_vs_every_epoch']}x |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Per-result cost against study size: the searcher's and the whole driver's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for wiring, windows in report.get("searcher", {}).get("by_wiring", {}).items():
        upper = [int(w["trials"].split("-")[1]) for w in windows]
        left.plot(upper, [w["result_ms_median"] for w in windows], marker="o", label=f"{wiring}: per result")
        left.plot(upper, [w["suggest_ms_median"] for w in windows], marker="s", ls="--", label=f"{wiring}: suggest")
    left.set(xscale="log", yscale="log", xlabel="trials in the study", ylabel="ms (median)",
             title="searcher, driven directly")
    left.legend(fontsize=8)
    study = report.get("study", [])
    series = sorted({(r["wiring"], r.get("storage", "sqlite")) for r in study if r["epoch_s"] == 1.0})
    for wiring, storage in series:
        rows = sorted((r for r in study if (r["wiring"], r.get("storage", "sqlite")) == (wiring, storage)
                       and r["epoch_s"] == 1.0), key=lambda r: r["size"])
        wiring = f"{wiring} ({storage})"
        right.plot([r["size"] for r in rows], [r["driver_cpu_ms_per_result"] for r in rows], marker="o",
                   label=f"{wiring}: driver CPU per result")
        right.plot([r["size"] for r in rows], [r["report_wait_ms_median"] for r in rows], marker="s", ls="--",
                   label=f"{wiring}: trial's wait per report")
    right.set(xscale="log", yscale="log", xlabel="trials in the study", ylabel="ms (median)",
              title="whole study, replayed trials, 1 s epochs")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--epoch-s", type=float, nargs="+", default=[1.0],
                        help="seconds per simulated epoch; several: a sweep (the shortest epoch at 0.90 utilisation)")
    parser.add_argument("--storage", choices=["sqlite", "postgresql"], default="sqlite",
                        help="MLflow's server store and the project's Optuna storage (postgresql: a local server "
                             "started for the run, Debian's package)")
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--wirings", nargs="+", default=["project", "stock"], choices=["project", "stock"])
    parser.add_argument("--stock-sizes", type=int, nargs="+",
                        help="the sizes the stock wiring runs at (default: --sizes); its MLflow calls make it slow")
    parser.add_argument("--sections", nargs="+", default=["searcher", "study", "checkpoint"],
                        choices=["searcher", "study", "checkpoint"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    parser.add_argument("--fresh", action="store_true", help="ignore what --out holds")
    parser.add_argument("--table", action="store_true", help="print the README tables of --out and plot it")
    parser.add_argument("--stock-run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stock-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stock_run:
        return stock_run(args.stock_run, args.slots, args.epoch_s[0], args.tracking_uri, args.stock_out)

    report: dict[str, Any] = {}
    if args.out.is_file() and not args.fresh:
        report = json.loads(args.out.read_text())
    if args.table:
        print(tables(report))
        plot(report, args.out.with_suffix(".png"))
        return
    # the commands that made the file (a resumed or added run appends its own)
    command = "python -m benchmarks.scale " + " ".join(sys.argv[1:])
    report.pop("command", None)
    report.update({"commands": [*report.get("commands", []), command], "machine": machine()})

    def save(part: str, value: Any) -> None:
        report[part] = value
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    if "checkpoint" in args.sections and "checkpoint" not in report:
        save("checkpoint", checkpoint_section())
    if "searcher" in args.sections and "searcher" not in report:
        save("searcher", searcher_section(args.sizes, args.slots, args.max_epochs))
    if "study" in args.sections:
        study_section(args.sizes, args.slots, args.epoch_s, args.max_epochs, args.wirings,
                      report.get("study", []), lambda rows: save("study", rows), args.stock_sizes, args.storage)


if __name__ == "__main__":
    main()
