"""The policies: the tests that start processes (the rest, and what they share, are in
tests/unit/study/test_policies.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from study.keys import KIND
from study.policies.asha import BaselineExemptASHA, saved_history
from tests.unit.study.test_policies import CURVES, _seen


@pytest.mark.slow
def test_rungs_are_rebuilt_from_a_real_tune_experiment(tmp_path: Path) -> None:
    import ray
    from ray import tune

    def curve(config: dict[str, Any]) -> None:
        for epoch, value in enumerate(CURVES[config["name"]], 1):
            tune.report({"epoch": epoch, "val_acc": value})

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        results = tune.Tuner(curve, param_space={"name": tune.grid_search(["a", "b", "c", "d"]),
                                                 KIND: tune.sample_from(lambda spec: "baseline" if spec.config.name
                                                                        == "d" else "search")},
                             tune_config=tune.TuneConfig(metric="val_acc", mode="max"),
                             run_config=tune.RunConfig(storage_path=str(tmp_path), name="exp", verbose=0)).fit()
    finally:
        ray.shutdown()
    assert not results.errors, [str(e)[-1500:] for e in results.errors]
    history = saved_history(str(tmp_path / "exp"), "val_acc")
    assert sorted(history.values(), key=lambda h: h[1]) == [
        dict(enumerate(CURVES[n], 1)) for n in ("b", "a", "c")]  # the baseline is left out
    scheduler = BaselineExemptASHA(history_from=str(tmp_path / "exp"), time_attr="epoch", max_t=4,
                                   grace_period=1, reduction_factor=2)
    scheduler.set_search_properties("val_acc", "max")
    scheduler.on_trial_add(None, SimpleNamespace(trial_id="new", config={}))
    recorded = {milestone: sorted(values.values()) for milestone, values in _seen(scheduler)}
    assert recorded[1] == [0.40, 0.50, 0.55] and recorded[2] == [0.45, 0.60, 0.65]
    assert saved_history(str(tmp_path / "nothing-here"), "val_acc") == {}
