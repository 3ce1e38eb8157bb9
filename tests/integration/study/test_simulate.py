"""A study in simulated time against the same study under Ray Tune: the tests that start
processes (the rest, and what they share, are in tests/unit/study/test_simulate.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from study import options
from study.keys import PARAMS
from study.simulate import simulate
from tests.conftest import replay_space
from tests.unit.study.test_simulate import ROOT, TABLE, _decisions, _record, _values


@pytest.mark.slow
@pytest.mark.parametrize("objectives", [None, "val_acc:max,cost_flops_per_image:min"])
def test_one_worker_makes_the_decisions_of_the_tune_path(tmp_path: Path, objectives: str | None) -> None:
    """ASHA on the metric, and MO-ASHA on accuracy and FLOPs (the front's sorting at each rung)."""
    (tmp_path / "space.yaml").write_text(replay_space(max_epochs=8, num_samples=10, baselines=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    flags = [] if objectives is None else ["--objectives", objectives]
    proc = subprocess.run([sys.executable, "-m", "study.run", "--quiet", "--space", str(tmp_path / "space.yaml"),
                           "--name", "tune", "--out", str(tmp_path / "runs"), "--trainable", "replay",
                           "--replay-table", TABLE, "--replay-epoch-s", "0", "--concurrency", "1", "--seed", "3",
                           "--no-baselines", "--no-test", "--no-report", *flags],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tune_storage = f"sqlite:///{tmp_path / 'runs' / 'tune' / 'optuna.db'}"
    tune = _decisions(tune_storage, "tune")
    record = _record(tmp_path, "sim", objectives=None if objectives is None else options.objectives(objectives))
    trials = simulate(record, workers=1).trials
    simulated = _decisions(record.stores.optuna_storage, "sim")
    assert simulated == tune
    assert _values(record.stores.optuna_storage, "sim") == _values(tune_storage, "tune")
    assert len(trials) == 10 and any(t.stopped_early for t in trials) and any(not t.stopped_early for t in trials)
    if objectives is not None:
        assert all(v is None or len(v) == 2 for v in _values(tune_storage, "tune"))


@pytest.mark.slow  # a study under Ray Tune
@pytest.mark.parametrize(("workers", "budget"), [(1, 50), (3, None)])
def test_with_a_condition_a_budget_and_the_ending_the_simulation_decides_as_tune(tmp_path: Path, workers: int,
                                                                                 budget: int | None) -> None:
    """A conditional parameter and the noise-aware ending, and with one worker an epoch budget
    that stops the search: the same Optuna trials, the same finalists re-run with the same
    values, and the same best named. With three workers the results come in an order Ray's
    scheduling sets; the simulation is given that order (`results_order`) and must decide as
    Tune did. Their ten trials are all TPE's random start-up ones, whose points do not depend on
    when they are asked for. Three workers and a budget are not compared: under Tune, results in
    flight when the budget stops the search still arrive and can take a trial to max_t, which
    the simulation does not replay."""
    import json

    from study.simulate import results_order

    study = "finalists: 2, finalist_seeds: 1" + (f", epoch_budget: {budget}" if budget else "")
    space = replay_space(max_epochs=4, num_samples=40 if budget else 10, baselines=False).replace(
        "finalists: 0,", study + ",") + \
        '  attention_temperature: {type: float, low: 0.1, high: 10.0, log: true, when: "recursion_steps > 1"}\n'
    (tmp_path / "space.yaml").write_text(space)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "study.run", "--quiet", "--space", str(tmp_path / "space.yaml"),
                           "--name", "tune", "--out", str(tmp_path / "runs"), "--trainable", "replay",
                           "--replay-table", TABLE, "--replay-epoch-s", "0" if workers == 1 else "0.2",  # in step: interleaved
                           "--concurrency", str(workers), "--seed", "3",
                           "--no-baselines", "--no-test", "--no-report"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tune_storage = f"sqlite:///{tmp_path / 'runs' / 'tune' / 'optuna.db'}"
    tune = _decisions(tune_storage, "tune")
    record = _record(tmp_path, "sim")
    seen = results_order(tune_storage, "tune")
    simulated = simulate(record, workers=workers, order=None if workers == 1 else seen)
    assert _decisions(record.stores.optuna_storage, "sim") == tune
    # the order read from the storage is the order the results came in: with one worker, the
    # simulation's own (this fails if Optuna's schema no longer holds what results_order reads)
    assert simulated.order == seen and len(seen) == sum(epochs for *_, epochs in tune)
    if workers > 1:  # the trials' results came interleaved: another order than one worker's
        spans = {i: [k for k, (j, _) in enumerate(seen) if j == i] for i, _ in seen}
        assert any(at[-1] - at[0] + 1 > len(at) for at in spans.values())
    if budget:  # the budget held it: 50 epochs less the ending's 2 x 4 (the ending ran, below)
        assert any(state == "PRUNED" for *_, state, _ in tune) and sum(epochs for *_, epochs in tune) <= 42
    assert any("attention_temperature" not in params for _, params, _, _ in tune)  # the condition held
    from study.simulate import end

    ending = end(record, simulated)
    summary = json.loads((tmp_path / "runs" / "tune" / "summary.json").read_text())
    by_trial = {t["trial_id"]: t for t in summary["trials"]}
    sim_params = {t.trial_id: {k: v for k, v in t.config[PARAMS].items() if v is not None} for t in simulated.trials}

    def key(params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(sorted((k, round(float(v), 9)) for k, v in params.items() if v is not None and v == v))

    tune_finalists = {key({k: by_trial[f["trial_id"]].get(k) for k in ("recursion_steps", "crop_scale",
                                                                       "attention_temperature")}):
                      f["values"] for f in summary["finalists"]}
    sim_finalists = {key(sim_params[t]): [v for s, v in sorted(seeds.items()) if s != record.train_seed]
                     for t, seeds in ending.finalists.items()}
    assert set(tune_finalists) == set(sim_finalists) and len(sim_finalists) == 2
    assert all(tune_finalists[k] == pytest.approx(v) for k, v in sim_finalists.items())
    assert key({k: summary["best"].get(k) for k in ("recursion_steps", "crop_scale", "attention_temperature")}) \
        == key(sim_params[ending.named])
