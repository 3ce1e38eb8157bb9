"""Searchers: Optuna ask-and-tell behind Ray Tune, with a fidelity-honest Optuna study.

Stock OptunaSearch tells Optuna that a trial ASHA stopped after one epoch is COMPLETE with its
epoch-1 value, so the Optuna study (its best trial, importance, any dashboard on it) compares
an epoch-1 value with an epoch-max_t one. Here every epoch's value is reported to the Optuna
trial as an intermediate value, a trial stopped early is told PRUNED, and only a trial that
reached max_t is told COMPLETE with its final value. TPE then ranks pruned trials below
complete ones, by how far they got and their last value.

The Optuna study lives in an RDB storage (SQLite in the study folder by default), so it
survives a driver crash, optuna-dashboard can open it and reports can compute importance.
Baselines (e.g. global-only) are run first, outside the sampler: they are not points of the
space and do not enter the Optuna study.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ray.tune.search import Searcher

from study.keys import BASELINE, EPOCH, KIND, NAME, OPTUNA_NUMBER, PARAMS, SEARCH, run_name, searched_values
from study.spaces import SearchSpace

if TYPE_CHECKING:
    from study.record import StudyRecord


def _sampler(kind: str, seed: int) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # Multivariate TPE models the parameters jointly; group handles conditional ones;
        # constant_liar keeps parallel workers from asking for the same point.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


# Trials at once, per study, as this run of the driver says (--concurrency may change on
# --resume, but Tune restores the TuneConfig it pickled): the searcher reads its limit here.
CONCURRENCY: dict[str, int | None] = {}


class FidelitySearcher(Searcher):
    """Optuna ask-and-tell for Tune: ASHA-stopped trials are PRUNED, full ones COMPLETE.

    What it needs per result is kept in memory (each running trial's Optuna id, the epochs it
    reported, whether it is still running), so a result costs one write to the storage however
    many trials the study holds. A policy whose scheduler stops trials early tells it through
    `on_trial_stopped`.
    """

    def __init__(self, space: SearchSpace, storage: str, study_name: str, sampler: str = "tpe",
                 seed: int = 0, baselines: bool = True) -> None:
        super().__init__(metric=space.study.metric, mode=space.study.mode)
        self.space = space
        self.storage = storage
        self.study_name = study_name
        self.sampler_kind = sampler
        self.seed = seed
        self.pending_baselines = list(space.baselines) if baselines else []
        self.numbers: dict[str, int] = {}  # Tune trial id -> Optuna trial number, while it runs in Optuna
        self.stopped: set[str] = set()  # trials the scheduler stopped early in this session
        self.live: set[str] = set()  # trials suggested and not yet complete (baselines included)
        self._study: Any = None
        self._live: dict[int, Any] = {}  # Optuna number -> its optuna.Trial, while it runs
        self._reported: dict[int, set[int]] = {}  # Optuna number -> epochs already reported

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_study=None, _live={}, _reported={})  # reconnect to the storage after unpickling
        return state

    @property
    def study(self) -> Any:
        """The Optuna study, created (with the enqueued points) on first use, else loaded."""
        if self._study is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            direction: Literal["maximize", "minimize"] = "maximize" if self.space.study.mode == "max" else "minimize"
            self._study = optuna.create_study(storage=_rdb(self.storage), study_name=self.study_name,
                                              direction=direction, sampler=_sampler(self.sampler_kind, self.seed),
                                              load_if_exists=True)
            done = len(self._study.get_trials(deepcopy=False))
            if done == 0:
                for point in self.space.enqueue:
                    self._study.enqueue_trial(point, skip_if_exists=True)
            else:
                # A resumed study: a sampler seeded as at the start would propose the points of
                # the first trials again; seed it past them instead (still deterministic).
                self._study.sampler = _sampler(self.sampler_kind, self.seed + done)
        return self._study

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        limit = CONCURRENCY.get(self.study_name)
        if limit is not None and len(self.live) >= limit:
            return None  # Tune asks again when a trial ends
        self.live.add(trial_id)
        if self.pending_baselines:
            name = self.pending_baselines.pop(0)
            overrides = self.space.baselines[name]
            return {**self.space.trial_config(overrides), KIND: BASELINE, NAME: f"baseline-{name}",
                    PARAMS: searched_values(self.space.parameters, {})}
        trial = self.study.ask()
        values = self.space.suggest(trial)
        trial.set_user_attr("tune_trial_id", trial_id)
        self.numbers[trial_id] = trial.number
        self._live[trial.number] = trial
        self._reported[trial.number] = set()
        return {**self.space.trial_config(values), KIND: SEARCH, NAME: run_name(values), OPTUNA_NUMBER: trial.number,
                PARAMS: searched_values(self.space.parameters, values)}


    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        number = self.numbers.get(trial_id)
        if number is not None:
            self._report(number, result)

    def _report(self, number: int, result: dict[str, Any]) -> None:

        if self.metric not in result or EPOCH not in result:
            return
        step = int(result[EPOCH])
        if number not in self._live:
            self._reattach(number)
        if step not in self._reported[number]:  # a resumed trial re-reports nothing twice
            self._live[number].report(float(result[self.metric]), step)
            self._reported[number].add(step)

    def _reattach(self, number: int) -> None:
        """After a restore: the optuna.Trial of a trial asked before, and the epochs it reported
        (one read from the storage, through its public API)."""
        import optuna

        rdb = _rdb(self.storage)
        storage_id = rdb.get_trial_id_from_study_id_trial_number(rdb.get_study_id_from_name(self.study_name), number)
        self._live[number] = optuna.trial.Trial(self.study, storage_id)
        self._reported[number] = set(rdb.get_trial(storage_id).intermediate_values)

    def on_trial_stopped(self, trial_id: str) -> None:
        """Called by the policy's scheduler when it stops a trial early."""
        self.stopped.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.live.discard(trial_id)
        number = self.numbers.get(trial_id)
        if number is None:
            return
        import optuna

        state = optuna.trial.TrialState
        if error or result is None or self.metric not in result:
            self._tell(trial_id, number, state=state.FAIL)
            return
        self._report(number, result)  # Tune hands a trial's final result only to this method
        if int(result[EPOCH]) >= self.space.study.max_epochs:
            self._tell(trial_id, number, value=float(result[self.metric]))
        elif trial_id in self.stopped:  # stopped early: its per-epoch values are on the Optuna trial
            self._tell(trial_id, number, state=state.PRUNED)
        # Else neither finished nor stopped: the study was interrupted (Ctrl-C) and Tune will
        # continue this trial on resume. It stays RUNNING in Optuna until then.

    def _tell(self, trial_id: str, number: int, value: float | None = None, state: Any = None) -> None:
        self.study.tell(number, value, state=state, skip_if_finished=True)  # told before a resume: kept
        del self.numbers[trial_id]
        self._live.pop(number, None)
        self._reported.pop(number, None)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(
            {"numbers": self.numbers, "pending_baselines": self.pending_baselines, "live": sorted(self.live)}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.numbers = {k: int(v) for k, v in state["numbers"].items()}
        self.pending_baselines = list(state["pending_baselines"])
        self.live = set(state.get("live", []))
        self._fail_orphans()

    def _fail_orphans(self) -> None:
        """Ends Optuna trials asked after Tune's last saved state (the driver died in between):
        Tune will not run them, so they would stay RUNNING in the Optuna study forever."""
        import optuna

        known = set(self.numbers.values())
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.number not in known:
                self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _rdb(url: str) -> Any:
    """The Optuna storage at `url` (one engine per URL and process).

    A SQLite file (the embedded default) is opened in WAL mode with synchronous=NORMAL, so a
    commit (one per reported result) is not a disk flush: measured, the driver spent most of a
    1,000-trial study waiting on SQLite's flushes. A crash of the driver loses nothing; a power
    loss may lose the last commits, never the file. WAL needs a local disk, not a network one:
    keep the study folder (--out) local, or give --optuna-storage a PostgreSQL URL.
    """
    if url not in _STORAGES:
        import optuna

        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            kwargs["engine_kwargs"] = {"creator": functools.partial(_sqlite_connect, url.removeprefix("sqlite:///"))}
        _STORAGES[url] = optuna.storages.RDBStorage(url, **kwargs)
    return _STORAGES[url]


def _sqlite_connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


_STORAGES: dict[str, Any] = {}


class FixedConfigs(Searcher):
    """Runs a given list of trial configs once each, in order (the confirmation runs)."""

    def __init__(self, configs: list[dict[str, Any]], metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.configs = configs
        self.next = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if self.next >= len(self.configs):
            return Searcher.FINISHED
        self.next += 1
        return self.configs[self.next - 1]

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"next": self.next}))

    def restore(self, checkpoint_path: str) -> None:
        self.next = int(json.loads(Path(checkpoint_path).read_text())["next"])


