"""The warm-start benchmark, run small on tables written for the test: every study drawn, the
sources kept, the regrets scored against the target table's truth, the comparisons paired."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import warm_start
from tests.unit.study.test_curve_table import write_table
from trainables.curve_table import load


def test_the_benchmark_warm_starts_from_kept_sources_and_scores_paired(tmp_path: Path) -> None:
    target = write_table(tmp_path / "a")
    other = write_table(tmp_path / "b", seeds=3)
    out, work = tmp_path / "ws.json", tmp_path / "work"
    warm_start.main(["--seeds", "2", "--budget", "24", "--workers", "2", "--tables", str(target), str(other),
                     "--work", str(work), "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["budget_new_study"] == 12 and set(report["methods"]) == {"cold", "warm_same", "warm_other"}
    table = load(str(target))
    finals = {n: table.true_final(n) for n, v in table.values.items() if v["local_stream"]}
    for method in ("cold", "warm_same", "warm_other"):
        for seed in (0, 1):
            run = json.loads((work / f"{method}-{seed}.json").read_text())
            assert (run["warm_start"] != []) == (method != "cold")
            assert report["methods"][method]["final_regret_points"][seed] == round(
                100 * (max(finals.values()) - finals[run["named"]]), 2)
    # each warm study started from its own seed's source, on the right table, kept for a rerun
    assert "source-" in json.loads((work / "warm_same-1.json").read_text())["warm_start"][0]
    assert len(list((work / "sources").glob("*.db"))) == 4
    assert [(r["method"], r["against"], r["seeds"]) for r in report["comparisons"]] == [
        ("warm_same", "cold", 2), ("warm_other", "cold", 2)]
