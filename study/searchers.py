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

import contextlib
import dataclasses
import functools
import json
import sqlite3
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ray.tune.search import Searcher

from study import names, warmstart
from study.keys import BASELINE, EPOCH, KIND, NAME, OPTUNA_NUMBER, PARAMS, SEARCH, run_name, searched_values
from study.spaces import SearchSpace
from trainables.names import Registry

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


def _concurrency(study: str) -> int | None:
    """Trials at once as this run of the driver says (its session's; --concurrency may change on
    --resume, but Tune restores the TuneConfig it pickled); None: no limit of the searcher's own."""
    from study.session import active

    session = active(study)
    return None if session is None else session.concurrency


class FidelitySearcher(Searcher):
    """Optuna ask-and-tell for Tune: ASHA-stopped trials are PRUNED, full ones COMPLETE.

    The Optuna study in the RDB storage is the record (what survives the driver, what the
    report, importance and optuna-dashboard read). The sampler works on an in-memory mirror of
    it: Optuna's `ask` on an RDB study reads every unfinished trial back from the storage, once
    per sampled parameter, which cost ~85 ms a trial with 32 trials running on SQLite (more
    over a network to PostgreSQL). The storage is written what changed (a new trial, an
    epoch's value, the end) and read once when the searcher starts or resumes. A policy whose
    scheduler stops trials early tells it through `on_trial_stopped`.
    """

    def __init__(self, space: SearchSpace, storage: str, study_name: str, sampler: str = "tpe",
                 seed: int = 0, baselines: bool = True, warm: tuple[str, ...] = ()) -> None:
        super().__init__(metric=space.study.metric, mode=space.study.mode)
        self.space = space
        self.warm = warm  # earlier studies the sampler starts from (study.warmstart, STORAGE#STUDY)
        self.storage = storage
        self.study_name = study_name
        self.sampler_kind = sampler
        self.seed = seed
        self.pending_baselines = list(space.baselines) if baselines else []
        self.numbers: dict[str, int] = {}  # Tune trial id -> Optuna trial number, while it runs in Optuna
        self.stopped: set[str] = set()  # trials the scheduler stopped early in this session
        self.live: set[str] = set()  # trials suggested and not yet complete (baselines included)
        self._study: Any = None
        self._ledger: _Ledger | None = None
        self._mirror: Any = None
        self._running: dict[int, _Running] = {}  # Optuna number -> what a result needs, while it runs
        # a multi-objective study: the metric, then costs each trial reports once
        self.objectives = space.study.objective_list()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_study=None, _ledger=None, _mirror=None, _running={})  # rebuilt from the storage
        return state

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.space.study.mode == "max" else "minimize"

    @property
    def directions(self) -> list[Literal["maximize", "minimize"]]:
        """Optuna's direction of every objective (one for a single-objective study)."""
        return self.space.study.directions()

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def study(self) -> Any:
        """The Optuna study in its storage (created on first use, else loaded)."""
        if self._study is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            # It never samples (the mirror does): a sampler that reads nothing.
            self._study = optuna.create_study(storage=_rdb(self.storage), study_name=self.study_name,
                                              directions=self.directions, sampler=optuna.samplers.RandomSampler(),
                                              load_if_exists=True)
            if self._study.metric_names is None:  # optuna-dashboard names the objectives, not "Objective 0"
                with warnings.catch_warnings():  # public, marked experimental since Optuna 3.2
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._study.set_metric_names([name for name, _ in self.objectives])
        return self._study

    @property
    def ledger(self) -> _Ledger:
        if self._ledger is None:
            rdb = _rdb(self.storage)
            self._ledger = _Ledger(rdb, rdb.get_study_id_from_name(self.study.study_name))
        return self._ledger

    @property
    def mirror(self) -> Any:
        """The in-memory study the sampler reads: the stored study's finished trials (one read),
        the enqueued points not asked yet, then every trial this searcher asks."""
        if self._mirror is None:
            import optuna

            trials = self.study.get_trials(deepcopy=False)
            # A resumed study: a sampler seeded as at the start would propose the points of the
            # first trials again; seed it past them instead (still deterministic).
            self._mirror = optuna.create_study(directions=self.directions,
                                               sampler=_sampler(self.sampler_kind, self.seed + len(trials)))
            # what earlier studies learned (--warm-start), then this study's own trials
            warm = warmstart.load(self.warm, self.space, self.directions).trials
            self._mirror.add_trials([self._for_sampler(t) for t in [*warm, *trials] if t.state.is_finished()])
            for point in self.space.enqueue:
                if not any(all(t.params.get(k) == v for k, v in point.items()) for t in trials):
                    self._mirror.enqueue_trial(point)
        return self._mirror

    def _for_sampler(self, trial: Any) -> Any:
        """A stored trial as the mirror holds it (`_sampler_state`): a stopped trial of a
        multi-objective study as FAIL, without its per-epoch values."""
        import optuna

        state = self._sampler_state(trial.state)
        if state == trial.state:
            return trial
        return optuna.trial.create_trial(state=state, params=trial.params, distributions=trial.distributions)

    def _sampler_state(self, state: Any) -> Any:
        """What the sampler is told of a trial that ended in `state`. A stopped (PRUNED) trial of a
        multi-objective study carries no values, and Optuna's TPE ranks such trials arbitrarily:
        while fewer trials reached max_t than its good share (10% of the trials), it filled that
        share with the first stopped trials, and proposed near them (measured: a worse front than
        random proposals, benchmarks/pareto_search.py). The sampler learns from trials at max_t
        only; the stored study keeps them PRUNED."""
        import optuna

        return optuna.trial.TrialState.FAIL if self.multi and state == optuna.trial.TrialState.PRUNED else state

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        limit = _concurrency(self.study_name)
        if limit is not None and len(self.live) >= limit:
            return None  # Tune asks again when a trial ends
        self.live.add(trial_id)
        if self.pending_baselines:
            name = self.pending_baselines.pop(0)
            overrides = self.space.baselines[name]
            return {**self.space.trial_config(overrides), KIND: BASELINE, NAME: f"baseline-{name}",
                    PARAMS: searched_values(self.space.parameters, {})}
        trial = self.mirror.ask()
        values = self.space.suggest(trial)
        storage_id, number = self.ledger.create(trial.params, trial.distributions, {"tune_trial_id": trial_id})
        self.numbers[trial_id] = number
        self._running[number] = _Running(storage_id, trial.params, trial.distributions, {}, trial)
        return {**self.space.trial_config(values), KIND: SEARCH, NAME: run_name(values), OPTUNA_NUMBER: number,
                PARAMS: searched_values(self.space.parameters, values)}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        number = self.numbers.get(trial_id)
        if number is not None:
            self._report(number, result)

    def _report(self, number: int, result: dict[str, Any]) -> None:
        if self.metric not in result or EPOCH not in result:
            return
        step, value = int(result[EPOCH]), float(result[self.metric])
        running = self._running.get(number) or self._reattach(number)
        for name, _ in self.objectives[1:]:  # a cost, reported once: kept on the Optuna trial
            if result.get(name) is not None and name not in running.costs:
                running.costs[name] = float(result[name])
                self.ledger.note(running.storage_id, name, running.costs[name])
        if step not in running.values:  # a resumed trial re-reports nothing twice
            self.ledger.report(running.storage_id, step, value)
            running.values[step] = value
            if running.mirrored is not None and not self.multi:  # Optuna takes no intermediate values there
                running.mirrored.report(value, step)

    def _reattach(self, number: int) -> _Running:
        """After a restore: a trial asked before, with the epochs it reported (one read of that
        trial). The mirror learns of it when it ends."""
        storage_id, stored = self.ledger.trial(number)
        running = _Running(storage_id, stored.params, stored.distributions, dict(stored.intermediate_values),
                           costs={k: float(stored.user_attrs[k]) for k, _ in self.objectives[1:]
                                  if k in stored.user_attrs})
        self._running[number] = running
        return running

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
            self._tell(trial_id, number, state.FAIL)
            return
        self._report(number, result)  # Tune hands a trial's final result only to this method
        if int(result[EPOCH]) >= self.space.study.max_epochs:
            costs = (self._running.get(number) or self._reattach(number)).costs
            missing = [name for name, _ in self.objectives[1:] if name not in costs]
            if missing:  # Optuna takes a complete trial with every objective only
                warnings.warn(f"trial {trial_id} reported no {', '.join(missing)}: told FAIL to Optuna", stacklevel=2)
                self._tell(trial_id, number, state.FAIL)
                return
            self._tell(trial_id, number, state.COMPLETE, float(result[self.metric]))
        elif trial_id in self.stopped:  # stopped early: its per-epoch values are on the Optuna trial
            self._tell(trial_id, number, state.PRUNED)
        # Else neither finished nor stopped: the study was interrupted (Ctrl-C) and Tune will
        # continue this trial on resume. It stays RUNNING in Optuna until then.

    def _tell(self, trial_id: str, number: int, state: Any, value: float | None = None) -> None:
        import optuna

        mirror = self.mirror  # built (from the stored study) before this trial ends there
        running = self._running.get(number) or self._reattach(number)
        del self._running[number]
        values: list[float] | None = None
        if state == optuna.trial.TrialState.COMPLETE:
            assert value is not None
            values = [value, *(running.costs[name] for name, _ in self.objectives[1:])]
        elif state == optuna.trial.TrialState.PRUNED and running.values and not self.multi:
            values = [running.values[max(running.values)]]  # as Optuna's tell: a pruned trial's value is its last
        self.ledger.finish(running.storage_id, state, values)  # told before a resume: kept as it was
        told = self._sampler_state(state)
        if running.mirrored is not None:
            # Optuna's tell takes values only for COMPLETE (it sets a pruned trial's itself)
            mirror.tell(running.mirrored, values if told == optuna.trial.TrialState.COMPLETE else None,
                        state=told, skip_if_finished=True)
        else:
            mirror.add_trial(optuna.trial.create_trial(
                state=told, values=values if told == state else None, params=running.params,
                distributions=running.distributions, intermediate_values={} if self.multi else running.values))
        del self.numbers[trial_id]

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


