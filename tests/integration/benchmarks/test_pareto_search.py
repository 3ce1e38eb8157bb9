"""The accuracy-against-cost search benchmark: the tests that start processes (the rest, and what they share,
are in tests/unit/benchmarks/test_pareto_search.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import pareto_search
from benchmarks.tables import curves
from tests.unit.study.test_curve_table import write_table
from trainables.curve_table import CurveTable


@pytest.mark.slow  # the benchmark end to end, twice
def test_the_benchmark_scores_each_methods_front_against_the_true_one(tmp_path: Path) -> None:
    table = write_table(tmp_path, configs=16, seeds=2, design="cost")
    out = tmp_path / "pareto.json"
    pareto_search.main(["--seeds", "2", "--budget", "24", "--table", str(table), "--work", str(tmp_path / "work"),
                        "--out", str(out), "--workers", "2"])
    report = json.loads(out.read_text())
    truth = CurveTable(table)
    axes = pareto_search.Axes(truth)
    assert report["true_front"] == axes.true_front() and report["true_front"]
    # the table's own summary names the same front, cheapest first
    shown = curves.show(table)["true_front"]
    assert sorted(e["config"] for e in shown) == report["true_front"]
    assert [e["mflops_per_image"] for e in shown] == sorted(e["mflops_per_image"] for e in shown)
    for method, result in report["methods"].items():
        for seed, regret in enumerate(result["hypervolume_regret_percent"]):
            run = json.loads((tmp_path / "work" / f"{method}-{seed}.json").read_text())
            # the named front scored with the table's truth, against the true front
            expected = 100 * (axes.volume(report["true_front"]) - axes.volume(sorted(set(run["front"])))) / \
                axes.volume(report["true_front"])
            assert regret == pytest.approx(expected, abs=0.01) and 0 <= regret <= 100
            assert run["epochs"] <= 24
        runs = [json.loads((tmp_path / "work" / f"{method}-{seed}.json").read_text()) for seed in range(2)]
        assert result["studies_holding"] == {n: sum(n in r["front"] for r in runs) for n in report["true_front"]}
    assert {(c["method"], c["against"]) for c in report["comparisons"]} == set(pareto_search.COMPARISONS)
    # other rung settings: nothing of the first run is reused
    pareto_search.main(["--seeds", "2", "--budget", "24", "--table", str(table), "--work", str(tmp_path / "work"),
                        "--out", str(out), "--workers", "2", "--grace-period", "2", "--methods", "random_asha"])
    run = json.loads((tmp_path / "work" / "random_asha-0.json").read_text())
    assert run["settings"]["grace_period"] == 2 and json.loads(out.read_text())["grace_period"] == 2
