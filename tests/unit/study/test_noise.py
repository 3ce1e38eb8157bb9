"""Answers under seed noise, on values whose noise is known: the finalists' statistics
(study.noise), the budget the noise-aware ending takes (study.phases.finalists), the summary
that names its best on the mean, and the report's level comparisons (study.reporting.analysis)."""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study import summary
from study.noise import finalists, seed_noise
from study.phases import finalists as ending
from study.reporting import analysis
from study.spaces import StudySettings, load_space

ROOT = Path(__file__).resolve().parents[3]


def _grid(effects: dict[str, float], seed_effects: list[float], residual: np.ndarray) -> dict[str, dict[int, float]]:
    return {k: {s: effects[k] + seed_effects[s] + float(residual[i, s]) for s in range(len(seed_effects))}
            for i, k in enumerate(effects)}


def test_seed_noise_takes_the_seeds_shared_effect_out() -> None:
    residual = np.array([[0.01, -0.01, 0.0], [-0.01, 0.01, 0.0], [0.0, 0.0, 0.0]])
    effects = {"a": 0.80, "b": 0.78, "c": 0.70}
    quiet = seed_noise(_grid(effects, [0.0, 0.0, 0.0], residual))
    # a two-way fit's residual: sum of squares 0.0004 over (3-1)(3-1) = 4 degrees of freedom
    assert quiet.paired and quiet.df == 4 and quiet.sd == pytest.approx(math.sqrt(0.0004 / 4))
    # a seed that lifts every configuration by 5 points changes nothing between them
    loud = seed_noise(_grid(effects, [0.0, 0.05, -0.04], residual))
    assert loud.sd == pytest.approx(quiet.sd)
    # without shared seeds the spread within configurations is all there is (and larger here)
    unpaired = seed_noise({"a": {0: 0.8, 1: 0.85}, "b": {2: 0.7, 3: 0.76}})
    assert not unpaired.paired and unpaired.df == 2
    assert unpaired.sd == pytest.approx(math.sqrt((statistics.variance([0.8, 0.85]) +
                                                   statistics.variance([0.7, 0.76])) / 2))
    assert seed_noise({"a": {0: 0.8}}).sd is None


def test_finalists_are_named_on_their_mean_with_intervals_and_the_chance_of_being_best() -> None:
    # "lucky" has the best single run (seed 0), "good" the best mean over three seeds
    values = {"lucky": {0: 0.90, 1: 0.70, 2: 0.72}, "good": {0: 0.86, 1: 0.80, 2: 0.82},
              "weak": {0: 0.70, 1: 0.62, 2: 0.64}}
    named, noise = finalists(values)
    assert [f.key for f in named] == ["good", "lucky", "weak"]
    good = named[0]
    assert good.mean == pytest.approx(statistics.fmean([0.86, 0.80, 0.82])) and good.seeds == 3
    # its interval: the paired noise (the seeds' shared effect out), with the fit's 4 degrees of freedom
    low, high = stats.t.interval(0.95, 4, loc=good.mean, scale=noise.sd / math.sqrt(3))
    assert (good.low, good.high) == (pytest.approx(low), pytest.approx(high))
    lucky = named[1]  # its gap to the best, paired on the same seeds
    half = stats.t.ppf(0.975, 4) * noise.sd * math.sqrt(2 / 3)
    assert lucky.gap == pytest.approx(lucky.mean - good.mean) and good.gap == 0 and good.gap_low is None
    assert (lucky.gap_low, lucky.gap_high) == (pytest.approx(lucky.gap - half), pytest.approx(lucky.gap + half))
    assert sum(f.p_best for f in named if f.p_best is not None) == pytest.approx(1.0)
    assert named[0].p_best > named[1].p_best > named[2].p_best
    # minimising: the order turns over
    assert [f.key for f in finalists(values, mode="min")[0]] == ["weak", "lucky", "good"]
    # two finalists alike up to the noise: about even chances
    twins, _ = finalists({"x": {0: 0.8, 1: 0.82, 2: 0.81}, "y": {0: 0.8, 1: 0.81, 2: 0.82}})
    assert all(0.3 < f.p_best < 0.7 for f in twins if f.p_best is not None)
    # no noise at all (a coarse metric): a tie shares the certainty, it does not go to the first name
    tied, _ = finalists({"a": {0: 0.25, 1: 0.25}, "b": {0: 0.25, 1: 0.25}, "c": {0: 0.2, 1: 0.2}})
    assert [f.p_best for f in tied] == [0.5, 0.5, 0.0]
    one, _ = finalists({"only": {0: 0.5}})
    assert one[0].p_best == 1.0 and one[0].low is None and noise.df == 4