class _DefineByRun:
    """The space as OptunaSearch's define-by-run function (a class: Tune pickles it)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        values = self.space.suggest(trial)  # OptunaSearch puts these values in the config itself
        return {**self.space.constants, "epochs": self.space.study.max_epochs, KIND: SEARCH,
                NAME: run_name(values), PARAMS: searched_values(self.space.parameters, values)}


def stock_optuna_search(space: SearchSpace, storage: str, study_name: str, seed: int) -> Any:
    """Ray's stock OptunaSearch over the same space (for comparison in benchmarks)."""
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(space=_DefineByRun(space), metric=space.study.metric, mode=space.study.mode,
                        sampler=_sampler("tpe", seed), study_name=study_name, storage=_rdb(storage),
                        points_to_evaluate=list(space.enqueue) or None)


SEARCHERS: dict[str, Callable[[SearchSpace, str, str, int], Any]] = {
    "optuna": lambda space, storage, name, seed: FidelitySearcher(space, storage, name, "tpe", seed),
    "random": lambda space, storage, name, seed: FidelitySearcher(space, storage, name, "random", seed),
    "optuna-stock": stock_optuna_search,
}


def make_searcher(record: StudyRecord) -> Any:
    """The searcher a study's record names (its sampler seeded by the record's seed)."""
    kind = record.settings["searcher"]
    return SEARCHERS[kind](record.space, record.stores.optuna_storage, record.name, int(record.settings["seed"]))
