"""The pruned-versus-complete contract: what reaches Optuna is honest about fidelity."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from study.keys import KIND, NAME, OPTUNA_NUMBER, PARAMS, run_name
from study.searchers import FidelitySearcher
from study.spaces import load_space

MAX_T = 4


def _searcher(tmp_path: Path, **kw: Any) -> FidelitySearcher:
    space = load_space("smoke")
    return FidelitySearcher(space, f"sqlite:///{tmp_path / 'optuna.db'}", "contract", **kw)


def test_baselines_come_first_and_stay_out_of_optuna(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path)
    first = searcher.suggest("b0")
    assert first is not None and first[KIND] == "baseline" and first["local_stream"] is False
    assert first[PARAMS] == {"recursion_steps": None, "crop_scale": None, "attention_temperature": None}
    second = searcher.suggest("t1")
    assert second is not None and second[KIND] == "search"
    # the enqueued point is the first one the sampler evaluates
    assert {k: second[k] for k in ("recursion_steps", "crop_scale", "attention_temperature")} == \
        {"recursion_steps": 3, "crop_scale": 0.5, "attention_temperature": 1.0}
    assert second[NAME] == "T3-s0.5-tau1" and second["epochs"] == 3
    assert len(searcher.study.trials) == 1 and second[OPTUNA_NUMBER] == 0
    # the stored study names its objective (optuna-dashboard shows "val_acc", not "Objective 0")
    stored = optuna.load_study(study_name="contract", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert stored.metric_names == ["val_acc"]


def test_stopped_trials_are_pruned_with_every_epoch_and_full_ones_complete(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path, baselines=False)
    max_t = searcher.space.study.max_epochs
    for trial_id, epochs in (("full", max_t), ("stopped", 1), ("broken", 2)):
        assert searcher.suggest(trial_id) is not None
        for epoch in range(1, epochs + 1):
            searcher.on_trial_result(trial_id, {"epoch": epoch, "val_acc": 0.1 * epoch})
        if trial_id == "stopped":
            searcher.on_trial_stopped(trial_id)  # as ASHA does
        last = {"epoch": epochs, "val_acc": 0.1 * epochs}
        searcher.on_trial_complete(trial_id, result=last, error=trial_id == "broken")
    trials = {t.user_attrs["tune_trial_id"]: t for t in searcher.study.trials}
    assert trials["full"].state == TrialState.COMPLETE
    assert trials["full"].value == pytest.approx(0.1 * max_t)
    assert trials["full"].intermediate_values == {e: pytest.approx(0.1 * e) for e in range(1, max_t + 1)}
    assert trials["stopped"].state == TrialState.PRUNED
    assert trials["stopped"].intermediate_values == {1: pytest.approx(0.1)}
    assert trials["broken"].state == TrialState.FAIL
    # only trials that ran to max_t count for Optuna's best trial
    assert searcher.study.best_trial.number == trials["full"].number


def test_a_resumed_searcher_keeps_reporting_to_the_same_optuna_trial(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path, baselines=False)
    searcher.suggest("t")
    searcher.on_trial_result("t", {"epoch": 1, "val_acc": 0.2})
    searcher.save(str(tmp_path / "searcher.json"))
    # as Tuner.restore does: unpickle a copy, then restore its saved state
    import pickle

    restored = pickle.loads(pickle.dumps(searcher))
    restored.restore(str(tmp_path / "searcher.json"))
    restored.on_trial_result("t", {"epoch": 1, "val_acc": 0.9})  # a re-reported epoch is ignored
    restored.on_trial_result("t", {"epoch": 2, "val_acc": 0.3})
    restored.on_trial_stopped("t")
    restored.on_trial_complete("t", {"epoch": 2, "val_acc": 0.3})
    (trial,) = restored.study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: pytest.approx(0.2), 2: pytest.approx(0.3)}
    # the sampler's in-memory view learns of the trial when it ends
    (mirrored,) = restored.mirror.get_trials()
    assert (mirrored.state, mirrored.params, mirrored.intermediate_values) == \
        (trial.state, trial.params, trial.intermediate_values)


def test_an_interrupted_trial_stays_running_until_it_is_resumed(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path, baselines=False)
    searcher.suggest("t")
    searcher.on_trial_result("t", {"epoch": 1, "val_acc": 0.2})
    # Ctrl-C: Tune ends the trial early although no scheduler stopped it
    searcher.on_trial_complete("t", {"epoch": 1, "val_acc": 0.2})
    (trial,) = searcher.study.trials
    assert trial.state == TrialState.RUNNING and searcher.numbers == {"t": 0}
    # resumed, it runs to the end and completes
    for epoch in (2, 3):
        searcher.on_trial_result("t", {"epoch": epoch, "val_acc": 0.1 * epoch})
    searcher.on_trial_complete("t", {"epoch": 3, "val_acc": 0.3})
    (trial,) = searcher.study.trials
    assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == [1, 2, 3]


def test_run_names_come_from_the_searched_values() -> None:
    assert run_name({"recursion_steps": 4, "crop_scale": 0.35, "attention_temperature": 0.7}) == "T4-s0.35-tau0.7"
    assert run_name({"refine": "zoom", "lr": 0.00123}) == "refine=zoom-lr=0.00123"


def _curve(config: dict[str, Any]) -> None:
    from ray import tune

    for epoch in range(1, config["epochs"] + 1):
        quality = config.get("crop_scale") or 0.5
        tune.report({"epoch": epoch, "val_acc": quality * (1 - 0.5**epoch)})


def test_restore_fails_optuna_trials_that_tune_never_saved(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path, baselines=False)
    searcher.suggest("kept")
    searcher.save(str(tmp_path / "searcher.json"))
    searcher.suggest("lost")  # asked after the last save, then the driver died
    import pickle

    restored = pickle.loads(pickle.dumps(searcher))
    restored.restore(str(tmp_path / "searcher.json"))
    states = {t.user_attrs["tune_trial_id"]: t.state for t in restored.study.trials}
    assert states == {"kept": TrialState.RUNNING, "lost": TrialState.FAIL}


def test_a_resumed_study_does_not_propose_its_first_points_again(tmp_path: Path) -> None:
    import pickle

    searcher = _searcher(tmp_path, baselines=False, sampler="random")
    first = [searcher.suggest(f"t{i}") for i in range(3)]
    for i in range(3):
        searcher.on_trial_complete(f"t{i}", {"epoch": 3, "val_acc": 0.5})
    searcher.save(str(tmp_path / "s.json"))
    restored = pickle.loads(pickle.dumps(searcher))
    restored.restore(str(tmp_path / "s.json"))
    again = [restored.suggest(f"r{i}") for i in range(3)]
    key = ("recursion_steps", "crop_scale")
    assert {tuple(c[k] for k in key) for c in first if c} & {tuple(c[k] for k in key) for c in again if c} == set()


def test_asking_and_reporting_never_read_the_stored_study_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler reads an in-memory mirror, and what a result needs is kept in memory: after
    the one read that builds the mirror, asking for a trial (TPE with 30 trials in the study),
    reporting an epoch and ending a trial read no set of trials from the storage, so their cost
    does not grow with the study or with the trials running (a new trial's number is read back
    from that one trial)."""
    searcher = _searcher(tmp_path, baselines=False)
    for i in range(30):
        searcher.suggest(f"w{i}")
        searcher.on_trial_complete(f"w{i}", {"epoch": 3, "val_acc": 0.01 * i})
    reads = []
    for owner in (optuna.study.Study, optuna.storages.RDBStorage):
        for name in ("get_trials", "get_all_trials"):
            original = getattr(owner, name, None)
            if original is not None:
                def counting(self: Any, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
                    reads.append(_name)
                    return _original(self, *args, **kwargs)

                monkeypatch.setattr(owner, name, counting)
    for i in range(20):
        searcher.suggest(f"t{i}")
    for i in range(20):
        searcher.on_trial_result(f"t{i}", {"epoch": 1, "val_acc": 0.01 * i})
        searcher.on_trial_stopped(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"epoch": 1, "val_acc": 0.01 * i})
    assert reads == []
    monkeypatch.undo()
    trials = optuna.load_study(study_name="contract", storage=searcher.storage).trials
    assert [t.state for t in trials[30:]] == [TrialState.PRUNED] * 20
    assert trials[49].intermediate_values == {1: pytest.approx(0.19)} and trials[49].value == pytest.approx(0.19)
    assert len(searcher.mirror.get_trials()) == 50