def test_the_run_that_chose_a_finalist_is_left_out_and_shrinking_tempers_certainty() -> None:
    # seed 0 chose them: "lucky" was chosen by a run 28 points above its others (the winner's curse)
    values = {"lucky": {0: 0.99, 1: 0.70, 2: 0.72, 3: 0.71}, "good": {0: 0.86, 1: 0.74, 2: 0.75, 3: 0.76},
              "weak": {0: 0.80, 1: 0.69, 2: 0.70, 3: 0.68}}
    named, noise = finalists(values, selection_seed=0)
    assert [f.key for f in named] == ["good", "lucky", "weak"] and all(f.seeds == 3 for f in named)
    assert named[1].mean == pytest.approx(0.71) and named[1].selection == 0.99 and noise.df == 4
    assert finalists(values)[0][0].key == "lucky"  # counted in, the lucky run names the wrong one
    # shrunk towards their average, the means leave the best less certain, never more
    shrunk, _ = finalists(values, selection_seed=0, shrink=True)
    assert [f.key for f in shrunk] == ["good", "lucky", "weak"]
    assert 1 / 3 <= shrunk[0].p_best <= named[0].p_best
    assert sum(f.p_best for f in shrunk) == pytest.approx(1.0)
    # means alike up to the noise: shrinking leaves no favourite
    alike, _ = finalists({"x": {1: 0.80, 2: 0.83}, "y": {1: 0.82, 2: 0.81}, "z": {1: 0.81, 2: 0.82}}, shrink=True)
    assert [f.p_best for f in alike] == [pytest.approx(1 / 3)] * 3


def test_finalists_on_different_seeds_are_compared_on_the_same_ones() -> None:
    # seed 2 is 10 points harder for everyone; "b" missed it, and its plain mean flatters it
    values = {"a": {1: 0.80, 2: 0.70}, "b": {1: 0.78}, "c": {1: 0.60, 2: 0.50}}
    named, noise = finalists(values)
    assert [f.key for f in named] == ["a", "b", "c"]
    assert named[1].mean == pytest.approx(0.78 - 0.05) and named[0].mean == pytest.approx(0.75)
    assert noise.sd == 0.0 and named[0].p_best == 1.0  # the seed explains every difference here
    # the fit's noise: one degree of freedom left when a's second seed is off by a point
    values["a"][2] = 0.71
    assert finalists(values)[1].df == 1


def test_the_ending_fits_in_its_share_of_the_epoch_budget() -> None:
    free = StudySettings(max_epochs=9, finalists=3, finalist_seeds=2)
    assert ending.plan(free) == ending.Plan(3, 2, 54) and free.search_epochs() is None
    budget = dataclasses.replace(free, epoch_budget=270, finalist_share=0.2)
    assert ending.plan(budget).epochs == 54 and budget.search_epochs() == 216
    tight = dataclasses.replace(budget, epoch_budget=100)  # 20 epochs: one finalist of 18
    assert ending.plan(tight) == ending.Plan(1, 2, 18) and tight.search_epochs() == 82
    none = dataclasses.replace(budget, epoch_budget=50)
    assert not ending.plan(none).on and none.search_epochs() == 50
    assert not ending.plan(dataclasses.replace(free, finalists=0)).on


def _row(trial: str, value: float, epochs: int = 9, kind: str = "search") -> dict[str, Any]:
    return {"trial_id": trial, "name": f"n-{trial}", "kind": kind, "outcome": "completed" if epochs >= 9 else
            "stopped_early", "epochs": epochs, "val_acc": value, "recursion_steps": 2, "crop_scale": 0.5}


def _record(tmp_path: Path) -> Any:
    space = load_space(str(ROOT / "search_spaces" / "ablation.yaml"))
    return SimpleNamespace(name="s", space=space, metric="val_acc", mode="max", max_epochs=9, folder=tmp_path, train_seed=0,
                           tune_paths=(str(tmp_path),), experiments=("s",), extensions=(),
                           finalists_path=str(tmp_path / "f"),
                           stores=SimpleNamespace(optuna_storage="o", tracking_uri="t"),
                           settings=SimpleNamespace(warm_start=()))