@dataclasses.dataclass
class _Running:
    """A trial running in Optuna: its storage id, its point, the values reported so far, and
    its trial in the mirror (None for one asked before a restore)."""

    storage_id: int
    params: dict[str, Any]
    distributions: dict[str, Any]
    values: dict[int, float]
    mirrored: Any = None
    costs: dict[str, float] = dataclasses.field(default_factory=dict)  # of a multi-objective study


class _Ledger:
    """Writes a study's Optuna trials into its RDB storage one change at a time.

    The one place that calls Optuna's storage methods (create_new_trial,
    set_trial_intermediate_value, set_trial_state_values) instead of the Study API, which
    would read the study's unfinished trials back on each call.
    tests/unit/study/test_searchers.py checks that what it writes reads back through Optuna's
    public API as `Study.ask`/`report`/`tell` would have written it.
    """

    def __init__(self, storage: Any, study_id: int) -> None:
        self.storage = storage
        self.study_id = study_id

    def create(self, params: dict[str, Any], distributions: dict[str, Any],
               user_attrs: dict[str, Any]) -> tuple[int, int]:
        """A RUNNING trial with its point; its (storage id, number)."""
        import optuna

        template = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, params=params,
                                             distributions=distributions, user_attrs=user_attrs)
        storage_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        return storage_id, self.storage.get_trial_number_from_id(storage_id)

    def report(self, storage_id: int, step: int, value: float) -> None:
        self.storage.set_trial_intermediate_value(storage_id, step, value)

    def note(self, storage_id: int, key: str, value: float) -> None:
        """A user attribute of a running trial (a cost it measured)."""
        self.storage.set_trial_user_attr(storage_id, key, value)

    def finish(self, storage_id: int, state: Any, values: list[float] | None) -> None:
        """Ends a trial; one that has ended already (told before a resume) is left as it is."""
        import optuna

        values = None if state == optuna.trial.TrialState.FAIL else values
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.storage.set_trial_state_values(storage_id, state, values)

    def trial(self, number: int) -> tuple[int, Any]:
        """Trial `number`: its storage id and the stored trial (a FrozenTrial)."""
        storage_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        return storage_id, self.storage.get_trial(storage_id)


