"""The search benchmark's statistics on values with known answers: the final regret's robust
summaries, the sustained time to a tolerance, and paired comparisons over seeds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from benchmarks.search_efficiency import compare, iqm, iqm_interval, sustained


def test_epochs_to_a_tolerance_count_from_where_the_regret_stays_there() -> None:
    # touched at epoch 2, left at 3, back for good at 4
    assert sustained([5.0, 0.5, 3.0, 0.5, 0.2], 1.0) == 4
    assert sustained([0.5, 0.5], 1.0) == 1
    assert sustained([5.0, 0.5, 3.0], 1.0) is None  # ended above it: never reached, whatever it touched


def test_the_interquartile_mean_ignores_the_worst_and_best_quarter() -> None:
    values = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0]
    assert iqm(values) == pytest.approx(statistics.fmean([2.0, 3.0, 4.0, 5.0]))
    low, high = iqm_interval(values)
    assert low <= iqm(values) <= high < 100
    assert iqm_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_paired_comparisons_find_a_consistent_gain_and_not_a_noisy_one() -> None:
    base = [3.0, 5.0, 1.0, 8.0, 2.0, 6.0, 4.0, 7.0, 9.0, 2.5, 3.5, 6.5]
    regrets = {"better": [b - 1.0 - 0.1 * i for i, b in enumerate(base)], "base": base,
               "same": [b + (0.3 if i % 2 else -0.3) for i, b in enumerate(base)]}
    better, same = compare(regrets, [("better", "base"), ("same", "base")])
    assert better["significant"] and better["better_in"] == 12 and better["mean_difference"] < 0
    assert better["interval"][1] < 0 and better["p"] <= better["p_holm"]
    assert not same["significant"] and same["interval"][0] < 0 < same["interval"][1]


def test_ties_count_in_the_mean_difference_and_its_test() -> None:
    # half the studies tie (both name equally good configurations), half gain one point: the
    # mean gain is half a point, and its test sees 20 studies, not the 10 that differ
    base = [4.0 + i for i in range(20)]
    regrets = {"m": [b - (1.0 if i % 2 else 0.0) for i, b in enumerate(base)], "base": base}
    (row,) = compare(regrets, [("m", "base")])
    assert row["mean_difference"] == -0.5 and (row["ties"], row["better_in"], row["worse_in"]) == (10, 10, 0)
    assert row["test"].startswith("paired permutation") and row["significant"]
    assert row["p"] == pytest.approx(2 / 2 ** 10, rel=0.5)  # only the all-gains sign pattern (and its mirror)
    assert 0 < row["p_paired_t"] < 0.01


def test_rescore_reads_the_final_regrets_of_a_results_file(tmp_path: Path) -> None:
    from benchmarks.search_efficiency import rescore

    regrets = {"random_fifo": [5.0, 6.0, 7.0, 8.0, 9.0, 4.0], "random_asha": [1.0, 1.5, 2.0, 0.5, 1.0, 0.0]}
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"methods": {m: {"final_regret_points": v} for m, v in regrets.items()}}))
    out = rescore(results)
    assert out["methods"]["random_asha"]["iqm"] == pytest.approx(round(iqm(regrets["random_asha"]), 2))
    (pair,) = out["comparisons"]  # the one planned comparison both methods allow
    assert (pair["method"], pair["against"], pair["better_in"]) == ("random_asha", "random_fifo", 6)


def test_the_score_says_what_a_better_pick_among_the_finalists_could_have_gained(tmp_path: Path) -> None:
    from benchmarks.search_efficiency import score
    from tests.unit.trainables.test_curve_model import _drawn

    model, table = _drawn(tmp_path, seeds=1)
    truth = {n: model.true_final(n) for n in table.values if table.values[n].get("local_stream", True)}
    ranked = sorted(truth, key=lambda n: -truth[n])
    best = truth[ranked[0]]
    work = tmp_path / "work"
    work.mkdir()
    # study 0 named its second finalist though its first was truly better; study 1 named its best
    # finalist, which was not the table's best; study 2 had no finalists
    studies = [(ranked[3], {ranked[1]: 0.5, ranked[3]: 0.6}), (ranked[2], {ranked[2]: 0.7, ranked[4]: 0.4}),
               (ranked[0], {})]
    for seed, (named, finals) in enumerate(studies):
        line = [{"trial": "t", "epoch": table.epochs, "val_acc": 0.5, "true": truth[named], "full": True}]
        run = {"line": line, "wall_s": 1.0, "named": named, "best_single_run": named,
               "finalists": {f"t{i}": {"config": c, "values": {"1": v}} for i, (c, v) in enumerate(finals.items())}}
        (work / f"m-{seed}.json").write_text(json.dumps(run))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("benchmarks.search_efficiency.COMPARISONS", ())
        found = score(work, ["m"], 3, table.epochs, table)["methods"]["m"]
    regret = {n: round(100 * (best - truth[n]), 2) for n in ranked[:5]}
    assert found["best_finalist_regret_points"] == [regret[ranked[1]], regret[ranked[2]], None]
    cost = (regret[ranked[3]] - regret[ranked[1]]) / 2  # the two studies with finalists
    assert found["pick_cost_mean_points"] == pytest.approx(cost, abs=0.01)
    assert found["picked_the_best_finalist"] == 0.5
