"""The RRA curve table and its replay: the tests that start processes (the rest, and what they share,
are in tests/unit/study/test_curve_table.py)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from benchmarks.tables import curves
from tests.unit.study.test_curve_table import EPOCHS, ROOT, _curve, _study, write_table  # noqa: F401
from trainables.curve_table import CurveTable


@pytest.mark.slow  # the study command, in a process of its own
def test_a_study_refuses_a_table_it_cannot_replay_before_any_trial(tmp_path: Path) -> None:
    table = write_table(tmp_path)
    space = str(curves.SPACE)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    for args, message in (
        (["--trainable", "replay", "--replay-table", str(tmp_path / "none.parquet")], "cannot read the curve table"),
        (["--trainable", "replay", "--replay-table", str(bad)], "cannot read the curve table"),
        (["--trainable", "replay", "--replay-table", str(table), "--max-epochs", "9"], "records 4 epochs"),
        (["--replay-table", str(table)], "needs --trainable replay"),
    ):
        proc = _study(tmp_path, "--space", space, "--name", "x", *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "x").exists()


@pytest.mark.slow  # a study on a local Ray
def test_a_replayed_study_reports_the_tables_curves(tmp_path: Path) -> None:
    # Through the real stack (adaptive policy, TPE, Tune storage, MLflow): every result a trial
    # reported is the table's value for the configuration nearest to the trial's.
    table_path = write_table(tmp_path)
    proc = _study(tmp_path, "--space", str(curves.SPACE), "--name", "rt", "--max-epochs", str(EPOCHS),
                  "--num-samples", "10", "--trainable", "replay", "--replay-epoch-s", "0",
                  "--replay-table", str(table_path), "--policy", "adaptive", "--no-test", "--no-report",
                  "--finalist-seeds", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from trainables.config import TrialConfig, settings

    table = CurveTable(table_path)
    results = list((tmp_path / "runs" / "rt").glob("*/result.json"))
    assert len(results) == 10
    configs = {}
    for result in results:
        rows = [json.loads(line) for line in result.read_text().splitlines()]
        cfg = TrialConfig.from_dict(settings(rows[0]["config"]))
        configs[rows[0]["trial_id"]] = cfg
        match = table.match(cfg.to_dict(), cfg.seed)
        assert [r["val_acc"] for r in rows] == [table.metrics(match, r["epoch"])["val_acc"] for r in rows]
        assert rows[0]["replay_distance"] == pytest.approx(match.distance)
        assert match.seed == 0  # the study trains with seed 0
    # the noise-aware ending: 3 finalists again with seed 1, drawn for seed 1; the run that chose
    # each (seed 0) is left out of its figures
    summary = json.loads((tmp_path / "runs" / "rt" / "summary.json").read_text())
    assert len(summary["finalists"]) == 3 and all(f["seeds"] == 1 for f in summary["finalists"])
    for finalist in summary["finalists"]:
        cfg = configs[finalist["trial_id"]].to_dict()
        assert finalist["selection"] == pytest.approx(table.metrics(table.match(cfg, 0), EPOCHS)["val_acc"])
        assert finalist["values"] == pytest.approx([table.metrics(table.match(cfg, 1), EPOCHS)["val_acc"]])


@pytest.mark.slow
def test_the_search_benchmark_scores_replayed_studies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from benchmarks import search_efficiency

    starts = []
    real_init = ray.init
    monkeypatch.setattr(ray, "init", lambda *a, **kw: starts.append(1) or real_init(*a, **kw))
    table = write_table(tmp_path)
    out = tmp_path / "eff.json"
    environ = dict(os.environ)  # the study sets Tune's variables in this process: later tests must not see them
    pending = os.environ.get("TUNE_MAX_PENDING_TRIALS_PG")
    # an earlier test in this worker may have left a queue's thread on its way out (one stuck in a
    # call to a hung server ends with that call): only this test's studies' threads are checked
    before = set(threading.enumerate())
    try:
        search_efficiency.main(["--seeds", "2", "--budget", "12", "--methods", "random_fifo", "random_asha",
                                "--table", str(table), "--work", str(tmp_path / "work"), "--out", str(out), "--cpus", "2",
                                "--engine", "tune"])
        # four studies ran in this process: none left Tune's pending-trials limit set for the next,
        # nor its session and MLflow thread behind
        assert os.environ.get("TUNE_MAX_PENDING_TRIALS_PG") == pending
        from study.session import active

        assert all(active(f"{m}-{s}") is None for m in ("random_fifo", "random_asha") for s in range(2))
        for thread in [t for t in threading.enumerate() if t.name == "mlflow-queue" and t not in before]:
            thread.join(10)
            assert not thread.is_alive()
    finally:
        os.environ.clear()
        os.environ.update(environ)
    assert len(starts) == 1  # every study ran on the benchmark's Ray: a study leaves a caller's Ray running
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"random_fifo", "random_asha"}
    truth = CurveTable(table)
    best = max(truth.true_final(n) for n, v in truth.values.items() if v["local_stream"])
    for method, result in report["methods"].items():
        assert len(result["final_regret_points"]) == 2 and len(result["curves"]) == 2
        for seed in (0, 1):
            run = json.loads((tmp_path / "work" / f"{method}-{seed}.json").read_text())
            # the final regret is the named best's, from the table's truth
            assert result["final_regret_points"][seed] == pytest.approx(
                round(100 * (best - truth.true_final(run["named"])), 2))
        assert result["anytime"]["epochs"][-1] == 12
        assert set(result["within_looser_points"]) == {"3", "5"}
        low, high = result["final_regret_iqm_interval"]
        assert low <= result["final_regret_iqm"] <= high and 0 <= result["named_in_true_top5"] <= 1
    (pair,) = report["comparisons"]
    assert (pair["method"], pair["against"], pair["seeds"]) == ("random_asha", "random_fifo", 2)
    assert 0 <= pair["p"] <= pair["p_holm"] <= 1
    assert out.with_suffix(".png").stat().st_size > 0
    # each study ended at its epoch budget (12), give or take the trials running then (8 slots of
    # at most 4 epochs); random_fifo's 12 sampled trials would have run 48 epochs
    for method in ("random_fifo", "random_asha"):
        spent = len(json.loads((tmp_path / "work" / f"{method}-0.json").read_text())["line"])
        assert 12 <= spent < 12 + 8 * 4


@pytest.mark.slow  # the benchmark end to end
def test_the_search_benchmark_runs_its_studies_in_simulated_time(tmp_path: Path) -> None:
    """The default engine: the same searchers, policies and noise-aware ending over the table
    without Ray (no Ray starts); the ending's re-runs are counted in the budget, and the named
    best is the finalists' best mean, the plain maximum the best single run."""
    import ray

    from benchmarks import search_efficiency

    table = write_table(tmp_path, seeds=3)
    out = tmp_path / "eff.json"
    search_efficiency.main(["--seeds", "3", "--budget", "60", "--methods", "tpe_asha", "tpe_asha_plain",
                            "--table", str(table), "--work", str(tmp_path / "work"), "--out", str(out)])
    assert not ray.is_initialized()
    report = json.loads(out.read_text())
    assert report["engine"] == "simulated" and set(report["methods"]) == {"tpe_asha", "tpe_asha_plain"}
    for seed in range(3):
        aware = json.loads((tmp_path / "work" / f"tpe_asha-{seed}.json").read_text())
        plain = json.loads((tmp_path / "work" / f"tpe_asha_plain-{seed}.json").read_text())
        reruns = [r for r in aware["line"] if r.get("rerun")]
        # 20% of 60 epochs, 2 new seeds of 4 epochs each: one finalist, re-run twice
        assert len(reruns) == 8 and len(aware["line"]) <= 60 and not any(r.get("rerun") for r in plain["line"])
        assert plain["named"] == plain["best_single_run"]
    (pair,) = [c for c in report["comparisons"] if c["method"] == "tpe_asha"]
    assert pair["against"] == "tpe_asha_plain" and pair["seeds"] == 3
