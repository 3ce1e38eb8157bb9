"""What starting a trial's DataLoader workers from the fork server costs, against forking them
from the trial's process (trainables.data.base.worker_context; docs/reliability.md says why).

    python -m benchmarks.diagnostics.worker_start [--rounds 10] [--loaders 4] [--workers 2]
        [--out benchmarks/results/worker_start.json]

Each round starts two fresh processes, one a start method (their order alternates between
rounds), so that the first loader pays for the fork server's start as a trial's process does.
Each process builds the trial's loader (trainables.loop.make_loader, over a folder of small
JPEGs, `image_cache: off`, so the workers decode) `--loaders` times and reads it to the end;
it records the seconds from building a loader to its first batch and to its last. For the
`fork` arm the process hands the loader a fork context in place of worker_context (what the
loaders did before 8832f7b: benchmarks.diagnostics.worker_soak.starting); nothing else differs. The
comparison is paired on the round: the mean difference fork server minus fork, its 95%
interval and paired t-test (scipy's ttest_1samp on the differences), with the Wilcoxon
signed-rank p-value beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine

METHODS = ("fork", "forkserver")


def child(method: str, data_dir: str, workers: int, loaders: int) -> dict[str, Any]:
    """`loaders` fresh training loaders in this process, each read to its end, their workers
    started by `method`."""
    import torch

    import trainables.loop as loop
    from benchmarks.diagnostics.worker_soak import starting, trial_config
    from trainables.data.build import build_datasets

    cfg = trial_config(data_dir, workers)
    data = build_datasets(cfg)
    first, whole, used = [], [], set()
    with starting("fork" if method == "fork" else "trial"):
        for i in range(loaders):
            start = time.perf_counter()
            loader = loop.make_loader(data.train, cfg, torch.device("cpu"), shuffle=True,
                                      generator=torch.Generator().manual_seed(i))
            batches = iter(loader)
            next(batches)
            first.append(time.perf_counter() - start)
            for _ in batches:
                pass
            whole.append(time.perf_counter() - start)
            used.add(loader.multiprocessing_context.get_start_method())
            del batches, loader
    return {"method": method, "start_methods_used": sorted(used), "first_batch_s": first, "epoch_s": whole}


def _run_child(method: str, data_dir: str, workers: int, loaders: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.diagnostics.worker_start", "--child", method,
                           "--data", data_dir, "--workers", str(workers), "--loaders", str(loaders)],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker_start: the {method} process failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def paired(differences: list[float]) -> dict[str, Any]:
    """Mean of paired differences, its 95% t interval, the paired t-test's and the Wilcoxon
    signed-rank test's p-values (two-sided)."""
    from scipy.stats import ttest_1samp, wilcoxon

    test = ttest_1samp(differences, 0.0)
    low, high = test.confidence_interval(0.95)
    nonzero = [d for d in differences if d != 0]
    return {"mean_s": sum(differences) / len(differences), "ci95_s": [float(low), float(high)],
            "t_test_p": float(test.pvalue), "wilcoxon_p": float(wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else 1.0,
            "pairs": len(differences)}


def summarise(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per method, the medians over rounds; per quantity, the paired difference (fork server
    minus fork)."""
    def first(run: dict[str, Any]) -> float:
        return float(run["first_batch_s"][0])

    def later(run: dict[str, Any]) -> float:  # the loaders after the first: the server is up
        rest = run["first_batch_s"][1:]
        return sum(rest) / len(rest) if rest else math.nan

    out: dict[str, Any] = {}
    for name, of in (("first_loader_first_batch", first), ("later_loaders_first_batch", later)):
        values = {m: [of(r[m]) for r in rounds] for m in METHODS}
        if any(math.isnan(v) for vs in values.values() for v in vs):
            continue
        out[name] = {**{f"{m}_median_s": statistics.median(values[m]) for m in METHODS},
                     "forkserver_minus_fork": paired([s - f for f, s in zip(values["fork"], values["forkserver"],
                                                                             strict=True)])}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="pairs of fresh processes")
    parser.add_argument("--loaders", type=int, default=4, help="fresh loaders a process")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/worker_start.json"))
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("rounds", "loaders", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive")
    if args.child:
        print(json.dumps(child(args.child, args.data, args.workers, args.loaders)))
        return
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the comparison is paired over rounds)")
    from benchmarks.diagnostics.worker_soak import write_jpegs

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = str(write_jpegs(Path(tmp) / "images"))
        rounds = []
        for r in range(args.rounds):
            order = METHODS if r % 2 == 0 else METHODS[::-1]
            rounds.append({m: _run_child(m, data_dir, args.workers, args.loaders) for m in order})
    result = {"machine": machine(), "rounds": args.rounds, "loaders": args.loaders, "workers": args.workers,
              "seconds": round(time.time() - started, 1), "summary": summarise(rounds), "runs": rounds,
              "command": "python -m benchmarks.diagnostics.worker_start " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {args.out} ({result['seconds']} s; pid {os.getpid()})")


if __name__ == "__main__":
    main()
