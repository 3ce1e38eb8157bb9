"""Warm start: a new study's sampler begins from the trials of earlier studies, matched by
parameter name and range, each with its fidelity; bad sources are one-line errors."""

from __future__ import annotations

import statistics
from pathlib import Path

import optuna
import pytest

from study.errors import StudyInputError
from study.keys import PARAMS
from study.searchers import FidelitySearcher
from study.spaces import load_space
from study.warmstart import load, resolve


def _source(tmp_path: Path, name: str = "src", direction: str = "maximize") -> str:
    """An earlier study's Optuna storage: 12 trials at max_t whose value grows with crop_scale,
    3 stopped at epoch 1, one outside the smoke space (crop_scale 1.5), one with a parameter the
    space does not have."""
    storage = f"sqlite:///{tmp_path / 'source.db'}"
    study = optuna.create_study(storage=storage, study_name=name, direction=direction)
    space = load_space("smoke")
    dists = {k: space.parameters[k].distribution() for k in ("recursion_steps", "crop_scale")}
    for i in range(12):
        scale = 0.3 + 0.7 * i / 11
        study.add_trial(optuna.trial.create_trial(params={"recursion_steps": 1 + i % 4, "crop_scale": scale},
                                                  distributions=dists, value=scale,
                                                  intermediate_values={1: scale / 2, 3: scale}))
    for i in range(3):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                                  params={"recursion_steps": 2, "crop_scale": 0.35 + 0.01 * i},
                                                  distributions=dists, intermediate_values={1: 0.05}))
    wide = {"recursion_steps": dists["recursion_steps"], "crop_scale": optuna.distributions.FloatDistribution(0.1, 2)}
    study.add_trial(optuna.trial.create_trial(params={"recursion_steps": 2, "crop_scale": 1.5}, distributions=wide,
                                              value=0.9))
    other = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.1}, distributions=other, value=0.5))
    return storage


def test_the_sampler_starts_from_the_source_trials_with_their_fidelity(tmp_path: Path) -> None:
    storage = _source(tmp_path)
    sources = resolve((f"{storage}#src",), tmp_path)
    space = load_space("smoke")
    warm = load(sources, space, ["maximize"])
    assert (len(warm.trials), warm.dropped, warm.shared) == (15, 1, ("recursion_steps", "crop_scale"))
    assert "15 trial(s)" in warm.line() and "1 dropped" in warm.line()
    searcher = FidelitySearcher(space, f"sqlite:///{tmp_path / 'new.db'}", "new", "tpe", seed=0, baselines=False,
                                warm=sources)
    mirrored = searcher.mirror.trials
    states = [t.state for t in mirrored]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 12 and states.count(optuna.trial.TrialState.PRUNED) == 3
    assert all(t.intermediate_values == {1: 0.05} for t in mirrored if t.state == optuna.trial.TrialState.PRUNED)
    # the source's trials are what the sampler knows, not this study's: its own Optuna study holds none
    assert searcher.study.trials == []


def test_the_first_proposals_are_informed_by_the_source(tmp_path: Path) -> None:
    """The source rewarded a large crop: TPE, past its start-up trials with the source's 15, asks
    for larger crops at once; the same searcher started cold samples them at random."""
    sources = resolve((f"{_source(tmp_path)}#src",), tmp_path)
    space = load_space("smoke")

    def first_crops(warm: tuple[str, ...], name: str) -> list[float]:
        searcher = FidelitySearcher(space, f"sqlite:///{tmp_path / f'{name}.db'}", name, "tpe", seed=3,
                                    baselines=False, warm=warm)
        crops = []
        for i in range(9):
            config = searcher.suggest(f"t{i}")
            assert config is not None
            crops.append(config[PARAMS]["crop_scale"])
        return crops[1:]  # the first is the space's enqueued point, the same for both

    warm, cold = first_crops(sources, "warm"), first_crops((), "cold")
    assert statistics.mean(warm) > 0.8 > statistics.mean(cold)


def test_a_bad_source_is_a_one_line_error(tmp_path: Path) -> None:
    space = load_space("smoke")
    with pytest.raises(StudyInputError, match="--warm-start nope: no such study"):
        resolve(("nope",), tmp_path)
    storage = _source(tmp_path)
    with pytest.raises(StudyInputError, match="cannot read it"):
        load((f"{storage}#missing",), space, ["maximize"])
    with pytest.raises(StudyInputError, match="its objectives go minimize"):
        load((f"{_source_in(tmp_path, 'min', 'minimize')}#min",), space, ["maximize"])
    lonely = f"sqlite:///{tmp_path / 'lonely.db'}"
    study = optuna.create_study(storage=lonely, study_name="lonely", direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.1}, value=0.5,
                                              distributions={"lr": optuna.distributions.FloatDistribution(0.01, 1)}))
    assert resolve((lonely,), tmp_path) == (f"{lonely}#lonely",)  # the storage's only study
    with pytest.raises(StudyInputError, match="no parameter in common with space 'smoke'"):
        load((f"{lonely}#lonely",), space, ["maximize"])


def _source_in(tmp_path: Path, name: str, direction: str) -> str:
    folder = tmp_path / name
    folder.mkdir()
    return _source(folder, name, direction)


def test_a_resumed_study_whose_source_went_away_is_a_one_line_error(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from study.cli import resolve
    from study.options import parse_options
    from study.phases.search import start

    storage = _source(tmp_path)
    flags = ["--space", "smoke", "--name", "w", "--out", str(tmp_path / "runs")]
    start(resolve(parse_options([*flags, "--warm-start", f"{storage}#src"])))
    assert "warm start: 15 trial(s)" in capsys.readouterr().out
    resumed = resolve(parse_options(["--resume", *flags]))  # the source is read again, and said
    assert resumed.settings.warm_start == (f"{storage}#src",) and "warm start: 15" in capsys.readouterr().out
    (tmp_path / "source.db").unlink()
    with pytest.raises(StudyInputError, match=r"--warm-start .*#src: cannot read it"):
        resolve(parse_options(["--resume", *flags]))
