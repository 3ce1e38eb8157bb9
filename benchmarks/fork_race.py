"""Forks a process while Arrow's thread pools run tasks, and counts the children that die of a
signal or hang: with Arrow's at-fork handlers on and off (ARROW_REGISTER_ATFORK), with and
without glibc's malloc checks (MALLOC_CHECK_=3 with libc_malloc_debug preloaded, as
`benchmarks.worker_soak --malloc-check` runs).

    python -m benchmarks.fork_race [--seconds 60] [--out benchmarks/results/fork_race.json]
    python -m benchmarks.fork_race --load native-threads [--seconds 60]
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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.machine import machine
from benchmarks.worker_soak import MALLOC_DEBUG

HANG_S = 5.0


def _stack(pid: int) -> list[str]:
    """The native stack of a process (gdb's frames, the first 12), or [] without gdb."""
    if shutil.which("gdb") is None:
        return []
    done = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "bt"], capture_output=True, text=True, timeout=120)
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


LOADS = {"arrow": _arrow_load, "native-threads": _native_threads_load}


def race(seconds: float, load: str = "arrow") -> dict[str, Any]:
    """Forks for `seconds` while two threads run `load` (in this process)."""
    stop = threading.Event()
    churn = LOADS[load](stop)
    threads = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    forks, hung = 0, 0
    died: dict[str, int] = {}
    stacks: list[list[str]] = []
    start = time.time()
    while time.time() - start < seconds:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forks += 1
        deadline = time.time() + HANG_S
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                if os.WIFSIGNALED(status):
                    name = signal.Signals(os.WTERMSIG(status)).name
                    died[name] = died.get(name, 0) + 1
                break
            if time.time() > deadline:
                hung += 1
                if len(stacks) < 2:
                    stacks.append(_stack(pid))
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.0005)
    stop.set()
    for thread in threads:
        thread.join()
    return {"forks": forks, "hung": hung, "died": died, "seconds": round(time.time() - start, 1),
            "hung_stacks": stacks}


def run_setting(atfork: bool, malloc_check: bool, seconds: float, load: str = "arrow") -> dict[str, Any]:
    """One setting, in a fresh process whose environment sets it from the start."""
    env = {**os.environ, "ARROW_REGISTER_ATFORK": "1" if atfork else "0"}
    if malloc_check:
        env.update({"MALLOC_CHECK_": "3", "LD_PRELOAD": str(MALLOC_DEBUG)})
    done = subprocess.run([sys.executable, "-m", "benchmarks.fork_race", "--child", "--seconds", str(seconds),
                           "--load", load], env=env, capture_output=True, text=True, timeout=seconds + 600)
    lines = done.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        raise SystemExit(f"error: the {atfork=}, {malloc_check=} run failed: {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    # the forking process's own exit (after it printed its counts): a fault at its end is a finding too
    return {"load": load, "arrow_atfork": atfork, "malloc_check": malloc_check, **result,
            "exit_status": done.returncode, "stderr_tail": done.stderr.strip()[-300:]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="forking time of each setting")
    parser.add_argument("--load", choices=sorted(LOADS), default="arrow",
                        help="what the other threads do while the main thread forks")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: print only)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.child:
        print(json.dumps(race(args.seconds, args.load)))
        return
    if args.load == "native-threads":  # Arrow plays no part; under the checks their own lock hangs children
        settings = [run_setting(True, False, args.seconds, args.load)]
    else:
        if not MALLOC_DEBUG.is_file():
            raise SystemExit(f"error: {MALLOC_DEBUG} is not there (glibc's malloc checks need it)")
        settings = [run_setting(atfork, check, args.seconds) for check in (False, True) for atfork in (True, False)]
    for s in settings:
        atfork, check = ("on " if s[key] else "off" for key in ("arrow_atfork", "malloc_check"))
        print(f"{s['load']}  Arrow at-fork {atfork}  malloc checks {check}  forks {s['forks']:5d}  hung {s['hung']:4d}"
              f"  died {s['died'] or 0}  its own exit status {s['exit_status']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "python": sys.version.split()[0], "load": args.load,
                                        "seconds": args.seconds, "hang_s": HANG_S, "settings": settings},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
