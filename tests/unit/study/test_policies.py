"""The policies: ASHA keeps its own rungs and decides as Ray's ASHA does on the same results;
its rungs are rebuilt on resume (a resumed study stops the trials an uninterrupted one would,
each trial in its own bracket); several objectives are judged by non-dominated sorting
(MO-ASHA); every policy builds a searcher and a scheduler from a study record."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from study.pareto import crowding, fronts, order
from study.policies import POLICIES, load_policy
from study.policies.asha import BaselineExemptASHA, milestones, rungs
from study.policies.rungs import Records, keeps
from study.spaces import StudySettings

# Each trial's validation accuracy per epoch; ASHA (grace 1, rf 2, max_t 4) decides at 1 and 2.
CURVES = {
    "a": [0.50, 0.60, 0.70, 0.80],
    "b": [0.40, 0.45, 0.50, 0.55],
    "c": [0.55, 0.65, 0.75, 0.85],
    "d": [0.30, 0.35, 0.40, 0.45],
    "e": [0.45, 0.50, 0.52, 0.53],
    "f": [0.35, 0.62, 0.70, 0.72],
}


def _seen(scheduler: BaselineExemptASHA, bracket: int = 0) -> list[tuple[float, dict[str, float]]]:
    """A bracket's rungs as (milestone, {trial: recorded metric x mode sign})."""
    return [(r.milestone, {t: v[0] for t, v in r.seen.items()}) for r in scheduler.records.brackets[bracket].rungs]


