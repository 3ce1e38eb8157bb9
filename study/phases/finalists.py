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

EXPERIMENT = "experiment"  # finalists.parquet: the experiment of the study whose ending made the re-run


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
    return Plan(study.finalist_count(), study.finalist_seeds, study.rerun_epochs())


def search_epochs(record: StudyRecord) -> int | None:
    """The epochs a study's search may run: its budget less the finalists' reserve, and in an
    extended study less the re-runs its earlier endings made (the budget counts every epoch the
    study runs; a re-run the new ending keeps then leaves it unspent)."""
    epochs = record.space.study.search_epochs()
    if epochs is None or not record.extensions:
        return epochs
    return epochs - earlier_epochs(record, None)


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
    """A batch of re-runs as a Tune experiment EXPERIMENT-finalists beside the study's (a race's
    later rounds: EXPERIMENT-finalists-N), continued if it exists; returns the batch's table, and
    saves the table of every batch so far as STUDY/finalists.parquet. In an extended study, a
    re-run an earlier ending made (the same finalist and seed: the same run) is kept, not run
    again."""
    from study.phases import reruns
    from study.results import FINALISTS_FILE, save_table

    saved = record.folder / FINALISTS_FILE
    archive = _archive(record)
    earlier = archive[archive[EXPERIMENT] != record.experiment]
    kept = _made(earlier, configs)
    todo = [c for c in configs if (c[FINALIST_OF], c["seed"]) not in kept]
    count = len({c[FINALIST_OF] for c in configs})
    said = f"the {count} best trial(s)" if not batch else f"round {batch + 1}, {count} trial(s)"
    again = f"; {len(configs) - len(todo)} of them made by an earlier ending, kept" if len(todo) < len(configs) else ""
    print(f"\nNoise-aware ending: {said} again with seeds {', '.join(map(str, seeds))} ({len(configs)} runs of "
          f"{record.max_epochs} epochs{again}); the best is named on the mean over seeds", flush=True)
    made = []
    if todo:
        suffix = f"-{batch}" if batch else ""
        table, ended = reruns.run(record, f"{record.experiment}-finalists{suffix}", f"{record.finalists_path}{suffix}",
                                  todo, test=False)
        if not ended:
            raise KeyboardInterrupt
        made = [table.assign(**{EXPERIMENT: record.experiment})]
    this = archive[archive[EXPERIMENT] == record.experiment] if batch else archive.iloc[:0]
    save_table(_concat([earlier, this, *made]), saved)
    return _concat([earlier[earlier["trial_id"].isin(set(kept.values()))], *made])


def _concat(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The tables one after the other (empty ones left out)."""
    full = [t for t in tables if not t.empty]
    return pd.concat(full, ignore_index=True) if full else tables[0]


def _archive(record: StudyRecord) -> pd.DataFrame:
    """Every re-run the study's endings made (STUDY/finalists.parquet), with the experiment
    whose ending made each (a file from before extensions: the study's own)."""
    from study.results import FINALISTS_FILE

    path = record.folder / FINALISTS_FILE
    table = pd.read_parquet(path) if path.is_file() else pd.DataFrame({"trial_id": [], "finalist_of": []})
    if EXPERIMENT not in table.columns:
        table[EXPERIMENT] = record.name
    return table


def _made(table: pd.DataFrame, configs: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    """(finalist, seed) -> the re-run in `table` that trained that finalist with that seed to the
    end, for the configs given."""
    if table.empty:
        return {}
    wanted = {(c[FINALIST_OF], int(c["seed"])) for c in configs}
    last = table.sort_values("epoch").groupby("trial_id").tail(1)
    out = {}
    for _, row in last.iterrows():
        key = (str(row["finalist_of"]), int(row["config.seed"]))
        if key in wanted and row["outcome"] == COMPLETED:
            out[key] = str(row["trial_id"])
    return out


def earlier_epochs(record: StudyRecord, table: pd.DataFrame | None) -> int:
    """The epochs of the re-runs earlier endings of an extended study made and `table` (this
    ending's; None: every one of them) does not hold."""
    if not record.extensions:
        return 0
    archive = _archive(record)
    held = set() if table is None or table.empty else set(table["trial_id"])
    rest = archive[(archive[EXPERIMENT] != record.experiment) & ~archive["trial_id"].isin(held)]
    return int(rest.groupby("trial_id")["epochs_run"].first().sum()) if not rest.empty else 0


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