def test_the_ledger_writes_what_optunas_ask_report_and_tell_would(tmp_path: Path) -> None:
    """The searcher writes the stored study through Optuna's storage methods (one class,
    _Ledger): if a new Optuna stores a trial differently from its own Study API, this fails."""
    from study.searchers import _Ledger, _rdb

    rdb = _rdb(f"sqlite:///{tmp_path / 'optuna.db'}")
    distributions = load_space("smoke").distributions()
    point = {"recursion_steps": 2, "crop_scale": 0.4, "attention_temperature": 1.5}
    reference = optuna.create_study(storage=rdb, study_name="reference", direction="maximize")
    optuna.create_study(storage=rdb, study_name="ledger", direction="maximize")
    ledger = _Ledger(rdb, rdb.get_study_id_from_name("ledger"))
    for state, values in ((TrialState.COMPLETE, [0.1, 0.2, 0.3]), (TrialState.PRUNED, [0.1, 0.05]),
                          (TrialState.FAIL, [0.2])):
        reference.enqueue_trial(point)
        trial = reference.ask(fixed_distributions=distributions)
        trial.set_user_attr("tune_trial_id", state.name)
        storage_id, number = ledger.create(point, distributions, {"tune_trial_id": state.name})
        assert number == trial.number
        for step, value in enumerate(values, 1):
            trial.report(value, step)
            ledger.report(storage_id, step, value)
        reference.tell(trial, values[-1] if state == TrialState.COMPLETE else None, state=state)
        ledger.finish(storage_id, state, [values[-1]] if state != TrialState.FAIL else None)
        ledger.finish(storage_id, TrialState.FAIL, None)  # told again after a resume: kept as it was
    fields = ("number", "state", "values", "params", "distributions", "intermediate_values", "user_attrs")
    written = optuna.load_study(study_name="ledger", storage=rdb).trials
    expected = optuna.load_study(study_name="reference", storage=rdb).trials
    assert [[getattr(t, f) for f in fields] for t in written] == [[getattr(t, f) for f in fields] for t in expected]
    assert ledger.trial(1)[1].intermediate_values == {1: 0.1, 2: 0.05}