def test_the_summary_names_the_best_mean_not_the_luckiest_run(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    rows = [_row("lucky", 0.90), _row("good", 0.86), _row("third", 0.80), _row("short", 0.95, epochs=3)]
    assert ending.chosen(rows, [r["trial_id"] for r in rows], 2) == rows[:2]  # "short" did not reach max_t
    rerun = pd.DataFrame([
        {"trial_id": f"r{i}", "finalist_of": of, "epoch": 9, "epochs_run": 9, "outcome": "completed",
         "config.seed": seed, "val_acc": value}
        for i, (of, seed, value) in enumerate([("lucky", 1, 0.70), ("lucky", 2, 0.72), ("good", 1, 0.80),
                                                ("good", 2, 0.82)])])
    values = ending.values_by_seed(rows, rerun, "val_acc", 0, 9)
    assert values == {"lucky": {0: 0.90, 1: 0.70, 2: 0.72}, "good": {0: 0.86, 1: 0.80, 2: 0.82}}
    built = summary.build(_record(tmp_path), [dict(r) for r in rows], {}, values, rerun_epochs=36)
    assert built["best"]["trial_id"] == "good" and built["ranking"][:3] == ["good", "lucky", "third"]
    # named on the new seeds only: the runs that chose them (seed 0) are left out
    named = built["best"]["noise_aware"]
    assert named["mean"] == pytest.approx(statistics.fmean([0.80, 0.82])) and named["selection"] == 0.86
    assert named["seeds"] == 2 and named["values"] == [0.80, 0.82]
    assert built["epochs_spent"] == 3 * 9 + 3 + 36 and built["seed_noise"]["df"] == 1
    assert built["seed_noise"]["selection_seed"] == 0
    plain = summary.build(_record(tmp_path), [dict(r) for r in rows], {})
    assert plain["best"]["trial_id"] == "lucky" and plain["finalists"] == []
    summary.print_finalists(built)
    out = capsys.readouterr().out
    assert "Best: n-good, val_acc 0.81 over 2 new seed(s) (95% interval" in out and "P(best)" in out
    assert "the run that chose each is left out" in out and "How far such a P(best) holds:" in out


def test_holm_adjusts_as_the_textbook_does() -> None:
    # Holm (1979): sorted p times (m - rank), kept monotone
    assert analysis.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert analysis.holm([]) == [] and analysis.holm([0.6, 0.7]) == [1.0, 1.0]


def _study_with_known_noise(sd: float, effect: float, per_level: int = 12, seed: int = 0) -> pd.DataFrame:
    """A finished study's table: recursion_steps 1 is `effect` worse than 2-10, crop scale does
    nothing; every trial's final value has noise of sd `sd`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(per_level * 4):
        steps = [1, 3, 6, 9][i % 4]
        crop = [0.3, 0.5, 0.7, 0.9][(i // 4) % 4]
        value = 0.8 - (effect if steps == 1 else 0.0) + float(rng.normal(0, sd))
        rows.append({"trial_id": f"t{i}", "name": f"t{i}", "kind": "search", "epochs_run": 3, "outcome": "completed",
                     "recursion_steps": steps, "crop_scale": crop, "attention_temperature": None, "epoch": 3,
                     "val_acc": value, "test_acc": None})
    return pd.DataFrame(rows)


def test_the_report_marks_only_the_effects_beyond_a_known_noise() -> None:
    space = load_space(str(ROOT / "search_spaces" / "ablation.yaml"))
    space = dataclasses.replace(space, study=StudySettings(max_epochs=3, grace_period=3, num_samples=48))
    table = _study_with_known_noise(sd=0.02, effect=0.10)
    assert analysis.comparison_rung(table, space) == 3
    diffs = analysis.level_differences(table, space, 3)
    steps = diffs[diffs["factor"] == "recursion_steps"]
    # T=1 is 10 points worse with 2 points of noise: found, near its true size (against the best
    # of the other levels, which the noise lifts a little)
    one = steps[steps["level"] == "1"].iloc[0]
    assert one["significant"] and abs(one["difference"] + 0.10) < 0.03
    assert one["low"] < one["difference"] < one["high"]
    assert not steps[steps["level"] != "1"]["significant"].any()
    # crop scale does nothing: no level is called different
    assert not diffs[diffs["factor"] == "crop_scale"]["significant"].any()
    # the smallest detectable difference: about (z + z_power) * sd * sqrt(2 / 12) at this noise
    least = analysis.detectable(diffs)
    assert 0.5 * 0.02 < least["difference"] < 4 * 0.02
    # under ten times the noise, the study says that a 10-point effect is below what it can detect
    loud = analysis.level_differences(_study_with_known_noise(sd=0.2, effect=0.10), space, 3)
    assert analysis.detectable(loud)["difference"] > 0.10
    assert not loud[loud["factor"] == "crop_scale"]["significant"].any()


def _study_with_known_costs() -> pd.DataFrame:
    """Trials at max_t (epoch 3) with known accuracy and FLOPs: looking longer (T) costs more
    and gains up to T = 4; one trial stopped early (not a candidate)."""
    trials = [  # (id, T, val_acc, GFLOPs)
        ("t1", 1, 0.70, 1.0), ("t1b", 1, 0.72, 1.2), ("t4", 4, 0.80, 2.0), ("t4b", 4, 0.795, 1.5),
        ("t10", 10, 0.79, 5.0), ("dominated", 10, 0.60, 6.0)]
    rows = []
    for trial_id, steps, value, gflops in trials:
        rows.append({"trial_id": trial_id, "name": f"T{steps}-{trial_id}", "kind": "search", "outcome": "completed",
                     "epochs_run": 3, "epoch": 3, "recursion_steps": steps, "crop_scale": 0.5,
                     "attention_temperature": None, "val_acc": value, "cost_flops_per_image": gflops * 1e9,
                     "cost_latency_ms_batch1": gflops, "cost_parameters": 1e6})
    rows.append({"trial_id": "early", "name": "T2-early", "kind": "search", "outcome": "stopped_early",
                 "epochs_run": 1, "epoch": 1, "recursion_steps": 2, "crop_scale": 0.5, "attention_temperature": None,
                 "val_acc": 0.99, "cost_flops_per_image": 0.5e9, "cost_latency_ms_batch1": 0.5, "cost_parameters": 1e6})
    return pd.DataFrame(rows)


def test_the_cost_section_names_the_front_and_answers_whether_looking_longer_paid() -> None:
    space = load_space(str(ROOT / "search_spaces" / "ablation.yaml"))
    space = dataclasses.replace(space, study=StudySettings(max_epochs=3, grace_period=1, num_samples=7))
    table = _study_with_known_costs()
    candidates = analysis.cost_candidates(table, space)
    assert set(candidates.index) == {"t1", "t1b", "t4", "t4b", "t10", "dominated"}  # the early stop is not compared
    front = analysis.pareto_front(candidates, "val_acc", "max")
    assert list(front.index) == ["t1", "t1b", "t4b", "t4"]  # cheapest first; t10 and "dominated" are beaten
    twin = pd.concat([candidates, candidates.loc[["t4"]].rename(index={"t4": "t4twin"})])
    assert list(analysis.pareto_front(twin, "val_acc", "max").index) == ["t1", "t1b", "t4b", "t4", "t4twin"]
    answer = analysis.cost_answer(candidates, space, noise_sd=0.01)
    assert answer["best"]["trial_id"] == "t4"
    assert answer["cheapest_within"]["trial_id"] == "t4b"  # 0.5 point below, 25% fewer FLOPs
    assert [r["recursion_steps"] for r in answer["by_recursion_steps"]] == [1, 4, 10]
    assert answer["sentence"].startswith("Focusing longer paid +8.0 points here, beyond the seed noise of one run")
    assert "1.7x the FLOPs" in answer["sentence"] and "T4-t4b" in answer["sentence"]
    # a finalist is compared at its mean over seeds, with its interval
    named = [{"trial_id": "t4", "mean": 0.75, "seeds": 3, "low": 0.7, "high": 0.8}]
    again = analysis.cost_candidates(table, space, named)
    assert again.loc["t4", "val_acc"] == 0.75 and again.loc["t4", "seeds"] == 3
    assert analysis.cost_answer(again, space)["best"]["trial_id"] == "t4b"
    # when one look is best, the answer says so
    flat = table.assign(val_acc=[0.9, 0.72, 0.8, 0.795, 0.79, 0.6, 0.99])
    assert analysis.cost_answer(analysis.cost_candidates(flat, space), space)["sentence"].startswith(
        "Focusing longer did not pay here")


@pytest.mark.parametrize("objectives", [None, [["val_acc", "max"], ["cost_flops_per_image", "min"]]])
def test_the_report_of_a_full_space_study_shows_its_pareto_section(tmp_path: Path, objectives: Any) -> None:
    """The report's cost section for a study on the `full` space (refine, LSTM size and the
    optimiser searched too) whose costs are known: the answer, the front cheapest first, the best
    of each T and the plot; a multi-objective study's report shows the front it named."""
    from study.reporting.document import Document
    from study.reporting.sections import _cost

    space = load_space(str(ROOT / "search_spaces" / "full.yaml"))
    space = dataclasses.replace(space, study=StudySettings(max_epochs=3, grace_period=1, num_samples=7))
    table = _study_with_known_costs().assign(
        refine=["repeat", "repeat", "repeat", "repeat", "zoom", "zoom", "repeat"], zoom_ratio=None, lstm_hidden=64,
        xent_coef=1.0, lr=0.002, global_lr=0.002, weight_decay=0.01)
    table.loc[table["refine"] == "zoom", "zoom_ratio"] = 0.8
    named = [{"trial_id": "t4", "mean": 0.81, "seeds": 3, "low": 0.78, "high": 0.84}]
    study_front = [{"trial_id": t} for t in ("t1", "t1b", "t4b", "t4")]
    record = SimpleNamespace(metric="val_acc", space=space, table=table, summary={
        "finalists": named, "seed_noise": {"sd": 0.01}, "objectives": objectives,
        "front": study_front if objectives else None})
    doc, facts = Document("report"), {}
    _cost(doc, record, facts, tmp_path / "cost.png")
    md = doc.markdown(tmp_path)
    assert "## Accuracy against inference cost" in md and (tmp_path / "cost.png").is_file()
    assert "**Does focusing longer pay?** Focusing longer paid +9.0 points here, beyond the seed noise" in md
    assert facts["cost"]["fronts"]["cost_flops_per_image"] == ["t1", "t1b", "t4b", "t4"]
    front_rows = [line for line in md.splitlines() if line.startswith("| T")]
    assert [r.split("|")[1].strip() for r in front_rows[:4]] == ["T1-t1", "T1-t1b", "T4-t4b", "T4-t4"]
    assert "| T4-t4 | 0.810 | 3 | 0.780 to 0.840 |" in md  # the finalist at its mean, with its interval
    assert ("the study's own front, on its objectives" in md) == bool(objectives)


