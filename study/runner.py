"""Runs a study: validates everything it can before Ray starts, then Tune + Optuna + ASHA +
MLflow, then the final test of the best trial and the end-of-run summary.

A study folder (``--out/NAME``) holds study.json (what `--resume` needs), the Optuna SQLite
storage, Tune's experiment (unless --storage points elsewhere) and summary.json.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.results import SPACE_COPY
from study.run import StudyOptions
from study.search import KIND, NAME, PARAMS, SHORT_NAMES
from study.spaces import SearchSpace, SpaceError, load_space

STATE_FILE = "study.json"


class StudyInputError(Exception):
    """A problem with what the user asked for, reported as one line before any trial starts."""


@dataclass(frozen=True)
class StudyPaths:
    """Where a study's pieces live."""

    name: str
    folder: Path
    storage_path: str  # Tune's storage root (experiment = storage_path/name)
    optuna_storage: str
    tracking_uri: str
    artifact_location: str | None

    @property
    def tune_path(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"


# ---------------------------------------------------------------- before Ray starts


def resolve_space(opts: StudyOptions) -> SearchSpace:
    """Loads the space and applies the flags that override its constants and budget."""
    try:
        space = load_space(opts.space)
    except SpaceError as err:
        raise StudyInputError(str(err)) from None
    constants = dict(space.constants)
    for key in ("dataset", "data_dir", "backbone"):
        value = getattr(opts, key)
        if value is not None:
            constants[key] = value
    for key in ("data_dir", "boxes_file", "test_boxes_file"):
        # Trials may run in another working directory: make local paths absolute.
        if constants.get(key) and "://" not in str(constants[key]):
            constants[key] = str(Path(constants[key]).expanduser().resolve())
    # Threads per trial follow the CPUs Ray gives it, so trials do not oversubscribe cores.
    constants["threads"] = max(1, int(opts.cpus_per_trial))
    study = space.study
    if opts.num_samples is not None:
        study = dataclasses.replace(study, num_samples=opts.num_samples)
    if opts.max_epochs is not None:
        study = dataclasses.replace(study, max_epochs=opts.max_epochs,
                                    grace_period=min(study.grace_period, opts.max_epochs))
    baselines = space.baselines if opts.baselines and opts.searcher != "optuna-stock" else {}
    return dataclasses.replace(space, constants=constants, study=study, baselines=baselines)


def validate_trials(space: SearchSpace, local: bool, gpus_per_trial: float = 0.0) -> None:
    """Builds the TrialConfig of every fixed point and of each parameter's range ends, so a
    bad constant or range fails now, not in a trial; checks a local dataset's folder and that
    a local Ray can give the GPUs asked for (else Tune would wait for them forever)."""
    import torch

    from trainables.config import TrialConfig
    from trainables.errors import TrialError

    if local and gpus_per_trial > 0 and not torch.cuda.is_available():
        raise StudyInputError(f"--gpus-per-trial {gpus_per_trial:g}: this machine has no CUDA GPU "
                              "(use --address to run on a cluster that has one)")

    points: list[dict[str, Any]] = [*space.baselines.values(), *space.enqueue]
    for p in space.parameters.values():
        ends = list(p.choices) if p.type == "categorical" else [p.low, p.high]
        for end in ends:
            value = int(end) if p.type == "int" and end is not None else end
            points.append({p.name: value})
    points = points or [{}]
    try:
        for point in points:
            cfg = TrialConfig.from_dict(space.trial_config(point))
        if local and cfg.dataset != "synthetic":
            from trainables.data.formats import READERS

            assert cfg.data_dir is not None
            root = Path(cfg.data_dir)
            if not root.is_dir():
                raise StudyInputError(f"--data-dir {root} is not a folder")
            _verify_images(READERS[cfg.dataset](root))
    except TrialError as err:
        raise StudyInputError(f"{space.path}: {err}") from None


def _verify_images(split: Any) -> None:
    """Every image of a local dataset opens (a corrupt file fails the study now, by name,
    rather than every trial later)."""
    from trainables.data.base import verify_image

    for sample in [*split.train, *split.test]:
        verify_image(sample.path)


def study_paths(opts: StudyOptions, space: SearchSpace) -> StudyPaths:
    """Names the study and its folders; refuses to overwrite or to resume what is not there."""
    out = Path(opts.out).expanduser().resolve()
    name = opts.name
    if name is None and opts.resume:
        candidates = sorted((p for p in out.glob(f"{space.name}-*") if (p / STATE_FILE).is_file()),
                            key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise StudyInputError(f"--resume: no study of space {space.name!r} in {out}")
        name = candidates[-1].name
    if name is None:
        name = f"{space.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise StudyInputError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only")
    folder = out / name
    state = folder / STATE_FILE
    if opts.resume and not state.is_file():
        raise StudyInputError(f"--resume: no study {name!r} in {out} ({state} is missing)")
    if not opts.resume and state.is_file():
        raise StudyInputError(f"study {name!r} already exists in {out}; add --resume to continue it, "
                              "or choose another --name")
    if opts.resume:
        saved = json.loads(state.read_text())
        return StudyPaths(name, folder, saved["storage_path"], saved["optuna_storage"], saved["tracking_uri"],
                          saved.get("artifact_location"))
    tracking = opts.tracking_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    artifacts = None
    if tracking.startswith(("sqlite:", "file:", "postgresql:", "mysql:")) or "://" not in tracking:
        artifacts = (Path.cwd() / "mlartifacts").as_uri()  # not relative to a trial's working dir
    return StudyPaths(
        name=name,
        folder=folder,
        storage_path=opts.storage or str(out),
        optuna_storage=opts.optuna_storage or f"sqlite:///{folder / 'optuna.db'}",
        tracking_uri=tracking,
        artifact_location=artifacts,
    )


# ---------------------------------------------------------------- Tune


def trial_name(trial: Any) -> str:
    """Tune's trial name: the run name the searcher gave it."""
    return str(trial.config.get(NAME, trial.trial_id))


def trial_dirname(trial: Any) -> str:
    """A trial's folder: its name and id (Tune's default spells out the whole config)."""
    return f"{trial_name(trial)}_{trial.trial_id}"


def _searcher(opts: StudyOptions, space: SearchSpace, paths: StudyPaths) -> Any:
    from study.search import SEARCHERS

    return SEARCHERS[opts.searcher](space, paths.optuna_storage, paths.name, opts.seed)


def _tune_config(opts: StudyOptions, space: SearchSpace, paths: StudyPaths, concurrency: int | None) -> Any:
    from ray import tune

    from study.scheduling import SCHEDULERS

    searcher = _searcher(opts, space, paths)
    return tune.TuneConfig(
        metric=space.study.metric,
        mode=space.study.mode,
        search_alg=searcher,
        scheduler=SCHEDULERS[opts.scheduler](space.study, getattr(searcher, "mark_stopped", None), paths.tune_path),
        num_samples=space.study.num_samples + len(space.baselines),
        max_concurrent_trials=concurrency,
        reuse_actors=opts.reuse_actors,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_dirname,
    )


def _run_config(opts: StudyOptions, space: SearchSpace, paths: StudyPaths, callback: Any) -> Any:
    from ray import tune

    return tune.RunConfig(
        name=paths.name,
        storage_path=paths.storage_path,
        failure_config=tune.FailureConfig(max_failures=opts.max_failures),
        # The best checkpoints by the study's metric, and always the latest (to resume from).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=space.study.metric,
                                                checkpoint_score_order=space.study.mode),
        callbacks=[callback],
        verbose=opts.verbose,
        progress_reporter=_reporter(space) if opts.verbose else None,
    )