def test_the_searcher_names_the_command_line_offers_are_the_registry() -> None:
    from study import names
    from study.searchers import SEARCHERS

    assert tuple(SEARCHERS) == names.SEARCHERS


def test_the_searcher_limits_trials_at_once_by_this_runs_concurrency(tmp_path: Path) -> None:
    """--concurrency may change on --resume: the limit is read when a trial is asked for, from
    the study's session in this process, not from the pickled state a restored study brings back."""
    import pickle

    from study.session import StudySession

    searcher = _searcher(tmp_path)  # one baseline, then sampled points
    record: Any = SimpleNamespace(name="contract")
    with StudySession(record, services=False, concurrency=2):
        assert searcher.suggest("b") is not None and searcher.suggest("t1") is not None
        assert searcher.suggest("t2") is None  # two running: Tune asks again later
        searcher.on_trial_complete("b", {"epoch": 3, "val_acc": 0.5})
        assert searcher.suggest("t2") is not None
        searcher.save(str(tmp_path / "s.json"))
        restored = pickle.loads(pickle.dumps(searcher))
        restored.restore(str(tmp_path / "s.json"))
        assert restored.suggest("t3") is None  # t1 and t2 still run after the resume
    with StudySession(record, services=False, concurrency=3):  # resumed with --concurrency 3
        assert restored.suggest("t3") is not None
    assert restored.suggest("t4") is not None  # no session of the study: no limit of its own
    with StudySession(SimpleNamespace(name="another"), services=False, concurrency=1):
        assert restored.suggest("t5") is not None  # another study's session is not this one's


def _accuracy_and_flops(tmp_path: Path) -> tuple[FidelitySearcher, str]:
    """A multi-objective searcher on the smoke space (accuracy max, FLOPs min) and its storage."""
    import dataclasses

    space = load_space("smoke")
    space = dataclasses.replace(space, study=dataclasses.replace(
        space.study, objectives=(("val_acc", "max"), ("cost_flops_per_image", "min"))))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return FidelitySearcher(space, url, "mo", baselines=False), url


