"""The command line that composes the phases: `python -m study.run` (search, finish, then
optionally confirm and report) and `python -m study.report` (confirm and report of a study).

Parsing and the light checks (space, flags, record) run before anything heavy is imported, so
a typo answers about as fast as `--help`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from study.errors import StudyInputError
from study.options import StudyOptions, non_negative_int, parse_options, positive_int
from study.record import StudyRecord


def resolve(opts: StudyOptions) -> StudyRecord:
    """The study's record: a new one from the flags, or the saved one for --resume. Light."""
    from study import preflight, record

    if opts.resume or opts.extend:
        resumed = record.for_extend(opts) if opts.extend else record.for_resume(opts)
        # the sources are read again by the resumed searcher: one that went away is said here
        _say(preflight.check_warm_start(resumed.settings, resumed.folder.parent, resumed.space))
        return resumed
    space = record.resolve_space(opts)
    preflight.check_space(space)
    preflight.check_replay(opts, space.study)
    _say(preflight.check_warm_start(opts, opts.out, space))
    return record.new_record(opts, space)


def _say(line: str) -> None:
    if line:
        print(line, flush=True)


def run_study(opts: StudyOptions) -> dict[str, Any]:
    """Runs (or resumes) a study; returns its summary."""
    rec = resolve(opts)
    from study import preflight
    from study.phases import finish, search

    preflight.check_storage(rec.stores.storage_path)
    preflight.check_setup(rec.space, preflight.check_space(rec.space), local=rec.resources.address is None,
                          gpus_per_trial=rec.resources.gpus_per_trial)
    if not opts.resume:
        preflight.check_no_stale_experiments(rec)
    if opts.extend:
        rec = search.extend(rec)
    elif not opts.resume:
        rec = search.start(rec)
    space = rec.space
    from study.phases.finalists import plan

    ending = plan(space.study)
    then = f"; then {ending.count} finalist(s) again with {ending.seeds} new seed(s) each ({ending.epochs} epochs" \
        + (" of the budget)" if space.study.epoch_budget is not None else ")") if ending.on else ""
    grown = f" extended {rec.extensions[-1].line()}; now" if opts.extend else ""
    print(f"study {rec.name}{grown}: space {space.name}, {space.study.num_samples} samples + {len(space.baselines)} "
          f"baseline(s), max {space.study.max_epochs} epochs, policy {rec.settings.policy}{then}; "
          f"folder {rec.folder}", flush=True)
    from study.session import StudySession
    from study.summary import print_summary
    from study.tracking import FRONT_TAG, RANK_METRIC

    try:
        with StudySession(rec, resume=opts.resume, extending=opts.extend) as session:
            searched = search.run(session)
            session.analysis = searched.analysis
            if searched.interrupted:
                raise KeyboardInterrupt
            assert session.queue is not None
            summary = finish.finish(rec, searched.analysis, session.queue)
            # What the study found and where it is come first; then the wait for MLflow, if any.
            tracker = session.queue.tracker
            front = (FRONT_TAG, summary["objectives"][1][0]) if summary.get("front") is not None else None
            print_summary(summary, tracker.runs_url(RANK_METRIC, front) if tracker.parent_run_id else None)
            healthy = session.settle(searched.analysis)
            if opts.confirm_seeds:  # in the same Ray
                from study.phases.confirm import run_confirmation

                run_confirmation(session.record, opts.confirm_seeds)
    except KeyboardInterrupt:
        print(f"interrupted; continue with: python -m study.run --name {rec.name} --out {rec.folder.parent} "
              "--resume", file=sys.stderr)
        raise
    if opts.report:
        report_or_warn(session.record, mlflow=healthy)
    return summary


def report_or_warn(rec: StudyRecord, mlflow: bool) -> None:
    """Writes the study's report; a failure here loses nothing already recorded, so it is told,
    not raised."""
    from study.reporting import write_report

    try:
        path = write_report(rec, mlflow=mlflow)
    except Exception as err:
        print(f"warning: the report failed ({type(err).__name__}: {err}); the study's results are kept. "
              f"Retry with: python -m study.report --name {rec.name} --out {rec.folder.parent}", file=sys.stderr)
        return
    print(f"\nReport: {path}\n        {path.with_suffix('.md')} (and in MLflow: the parent run's report/ artifacts)")


def main(argv: list[str] | None = None) -> int:
    """`python -m study.run`; returns the exit code."""
    opts = parse_options(argv)
    try:
        run_study(opts)
    except StudyInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # run_study said how to continue
        return 130
    return 0


# ---------------------------------------------------------------- python -m study.report


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.report",
                                description="Write the ablation report of a study (and, with --confirm-seeds, "
                                            "rerun the best configuration and one-factor variations first).")
    p.add_argument("--name", required=True, help="the study's name (its folder under --out)")
    p.add_argument("--out", default="runs", help="study folder root (default: %(default)s)")
    p.add_argument("--confirm-seeds", type=non_negative_int, default=0, metavar="N",
                   help="rerun the best config and one-factor variations with N seeds, no early stopping")
    p.add_argument("--images", type=positive_int, default=4, help="validation images in the attention pictures")
    p.add_argument("--no-pictures", dest="pictures", action="store_false", help="skip the attention pictures")
    p.add_argument("--no-mlflow", dest="mlflow", action="store_false",
                   help="do not log the report to MLflow or check the runs against it")
    return p


def report_main(argv: list[str] | None = None) -> int:
    """`python -m study.report`; returns the exit code."""
    args = report_parser().parse_args(argv)
    from study import record

    try:
        rec = record.load(record.study_folder(args.out, args.name))
        from study.preflight import check_storage

        check_storage(rec.stores.storage_path)
        if args.confirm_seeds:
            from study.phases.confirm import run_confirmation

            run_confirmation(rec, args.confirm_seeds)
            rec = record.load(rec.folder)
        from study.reporting import write_report

        path = write_report(rec, pictures=args.pictures, images=args.images, mlflow=args.mlflow)
    except StudyInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path}\n        {path.with_suffix('.md')}")
    return 0