def _reporter(space: SearchSpace) -> Any:
    from ray.tune import CLIReporter

    metrics = {"epoch": "epoch", space.study.metric: space.study.metric, "train_loss": "loss"}
    params = {f"{PARAMS}/{name}": SHORT_NAMES.get(name, name) for name in space.parameters}
    return CLIReporter(metric_columns=metrics, parameter_columns=params, max_report_frequency=20,
                       max_progress_rows=12, sort_by_metric=True)


def concurrency(opts: StudyOptions) -> int | None:
    if opts.concurrency is not None:
        return opts.concurrency
    if opts.address is not None or opts.cpus_per_trial <= 0:
        return None  # a cluster may autoscale: let resources decide
    cpus = opts.num_cpus or os.cpu_count() or 1
    return max(1, int(cpus // opts.cpus_per_trial))


def init_ray(opts: StudyOptions) -> None:
    import ray

    if opts.address is None:
        ray.init(num_cpus=opts.num_cpus, include_dashboard=False, log_to_driver=opts.verbose > 0,
                 logging_level=logging.WARNING)
    else:
        ray.init(address=opts.address, log_to_driver=opts.verbose > 0, logging_level=logging.WARNING)


# ---------------------------------------------------------------- the study


# Tune's classic reporter honours the columns we choose; the newer one prints every config key.
# Every checkpoint forces a small experiment-state snapshot, which Tune warns about; that is the
# intended trade (a crash loses at most one epoch per trial).
_RAY_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
            # An unreachable MLflow server fails a call at once (MLflow's own retries would block
            # Tune's loop for minutes); the trial-runs callback queues the call and retries it.
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def set_ray_env() -> None:
    """Environment Tune reads at start-up (see _RAY_ENV); the user's own settings win."""
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)


def run_study(opts: StudyOptions) -> dict[str, Any]:
    """Runs (or resumes) a study; returns its summary."""
    set_ray_env()
    space = resolve_space(opts)
    paths = study_paths(opts, space)
    validate_trials(space, local=opts.address is None, gpus_per_trial=opts.gpus_per_trial)
    from study.tracking import Tracker, TrialRunsCallback

    tracker = Tracker(paths.tracking_uri, paths.name, paths.artifact_location)
    if opts.resume:
        tracker.reopen(json.loads((paths.folder / STATE_FILE).read_text())["parent_run_id"])
    else:
        _start(opts, space, paths, tracker)
    print(f"study {paths.name}: space {space.name}, {space.study.num_samples} samples + "
          f"{len(space.baselines)} baseline(s), max {space.study.max_epochs} epochs; folder {paths.folder}", flush=True)
    init_ray(opts)
    import ray
    from ray import tune

    from trainables.trainable import train_rra

    trainable = tune.with_resources(train_rra, {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
    callback = TrialRunsCallback(tracker, space.study.max_epochs)
    try:
        if opts.resume:
            tuner = tune.Tuner.restore(paths.tune_path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space={},
                               tune_config=_tune_config(opts, space, paths, concurrency(opts)),
                               run_config=_run_config(opts, space, paths, callback))
        results = tuner.fit()
        return _finish(opts, space, paths, tracker, results)
    except BaseException:
        from study.tracking import reconcile

        reconcile(tracker, [], space.study.max_epochs, interrupted=True)
        tracker.finish("KILLED")
        raise
    finally:
        ray.shutdown()


def _start(opts: StudyOptions, space: SearchSpace, paths: StudyPaths, tracker: Any) -> None:
    from study.tracking import git_revision, library_versions

    if tracker.exists():
        raise StudyInputError(f"MLflow experiment {paths.name!r} already has runs at {paths.tracking_uri}; "
                              "choose another --name")
    paths.folder.mkdir(parents=True, exist_ok=True)
    versions = library_versions()
    tags = {"study": paths.name, "space": space.name, "dataset": str(space.constants.get("dataset", "synthetic")),
            "searcher": opts.searcher, "scheduler": opts.scheduler, "git_revision": git_revision(),
            **{f"version.{k}": v for k, v in versions.items()}}
    flags = {f"flag.{k}": v for k, v in dataclasses.asdict(opts).items()}
    settings = {f"study.{k}": v for k, v in dataclasses.asdict(space.study).items()}
    parent = tracker.start(tags, {**flags, **settings}, {
        "space.yaml": space.path.read_text(),
        "resolved_space.json": json.dumps({"constants": space.constants, "study": dataclasses.asdict(space.study),
                                           "parameters": list(space.parameters), "baselines": space.baselines,
                                           "enqueue": list(space.enqueue)}, indent=2),
    })
    state = {"name": paths.name, "space": str(space.path), "options": dataclasses.asdict(opts),
             "storage_path": paths.storage_path, "optuna_storage": paths.optuna_storage,
             "tracking_uri": paths.tracking_uri, "artifact_location": paths.artifact_location,
             "parent_run_id": parent, "experiment_id": tracker.experiment_id,
             # the space as this study resolved it (flags applied), for reports and confirmations
             "settings": dataclasses.asdict(space.study), "constants": space.constants, "baselines": space.baselines,
             "created": dt.datetime.now().isoformat(timespec="seconds")}
    (paths.folder / SPACE_COPY).write_text(space.path.read_text())  # the report reads the space as it ran
    (paths.folder / STATE_FILE).write_text(json.dumps(state, indent=2))


def _tune_trials(results: Any) -> list[Any]:
    # ResultGrid has no public per-trial status; its analysis object keeps the Trial objects.
    return list(results._experiment_analysis.trials)


def _saved(paths: StudyPaths) -> Any:
    """Tune's experiment as saved for a resume. After Ctrl-C, Tune reports the trials it
    stopped as terminated but saves them as pending: the saved state says whether the study
    is done."""
    from ray.tune import ExperimentAnalysis

    return ExperimentAnalysis(paths.tune_path)


def _backfill(tracker: Any, analysis: Any) -> None:
    """MLflow gets the epochs Tune recorded that its runs lack; an unreachable server is told."""
    from study.tracking import backfill, unreachable

    try:
        sent = backfill(tracker, analysis.trial_dataframes)
    except Exception as err:  # the study's results are in Tune's storage whatever MLflow says
        if not unreachable(err):
            raise
        print(f"warning: MLflow is unreachable; its runs may lack epochs that Tune recorded ({err})", file=sys.stderr)
        return
    if sent:
        print(f"MLflow: {sent} epoch(s) missing from the trials' runs were sent from Tune's results", flush=True)


def _finish(opts: StudyOptions, space: SearchSpace, paths: StudyPaths, tracker: Any, results: Any) -> dict[str, Any]:
    from study.tracking import outcome, reconcile

    analysis = _saved(paths)
    saved = list(analysis.trials)
    expected = space.study.num_samples + len(space.baselines)
    interrupted = len(saved) < expected or any(t.status not in ("TERMINATED", "ERROR") for t in saved)
    reconcile(tracker, saved, space.study.max_epochs, interrupted=interrupted)
    _backfill(tracker, analysis)
    if interrupted:
        tracker.finish("KILLED")
        raise KeyboardInterrupt
    trials = _tune_trials(results)
    rows = [_row(t, space, outcome(t.last_result, space.study.max_epochs, t.status == "ERROR")) for t in trials]
    summary = _summary(opts, space, paths, tracker, results, rows)
    (paths.folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    tracker.finish("FINISHED")
    print_summary(summary)
    if opts.confirm_seeds:
        from study.confirm import run_confirmation

        run_confirmation(paths.folder, opts.confirm_seeds)
    if opts.report:
        _report(paths.folder)
    return summary


def _report(folder: Path) -> None:
    """Writes the study's report; a failure here loses nothing already recorded, so it is told,
    not raised."""
    from study.report import write_report

    try:
        path = write_report(folder)
    except Exception as err:
        print(f"warning: the report failed ({type(err).__name__}: {err}); the study's results are kept. "
              f"Retry with: python -m study.report --name {folder.name} --out {folder.parent}", file=sys.stderr)
        return
    print(f"\nReport: {path}\n        {path.with_suffix('.md')} (and in MLflow: the parent run's report/ artifacts)")


def _row(trial: Any, space: SearchSpace, how: str) -> dict[str, Any]:
    last = trial.last_result or {}
    return {
        "trial_id": trial.trial_id,
        "name": trial_name(trial),
        "kind": trial.config.get(KIND, "search"),
        "outcome": how,
        "epochs": int(last.get("epoch", 0)),
        space.study.metric: last.get(space.study.metric),
        **{k: trial.config.get(PARAMS, {}).get(k) for k in space.parameters},
    }


def _ranked(rows: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """Searched trials, best first: those that reached max_t, then (if none did) the rest."""
    sign = 1 if mode == "max" else -1
    full = [r for r in rows if r["kind"] == "search" and r["outcome"] == "completed" and r[metric] is not None]
    pool = full or [r for r in rows if r["kind"] == "search" and r[metric] is not None]
    # Ties (common on small validation sets) go to the name, then the id: the report ranks alike.
    return sorted(pool, key=lambda r: (-sign * r[metric], r["name"], r["trial_id"]))


# The final test evaluates this many of the best trials (chosen on validation), for the report.
TEST_TOP = 3


def _summary(opts: StudyOptions, space: SearchSpace, paths: StudyPaths, tracker: Any, results: Any,
             rows: list[dict[str, Any]]) -> dict[str, Any]:
    metric, mode = space.study.metric, space.study.mode
    ranked = _ranked(rows, metric, mode)
    best = ranked[0] if ranked else None
    baselines = [r for r in rows if r["kind"] == "baseline"]
    by_id = {r.metrics.get("trial_id"): r for r in results}
    tested: dict[str, dict[str, float]] = {}
    if opts.evaluate_test:
        for row in [*ranked[:TEST_TOP], *baselines]:
            if by_id.get(row["trial_id"]) is not None:
                tested[row["trial_id"]] = _test(opts, by_id[row["trial_id"]], metric, mode)
    for row in rows:
        row.update(tested.get(row["trial_id"], {}))
    parent = tracker.parent_run_id
    client = tracker.client
    if best is not None:
        best_result = by_id[best["trial_id"]]
        run = tracker.find_child(best["trial_id"])
        checkpoint = _best_checkpoint(best_result, metric, mode)
        if run is not None and checkpoint is not None:
            with checkpoint.as_directory() as folder:
                client.log_artifacts(run.info.run_id, folder, "checkpoint")
            client.set_tag(run.info.run_id, "best", "true")
        from trainables.config import settings

        best_config = settings(best_result.config)
        client.log_dict(parent, best_config, "best_config.json")
        client.set_tag(parent, "best_trial", best["name"])
        client.log_metric(parent, f"best_{metric}", float(best[metric]))
        if "test_acc" in best:
            client.log_metric(parent, "best_test_acc", best["test_acc"])
    for row in baselines:
        if row[metric] is not None:
            client.log_metric(parent, f"{row['name']}_{metric}", float(row[metric]))
        if "test_acc" in row:
            client.log_metric(parent, f"{row['name']}_test_acc", row["test_acc"])
    counts = {how: sum(r["outcome"] == how for r in rows if r["kind"] == "search")
              for how in ("completed", "stopped_early", "errored")}
    return {
        "study": paths.name, "space": space.name, "metric": metric, "mode": mode,
        "max_epochs": space.study.max_epochs, "folder": str(paths.folder), "tune_path": paths.tune_path,
        "optuna_storage": paths.optuna_storage, "tracking_uri": paths.tracking_uri,
        "experiment_id": tracker.experiment_id, "parent_run_id": parent, "counts": counts,
        "best": best, "baselines": baselines, "trials": rows,
    }


def _best_checkpoint(result: Any, metric: str, mode: str) -> Any | None:
    """A trial's best checkpoint by the metric, else its latest; None if it never saved one
    (e.g. a trial that failed in its first epoch)."""
    if not result.best_checkpoints:
        return result.checkpoint
    return result.get_best_checkpoint(metric, mode) or result.checkpoint


def _test(opts: StudyOptions, result: Any, metric: str, mode: str) -> dict[str, float]:
    """Evaluates a trial's best checkpoint on the test split, as a Ray task with trial resources."""
    import ray

    from trainables.trainable import evaluate_tune_checkpoint

    checkpoint = _best_checkpoint(result, metric, mode)
    if checkpoint is None:
        return {}
    task = ray.remote(evaluate_tune_checkpoint).options(num_cpus=opts.cpus_per_trial, num_gpus=opts.gpus_per_trial)
    metrics = ray.get(task.remote(result.config, checkpoint))
    return {"test_acc": metrics["test_acc"], "test_acc_global": metrics["test_acc_global"],
            "test_acc_local": metrics["test_acc_local"]}


# ---------------------------------------------------------------- end of run


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if not math.isnan(value) else "nan"
    return str(value)


def print_summary(summary: dict[str, Any], top: int = 5) -> None:
    """The end-of-run table: the best configs, the baselines, where everything is."""
    metric = summary["metric"]
    trials = [r for r in summary["trials"] if r["kind"] == "search" and r[metric] is not None]
    sign = 1 if summary["mode"] == "max" else -1
    ranked = sorted(trials, key=lambda r: (r["outcome"] == "completed", sign * r[metric]), reverse=True)[:top]
    params = [k for k in (ranked[0] if ranked else {}) if k not in
              ("trial_id", "name", "kind", "outcome", "epochs", metric, "test_acc", "test_acc_global",
               "test_acc_local")]
    header = ["run", *params, metric, "test_acc", "epochs", "outcome"]
    lines = [[r["name"], *(_fmt(r.get(k)) for k in params), _fmt(r[metric]), _fmt(r.get("test_acc")),
              str(r["epochs"]), r["outcome"]] for r in ranked]
    lines += [[r["name"], *("-" for _ in params), _fmt(r[metric]), _fmt(r.get("test_acc")), str(r["epochs"]),
               "baseline"] for r in summary["baselines"]]
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(header)]
    print(f"\nBest configurations ({metric} at the last epoch; test accuracy of the best checkpoint):")
    for row in [header, *lines]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    counts = summary["counts"]
    print(f"\nTrials: {counts['completed']} ran to {summary['max_epochs']} epochs, {counts['stopped_early']} stopped "
          f"early by the scheduler, {counts['errored']} errored; {len(summary['baselines'])} baseline(s).")
    best, baselines = summary["best"], summary["baselines"]
    if best and baselines and best.get(metric) is not None and baselines[0].get(metric) is not None:
        gain = best[metric] - baselines[0][metric]
        print(f"Best {best['name']} against {baselines[0]['name']}: {metric} {gain:+.3f}")
    print(f"\nStudy folder: {summary['folder']}\nTune results: {summary['tune_path']}")
    print(f"Optuna storage: {summary['optuna_storage']}\nMLflow: {summary['tracking_uri']} "
          f"(experiment {summary['study']}, id {summary['experiment_id']})")
    print("\nOpen the MLflow UI on this study's runs:")
    uri = summary["tracking_uri"]
    if uri.startswith("http"):
        print(f"  open {uri.rstrip('/')}/#/experiments/{summary['experiment_id']}/runs")
    else:
        print(f"  .venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
        print(f"  then open http://127.0.0.1:5000/#/experiments/{summary['experiment_id']}/runs")
    print("Open optuna-dashboard on its Optuna storage:")
    print(f"  .venv/bin/optuna-dashboard {summary['optuna_storage']} --host 127.0.0.1 --port 8080")