def prune_unfinished(storage: str, study_name: str) -> int:
    """Tells Optuna PRUNED every trial of a study still RUNNING in it: the trials Tune stopped
    when the study's epoch budget ran out (it stops them without telling the searcher), each with
    the epochs it reported. Returns how many."""
    import optuna

    rdb = _rdb(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:  # no Optuna study (a searcher that keeps none)
        return 0
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    ledger = _Ledger(rdb, rdb.get_study_id_from_name(study_name)) if len(study.directions) > 1 else None
    for trial in running:
        if ledger is None:
            study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
        else:  # Optuna's tell would give it its last value as its only one, of several objectives
            ledger.finish(ledger.trial(trial.number)[0], optuna.trial.TrialState.PRUNED, None)
    return len(running)


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


def _fidelity(sampler: str, space: SearchSpace, storage: str, name: str, seed: int,
              warm: tuple[str, ...] = (), baselines: bool = True) -> FidelitySearcher:
    return FidelitySearcher(space, storage, name, sampler, seed, baselines=baselines, warm=warm)


# name (listed in study.names.SEARCHERS) -> searcher(space, Optuna storage, study name, seed)
# (the project's searchers also take the warm-start sources, STORAGE#STUDY, and whether to run
# the space's baselines first)
SEARCHERS: Registry[Callable[..., Any]] = Registry("searcher", names.SEARCHERS, "study.names")
SEARCHERS.register("optuna", functools.partial(_fidelity, "tpe"))
SEARCHERS.register("random", functools.partial(_fidelity, "random"))
SEARCHERS.register("optuna-stock", stock_optuna_search)


def make_searcher(record: StudyRecord) -> Any:
    """The searcher a study's record names (its sampler seeded by the record's seed)."""
    kind = record.settings.searcher
    args = (record.space, record.stores.optuna_storage, record.name, int(record.settings.seed))
    if record.settings.warm_start or record.extensions:  # the project's searchers only (refused for the stock one)
        # an extension continues the study's Optuna study; its baselines ran at the start
        return SEARCHERS[kind](*args, warmstart.resolve(record.settings.warm_start, record.folder.parent),
                               baselines=not record.extensions)
    return SEARCHERS[kind](*args)
