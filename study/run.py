"""The study command: ``python -m study.run --space ablation [flags]``.

Ray Tune runs the trials (a local Ray by default, ``--address auto`` joins a cluster), Optuna
proposes configurations, ASHA stops weak trials early, MLflow records every trial. This module
only parses flags (no heavy imports, so ``--help`` and flag errors answer at once) and hands a
StudyOptions to `study.runner.run_study`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

SEARCHER_NAMES = ("optuna", "random", "optuna-stock")
SCHEDULER_NAMES = ("asha", "fifo")


@dataclass(frozen=True)
class StudyOptions:
    """Everything the command line sets; None means: the space's (or the built-in) default."""

    space: str
    name: str | None = None
    resume: bool = False
    dataset: str | None = None
    data_dir: str | None = None
    backbone: str | None = None
    num_samples: int | None = None
    max_epochs: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    num_cpus: int | None = None
    concurrency: int | None = None
    address: str | None = None
    out: str = "runs"
    storage: str | None = None
    tracking_uri: str | None = None
    optuna_storage: str | None = None
    seed: int = 0
    scheduler: str = "asha"
    searcher: str = "optuna"
    max_failures: int = 2
    reuse_actors: bool = True
    baselines: bool = True
    evaluate_test: bool = True
    verbose: int = 1
    report: bool = True
    confirm_seeds: int = 0


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m study.run",
        description="Run an RRA hyperparameter study: Ray Tune + Optuna + ASHA + MLflow.",
        epilog="The embedded default (no flags but --space) runs on a laptop: local Ray, CPU, synthetic data, "
               "a SQLite MLflow store in the working directory.",
    )
    p.add_argument("--space", default="ablation", help="search space name in search_spaces/ or a YAML path "
                   "(default: %(default)s)")
    p.add_argument("--name", help="study name (default: SPACE-DATE-TIME; with --resume: the latest study of SPACE)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study (same --name and --out)")
    data = p.add_argument_group("data and model (override the space's constants)")
    data.add_argument("--dataset", help="synthetic, cub, stanford_cars, fgvc_aircraft, stanford_dogs, imagefolder")
    data.add_argument("--data-dir", help="dataset folder (on every node that runs trials)")
    data.add_argument("--backbone", help="tiny, resnet18, resnet50, vgg19")
    budget = p.add_argument_group("budget (override the space's study block)")
    budget.add_argument("--num-samples", type=positive_int, help="sampled trials, besides the baselines")
    budget.add_argument("--max-epochs", type=positive_int, help="epochs of a full trial (ASHA's max_t)")
    res = p.add_argument_group("resources")
    res.add_argument("--cpus-per-trial", type=non_negative_float, default=1.0, help="default: %(default)s")
    res.add_argument("--gpus-per-trial", type=non_negative_float, default=0.0,
                     help="fractional allowed, e.g. 0.5 (default: %(default)s)")
    res.add_argument("--num-cpus", type=positive_int, help="CPUs of the local Ray (default: all)")
    res.add_argument("--concurrency", type=positive_int, help="max trials at once (default: as resources allow)")
    where = p.add_argument_group("where things go")
    where.add_argument("--address", help="Ray address: none starts a local Ray; 'auto' joins a running cluster")
    where.add_argument("--out", default="runs", help="local study folder root (default: %(default)s)")
    where.add_argument("--storage", help="Tune storage: a folder or URI such as s3://bucket/path "
                       "(default: the local study folder)")
    where.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://head:5000 "
                       "(default: sqlite:///mlflow.db in the working directory)")
    where.add_argument("--optuna-storage", help="Optuna RDB URI (default: sqlite in the study folder)")
    how = p.add_argument_group("search")
    how.add_argument("--seed", type=int, default=0, help="sampler seed (default: %(default)s)")
    how.add_argument("--scheduler", choices=SCHEDULER_NAMES, default="asha", help="default: %(default)s")
    how.add_argument("--searcher", choices=SEARCHER_NAMES, default="optuna",
                     help="optuna: TPE, ASHA-stopped trials PRUNED in Optuna; random; optuna-stock: Ray's "
                          "OptunaSearch, for comparison (default: %(default)s)")
    how.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial (default: %(default)s)")
    how.add_argument("--no-reuse-actors", dest="reuse_actors", action="store_false",
                     help="start a fresh Ray actor per trial")
    how.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip the space's baselines")
    how.add_argument("--no-test", dest="evaluate_test", action="store_false",
                     help="skip the final test-split evaluation of the best trial")
    how.add_argument("--quiet", dest="verbose", action="store_const", const=0, default=1,
                     help="no live progress table")
    rep = p.add_argument_group("report (also: python -m study.report --name NAME)")
    rep.add_argument("--no-report", dest="report", action="store_false", help="skip the end-of-study report")
    rep.add_argument("--confirm-seeds", type=non_negative_int, default=0, metavar="N",
                     help="then rerun the best config and one-factor variations with N seeds, no early stopping")
    return p


def parse_options(argv: list[str] | None = None) -> StudyOptions:
    """Parses the command line (exits with code 2 on a bad flag, as argparse does)."""
    args = build_parser().parse_args(argv)
    if args.max_failures < 0:
        build_parser().error("--max-failures: expected an integer >= 0")
    return StudyOptions(**vars(args))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    options = parse_options(argv)
    from study.runner import StudyInputError, run_study

    try:
        run_study(options)
    except StudyInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        name = f" --name {options.name}" if options.name else ""
        print(f"interrupted; continue with: python -m study.run --space {options.space}{name} --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

