"""ASHA (asynchronous successive halving) with the searcher it owns.

ASHA counts epochs (`time_attr="epoch"`: the trainable reports once per epoch), never stops a
baseline (the gain over the baseline is measured at the full budget), and tells its searcher
about every trial it stops, so the searcher records it as PRUNED, not as interrupted.

The scheduler keeps its own records (study/policies/rungs.py: each rung's values and the
trials it stopped, each trial's bracket) and meets Tune only through Tune's public scheduler
interface; it decides as Ray's ASHA does (tests/unit/study/test_policies.py checks it against
Ray's on the same results). Tune does not save a scheduler's state: a resumed study would
judge its next trials against empty rungs and stop none. Given the experiment's path, the
scheduler rebuilds its rungs the first time Tune uses it, from the results the experiment
already recorded, each trial in its own bracket, so a resumed study stops the trials an
uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, Protocol

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from study.keys import BASELINE, EPOCH, KIND
from study.keys import sign as direction
from study.policies.rungs import Records, bracket_milestones
from study.spaces import StudySettings

History = dict[str, dict[int, float]]  # trial id -> {epoch: metric}
RUNGS_LOG = "rungs.jsonl"  # in the study folder: every judgement of the policy's rungs
log = logging.getLogger(__name__)


class StopListener(Protocol):
    def on_trial_stopped(self, trial_id: str) -> None: ...


def unit_draw(trial_id: str) -> float:
    """A number in [0, 1) fixed by a trial's id."""
    return int(hashlib.sha256(trial_id.encode()).hexdigest()[:8], 16) / 2**32


# ---------------------------------------------------------------- the rungs, one definition


def milestones(settings: StudySettings) -> list[float]:
    """ASHA's milestones (its first bracket's), lowest first (floats for a non-integer
    reduction factor)."""
    return bracket_milestones(settings.grace_period, settings.max_epochs, settings.reduction_factor, 0)


def rungs(settings: StudySettings) -> list[int]:
    """The epochs at which ASHA judges trials (the first epoch at or past each milestone), and
    max_t: the epochs the report compares trials at."""
    return sorted({*(math.ceil(m) for m in milestones(settings) if m < settings.max_epochs), settings.max_epochs})


# ---------------------------------------------------------------- the scheduler


