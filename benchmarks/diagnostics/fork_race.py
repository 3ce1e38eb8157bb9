"""Forks a process while Arrow's thread pools run tasks, and counts the children that die of a
signal or hang: with Arrow's at-fork handlers on and off (ARROW_REGISTER_ATFORK), with and
without glibc's malloc checks (MALLOC_CHECK_=3 with libc_malloc_debug preloaded, as
`benchmarks.diagnostics.worker_soak --malloc-check` runs).

    python -m benchmarks.diagnostics.fork_race [--seconds 60] [--out benchmarks/results/fork_race.json]
    python -m benchmarks.diagnostics.fork_race --load native-threads [--seconds 60]
        [--out benchmarks/results/fork_race_native_threads.json]

Each of the four settings runs in its own process for `seconds`: two threads read an in-memory
Parquet file with Arrow's thread pool, over and over, while the main thread forks; each child
exits at once (os._exit) after fork's child handlers and Python's own after-fork code have run.
A child that has not ended after 5 s is a hang (its native stack is taken with gdb if gdb is
there, then it is killed). This tells whether a hang or an abort seen under the malloc checks
is evidence of a fault in the forked process, or of the checking allocator itself.

`--load native-threads` forks instead while two threads keep starting native threads that
call into Python and end (each call makes and deletes a Python thread state, under the
interpreter's runtime lock, as a native library's own threads do when they call back into
Python), without the malloc checks: whether a fork of such a process is safe in this Python.

The race is the finding, never an error: the forking process can itself die of it (with Arrow's
handlers on it has aborted, "terminate called without an active exception", about one 1-second
run in six on a 2-core AVX2 EPYC), during the race or at its own exit after printing its
counts; its counts up to then are kept (it records them as they grow) and the results say how
it ended (`exit_status`, `forker_died`, and `complete`: whether it printed its final counts).
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.diagnostics.worker_soak import MALLOC_DEBUG
from benchmarks.machine import machine

HANG_S = 5.0
ROOT = Path(__file__).resolve().parents[2]


def _stack(pid: int) -> list[str]:
    """The native stack of a process (gdb's frames, the first 12), or [] without gdb or when gdb
    takes over two minutes (a stack is a detail; the count goes on)."""
    if shutil.which("gdb") is None:
        return []
    try:
        done = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "bt"], capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        return []
    return [line[:160] for line in done.stdout.splitlines() if line.startswith("#")][:12]


def _arrow_load(stop: threading.Event) -> Callable[[], None]:
    """Reads an in-memory Parquet file with Arrow's thread pool until `stop`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({f"c{i}": np.random.default_rng(i).random(20_000) for i in range(32)})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=2_000)
    data = sink.getvalue()

    def churn() -> None:
        while not stop.is_set():
            pq.read_table(pa.BufferReader(data), use_threads=True)

    return churn


def _native_threads_load(stop: threading.Event) -> Callable[[], None]:
    """Starts native threads (pthread_create) that call a Python function once and end, one after
    another, until `stop`: each call enters Python from a thread Python did not start
    (PyGILState_Ensure makes its thread state, the release deletes it)."""
    libc = ctypes.CDLL(None)
    callback_type = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
    callback = callback_type(lambda _arg: None)
    create, join = libc.pthread_create, libc.pthread_join
    create.argtypes = [ctypes.POINTER(ctypes.c_ulong), ctypes.c_void_p, callback_type, ctypes.c_void_p]
    join.argtypes = [ctypes.c_ulong, ctypes.c_void_p]

    def churn() -> None:
        thread = ctypes.c_ulong()
        while not stop.is_set():
            if create(ctypes.byref(thread), None, callback, None) == 0:
                join(thread.value, None)

    return churn


def _no_load(stop: threading.Event) -> Callable[[], None]:
    """No other work: the forks alone (the tests' control, where nothing can go wrong by chance)."""
    return lambda: None


LOADS = {"arrow": _arrow_load, "native-threads": _native_threads_load, "none": _no_load}
def _hang() -> None:
    time.sleep(3600)
    os._exit(0)


# What each forked child does (`--child-fate`, for the tests): end at once, as the benchmark's
# children do, or abort, or hang, so that the counting is tested on fates known in advance.
FATES: dict[str, Callable[[], None]] = {"exit": lambda: os._exit(0), "abort": os.abort, "hang": _hang}


def fate(status: int) -> str:
    """What a `waitpid` status says of a child: "exited" (any exit code) or the signal's name."""
    return signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else "exited"


def _wait(pid: int, hang_s: float) -> str:
    """The child's fate: "exited", a signal's name, or "hung" (not ended after `hang_s`; left running)."""
    deadline = time.time() + hang_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return fate(status)
        if time.time() > deadline:
            return "hung"
        time.sleep(0.0005)


def race(seconds: float, load: str = "arrow", child: str = "exit", hang_s: float = HANG_S,
         record: Path | None = None) -> dict[str, Any]:
    """Forks for `seconds` while two threads run `load` (in this process); each child does `child`.
    Every child is counted as exited, hung or died (by signal); with `record`, the counts so far
    are written there as they grow (a JSON line at least every 0.2 s), so that they survive this
    process if it dies of the race itself."""
    stop = threading.Event()
    churn = LOADS[load](stop)
    threads = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    counts: dict[str, Any] = {"forks": 0, "exited": 0, "hung": 0, "died": {}, "seconds": 0.0, "hung_stacks": []}
    start = written = time.time()
    while time.time() - start < seconds:
        pid = os.fork()
        if pid == 0:
            FATES[child]()
        counts["forks"] += 1
        how = _wait(pid, hang_s)
        if how == "hung":
            if len(counts["hung_stacks"]) < 2:
                counts["hung_stacks"].append(_stack(pid))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if how in ("exited", "hung"):
            counts[how] += 1
        else:
            counts["died"][how] = counts["died"].get(how, 0) + 1
        counts["seconds"] = round(time.time() - start, 1)
        if record is not None and time.time() - written > 0.2:
            with record.open("a") as f:
                f.write(json.dumps(counts) + "\n")
            written = time.time()
    counts["seconds"] = round(time.time() - start, 1)
    stop.set()
    for thread in threads:
        thread.join()
    return counts


def outcome(returncode: int, stdout: str, record: Path) -> dict[str, Any]:
    """The forking process's counts: its final line when it printed one, else the last counts it
    recorded (none: all zero), with how it ended ("exit_status"; "forker_died", the signal's name,
    when a signal ended it: the race can take the forking process too, and that is a finding)."""
    lines = stdout.strip().splitlines()
    complete = bool(lines) and lines[-1].startswith("{")
    recorded = record.read_text().splitlines() if record.is_file() else []
    counts: dict[str, Any] = (json.loads(lines[-1]) if complete else json.loads(recorded[-1]) if recorded else
                              {"forks": 0, "exited": 0, "hung": 0, "died": {}, "seconds": 0.0, "hung_stacks": []})
    died = signal.Signals(-returncode).name if returncode < 0 else None
    return {**counts, "complete": complete, "exit_status": returncode, "forker_died": died}


def run_setting(atfork: bool, malloc_check: bool, seconds: float, load: str = "arrow",
                child: str = "exit", hang_s: float = HANG_S, timeout_s: float = 600.0) -> dict[str, Any]:
    """One setting, in a fresh process whose environment sets it from the start; what happened to
    every child and to the forking process itself, as data (nothing here raises on a death, nor
    on a forking process that hangs: it is killed `timeout_s` after its forking time and
    recorded with `forker_hung`)."""
    env = {**os.environ, "ARROW_REGISTER_ATFORK": "1" if atfork else "0"}
    if malloc_check:
        env.update({"MALLOC_CHECK_": "3", "LD_PRELOAD": str(MALLOC_DEBUG)})
    with tempfile.TemporaryDirectory(prefix="fork-race-") as tmp:
        record = Path(tmp) / "counts.jsonl"
        command = [sys.executable, "-m", "benchmarks.diagnostics.fork_race", "--child", "--seconds", str(seconds),
                   "--load", load, "--child-fate", child, "--hang-s", str(hang_s), "--record", str(record)]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + timeout_s,
                                  cwd=ROOT)
            returncode, stdout, stderr, hung = done.returncode, done.stdout, done.stderr, False
        except subprocess.TimeoutExpired as late:  # killed (SIGKILL) by subprocess.run
            text = [o.decode(errors="replace") if isinstance(o, bytes) else (o or "")
                    for o in (late.stdout, late.stderr)]
            returncode, stdout, stderr, hung = -int(signal.SIGKILL), text[0], text[1], True
        result = outcome(returncode, stdout, record)
    return {"load": load, "arrow_atfork": atfork, "malloc_check": malloc_check, **result, "forker_hung": hung,
            "stderr_tail": stderr.strip()[-300:]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="forking time of each setting")
    parser.add_argument("--load", choices=sorted(LOADS), default="arrow",
                        help="what the other threads do while the main thread forks")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: print only)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-fate", choices=sorted(FATES), default="exit", help=argparse.SUPPRESS)
    parser.add_argument("--hang-s", type=float, default=HANG_S, help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.child:
        print(json.dumps(race(args.seconds, args.load, args.child_fate, args.hang_s, args.record)), flush=True)
        return
    if args.load == "none":
        parser.error("--load none is the tests' control; the benchmark runs arrow or native-threads")
    if args.load == "native-threads":  # Arrow plays no part; under the checks their own lock hangs children
        settings = [run_setting(True, False, args.seconds, args.load)]
    else:
        if not MALLOC_DEBUG.is_file():
            raise SystemExit(f"error: {MALLOC_DEBUG} is not there (glibc's malloc checks need it)")
        settings = [run_setting(atfork, check, args.seconds) for check in (False, True) for atfork in (True, False)]
    for s in settings:
        atfork, check = ("on " if s[key] else "off" for key in ("arrow_atfork", "malloc_check"))
        print(f"{s['load']}  Arrow at-fork {atfork}  malloc checks {check}  forks {s['forks']:5d}  hung {s['hung']:4d}"
              f"  died {s['died'] or 0}  its own exit status {s['exit_status']}"
              + ("" if s["complete"] else "  (the forking process ended before its count: the last recorded)"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "python": sys.version.split()[0], "load": args.load,
                                        "seconds": args.seconds, "hang_s": HANG_S, "settings": settings},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
