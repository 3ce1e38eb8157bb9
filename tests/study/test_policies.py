"""The policies: ASHA's rungs are Ray's own, rebuilt on resume (a resumed study stops the
trials an uninterrupted one would, each trial in its own bracket); every policy builds a
searcher and a scheduler from a study record."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from study.keys import KIND
from study.policies import POLICIES, load_policy
from study.policies.asha import BaselineExemptASHA, bracket_of, milestones, rung_tables, rungs, saved_history
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


@pytest.mark.slow
def test_rungs_are_rebuilt_from_a_real_tune_experiment(tmp_path: Path) -> None:
    import ray
    from ray import tune

    def curve(config: dict[str, Any]) -> None:
        for epoch, value in enumerate(CURVES[config["name"]], 1):
            tune.report({"epoch": epoch, "val_acc": value})

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        tune.Tuner(curve, param_space={"name": tune.grid_search(["a", "b", "c", "d"]),
                                       KIND: tune.sample_from(lambda spec: "baseline" if spec.config.name == "d"
                                                              else "search")},
                   tune_config=tune.TuneConfig(metric="val_acc", mode="max"),
                   run_config=tune.RunConfig(storage_path=str(tmp_path), name="exp", verbose=0)).fit()
    finally:
        ray.shutdown()
    history = saved_history(str(tmp_path / "exp"), "val_acc")
    assert sorted(history.values(), key=lambda h: h[1]) == [
        dict(enumerate(CURVES[n], 1)) for n in ("b", "a", "c")]  # the baseline is left out
    scheduler = BaselineExemptASHA(history_from=str(tmp_path / "exp"), time_attr="epoch", max_t=4,
                                   grace_period=1, reduction_factor=2)
    scheduler.set_search_properties("val_acc", "max")
    scheduler.on_trial_add(None, SimpleNamespace(trial_id="new", config={}))
    recorded = {milestone: sorted(values.values()) for milestone, values in rung_tables(scheduler)[0]}
    assert recorded[1] == [0.40, 0.50, 0.55] and recorded[2] == [0.45, 0.60, 0.65]
    assert saved_history(str(tmp_path / "nothing-here"), "val_acc") == {}


@pytest.mark.parametrize(("grace", "rf", "max_t", "expected"), [
    (1, 3, 15, [1, 3, 9]),
    (2, 3, 15, [2, 6]),
    (1, 2.5, 15, [1, 2.5, 6.25]),
])
def test_milestones_are_rays_and_the_report_judges_at_the_epoch_ray_does(grace: int, rf: float, max_t: int,
                                                                        expected: list[float]) -> None:
    """Ray's ASHA keeps its milestones in private attributes (read in one function,
    `rung_tables`): this fails loudly if Ray changes them. A non-integer reduction factor gives
    fractional milestones; Ray judges a trial at the first epoch at or past one."""
    settings = StudySettings(max_epochs=max_t, grace_period=grace, reduction_factor=rf)
    assert milestones(settings) == pytest.approx(expected)
    assert rungs(settings) == sorted({*(int(-(-m // 1)) for m in expected), max_t})


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
    placed = {i: sorted(t for _, values in bracket for t in values) for i, bracket in enumerate(rung_tables(first))}
    assert all(placed.values()), "every bracket got trials"
    again = asha()
    again.rebuild({name: {1: CURVES[name][0], 2: CURVES[name][1]} for name in CURVES})
    assert {i: sorted(t for _, values in b for t in values) for i, b in enumerate(rung_tables(again))} == placed


def test_every_policy_builds_a_searcher_and_a_scheduler(tmp_path: Path) -> None:
    from study.options import StudyOptions
    from study.record import new_record, resolve_space

    opts = StudyOptions(space="smoke", name="p", out=str(tmp_path))
    for name in POLICIES:
        record = new_record(opts, resolve_space(opts))
        record = type(record)(**{**record.__dict__, "settings": {**record.settings, "policy": name}})
        searcher, scheduler = load_policy(name).build(record)
        assert searcher.suggest("t0") is not None and hasattr(scheduler, "on_trial_result")
        assert load_policy(name).rungs(record.space.study)[-1] == record.max_epochs
    with pytest.raises(ValueError, match="unknown policy 'bohb'; known: asha, fifo, hyperband, adaptive"):
        load_policy("bohb")


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
        counts[bracket_of(crossed, f"new{i}")] += 1
    assert counts[1] > counts[2] > counts[0]  # weights 0.55, 0.35, 0.1


def test_a_space_names_its_default_policy_and_the_flag_overrides_it(tmp_path: Path) -> None:
    from study.errors import StudyInputError
    from study.options import StudyOptions
    from study.record import new_record, resolve_space
    from study.spaces import SpaceError, load_space

    space = tmp_path / "s.yaml"
    text = (Path(__file__).resolve().parents[2] / "search_spaces" / "smoke.yaml").read_text()
    assert "policy" not in text
    space.write_text(text.replace("study:\n", "study:\n  policy: adaptive\n", 1))
    for flag, expected in ((None, "adaptive"), ("fifo", "fifo")):
        opts = StudyOptions(space=str(space), name=f"p{flag}", out=str(tmp_path), policy=flag)
        assert new_record(opts, resolve_space(opts)).settings["policy"] == expected
    plain = StudyOptions(space="smoke", name="plain", out=str(tmp_path))
    assert new_record(plain, resolve_space(plain)).settings["policy"] == "asha"
    space.write_text(text.replace("study:\n", "study:\n  policy: bohb\n", 1))
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