def test_recalibration_spreads_its_share_of_p_best_evenly() -> None:
    values = {"a": {1: 0.80, 2: 0.82, 3: 0.81}, "b": {1: 0.70, 2: 0.73, 3: 0.71}, "c": {1: 0.60, 2: 0.62, 3: 0.64}}
    model, _ = finalists(values)
    spread, _ = finalists(values, recalibrate=0.3)
    assert [f.key for f in spread] == [f.key for f in model]  # the order and every figure but P(best) kept
    assert [f.mean for f in spread] == [f.mean for f in model] and [f.low for f in spread] == [f.low for f in model]
    assert [f.p_best for f in spread] == pytest.approx([0.7 * f.p_best + 0.1 for f in model])
    assert sum(f.p_best for f in spread) == pytest.approx(1.0)
    assert finalists({"only": {1: 0.5, 2: 0.6}}, recalibrate=0.3)[0][0].p_best == 1.0
    with pytest.raises(ValueError, match="recalibrate is a share"):
        finalists(values, recalibrate=1.5)


def test_widened_intervals_keep_their_centre_and_grow_by_the_factor() -> None:
    values = {"a": {1: 0.80, 2: 0.82, 3: 0.81}, "b": {1: 0.70, 2: 0.73, 3: 0.71}}
    plain, _ = finalists(values)
    wide, _ = finalists(values, widen=1.2)
    for p, w in zip(plain, wide, strict=True):
        assert w.mean == p.mean and w.p_best == p.p_best
        assert (w.high - w.low) == pytest.approx(1.2 * (p.high - p.low))
        assert (w.low + w.high) / 2 == pytest.approx((p.low + p.high) / 2)
    assert (wide[1].gap_high - wide[1].gap_low) == pytest.approx(1.2 * (plain[1].gap_high - plain[1].gap_low))
