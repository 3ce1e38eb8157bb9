"""benchmarks.calibration on values with known answers: bins and the calibration error, and a
study's finalists judged against a truth that is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.calibration import judge, reliability


def test_reliability_bins_stated_against_realized_and_weighs_the_gaps() -> None:
    rows = ([{"p_best": 0.9, "best": 1.0, "named": True, "gap_covered": None, "mean_covered": True}] * 6
            + [{"p_best": 0.9, "best": 0.0, "named": True, "gap_covered": None, "mean_covered": False}] * 4
            + [{"p_best": 0.1, "best": 0.0, "named": False, "gap_covered": True, "mean_covered": True}] * 10)
    found = reliability(rows)
    assert found["bins"] == [{"bin": "0.0-0.2", "finalists": 10, "stated": 0.1, "realized": 0.0},
                             {"bin": "0.8-1.0", "finalists": 10, "stated": 0.9, "realized": 0.6}]
    assert found["ece"] == pytest.approx((10 * 0.1 + 10 * 0.3) / 20)
    assert (found["named_stated_p_best"], found["named_truly_best"]) == (0.9, 0.6)
    assert found["gap_interval_coverage"] == 1.0 and found["mean_interval_coverage"] == 0.8


def test_a_study_is_judged_on_its_new_seeds_against_the_truth() -> None:
    # seed 0 chose them; "a" is truly best, and on seeds 1-3 it shows, though its choosing run was low
    run = {"train_seed": 0, "finalists": {
        "t1": {"config": "a", "values": {"0": 0.50, "1": 0.81, "2": 0.79, "3": 0.80}},
        "t2": {"config": "b", "values": {"0": 0.90, "1": 0.70, "2": 0.71, "3": 0.69}}}}
    truth = {"a": 0.80, "b": 0.70}.__getitem__
    rows = judge(run, truth, lambda seed: 0.0, {"selection": True, "shrink": False})
    assert [r["named"] for r in rows] == [True, False] and [r["best"] for r in rows] == [1.0, 0.0]
    assert rows[0]["p_best"] > 0.9 and rows[0]["mean_covered"] and rows[1]["gap_covered"]
    # with the choosing runs counted, "b" is named: it was not the best
    counted = judge(run, truth, lambda seed: 0.0, {"selection": False, "shrink": False})
    assert counted[0]["named"] and counted[0]["best"] == 0.0 and counted[1]["best"] == 1.0
    # two finalists of one configuration share being the best
    run["finalists"]["t2"]["config"] = "a"
    assert [r["best"] for r in judge(run, truth, lambda seed: 0.0, {"selection": True, "shrink": False})] == [0.5, 0.5]


def test_the_line_the_study_prints_is_the_committed_calibrations() -> None:
    import json

    from benchmarks.calibration import calibration_line
    from study.noise import CALIBRATION, CALIBRATION_FILES, RECALIBRATION, SHRINK, WIDEN

    root = Path(__file__).resolve().parents[3]
    reports = {name: json.loads((root / name).read_text()) for name in CALIBRATION_FILES}
    assert calibration_line(reports) == CALIBRATION
    for report in reports.values():  # each scored P(best) as the study states it
        stated = report["variants"]["recalibrated"]
        assert (stated["selection"], stated["shrink"], stated["recalibrate"], stated["widen"]) == \
            (True, SHRINK, RECALIBRATION, WIDEN)
        assert report["interval_scales"]["study_scale"] == WIDEN


def test_p_best_is_calibrated_on_a_drawn_table_whose_truth_is_known(tmp_path: Path) -> None:
    """On a table drawn from a model that meets the ending's assumptions (one residual spread, a
    shared seed effect), the stated P(best) holds: studies of three finalists, each picked at
    random among 40 configurations whose truths are known, re-run on three new seeds replayed
    from the table; a P(best) spread evenly (recalibrate 0.6) does not."""
    import random

    from benchmarks.tables import curves
    from trainables.curve_model import CurveModel
    from trainables.curve_table import CurveTable

    epochs = 3
    values = {f"c{i:03d}": {"recursion_steps": 2 + i % 8, "crop_scale": round(0.2 + 0.02 * i, 4),
                            "attention_temperature": 1.0} for i in range(40)}
    # true finals spread like the ablation's top: 0.55-0.67, in steps of 0.3 points
    means = {n: {"val_acc": [(0.55 + 0.003 * i) * e / epochs for e in range(1, epochs + 1)]}
             for i, n in enumerate(values)}
    model = CurveModel.simple(means, seed_sd=0.05, residual_sd=0.03, grid=1000)
    table = CurveTable(curves.write_drawn(model, values, 1, tmp_path / "drawn.parquet", "test"))
    pick = random.Random(0)
    runs = []
    for study in range(300):
        seeds = [1000 * (study + 1) + k for k in range(4)]  # the first chose them; three new ones
        finalists = {}
        for key, name in enumerate(pick.sample(sorted(values), 3)):
            finals = {str(s): table.metrics(table.match(values[name], s), epochs)["val_acc"] for s in seeds}
            finalists[f"t{key}"] = {"config": name, "values": finals}
        runs.append({"seed": study, "train_seed": seeds[0], "finalists": finalists})

    def ece(variant: dict) -> float:
        return reliability([r for run in runs for r in judge(run, table.true_final, model_effect, variant)])["ece"]

    def model_effect(seed: int) -> float:
        return table.model.seed_effect(seed)[-1]

    stated = {"selection": True, "shrink": True}
    assert ece(stated) <= 0.05
    assert ece({**stated, "recalibrate": 0.6}) > 0.08


def test_interval_scales_count_the_truths_a_wider_interval_would_hold() -> None:
    from benchmarks.calibration import _off, interval_scales

    rows = [{"mean_off": 0.5, "gap_off": 0.9}, {"mean_off": 1.05, "gap_off": None}, {"mean_off": 2.0, "gap_off": None}]
    found = {s["scale"]: s for s in interval_scales(rows)}
    assert found[1.0]["mean_interval_coverage"] == pytest.approx(1 / 3, abs=1e-3)
    assert found[1.1]["mean_interval_coverage"] == pytest.approx(2 / 3, abs=1e-3)
    assert found[1.0]["gap_interval_coverage"] == 1.0
    # a zero-width interval holds only an exact truth, however widened
    assert _off(0.0, 0.0) == 0.0 and _off(0.01, 0.0) == float("inf") and _off(-0.02, 0.04) == 0.5