def test_a_multi_objective_study_tells_optuna_every_objective_at_equal_fidelity(tmp_path: Path) -> None:
    """Accuracy (max) and FLOPs (min): a full trial is COMPLETE with both (its cost reported once,
    with its first epoch, and kept through a restore), a stopped one PRUNED with none (Optuna has
    no values of a pruned trial of several objectives), and the study names both objectives."""
    searcher, url = _accuracy_and_flops(tmp_path)
    max_t = searcher.space.study.max_epochs
    for trial_id, epochs, flops in (("full", max_t, 2e9), ("stopped", 1, 1e9), ("resumed", max_t, 3e9)):
        assert searcher.suggest(trial_id) is not None
        for epoch in range(1, epochs + 1):
            result = {"epoch": epoch, "val_acc": 0.1 * epoch} | ({"cost_flops_per_image": flops} if epoch == 1 else {})
            searcher.on_trial_result(trial_id, result)
            if trial_id == "resumed" and epoch == 1:  # the driver dies; Tune restores the searcher
                searcher.save(str(tmp_path / "searcher.json"))
                searcher = pickle.loads(pickle.dumps(searcher))
                searcher.restore(str(tmp_path / "searcher.json"))
        if trial_id == "stopped":
            searcher.on_trial_stopped(trial_id)
        searcher.on_trial_complete(trial_id, result={"epoch": epochs, "val_acc": 0.1 * epochs})
    stored = optuna.load_study(study_name="mo", storage=url)
    assert stored.metric_names == ["val_acc", "cost_flops_per_image"]
    assert [d.name for d in stored.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = {t.user_attrs["tune_trial_id"]: t for t in stored.trials}
    assert trials["full"].state == TrialState.COMPLETE and trials["full"].values == [pytest.approx(0.1 * max_t), 2e9]
    assert trials["resumed"].values == [pytest.approx(0.1 * max_t), 3e9]
    assert trials["stopped"].state == TrialState.PRUNED and trials["stopped"].values is None
    assert {t.number for t in stored.best_trials} == {trials["full"].number}  # the front, at max_t only
    # the sampler proposes for several objectives
    assert searcher.suggest("next") is not None


def test_a_resumed_multi_objective_study_samples_past_its_stopped_trials(tmp_path: Path) -> None:
    """The sampler of a resumed study reads the stored trials back: stopped trials of several
    objectives carry their per-epoch values there, which Optuna's TPE cannot rank (it asks the
    study for its one direction), so past its random start-up the sampler must still propose;
    and it is told of them as the live searcher tells it (FAIL: no values to learn from)."""
    searcher, url = _accuracy_and_flops(tmp_path)
    max_t = searcher.space.study.max_epochs
    for i in range(14):  # past TPE's 10 start-up trials, most stopped at the first rung
        trial_id = f"t{i}"
        assert searcher.suggest(trial_id) is not None
        epochs = max_t if i % 4 == 0 else 1
        for epoch in range(1, epochs + 1):
            searcher.on_trial_result(trial_id, {"epoch": epoch, "val_acc": 0.01 * i + 0.1 * epoch,
                                                "cost_flops_per_image": 1e9 * (1 + i % 3)})
        if epochs < max_t:
            searcher.on_trial_stopped(trial_id)
        searcher.on_trial_complete(trial_id, result={"epoch": epochs, "val_acc": 0.01 * i + 0.1 * epochs})
    searcher.save(str(tmp_path / "searcher.json"))
    restored = pickle.loads(pickle.dumps(searcher))
    restored.restore(str(tmp_path / "searcher.json"))
    stored = optuna.load_study(study_name="mo", storage=url)
    assert sum(t.state == TrialState.PRUNED and bool(t.intermediate_values) for t in stored.trials) == 10
    # the sampler learns from trials at max_t only: stopped ones are FAIL to it, live or restored
    for sampler_side in (searcher.mirror, restored.mirror):
        states = [t.state for t in sampler_side.trials]
        assert states.count(TrialState.FAIL) == 10 and states.count(TrialState.COMPLETE) == 4
    for i in range(5):
        assert restored.suggest(f"after{i}") is not None
