"""A study in simulated time (study.simulate) drives the study's own searcher and policy over a
curve table: with one worker it makes the decisions `study.run --trainable replay` makes, trial
for trial, and with several where it is given the order in which Tune's results came; with an
epoch budget it spends that budget and prunes what still runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from study.options import StudyOptions
from study.record import new_record, resolve_space
from study.simulate import simulate
from tests.conftest import replay_space

ROOT = Path(__file__).resolve().parents[3]
TABLE = str(ROOT / "benchmarks" / "data" / "rra_curves.parquet")


def _record(tmp_path: Path, name: str, **kw: Any) -> Any:
    opts = StudyOptions(space=str(tmp_path / "space.yaml"), name=name, out=str(tmp_path / "sim"), trainable="replay",
                        replay_table=TABLE, replay_epoch_s=0.0, baselines=False, report=False, evaluate_test=False,
                        seed=3, **kw)
    record = new_record(opts, resolve_space(opts))
    record.folder.mkdir(parents=True)
    return record


def _decisions(storage: str, name: str) -> list[tuple[int, dict[str, Any], str, int]]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [(t.number, t.params, t.state.name, len(t.intermediate_values)) for t in study.trials]


def _values(storage: str, name: str) -> list[list[float] | None]:
    return [t.values for t in optuna.load_study(study_name=name, storage=storage).trials]


def test_a_budget_is_spent_and_what_still_runs_is_pruned(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(replay_space(max_epochs=8, num_samples=40, baselines=False))
    record = _record(tmp_path, "budget", epoch_budget=30)
    trials = simulate(record, workers=3).trials
    assert sum(t.epochs for t in trials) == 30
    study = optuna.load_study(study_name="budget", storage=record.stores.optuna_storage)
    states = {t.state.name for t in study.trials}
    assert "RUNNING" not in states and "PRUNED" in states
    assert len(study.trials) == len(trials) < 40


def test_the_ending_names_the_best_on_its_finalists_mean_over_seeds(tmp_path: Path) -> None:
    """As a real study ends: the best two at max_t re-run with the next seed (drawn for it), named
    on the new seed's values; the plain maximum is the first of the ranking."""
    from study.simulate import end
    from trainables.config import TrialConfig, settings
    from trainables.curve_table import load

    (tmp_path / "space.yaml").write_text(replay_space(max_epochs=9, num_samples=12, baselines=False))
    record = _record(tmp_path, "ending", finalists=2, finalist_seeds=1, policy="fifo")  # every trial at max_t
    simulated = simulate(record, workers=2)
    ending = end(record, simulated)
    assert set(ending.finalists) == set(ending.ranking[:2]) and ending.plain == ending.ranking[0]
    table = load(TABLE)
    by_id = {t.trial_id: t for t in simulated.trials}
    for trial_id, seeds in ending.finalists.items():
        assert sorted(seeds) == [0, 1]
        # its re-run: what the trial itself replays with seed 1 (its own values, the next seed)
        cfg = TrialConfig.from_dict(settings({**by_id[trial_id].config, "seed": 1}))
        assert seeds[1] == pytest.approx(table.metrics(table.match(cfg.to_dict(), 1), 9)["val_acc"])
        assert table.match(cfg.to_dict(), 1).config == table.match(cfg.to_dict(), 0).config
    # named on the new seed only: the run that chose them (seed 0) is left out
    assert ending.named == min(ending.finalists, key=lambda k: (-ending.finalists[k][1], k))
    assert len(ending.reruns) == 2 * 9


def test_a_raced_ending_spends_the_fixed_endings_runs_on_the_likely_best(tmp_path: Path) -> None:
    """Race: 3 finalists x 2 seeds = 6 runs; round 1 gives 4 trials a new seed each (every trial
    reaches max_t under FIFO), then the two most likely best get the next seeds, until one is best
    with P >= 0.9 or the runs are spent."""
    from study.phases.finalists import chosen
    from study.simulate import end, rows

    (tmp_path / "space.yaml").write_text(replay_space(max_epochs=9, num_samples=8, baselines=False))
    record = _record(tmp_path, "race", finalists=3, finalist_seeds=2, ending="race", policy="fifo")
    simulated = simulate(record, workers=2)
    ending = end(record, simulated)
    runs = {(trial, seed) for trial, seed, _, _ in ending.reruns}
    assert len(ending.reruns) == 9 * len(runs) and len(runs) <= 6 and len(ending.finalists) >= 2
    first = {trial for trial, seed in runs if seed == 1}
    # round 1: one more than the finalists (the first trials at max_t), one new seed each
    assert first == {r["trial_id"] for r in chosen(rows(record, simulated.trials), ending.ranking, 4)}
    assert len(first) == 4 and len(ending.finalists) == 4
    later = {seed: {t for t, s in runs if s == seed} for seed in {s for _, s in runs} - {1}}
    assert all(len(trials) == 2 and trials <= first for trials in later.values())
    assert ending.named in first and ending.race_stop is not None
    assert ending.race_stop.endswith(f"after {len(runs)} of 6 runs")
    # it stops when one is the best with P >= 0.9, or when no round of two fits in what is left
    assert "P(best)" in ending.race_stop or (ending.race_stop.startswith("runs spent") and 6 - len(runs) < 2)
