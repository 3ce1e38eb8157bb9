"""The accuracy-against-cost search benchmark: its hypervolume by hand, and a run of its three
methods in simulated time on a small table whose costs are known."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import pareto_search
from tests.unit.study.test_curve_table import write_table


def test_hypervolume_by_hand() -> None:
    # accuracy up, cost down, reference (0, 1.1): a staircase of 0.5 x 0.5 and 0.6 x 1.0
    assert pareto_search.hypervolume([(1.0, 0.5), (0.5, 0.0)], (0.0, 1.1)) == pytest.approx(0.85)
    # a dominated point adds nothing; one outside the reference box does not count
    assert pareto_search.hypervolume([(1.0, 0.5), (0.5, 0.0), (0.4, 0.6), (0.9, 1.2)], (0.0, 1.1)) == \
        pytest.approx(0.85)
    assert pareto_search.hypervolume([], (0.0, 1.1)) == 0.0


def test_a_table_where_the_cost_barely_moves_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = write_table(tmp_path, configs=8, seeds=2, design="ablation")
    with pytest.raises(SystemExit) as stop:
        pareto_search.main(["--table", str(table), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "p.json")])
    assert stop.value.code == 2 and "recorded with --design ablation" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()
