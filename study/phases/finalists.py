"""The noise-aware ending: the study names its best on several seeds, not on one run.

One run of a configuration is noisy (its seed moves its accuracy by points), and the best of
many noisy runs is, on average, luckier than it is good (the winner's curse). So the study ends
by training its finalists (its best `study.finalists` trials that reached max_t) again with
`study.finalist_seeds` new seeds each (the same seeds for all; study.phases.reruns), names its
best on the mean over seeds, and says how sure it is (study.noise: each finalist's mean and
interval, the seed noise, the probability that each is the best).

With an epoch budget, the re-runs come out of it: the search stops `reserve` epochs early, at
most `finalist_share` of the budget (fewer finalists when they would take more). The re-runs
go to a Tune experiment STUDY-finalists beside the study's, to the study's MLflow experiment as
child runs of kind "finalist", and to STUDY/finalists.parquet; an interrupted ending continues
on --resume.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from study.keys import COMPLETED, FINALIST, FINALIST_OF, SEARCH
from study.record import StudyRecord
from study.spaces import StudySettings


@dataclass(frozen=True)
class Plan:
    """How many finalists, with how many new seeds each, and the epochs that takes."""

    count: int
    seeds: int
    epochs: int  # count * seeds * max_epochs

    @property
    def on(self) -> bool:
        return self.count > 0


def plan(study: StudySettings) -> Plan:
    """The finalists a study's settings allow (`StudySettings.finalist_count`: with an epoch
    budget, as many as fit in its share) and the epochs their re-runs take."""
    count = study.finalist_count()
    return Plan(count, study.finalist_seeds, count * study.finalist_seeds * study.max_epochs)


def search_budget(study: StudySettings) -> int | None:
    """The epochs the search itself may run: the budget less the finalists' reserve."""
    if study.epoch_budget is None:
        return None
    return study.epoch_budget - plan(study).epochs


def chosen(rows: list[dict[str, Any]], ranking: list[str], count: int) -> list[dict[str, Any]]:
    """The finalists: the first `count` trials of the ranking that reached max_t without error."""
    by_id = {r["trial_id"]: r for r in rows}
    picked = [by_id[t] for t in ranking if by_id[t]["kind"] == SEARCH and by_id[t]["outcome"] == COMPLETED]
    return picked[:count]


Execute = Callable[[StudyRecord, list[dict[str, Any]], list[int], int], pd.DataFrame]


def run(record: StudyRecord, rows: list[dict[str, Any]], ranking: list[str],
        execute: Execute | None = None) -> pd.DataFrame | None:
    """The ending's re-runs: the finalists chosen from the ranking, each trained again with new
    seeds (`study.ending` fixed), or raced for as many runs (`race`); returns the re-runs' table
    (a row per run per epoch, in the results model), or None when the study has no finalists to
    re-run. `execute(record, configs, seeds, batch)` runs a batch of re-runs' trial configs and
    returns their table: by default under Tune (`run_under_tune`), and in the simulated study
    (study.simulate) by replaying them, so that both end alike.

    Raises:
        KeyboardInterrupt: the re-runs did not all end (Ctrl-C); --resume continues them.
    """
    from study.phases import reruns

    how = plan(record.space.study)
    execute = execute or run_under_tune
    if how.on and record.space.study.ending == "race":
        return race(record, rows, ranking, execute)
    picked = chosen(rows, ranking, how.count) if how.on else []
    if not picked:
        return None
    seeds = reruns.seeds(record, how.seeds)
    configs = []
    for row in picked:
        configs += _configs(record, row, seeds)
    return execute(record, configs, seeds, 0)


