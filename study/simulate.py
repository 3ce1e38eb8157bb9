"""A study in simulated time: the study's own searcher and policy, built as `study.run` builds
them, driven over a curve table without Ray's runtime (as Syne Tune's simulator drives its
schedulers over a blackbox), so that hundreds of studies of a benchmark take seconds each.

`workers` trials run at once. A trial's epoch lasts `epoch_s` simulated seconds (or what the
table recorded for it); results come in the order of their simulated time (ties: the trial
started first). Each result goes to the scheduler, then to the searcher, as Tune hands them;
a trial the scheduler stops, or that reaches max_t, ends there (`on_trial_complete` to both),
and its worker takes the next suggestion. With an epoch budget the study ends once its trials
have run that many epochs, and the trials still running are PRUNED in Optuna, as in the Tune
path (study.budget, `searchers.prune_unfinished`).

With one worker there is no timing at all, and a simulated study makes the decisions of the
same study run by `study.run --trainable replay --concurrency 1` (tests/study/test_simulate.py).
"""

from __future__ import annotations

import heapq
import itertools
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


def simulate(record: StudyRecord, workers: int = 1, epoch_s: float | None = 1.0) -> list[Trial]:
    """Runs a replayed study (`record.settings`: trainable `replay` with a `replay_table`) in
    simulated time; returns its trials in the order they started."""
    from study import searchers
    from study.phases.finalists import search_budget
    from study.policies import load_policy
    from trainables.config import TrialConfig, settings
    from trainables.replay import replayed

    table = record.settings.get("replay_table")
    if record.settings.get("trainable") != "replay" or not table:
        raise ValueError("a simulated study replays a curve table (trainable replay, replay_table)")
    policy = load_policy(str(record.settings["policy"]))
    searcher, scheduler = policy.build(record)
    searchers.CONCURRENCY[record.name] = workers
    scheduler.set_search_properties(record.metric, record.mode)  # as TuneConfig gives them (the searcher has its own)
    max_t, budget = record.max_epochs, search_budget(record.space.study)
    trials: list[Trial] = []
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
        heapq.heappush(events, (now + _epoch_time(trial, 1, epoch_s, table), len(trials) - 1, 1))
        return True

    for _ in range(workers):
        if len(trials) >= record.expected_trials() or not start(0.0):
            break
    while events and (budget is None or spent < budget):
        now, index, epoch = heapq.heappop(events)
        trial = trials[index]
        cfg = TrialConfig.from_dict(settings(trial.config))
        result = {**replayed(cfg, epoch, table), EPOCH: epoch, "training_iteration": epoch}
        trial.results.append(result)
        trial.epochs = epoch
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
            heapq.heappush(events, (now + _epoch_time(trial, epoch + 1, epoch_s, table), index, epoch + 1))
    if events:  # the budget ran out: the trials still running are PRUNED, as Tune's path does
        searchers.prune_unfinished(record.stores.optuna_storage, record.name)
    return trials


def _epoch_time(trial: Trial, epoch: int, epoch_s: float | None, table: str) -> float:
    """How long an epoch of the trial lasts: `epoch_s`, or what the table recorded for it."""
    if epoch_s is not None:
        return epoch_s
    from trainables.config import TrialConfig, settings
    from trainables.replay import replayed

    return float(replayed(TrialConfig.from_dict(settings(trial.config)), epoch, table).get("epoch_seconds", 1.0))


def searched_values(trial: Trial) -> dict[str, Any]:
    """The trial's sampled values (None for a parameter it did not have)."""
    return dict(trial.config.get(PARAMS, {}))
