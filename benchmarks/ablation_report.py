"""The main command end to end, and what its report says.

Runs `python -m study.run --space SPACE --confirm-seeds N` as a user would (a subprocess, in a
scratch folder, its own SQLite MLflow store), times it, and copies the report's key figures
(report.json) and the wall time of each phase into benchmarks/results/ablation_report.json:
the best configurations, the gain over the global-only baseline (one seed, and with N seeds
in the confirmation), the early-stopping check, where the best trial's crop falls against the
synthetic set's deciding part, and the confirmation's ablation table.

    python -m benchmarks.ablation_report [--space ablation] [--confirm-seeds 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run(space: str, seeds: int, work: Path) -> dict[str, Any]:
    """Runs the study command in `work`; returns its timings and the report's figures."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "study.run", "--quiet", "--space", space, "--name", "bench",
                           "--confirm-seeds", str(seeds)], cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the study failed:\n{proc.stderr[-3000:]}")
    folder = work / "runs" / "bench"
    facts = json.loads((folder / "report" / "report.json").read_text())
    report_start = time.perf_counter()
    again = subprocess.run([sys.executable, "-m", "study.report", "--name", "bench"], cwd=work, env=env,
                           capture_output=True, text=True)
    report_wall = time.perf_counter() - report_start
    if again.returncode != 0:
        raise SystemExit(f"the report failed:\n{again.stderr[-3000:]}")
    confirm = re.search(r"confirmation of (\S+): (\d+) runs", proc.stdout)
    return {
        "command": f"python -m study.run --space {space} --confirm-seeds {seeds}",
        "wall_seconds": round(wall, 1),
        "report_alone_seconds": round(report_wall, 1),
        "confirmation_runs": int(confirm.group(2)) if confirm else 0,
        "report": facts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="ablation")
    parser.add_argument("--confirm-seeds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a scratch folder)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ablation_report.json"))
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="report-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args.space, args.confirm_seeds, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    result["command_of_this_file"] = (f"python -m benchmarks.ablation_report --space {args.space} "
                                      f"--confirm-seeds {args.confirm_seeds}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "report"}, indent=2))


if __name__ == "__main__":
    main()
