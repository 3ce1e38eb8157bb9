"""A study in simulated time: the study's own searcher and policy, built as `study.run` builds
them, driven over a curve table without Ray's runtime (as Syne Tune's simulator drives its
schedulers over a blackbox), so that hundreds of studies of a benchmark take seconds each.

`workers` trials run at once. Every epoch lasts `epoch_s` simulated seconds; results come in
the order of their simulated time (ties: the trial started first). Each result goes to the
scheduler, then to the searcher, as Tune hands them; a trial the scheduler stops, or that
reaches max_t, ends there (`on_trial_complete` to both), and its worker takes the next
suggestion. With an epoch budget the study ends once its trials
have run that many epochs, and the trials still running are PRUNED in Optuna, as in the Tune
path (study.budget, `searchers.prune_unfinished`).

With one worker there is no timing at all, and a simulated study makes the decisions of the
same study run by `study.run --trainable replay --concurrency 1` (tests/unit/study/test_simulate.py).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from study.keys import EPOCH, PARAMS
from study.record import StudyRecord


@dataclass
class Trial:
    """A simulated trial, as the searcher and the scheduler see one (Tune's Trial: its id, its
    config)."""

    trial_id: str
    config: dict[str, Any]
    epochs: int = 0
    stopped_early: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Simulated:
    """A simulated study: its trials in the order they started, every result in the order it
    came (trial index, epoch), and its ending (`end`)."""

    trials: list[Trial]
    order: list[tuple[int, int]]


def simulate(record: StudyRecord, workers: int = 1, epoch_s: float = 1.0,
             order: Sequence[tuple[int, int]] | None = None) -> Simulated:
    """Runs the search of a replayed study (`record.settings`: trainable `replay` with a
    `replay_table`) in simulated time. `order`: the results in the order another run of the study
    received them ((trial index in start order, epoch), e.g. a Tune run's, `results_order`), taken
    in that order rather than by simulated time; a ValueError if one of them is not due."""
    from study.preflight import check_replay
    from study.session import StudySession

    table = record.settings.replay_table
    if record.settings.trainable != "replay" or not table:
        raise ValueError("a simulated study replays a curve table (trainable replay, replay_table)")
    check_replay(record.settings, record.space.study)  # as study.run checks it
    # the searcher's limit of trials at once is the session's, as in a study under Tune
    with StudySession(record, services=False, concurrency=workers):
        return _search(record, workers, epoch_s, order, str(table))


def _search(record: StudyRecord, workers: int, epoch_s: float, order: Sequence[tuple[int, int]] | None,
            table: str) -> Simulated:
    """`simulate`'s search, in the study's session."""
    from study import searchers
    from study.policies import load_policy
    from trainables.config import TrialConfig, settings
    from trainables.replay import replayed

    policy = load_policy(str(record.settings.policy))
    searcher, scheduler = policy.build(record)
    scheduler.set_search_properties(record.metric, record.mode)  # as TuneConfig gives them (the searcher has its own)
    max_t, budget = record.max_epochs, record.space.study.search_epochs()
    trials: list[Trial] = []
    taken: list[tuple[int, int]] = []
    events: list[tuple[float, int, int]] = []  # (simulated time, start order, epoch)
    ids = itertools.count()
    spent = 0

    def start(now: float) -> bool:
        trial_id = f"sim_{next(ids):05d}"
        config = searcher.suggest(trial_id)
        if config is None or not isinstance(config, dict):
            return False
        trial = Trial(trial_id, config)
        trials.append(trial)
        scheduler.on_trial_add(None, trial)
        heapq.heappush(events, (now + epoch_s, len(trials) - 1, 1))
        return True

    for _ in range(workers):
        if len(trials) >= record.expected_trials() or not start(0.0):
            break
    while events and (budget is None or spent < budget) and (order is None or len(taken) < len(order)):
        now, index, epoch = heapq.heappop(events) if order is None else _take(events, order[len(taken)])
        trial = trials[index]
        cfg = TrialConfig.from_dict(settings(trial.config))
        result = {**replayed(cfg, epoch, table), EPOCH: epoch, "training_iteration": epoch}
        trial.results.append(result)
        trial.epochs = epoch
        taken.append((index, epoch))
        spent += 1
        decision = scheduler.on_trial_result(None, trial, result)
        searcher.on_trial_result(trial.trial_id, result)
        if decision == "STOP" or epoch >= max_t:
            trial.stopped_early = epoch < max_t
            scheduler.on_trial_complete(None, trial, result)
            searcher.on_trial_complete(trial.trial_id, result)
            if len(trials) < record.expected_trials():
                start(now)
        else:
            heapq.heappush(events, (now + epoch_s, index, epoch + 1))
    if events:  # the budget ran out: the trials still running are PRUNED, as Tune's path does
        searchers.prune_unfinished(record.stores.optuna_storage, record.name)
    return Simulated(trials, taken)


def _take(events: list[tuple[float, int, int]], wanted: tuple[int, int]) -> tuple[float, int, int]:
    """The pending event of result `wanted` (trial index, epoch), out of the heap."""
    for i, event in enumerate(events):
        if event[1:] == tuple(wanted):
            events[i] = events[-1]
            events.pop()
            heapq.heapify(events)
            return event
    raise ValueError(f"result {tuple(wanted)} (trial index, epoch) of the given order is not due; due: "
                     f"{sorted(e[1:] for e in events)}")


def results_order(storage: str, study_name: str) -> list[tuple[int, int]]:
    """The order in which a study's searcher received its trials' results: (trial number, epoch)
    in the order the intermediate values were written to its Optuna storage (every result is
    written when it comes, study.searchers). An RDB storage's row ids: the one internal this reads
    (tests/unit/study/test_simulate.py fails if Optuna's schema changes)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(storage)
    query = sqlalchemy.text(
        "SELECT t.number, v.step FROM trial_intermediate_values v JOIN trials t ON t.trial_id = v.trial_id "
        "JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :name ORDER BY v.trial_intermediate_value_id")
    try:
        with engine.connect() as conn:
            return [(int(number), int(step)) for number, step in conn.execute(query, {"name": study_name})]
    finally:
        engine.dispose()


@dataclass
class Ending:
    """How a simulated study ends: its ranking (trial ids), the best single run at max_t (the
    plain maximum), the noise-aware ending's values (finalist -> seed -> metric at max_t) and
    the best it names, and the re-runs' results (finalist id, seed, epoch, metric)."""

    ranking: list[str]
    plain: str | None
    finalists: dict[str, dict[int, float]]
    named: str | None
    reruns: list[tuple[str, int, int, float]]
    race_stop: str | None = None  # why a raced ending stopped


def rows(record: StudyRecord, trials: list[Trial]) -> list[dict[str, Any]]:
    """The trials as the results model's per-trial rows (what the ranking reads)."""
    from study.keys import COMPLETED, COST_METRICS, KIND, NAME, STOPPED_EARLY

    out = []
    for t in trials:
        last = t.results[-1] if t.results else {}
        costs = {k: v for r in t.results[:1] for k, v in r.items() if k in COST_METRICS}  # reported with epoch 1
        out.append({"trial_id": t.trial_id, "name": t.config.get(NAME, t.trial_id), "kind": t.config.get(KIND),
                    "outcome": COMPLETED if t.epochs >= record.max_epochs else STOPPED_EARLY, "epochs": t.epochs,
                    record.metric: last.get(record.metric), **costs, **searched_values(t)})
    return out


def end(record: StudyRecord, simulated: Simulated) -> Ending:
    """The study's ending, the one study.phases.finish ends a real study with: the ranking, and
    with the noise-aware ending on, its finalists and their re-runs with the next seeds
    (study.phases.finalists.run, here executed by replaying each re-run's curve from the table),
    the best named on the mean over seeds (study.summary.noise_aware)."""
    from study.phases import finalists as phase
    from study.ranking import ranking as rank
    from study.summary import noise_aware

    table_rows = rows(record, simulated.trials)
    ranking = rank(table_rows, record.metric, record.mode, record.max_epochs)
    plain = ranking[0] if ranking else None
    reruns = phase.run(record, table_rows, ranking, execute=replay_reruns)
    values = phase.values_by_seed(table_rows, reruns, record.metric, record.train_seed, record.max_epochs)
    stop = None if reruns is None else reruns.attrs.get("race_stop")
    results = [] if reruns is None else [
        (str(r["finalist_of"]), int(r["config.seed"]), int(r["epoch"]), float(r[record.metric]))
        for r in reruns.to_dict("records")]
    named, _ = noise_aware(values, record.mode, record.train_seed)
    return Ending(ranking, plain, values, named[0]["trial_id"] if named else plain, results, stop)


def replay_reruns(record: StudyRecord, configs: list[dict[str, Any]], seeds: list[int], batch: int = 0) -> Any:
    """A batch of re-runs executed by replaying their curves from the study's table, to max_t:
    their table in the results model's columns that the ending reads (a row per run per epoch)."""
    import pandas as pd

    from study.keys import COMPLETED, FINALIST_OF, NAME
    from trainables.config import TrialConfig, settings
    from trainables.replay import replayed

    table = str(record.settings.replay_table)
    out = []
    for config in configs:
        cfg = TrialConfig.from_dict(settings(config))
        for epoch in range(1, cfg.epochs + 1):
            out.append({"trial_id": config[NAME], "epoch": epoch, "epochs_run": cfg.epochs, "outcome": COMPLETED,
                        "finalist_of": config[FINALIST_OF], "config.seed": cfg.seed,
                        record.metric: float(replayed(cfg, epoch, table)[record.metric])})
    return pd.DataFrame(out)


def searched_values(trial: Trial) -> dict[str, Any]:
    """The trial's sampled values (None for a parameter it did not have)."""
    return dict(trial.config.get(PARAMS, {}))