def _configs(record: StudyRecord, row: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    from study.phases import reruns

    values = {k: row.get(k) for k in record.space.parameters if row.get(k) is not None}
    return reruns.configs(record, values, seeds, FINALIST, "finalist", **{FINALIST_OF: row["trial_id"]})


def race(record: StudyRecord, rows: list[dict[str, Any]], ranking: list[str], execute: Execute) -> pd.DataFrame | None:
    """The re-runs raced: the fixed ending's runs (finalists x finalist_seeds) spent a round at a
    time. Round 1: one more trial than `finalists`, one new seed each; then each round one new
    seed (the same for both) for the two finalists most likely the best, until one is the best
    with probability `race_target` or the runs are spent. Decisions read the model's P(best)
    (study.noise.finalists, the choosing run left out of the means; its noise, while each has one
    new seed, measured with the choosing runs in; not recalibrated, as the stated one is: the
    race was measured so, and a share spread evenly would keep it from ever reaching a target of
    0.9), so a resumed race replays them.
    The re-runs' table says, in its `race_stop` attribute, why the race ended."""
    from study.noise import SHRINK, finalists
    from study.phases import reruns

    study = record.space.study
    how = plan(study)
    budget = how.count * how.seeds
    picked = chosen(rows, ranking, min(how.count + 1, budget))
    if not picked:
        return None
    by_id = {r["trial_id"]: r for r in picked}
    seeds = iter(reruns.seeds(record, budget))
    tables: list[pd.DataFrame] = []
    contenders, left, batch, why = [r["trial_id"] for r in picked], budget, 0, "runs spent"
    while contenders and left >= len(contenders):
        seed = next(seeds)
        configs = [c for trial in contenders for c in _configs(record, by_id[trial], [seed])]
        tables.append(execute(record, configs, [seed], batch))
        left, batch = left - len(configs), batch + 1
        values = values_by_seed(rows, pd.concat(tables, ignore_index=True), record.metric, record.train_seed,
                                record.max_epochs)
        stated, _ = finalists(values, record.mode, selection_seed=record.train_seed, shrink=SHRINK,
                              noise_from_selection=True)
        leader = stated[0]
        if leader.p_best is not None and leader.p_best >= study.race_target:
            why = f"the model's P(best) {leader.p_best:.2f} >= {study.race_target:g}"
            break
        ranked_by = sorted(stated, key=lambda f: -(f.p_best if f.p_best is not None else -1.0))
        contenders = [f.key for f in ranked_by[:2]] if left >= 2 else []
    table = pd.concat(tables, ignore_index=True)
    table.attrs["race_stop"] = f"{why} after {budget - left} of {budget} runs"
    return table


def run_under_tune(record: StudyRecord, configs: list[dict[str, Any]], seeds: list[int], batch: int = 0,
                   ) -> pd.DataFrame:
    """A batch of re-runs as a Tune experiment STUDY-finalists beside the study's (a race's later
    rounds: STUDY-finalists-N), continued if it exists; returns the batch's table, and saves the
    table of every batch so far as STUDY/finalists.parquet."""
    from study.phases import reruns
    from study.results import FINALISTS_FILE, save_table

    count = len({c[FINALIST_OF] for c in configs})
    said = f"the {count} best trial(s)" if not batch else f"round {batch + 1}, {count} trial(s)"
    print(f"\nNoise-aware ending: {said} again with seeds {', '.join(map(str, seeds))} ({len(configs)} runs of "
          f"{record.max_epochs} epochs); the best is named on the mean over seeds", flush=True)
    suffix = f"-{batch}" if batch else ""
    table, ended = reruns.run(record, f"{record.name}-finalists{suffix}", f"{record.finalists_path}{suffix}", configs,
                              test=False)
    if not ended:
        raise KeyboardInterrupt
    saved = record.folder / FINALISTS_FILE
    before = [pd.read_parquet(saved)] if batch and saved.is_file() else []
    save_table(pd.concat([*before, table], ignore_index=True), saved)
    return table


def values_by_seed(rows: list[dict[str, Any]], reruns_table: pd.DataFrame | None, metric: str, train_seed: int,
                   max_epochs: int) -> dict[str, dict[int, float]]:
    """Finalist (searched trial id) -> seed -> its metric at max_t: the study's own run (with the
    study's training seed) and every re-run that reached max_t."""
    if reruns_table is None or reruns_table.empty:
        return {}
    by_id = {r["trial_id"]: r for r in rows}
    last = reruns_table.sort_values("epoch").groupby("trial_id").tail(1)
    out: dict[str, dict[int, float]] = {}
    for _, rerun in last.iterrows():
        of = rerun.get("finalist_of")
        original = by_id.get(of) if isinstance(of, str) else None
        if original is None:
            continue
        seeds = out.setdefault(of, {train_seed: float(original[metric])})
        if int(rerun["epochs_run"]) >= max_epochs and rerun["outcome"] == COMPLETED and rerun[metric] == rerun[metric]:
            seeds[int(rerun["config.seed"])] = float(rerun[metric])
    return out


def warn_short(values: dict[str, dict[int, float]], expected: int) -> None:
    """Says so when some re-runs are missing (errored): the means rest on fewer seeds."""
    short = [k for k, v in values.items() if len(v) < expected]
    if short:
        print(f"warning: {len(short)} finalist(s) have fewer than {expected} seeds (a re-run errored); "
              "their means rest on the seeds that ran", file=sys.stderr)
