"""What the embedded default costs: the ablation study as a newcomer runs it, before and now.

Runs `python -m study.run --space ablation` (local Ray on this machine's CPUs, synthetic data,
the tiny backbone) from two source trees in one run: the repository as it was at `--before`
(extracted with `git archive` into a temporary folder) and as it is now, one after the other,
each in its own process with its own modules (PYTHONPATH), so the two are measured side by side
on the same machine. Per run:

- the trials' compute: the sum over every trial's epochs of its training and validation seconds
  (each trial runs on one thread), which is the study's CPU time spent training;
- the command's wall time, and the CPU time of the command and the processes it waited for;
- the best sampled trial's validation accuracy against the global-only baseline's (the RRA gain
  the study shows), and their test accuracies.

    python -m benchmarks.embedded_default [--before 36281e6]

Writes benchmarks/results/embedded_default.json, with `lscpu`'s model and flags.

    python -m benchmarks.embedded_default --isa [--rounds 1]

runs the tree as it is now instead (`--space smoke --native-only`: a test's smoke study, with
this CPU's kernels only), with this CPU's own kernels and with AVX2 only
(`DNNL_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`: what oneDNN and ATen pick on a CPU without
AVX-512, which the trials' processes inherit), interleaved, and times the command's phases from
its output (start-up, search, ending and final test, report, exit). Writes
benchmarks/results/embedded_default_isa.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine

HERE = Path(__file__).resolve().parents[1]


def _extract(ref: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=HERE, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _compute_seconds(tune_path: Path) -> tuple[float, int]:
    seconds, epochs = 0.0, 0
    for result in tune_path.glob("*/result.json"):
        for line in result.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                seconds += row.get("epoch_seconds", 0.0) + row.get("val_seconds", 0.0)
                epochs += 1
    return seconds, epochs


ISAS: dict[str, dict[str, str]] = {"native": {}, "avx2": {"DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
# The first line of the command's output that marks the end of each phase.
PHASES = (("start_up", "study "), ("search", "Noise-aware ending:"), ("ending_and_test", "Best configurations"),
          ("report", "Report:"))


def phase_seconds(stamped: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Seconds of each phase (PHASES, then `exit`: from the report to the process's end) from the
    command's output lines and the seconds at which each arrived; a phase whose line is missing
    (e.g. no ending) is folded into the next."""
    seconds, last = {}, 0.0
    for phase, marker in PHASES:
        at = next((t for t, line in stamped if line.startswith(marker)), None)
        if at is not None:
            seconds[phase], last = round(at - last, 1), at
    seconds["exit"] = round(wall - last, 1)
    return seconds


def _machine_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent (user, nice, system, irq), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7)) / os.sysconf("SC_CLK_TCK")


def run_study(root: Path, out: Path, log: Path, env_extra: dict[str, str] | None = None,
              space: str = "ablation") -> dict[str, Any]:
    """The study of `space` (the ablation one: the embedded default) from the source tree at
    `root` (with `env_extra` in its environment); its costs, its phases and its gain. Its
    machine CPU seconds count every process (Ray's too), and whatever else runs meanwhile."""
    env = {**os.environ, "PYTHONPATH": str(root), **(env_extra or {})}
    start = time.perf_counter()
    cpu_before = _machine_cpu_s()
    stamped = []
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "study.run", "--space", space, "--out", str(out)],
                                cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            stamped.append((time.perf_counter() - start, line.strip()))
            sink.write(line)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    cpu_after = _machine_cpu_s()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the study from {root} failed; see {log}")
    summary = json.loads(next(out.glob("*/summary.json")).read_text())
    compute, epochs = _compute_seconds(Path(summary["tune_path"].removeprefix("file://")))
    best, baseline = summary["best"], summary["baselines"][0]
    metric = summary["metric"]
    return {
        "trials_compute_s": round(compute, 1), "epochs": epochs, "command_wall_s": round(wall, 1),
        "phases_s": phase_seconds(stamped, wall),
        "command_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "machine_cpu_s": round(cpu_after - cpu_before, 1) if cpu_after is not None and cpu_before is not None else None,
        "best": best["name"], f"best_{metric}": best[metric], f"global_only_{metric}": baseline[metric],
        "rra_gain_points": round(100 * (best[metric] - baseline[metric]), 1),
        "best_test_acc": best.get("test_acc"), "global_only_test_acc": baseline.get("test_acc"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="36281e6", help="the git ref measured as 'before'")
    parser.add_argument("--isa", action="store_true", help="this tree with this CPU's kernels and with AVX2 only")
    parser.add_argument("--rounds", type=int, default=1, help="with --isa: runs of each arm, interleaved")
    parser.add_argument("--space", default="ablation", help="with --isa: the space studied (smoke: a test's study)")
    parser.add_argument("--native-only", action="store_true", help="with --isa: this CPU's kernels only")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/embedded_default.json (embedded_default_isa.json with --isa)")
    args = parser.parse_args()
    if args.isa:
        isas = ["native"] if args.native_only else list(ISAS)
        return isa_main(args.rounds, args.out or Path("benchmarks/results/embedded_default_isa.json"), args.space,
                        isas)
    args.out = args.out or Path("benchmarks/results/embedded_default.json")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": _extract(args.before, Path(tmp) / "before"), "now": HERE}
        for label, root in trees.items():
            rows[label] = run_study(root, Path(tmp) / f"runs-{label}", Path(tmp) / f"{label}.log")
            print(label, json.dumps(rows[label]), flush=True)
    report = {
        "command": "python -m benchmarks.embedded_default " + " ".join(sys.argv[1:]),
        "before": args.before, "machine": machine(), "rows": rows,
        "compute_before_over_now": round(rows["before"]["trials_compute_s"] / rows["now"]["trials_compute_s"], 2),
        "wall_before_over_now": round(rows["before"]["command_wall_s"] / rows["now"]["command_wall_s"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("compute_before_over_now", "wall_before_over_now")}))


def isa_main(rounds: int, out: Path, space: str = "ablation", isas: list[str] | None = None) -> None:
    """The tree as it is, with this CPU's kernels and with AVX2 only (`isas`), `rounds` times
    each, interleaved, studying `space`."""
    isas = isas or list(ISAS)
    runs: dict[str, list[dict[str, Any]]] = {isa: [] for isa in isas}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            for isa in isas:
                row = run_study(HERE, Path(tmp) / f"runs-{isa}-{i}", Path(tmp) / f"{isa}-{i}.log", ISAS[isa], space)
                runs[isa].append(row)
                print(isa, json.dumps(row), flush=True)
    walls = {isa: statistics.median(r["command_wall_s"] for r in rows) for isa, rows in runs.items()}
    report = {
        "command": "python -m benchmarks.embedded_default " + " ".join(sys.argv[1:]),
        "space": space, "machine": machine(), "isa_env": {isa: ISAS[isa] for isa in isas}, "runs": runs,
        "median_wall_s": walls,
        "avx2_over_native": round(walls["avx2"] / walls["native"], 2) if "avx2" in walls else None,
        "median_phases_s": {isa: {phase: statistics.median(r["phases_s"].get(phase, 0.0) for r in rows)
                                  for phase in rows[0]["phases_s"]} for isa, rows in runs.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"median_wall_s": walls, "avx2_over_native": report["avx2_over_native"],
                      "median_phases_s": report["median_phases_s"]}))


if __name__ == "__main__":
    main()