def _asha() -> BaselineExemptASHA:
    scheduler = BaselineExemptASHA(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    scheduler.set_search_properties("val_acc", "max")
    return scheduler


def _run(scheduler: BaselineExemptASHA, names: list[str]) -> tuple[dict[str, int], dict[str, dict[int, float]]]:
    """Feeds each trial's curve in turn until ASHA stops it: epochs run, and what was seen."""
    ran, seen = {}, {}
    for name in names:
        trial = SimpleNamespace(trial_id=name, config={})
        scheduler.on_trial_add(None, trial)
        seen[name] = {}
        for epoch, value in enumerate(CURVES[name], 1):
            seen[name][epoch] = value
            decision = scheduler.on_trial_result(None, trial, {"epoch": epoch, "val_acc": value})
            if decision == "STOP" or epoch == 4:
                break
        ran[name] = epoch
        scheduler.on_trial_complete(None, trial, {"epoch": epoch, "val_acc": value})
    return ran, seen


def test_rebuilt_rungs_make_the_decisions_of_an_uninterrupted_study() -> None:
    uninterrupted, _ = _run(_asha(), list(CURVES))
    _, seen = _run(_asha(), ["a", "b", "c"])  # then the driver dies
    resumed = _asha()
    assert resumed.rebuild(seen) > 0
    after, _ = _run(resumed, ["d", "e", "f"])
    assert after == {k: uninterrupted[k] for k in ("d", "e", "f")}
    # without the rebuild, the resumed study judges d, e, f against empty rungs
    empty, _ = _run(_asha(), ["d", "e", "f"])
    assert empty != after and min(after.values()) < 4


@pytest.mark.parametrize(("grace", "rf", "max_t", "expected"), [
    (1, 3, 15, [1, 3, 9]),
    (2, 3, 15, [2, 6]),
    (1, 2.5, 15, [1, 2.5, 6.25]),
])
def test_milestones_and_the_epochs_the_report_judges_at(grace: int, rf: float, max_t: int,
                                                        expected: list[float]) -> None:
    """A non-integer reduction factor gives fractional milestones; a trial is judged at the
    first epoch at or past one."""
    settings = StudySettings(max_epochs=max_t, grace_period=grace, reduction_factor=rf)
    assert milestones(settings) == pytest.approx(expected)
    assert rungs(settings) == sorted({*(int(-(-m // 1)) for m in expected), max_t})


@pytest.mark.parametrize(("grace", "rf", "max_t"), [(1, 2, 4), (1, 3, 27), (2, 3, 15), (1, 2.5, 15), (3, 4, 100)])
def test_asha_decides_as_rays_asha_on_the_same_results(grace: int, rf: float, max_t: int) -> None:
    """Through Tune's public scheduler interface only: 60 trials whose curves cross, fed to both
    in the same order (some at once, interleaved), get the same decision at every result."""
    import random

    from ray.tune.schedulers import AsyncHyperBandScheduler

    rng = random.Random(f"{grace}-{rf}-{max_t}")
    for mode in ("max", "min"):
        ours = BaselineExemptASHA(time_attr="epoch", max_t=max_t, grace_period=grace, reduction_factor=rf)
        ray_asha = AsyncHyperBandScheduler(time_attr="epoch", max_t=max_t, grace_period=grace,
                                           reduction_factor=rf)
        for scheduler in (ours, ray_asha):
            scheduler.set_search_properties("val_acc", mode)
        live: dict[str, tuple[SimpleNamespace, list[float]]] = {}
        decisions = stops = 0
        for i in range(60):
            trial = SimpleNamespace(trial_id=f"t{i}", config={})
            start, slope = rng.random(), rng.uniform(-0.02, 0.05)
            live[trial.trial_id] = (trial, [start + slope * e + rng.gauss(0, 0.03) for e in range(max_t)])
            for scheduler in (ours, ray_asha):
                scheduler.on_trial_add(None, trial)
            while len(live) > 3 or (i == 59 and live):  # up to three trials run at once
                name = rng.choice(sorted(live))
                trial, curve = live[name]
                epoch = max_t - len(curve) + 1
                result = {"epoch": epoch, "val_acc": curve.pop(0)}
                ours_says = ours.on_trial_result(None, trial, result)
                assert ours_says == ray_asha.on_trial_result(None, trial, result), (mode, name, epoch)
                decisions += 1
                if ours_says == "STOP" or not curve:
                    stops += ours_says == "STOP" and epoch < max_t
                    for scheduler in (ours, ray_asha):
                        scheduler.on_trial_complete(None, trial, result)
                    del live[name]
        assert decisions > 60 and stops > 10  # the comparison saw real decisions


def test_several_objectives_are_judged_by_non_dominated_sorting(tmp_path: Path) -> None:
    """MO-ASHA's rule (both objectives larger-is-better here): fronts, crowding distance within
    a front, and a rung that keeps the best ceil(n / rf) of the n it has seen."""
    points = [(0.9, -5.0), (0.8, -2.0), (0.7, -1.0), (0.85, -6.0), (0.6, -3.0), (0.95, -9.0)]
    assert fronts(points) == [[0, 1, 2, 5], [3, 4]]
    distance = crowding(points, [0, 1, 2, 5])
    assert distance[2] == distance[5] == float("inf") and min(distance[0], distance[1]) > 0
    assert order(points)[:2] == [2, 5] and set(order(points)[4:]) == {3, 4}
    seen = points[:5]
    assert keeps((0.99, -0.5), seen, 2)  # dominates all
    assert not keeps((0.5, -10.0), seen, 2)  # dominated by all
    assert keeps((0.5, -10.0), [], 2)  # the first at a rung goes on
    # one objective: Ray's quantile rule
    assert keeps((0.7,), [(0.6,), (0.8,)], 2) and not keeps((0.69,), [(0.6,), (0.8,)], 2)
    records = Records(grace_period=1, max_t=4, reduction_factor=2, log=str(tmp_path / "rungs.jsonl"))
    for name, value in (("a", (0.9, -1.0)), ("b", (0.5, -9.0))):
        records.place(name, 0)
        assert records.judge(name, 1, value) is (name == "b")
    assert records.to_dict()["brackets"][0][0] == {"milestone": 1, "seen": {"a": [0.9, -1.0], "b": [0.5, -9.0]},
                                                  "stopped": ["b"]}
    # every judgement is in the log as it is made
    logged = [json.loads(line) for line in (tmp_path / "rungs.jsonl").read_text().splitlines()]
    assert [(e["trial"], e["milestone"], e["values"], e["stopped"]) for e in logged] == [
        ("a", 1, [0.9, -1.0], False), ("b", 1, [0.5, -9.0], True)]


def test_a_trial_keeps_its_bracket_when_the_rungs_are_rebuilt() -> None:
    def asha() -> BaselineExemptASHA:
        s = BaselineExemptASHA(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2, brackets=2)
        s.set_search_properties("val_acc", "max")
        return s

    first = asha()
    for name in CURVES:
        first.on_trial_add(None, SimpleNamespace(trial_id=name, config={}))
        for epoch in (1, 2):
            first.on_trial_result(None, SimpleNamespace(trial_id=name, config={}),
                                  {"epoch": epoch, "val_acc": CURVES[name][epoch - 1]})
    placed = {i: sorted(t for _, values in _seen(first, i) for t in values) for i in range(2)}
    assert all(placed.values()), "every bracket got trials"
    again = asha()
    again.rebuild({name: {1: CURVES[name][0], 2: CURVES[name][1]} for name in CURVES})
    assert {i: sorted(t for _, values in _seen(again, i) for t in values) for i in range(2)} == placed


def test_every_policy_builds_a_searcher_and_a_scheduler(tmp_path: Path) -> None:
    from study.options import StudyOptions
    from study.record import new_record, resolve_space

    opts = StudyOptions(space="smoke", name="p", out=str(tmp_path))
    for name in POLICIES:
        record = new_record(opts, resolve_space(opts))
        record = dataclasses.replace(record, settings=dataclasses.replace(record.settings, policy=name))
        searcher, scheduler = load_policy(name).build(record)
        assert searcher.suggest("t0") is not None and hasattr(scheduler, "on_trial_result")
        assert load_policy(name).rungs(record.space.study)[-1] == record.max_epochs
    with pytest.raises(ValueError, match="unknown policy 'bohb'; known: asha, fifo, hyperband, adaptive"):
        load_policy("bohb")


def test_the_policy_names_the_command_line_offers_are_the_registry() -> None:
    from study import names
    from trainables.names import Registry

    assert tuple(POLICIES) == names.POLICIES
    with pytest.raises(ValueError, match=r"policy 'bohb' is not listed in study\.names"):
        Registry("policy", names.POLICIES, "study.names").register("bohb", object())


@pytest.mark.parametrize(("every", "decisions", "last", "expected"), [
    (1, (), 4, (1, 2, 3, 4)),
    (5, (1, 3, 9, 20), 20, (1, 3, 5, 9, 10, 15, 20)),
    (10, (), 25, (10, 20, 25)),  # the last epoch always, even off the interval
    (3, (2, 40), 10, (2, 3, 6, 9, 10)),  # a decision past the trial's end is no epoch of it
])
def test_checkpoint_epochs(every: int, decisions: tuple[int, ...], last: int, expected: tuple[int, ...]) -> None:
    from study.execution import checkpoint_epochs

    assert checkpoint_epochs(every, decisions, last) == expected


def _adaptive() -> Any:
    from study.policies.adaptive import scheduler

    adaptive = scheduler(StudySettings(max_epochs=9, grace_period=1, reduction_factor=3), None, None)
    adaptive.set_search_properties("val_acc", "max")
    return adaptive


def _feed(adaptive: Any, curves: dict[str, list[float]]) -> None:
    for name, curve in curves.items():
        trial = SimpleNamespace(trial_id=name, config={})
        adaptive.on_trial_add(None, trial)
        for epoch, value in enumerate(curve, 1):
            adaptive.on_trial_result(None, trial, {"epoch": epoch, "val_acc": value})


def test_the_adaptive_policy_has_hyperbands_brackets_and_their_costs() -> None:
    from study.policies.adaptive import bracket_cost

    adaptive = _adaptive()
    assert adaptive.cuts == [[1, 3], [3], []]  # the last bracket stops nothing before max_t
    assert adaptive.costs == pytest.approx([1 + 2 / 3 + 6 / 9, 3 + 6 / 3, 9])
    assert bracket_cost([2.5], 10, 2) == pytest.approx(3 + 7 / 2)  # judged at the first epoch past 2.5
    weights = adaptive.bracket_weights()
    assert sum(weights) == pytest.approx(1) and min(weights) >= 0.1


def test_the_adaptive_policy_moves_the_trials_away_from_a_rung_whose_ranking_does_not_hold() -> None:
    # Twelve curves over 9 epochs. Kept: the order at epoch 1 is the order at every later epoch.
    # Crossing: the order at epoch 1 is the reverse of the order from epoch 3 on.
    kept = {f"k{i}": [0.1 + 0.05 * i + 0.02 * e for e in range(9)] for i in range(12)}
    crossing = {f"x{i}": [0.1 + 0.05 * i] + [0.9 - 0.05 * i + 0.001 * e for e in range(8)] for i in range(12)}
    ordered, crossed = _adaptive(), _adaptive()
    _feed(ordered, kept)
    _feed(crossed, crossing)
    assert ordered.agreement()[1] == pytest.approx(1.0) and crossed.agreement()[1] == pytest.approx(-1.0)
    assert crossed.agreement()[3] == pytest.approx(1.0)
    first, later = ordered.bracket_weights(), crossed.bracket_weights()
    assert first[0] == max(first)  # ASHA's own bracket is the cheapest that can be trusted
    assert later[0] == pytest.approx(0.1)  # cut where the ranking reverses: the floor alone
    assert later[1] == max(later)  # judged at epoch 3, which holds
    # new trials follow the weights
    counts = [0, 0, 0]
    for i in range(300):
        crossed.on_trial_add(None, SimpleNamespace(trial_id=f"new{i}", config={}))
        counts[crossed.records.placed[f"new{i}"]] += 1
    assert counts[1] > counts[2] > counts[0]  # weights 0.55, 0.35, 0.1


def test_a_space_names_its_default_policy_and_the_flag_overrides_it(tmp_path: Path) -> None:
    from study.errors import StudyInputError
    from study.options import StudyOptions
    from study.record import new_record, resolve_space
    from study.spaces import SpaceError, load_space

    space = tmp_path / "s.yaml"
    text = (Path(__file__).resolve().parents[3] / "search_spaces" / "smoke.yaml").read_text()
    assert "  policy: asha" in text
    space.write_text(text.replace("  policy: asha", "  policy: hyperband", 1))
    for flag, expected in ((None, "hyperband"), ("fifo", "fifo")):
        opts = StudyOptions(space=str(space), name=f"p{flag}", out=str(tmp_path), policy=flag)
        assert new_record(opts, resolve_space(opts)).settings.policy == expected
    # a space that names none: the default, the adaptive policy
    (tmp_path / "plain.yaml").write_text("\n".join(line for line in text.splitlines() if "policy:" not in line))
    plain = StudyOptions(space=str(tmp_path / "plain.yaml"), name="plain", out=str(tmp_path))
    assert new_record(plain, resolve_space(plain)).settings.policy == "adaptive"
    space.write_text(text.replace("  policy: asha", "  policy: bohb", 1))
    with pytest.raises((SpaceError, StudyInputError), match=r"study\.policy"):
        load_space(str(space))


@pytest.mark.parametrize("brackets", [2, 5, 10, 11, 12, 20])
def test_adaptive_draw_weights_stay_positive_and_ordered_for_any_number_of_brackets(brackets: int) -> None:
    # 11 brackets come from a reduction factor of 1.5 over 40 epochs; the old floor of 0.1 each
    # made the weights uniform at 10, inverted at 11 and negative from 12
    from study.policies.adaptive import FLOOR, mix

    share = [2.0 ** -i for i in range(brackets)]
    share = [s / sum(share) for s in share]
    weights = mix(share)
    assert sum(weights) == pytest.approx(1.0) and min(weights) > 0
    assert weights == sorted(weights, reverse=True) and weights[0] > weights[-1]
    assert min(weights) >= min(FLOOR, 0.5 / brackets) - 1e-12


def test_a_multi_objective_asha_keeps_a_cheap_trial_that_one_objective_would_stop(tmp_path: Path) -> None:
    """Accuracy (max) and FLOPs (min), the cost reported with the first epoch only: at the first
    rung a cheap but less accurate trial is on the front and goes on, where ASHA on accuracy
    alone stops it; its rebuilt rungs (the costs read back from Tune's results) decide the same."""
    def mo(**kw: Any) -> BaselineExemptASHA:
        s = BaselineExemptASHA(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2, **kw)
        s.set_search_properties("val_acc", "max")
        return s

    # "b" comes last: the least accurate, and the cheapest by far
    trials = {"a": (0.8, 5e9), "c": (0.75, 6e9), "d": (0.7, 7e9), "b": (0.6, 1e9)}
    both = mo(costs=(("cost_flops_per_image", "min"),), log=str(tmp_path / "rungs.jsonl"))
    alone = mo()
    for scheduler in (both, alone):
        decisions = {}
        for name, (value, flops) in trials.items():
            trial = SimpleNamespace(trial_id=name, config={})
            scheduler.on_trial_add(None, trial)
            decisions[name] = scheduler.on_trial_result(None, trial, {"epoch": 1, "val_acc": value,
                                                                      "cost_flops_per_image": flops})
        # "c" and "d" are dominated by "a" either way; "b" is on the front with "a"
        assert decisions == {"a": "CONTINUE", "c": "STOP", "d": "STOP",
                             "b": "CONTINUE" if scheduler is both else "STOP"}
    logged = [json.loads(line) for line in (tmp_path / "rungs.jsonl").read_text().splitlines()]
    assert [e["values"] for e in logged] == [[v, -f] for v, f in trials.values()]
    # a trial whose cost is not known yet is not judged
    assert both.on_trial_result(None, SimpleNamespace(trial_id="e", config={}), {"epoch": 1, "val_acc": 0.1}) \
        == "CONTINUE" and "e" not in both.records.brackets[0].rungs[0].seen
    again = mo(costs=(("cost_flops_per_image", "min"),))
    again.rebuild({n: {1: v} for n, (v, _) in trials.items()}, {n: {"cost_flops_per_image": f}
                                                                for n, (_, f) in trials.items()})
    assert again.records.brackets[0].rungs[0].seen == {n: (v, -f) for n, (v, f) in trials.items()}
