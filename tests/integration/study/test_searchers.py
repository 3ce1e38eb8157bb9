"""The pruned-versus-complete contract: the tests that start processes (the rest, and what they share,
are in tests/unit/study/test_searchers.py)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from study.keys import KIND
from study.searchers import FidelitySearcher
from study.spaces import load_space
from tests.unit.study.test_searchers import MAX_T, _curve


@pytest.mark.slow
def test_contract_holds_under_real_tune_with_asha(tmp_path: Path) -> None:
    """A fake learning curve on a real local Ray: ASHA stops some trials, and in the Optuna
    study exactly those are PRUNED, the rest COMPLETE, with one value per epoch run."""
    import ray
    from ray import tune

    from study.policies.asha import scheduler

    space = load_space("smoke")
    space = type(space)(**{**space.__dict__, "study": type(space.study)(**{
        **space.study.__dict__, "max_epochs": MAX_T, "grace_period": 1, "reduction_factor": 2, "num_samples": 10})})
    searcher = FidelitySearcher(space, f"sqlite:///{tmp_path / 'optuna.db'}", "asha", seed=3)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = tune.Tuner(
            _curve,
            tune_config=tune.TuneConfig(metric="val_acc", mode="max", search_alg=searcher,
                                        scheduler=scheduler(space.study, searcher, None),
                                        num_samples=space.study.num_samples + 1, max_concurrent_trials=2),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="asha", verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    epochs = {r.metrics["trial_id"]: r.metrics["epoch"] for r in results}
    baseline = [r for r in results if r.config[KIND] == "baseline"]
    assert len(baseline) == 1 and baseline[0].metrics["epoch"] == MAX_T  # ASHA never stops it
    study = optuna.load_study(study_name="asha", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == space.study.num_samples
    states = {t.state for t in study.trials}
    assert states == {TrialState.COMPLETE, TrialState.PRUNED}, states
    for t in study.trials:
        ran = epochs[t.user_attrs["tune_trial_id"]]
        assert sorted(t.intermediate_values) == list(range(1, ran + 1))
        assert (t.state == TrialState.COMPLETE) == (ran == MAX_T)