class BaselineExemptASHA(FIFOScheduler):
    """ASHA over its own records: baselines always continue, every early stop is told to the
    searcher, a trial joins a bracket fixed by its id (the same one on every run), and the rungs
    are rebuilt on resume. Metric and mode come from TuneConfig (`set_search_properties`)."""

    def __init__(self, searcher: StopListener | None = None, history_from: str | tuple[str, ...] | None = None,
                 time_attr: str = EPOCH, max_t: int = 100, grace_period: float = 1, reduction_factor: float = 4,
                 brackets: int = 1, metric: str | None = None, mode: str | None = None,
                 log: str | None = None, costs: tuple[tuple[str, str], ...] = ()) -> None:
        if not (0 < grace_period <= max_t and reduction_factor > 1 and brackets > 0):
            raise ValueError(f"ASHA needs 0 < grace_period ({grace_period}) <= max_t ({max_t}), "
                             f"reduction_factor ({reduction_factor}) > 1 and brackets ({brackets}) > 0")
        super().__init__()
        self.searcher = searcher
        # the study's experiments (paths), to rebuild the rungs on a resume or an extension
        self.history_from = (history_from,) if isinstance(history_from, str) else history_from
        self.rebuilt = False
        self.time_attr = time_attr
        self.max_t = max_t
        self.records = Records(grace_period, max_t, reduction_factor, brackets, log)
        self._metric, self._mode = metric, mode
        # Further objectives (MO-ASHA): costs each trial reports once, (name, mode); and what
        # each trial reported of them
        self.cost_objectives = tuple(costs)
        self.measured: dict[str, dict[str, float]] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Tune's metric and mode (False if the scheduler was given its own: Tune then refuses)."""
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def sign(self) -> float:
        """+1 when the metric is maximised, -1 when minimised."""
        if self._metric is None or self._mode not in ("max", "min"):
            raise ValueError(f"{type(self).__name__} needs a metric and a mode (give them to tune.TuneConfig)")
        return direction(self._mode)

    def place(self, trial_id: str) -> None:
        """Puts a new trial in a bracket: one chosen from its id (the same one on every run)."""
        self.records.place(trial_id, int(unit_draw(trial_id) * len(self.records.brackets)))

    def placed(self, trial_id: str) -> bool:
        return trial_id in self.records.placed

    def bracket_cuts(self) -> list[list[float]]:
        """Per bracket, the milestones at which it may stop a trial (below max_t), lowest first."""
        return [b.cuts(self.max_t) for b in self.records.brackets]

    def _values(self, trial_id: str, value: float) -> tuple[float, ...] | None:
        """A trial's objectives, signed so that larger is better: the metric's `value`, then its
        costs (None while one of them is not known)."""
        known = self.measured.get(trial_id, {})
        if any(name not in known for name, _ in self.cost_objectives):
            return None
        costs = (direction(mode) * known[name] for name, mode in self.cost_objectives)
        return (self.sign() * value, *costs)

    def rebuild(self, history: History, measured: dict[str, dict[str, float]] | None = None) -> int:
        """Records each trial's metric at every rung of its bracket it reached, as ASHA would have
        when it saw the result (the first epoch at or past the milestone), with the costs it
        had reported (`measured`, for several objectives); returns how many."""
        for trial_id, costs in (measured or {}).items():
            self.measured.setdefault(trial_id, {}).update(costs)
        count = 0
        for trial_id, values in history.items():
            if not self.placed(trial_id):
                self.place(trial_id)
            for rung in self.records.brackets[self.records.placed[trial_id]].rungs:
                reached = [epoch for epoch in values if epoch >= rung.milestone]
                signed = self._values(trial_id, values[min(reached)]) if reached else None
                if signed is not None and trial_id not in rung.seen:
                    rung.seen[trial_id] = signed
                    count += 1
        return count

    def _rebuild_once(self) -> None:
        if self.rebuilt or self.history_from is None or self._metric is None:
            return
        self.rebuilt = True
        costs = [c for c, _ in self.cost_objectives]
        history, measured = saved_results(self.history_from, self._metric, costs, self.time_attr)
        if history:
            count = self.rebuild(history, measured)
            log.warning("ASHA: rungs rebuilt from %d recorded values of %d trials", count, len(history))

    def _judge(self, trial: Any, result: dict[str, Any]) -> bool:
        """Records a result at its rung; True if the rung stops the trial."""
        for name, _ in self.cost_objectives:
            if result.get(name) is not None:
                self.measured.setdefault(trial.trial_id, {})[name] = float(result[name])
        if self.time_attr not in result or self._metric not in result:
            return False
        if not self.placed(trial.trial_id):  # a restored trial Tune did not add again
            self.place(trial.trial_id)
        values = self._values(trial.trial_id, float(result[str(self._metric)]))
        return values is not None and self.records.judge(trial.trial_id, float(result[self.time_attr]), values)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.sign()  # fails early, as Ray's ASHA does, without a metric and a mode
        self._rebuild_once()
        if not self.placed(trial.trial_id):
            self.place(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if trial.config.get(KIND) == BASELINE:
            return TrialScheduler.CONTINUE
        self._rebuild_once()
        if self.time_attr in result and self._metric in result and result[self.time_attr] >= self.max_t:
            return TrialScheduler.STOP  # its budget is spent (not an early stop)
        if not self._judge(trial, result):
            return TrialScheduler.CONTINUE
        if self.searcher is not None:
            self.searcher.on_trial_stopped(trial.trial_id)
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        if trial.config.get(KIND) != BASELINE:
            self._judge(trial, result)

    def debug_string(self) -> str:
        stopped = sum(len(r.stopped) for b in self.records.brackets for r in b.rungs)
        return f"ASHA ({len(self.records.brackets)} bracket(s)): {stopped} trial(s) stopped early"


def saved_history(tune_paths: str | tuple[str, ...], metric: str, time_attr: str = EPOCH) -> History:
    """The metric at each epoch of every non-baseline trial Tune experiments have recorded
    (empty when there is no experiment there yet)."""
    return saved_results(tune_paths, metric, [], time_attr)[0]


def saved_results(tune_paths: str | tuple[str, ...], metric: str, costs: list[str],
                  time_attr: str = EPOCH) -> tuple[History, dict[str, dict[str, float]]]:
    """As `saved_history`, and each trial's `costs` (the first value it reported of each)."""
    from study import experiments

    try:
        analysis = experiments.read((tune_paths,) if isinstance(tune_paths, str) else tune_paths, missing_ok=True)
    except (ValueError, FileNotFoundError, OSError):
        return {}, {}
    frames = analysis.trial_dataframes
    history: History = {}
    measured: dict[str, dict[str, float]] = {}
    for trial in analysis.trials:
        frame = frames.get(trial.trial_id)
        if trial.config.get(KIND) == BASELINE or frame is None or frame.empty:
            continue
        if metric in frame and time_attr in frame:
            rows = frame[[time_attr, metric]].dropna()
            history[trial.trial_id] = {int(t): float(v) for t, v in zip(rows[time_attr], rows[metric], strict=True)}
        for name in costs:
            if name in frame and frame[name].notna().any():
                measured.setdefault(trial.trial_id, {})[name] = float(frame[name].dropna().iloc[0])
    return history, measured


def scheduler(settings: StudySettings, searcher: StopListener | None, tune_path: str | tuple[str, ...] | None,
              kind: type[BaselineExemptASHA] = BaselineExemptASHA, brackets: int = 1,
              log: str | None = None) -> BaselineExemptASHA:
    """The scheduler alone (metric and mode come from TuneConfig, named once; the costs of a
    multi-objective study from its settings): `kind` with `brackets` brackets (the hyperband
    and adaptive policies ask for several), its judgements appended to `log`."""
    return kind(searcher=searcher, history_from=tune_path, time_attr=EPOCH, max_t=settings.max_epochs,
                grace_period=settings.grace_period, reduction_factor=settings.reduction_factor, brackets=brackets,
                log=log, costs=tuple(settings.objective_list()[1:]))


def build(record: Any, kind: type[BaselineExemptASHA] = BaselineExemptASHA,
          brackets: int = 1) -> tuple[Any, TrialScheduler]:
    """(searcher, scheduler) of a study: the scheduler tells the searcher what it stops."""
    from study.searchers import FidelitySearcher, make_searcher

    searcher = make_searcher(record)
    listener = searcher if isinstance(searcher, FidelitySearcher) else None  # Ray's stock searcher is not told
    return searcher, scheduler(record.space.study, listener, record.tune_paths, kind, brackets,
                               str(record.folder / RUNGS_LOG))
