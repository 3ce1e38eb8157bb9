"""Warm start (`--warm-start STUDY[,STUDY...]`): a new study's sampler begins from the trials of
earlier studies. A source is a study name under `--out`, a study folder, or an Optuna storage
URI (`sqlite:///PATH#STUDY` where the storage holds several studies).

A source trial is kept with the parameters it shares with the new space, by name, each value
checked against the new space's distribution: a trial with a value outside the new ranges (or
choices) is dropped, and counted. Its fidelity is kept: a trial that reached max_t is COMPLETE
with its value, a stopped one PRUNED with its per-epoch values. The source trials go to the
sampler's in-memory mirror only (`searchers.FidelitySearcher.mirror`), never to the new study's
own Optuna study: they are what it knows, not what it ran. Heavy imports stay inside functions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.errors import StudyInputError, first_line
from study.record import RECORD_FILE
from study.spaces import SearchSpace


@dataclass(frozen=True)
class WarmStart:
    """The source trials, ready for the sampler, and what was left out."""

    trials: list[Any] = field(default_factory=list)  # optuna FrozenTrials, in the new space's distributions
    sources: tuple[str, ...] = ()  # each source as STORAGE#STUDY
    dropped: int = 0  # trials with a value outside the new space
    shared: tuple[str, ...] = ()  # the parameters the sources share with the new space

    def line(self) -> str:
        """What the study starts from, in one line."""
        if not self.sources:
            return ""
        gone = f"; {self.dropped} dropped (a value outside this space)" if self.dropped else ""
        return (f"warm start: {len(self.trials)} trial(s) from {', '.join(self.sources)}, on "
                f"{', '.join(self.shared)}{gone}")


def resolve(given: tuple[str, ...], out: str | Path) -> tuple[str, ...]:
    """Each source as STORAGE#STUDY; an unknown one is a one-line error."""
    return tuple(_resolve(spec, Path(out).expanduser().resolve()) for spec in given)


def _resolve(spec: str, out: Path) -> str:
    if "://" in spec:
        storage, _, name = spec.partition("#")
        return f"{storage}#{name or _only_study(storage, spec)}"
    for folder in (Path(spec).expanduser(), out / spec):
        record = folder / RECORD_FILE
        if record.is_file():
            try:
                data = json.loads(record.read_text())
                return f"{data['stores']['optuna_storage']}#{data['name']}"
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise StudyInputError(f"--warm-start {spec}: {record} is not a readable study record ({err})") from None
    raise StudyInputError(f"--warm-start {spec}: no such study (not a study folder, nor a study under {out}, nor an "
                          "Optuna storage URI)")


def _only_study(storage: str, spec: str) -> str:
    import optuna

    try:
        names = optuna.study.get_all_study_names(storage=storage)
    except Exception as err:  # any storage error is the user's source being wrong
        raise StudyInputError(f"--warm-start {spec}: cannot read the Optuna storage ({type(err).__name__}: "
                              f"{first_line(err)[:200]})") from None
    if len(names) != 1:
        raise StudyInputError(f"--warm-start {spec}: the storage holds {len(names)} studies; name one as "
                              f"{storage}#STUDY ({', '.join(names[:5])})")
    return str(names[0])


def load(sources: tuple[str, ...], space: SearchSpace, directions: Sequence[str]) -> WarmStart:
    """The sources' finished trials (resolved with `resolve`) as the new space's sampler takes
    them. A source that cannot be read, whose objectives differ, or no source sharing a parameter
    with the space, is a one-line error."""
    if not sources:
        return WarmStart()
    import optuna

    trials, dropped, shared = [], 0, set()
    for spec in sources:
        storage, _, name = spec.rpartition("#")
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except Exception as err:  # a missing study, an unreadable storage: the user's source
            raise StudyInputError(f"--warm-start {spec}: cannot read it ({type(err).__name__}: "
                                  f"{first_line(err)[:200]})") from None
        theirs = [d.name.lower() for d in study.directions]
        if theirs != [d.lower() for d in directions]:
            raise StudyInputError(f"--warm-start {spec}: its objectives go {', '.join(theirs)}, this study's "
                                  f"{', '.join(directions)}")
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for trial in study.get_trials(deepcopy=False, states=states):
            params = {k: v for k, v in trial.params.items() if k in space.parameters}
            if not params:
                continue
            shared |= set(params)
            try:
                trials.append(optuna.trial.create_trial(
                    state=trial.state, params=params,
                    distributions={k: space.parameters[k].distribution() for k in params},
                    values=trial.values if trial.state == optuna.trial.TrialState.COMPLETE else None,
                    intermediate_values=dict(trial.intermediate_values), user_attrs={"warm_start": spec}))
            except ValueError:  # a value outside the new space's distribution
                dropped += 1
    if not shared:
        raise StudyInputError(f"--warm-start {', '.join(sources)}: no parameter in common with space "
                              f"{space.name!r} ({', '.join(space.parameters)})")
    return WarmStart(trials, sources, dropped, tuple(p for p in space.parameters if p in shared))
