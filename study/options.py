"""What the study command line says: `StudyOptions`, parsed without heavy imports.

`--help` and flag errors answer at once: this module imports the standard library and the
light name registries only. The defaults live once, on `StudyOptions`; the parser leaves out
every flag the user did not give, so `--resume` can tell a flag given from a default.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.names import POLICIES, SEARCHERS
from trainables import names


def _defines(default: Any) -> Any:
    """A flag that defines a study (`DEFINING`): fixed at its start; on --resume a value that
    contradicts the record is refused. The other flags say where or how fast to run."""
    return field(default=default, metadata={"defines": True})


@dataclass(frozen=True)
class StudyOptions:
    """Everything the command line sets; None means: the space's (or the built-in) default.

    `given` names the flags the user actually gave.
    """

    space: str = _defines("ablation")
    name: str | None = None
    resume: bool = False
    extend: bool = False
    dataset: str | None = _defines(None)
    data_dir: str | None = _defines(None)
    backbone: str | None = _defines(None)
    num_samples: int | None = _defines(None)
    max_epochs: int | None = _defines(None)
    checkpoint_every: int | None = _defines(None)
    epoch_budget: int | None = _defines(None)
    finalists: int | None = _defines(None)
    finalist_seeds: int | None = _defines(None)
    ending: str | None = _defines(None)
    race_target: float | None = _defines(None)
    train_seed: int | None = _defines(None)
    objectives: tuple[tuple[str, str], ...] | None = _defines(None)  # None: the space's (study.objectives)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    num_cpus: int | None = None
    concurrency: int | None = None
    address: str | None = None
    out: str = "runs"
    storage: str | None = _defines(None)
    tracking_uri: str | None = _defines(None)
    optuna_storage: str | None = _defines(None)
    seed: int = _defines(0)
    policy: str | None = _defines(None)  # None: the space's study.policy (adaptive unless it names another)
    searcher: str = _defines("optuna")
    max_failures: int = _defines(2)
    reuse_actors: bool = _defines(True)
    baselines: bool = _defines(True)
    evaluate_test: bool = _defines(True)
    verbose: int = 1
    report: bool = True
    confirm_seeds: int = 0
    trainable: str = _defines("rra")
    replay_epoch_s: float = _defines(1.0)
    replay_table: str | None = _defines(None)
    # earlier studies whose trials the sampler starts from (names under --out, folders, or
    # Optuna storage URIs), as given; the record keeps them so, and each reader resolves them
    # against the study's --out (study.warmstart.resolve)
    warm_start: tuple[str, ...] = _defines(())
    given: frozenset[str] = field(default=frozenset(), compare=False)


_DEFAULTS = StudyOptions()
# The flags that define a study, from their declaration above (`_defines`).
DEFINING: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StudyOptions) if f.metadata.get("defines"))


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


def _probability(text: str) -> float:
    value = float(text)
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0.5, 1), got {text}")
    return value


def objectives(text: str) -> tuple[tuple[str, str], ...]:
    """`val_acc:max,cost_flops_per_image:min`: the study's metric first, then costs it measures."""
    from study.keys import COST_METRICS

    pairs = []
    for part in text.split(","):
        name, _, mode = part.strip().partition(":")
        if not name or mode not in ("min", "max"):
            raise argparse.ArgumentTypeError(f"expected METRIC:min or METRIC:max, comma-separated, got {part!r}")
        pairs.append((name, mode))
    for name, _ in pairs[1:]:
        if name not in COST_METRICS:
            raise argparse.ArgumentTypeError(f"an objective after the metric is a cost a trial measures "
                                             f"({', '.join(COST_METRICS)}), got {name!r}")
    return tuple(pairs)


def sources(text: str) -> tuple[str, ...]:
    """`NAME[,NAME...]`: earlier studies (names under --out, study folders, or Optuna storage
    URIs, `sqlite:///PATH#STUDY` where the storage holds several studies)."""
    out = tuple(part.strip() for part in text.split(",") if part.strip())
    if not out:
        raise argparse.ArgumentTypeError("expected a study name, a study folder or an Optuna storage URI")
    return out


def _d(key: str) -> str:
    return f"default: {getattr(_DEFAULTS, key)}"


def build_parser() -> argparse.ArgumentParser:
    """The study command's flags (a flag not given is absent from the parsed namespace)."""
    p = argparse.ArgumentParser(
        prog="python -m study.run", argument_default=argparse.SUPPRESS,
        description="Run an RRA hyperparameter study: Ray Tune + Optuna + ASHA + MLflow.",
        epilog="The embedded default (no flags but --space) runs on a laptop: local Ray, CPU, synthetic data, "
               "a SQLite MLflow store under --out. A study is fixed at its start (STUDY/study.json); --resume "
               "continues it with its own settings, and --extend grows a finished one to a larger --num-samples "
               "or --epoch-budget.",
    )
    p.add_argument("--space", help=f"search space name in search_spaces/ or a YAML path ({_d('space')})")
    p.add_argument("--name", help="study name (default: SPACE-DATE-TIME; with --resume: the latest study of SPACE)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study (same --name and --out)")
    p.add_argument("--extend", action="store_true",
                   help="grow a finished study (same --name and --out) to a larger --num-samples or --epoch-budget: "
                        "the searcher and the policy's rungs know every earlier trial, and the ending runs again")
    p.add_argument("--warm-start", type=sources, metavar="STUDY[,STUDY...]",
                   help="start the sampler from the trials of earlier studies (names under --out, study folders or "
                        "Optuna storage URIs): parameters matched by name and range, stopped trials as stopped")
    data = p.add_argument_group("data and model (override the space's constants)")
    data.add_argument("--dataset", help=", ".join(names.DATASETS))
    data.add_argument("--data-dir", help="dataset folder (on every node that runs trials)")
    data.add_argument("--backbone", help=", ".join(names.BACKBONES))
    budget = p.add_argument_group("budget (override the space's study block)")
    budget.add_argument("--num-samples", type=positive_int, help="sampled trials, besides the baselines")
    budget.add_argument("--max-epochs", type=positive_int, help="epochs of a full trial (ASHA's max_t)")
    budget.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                        help="a trial saves its full state every N epochs, and always at the epochs where the "
                             "policy may stop it and at its last (space default: 1; 5-10 for large models)")
    budget.add_argument("--epoch-budget", type=positive_int, metavar="N",
                        help="end the study once its trials have run N epochs in all, however many of "
                             "--num-samples have started (space default: study.epoch_budget, else no limit)")
    budget.add_argument("--finalists", type=non_negative_int, metavar="K",
                        help="train the best K trials again with new seeds and name the best on the mean "
                             "(the space's study.finalists, 3 unless it says; 0: name the best on one run)")
    budget.add_argument("--finalist-seeds", type=positive_int, metavar="N",
                        help="new seeds per finalist (the space's study.finalist_seeds, 2 unless it says)")
    budget.add_argument("--ending", choices=("fixed", "race"),
                        help="fixed: every finalist gets its new seeds; race: as many runs, a round at a time, to "
                             "the finalists that could still be best (the space's study.ending, fixed unless it says)")
    budget.add_argument("--race-target", type=_probability, metavar="P",
                        help="a race ends once one finalist is the best with probability P (study.race_target, 0.9)")
    res = p.add_argument_group("resources (may change on --resume)")
    res.add_argument("--cpus-per-trial", type=non_negative_float, help=_d("cpus_per_trial"))
    res.add_argument("--gpus-per-trial", type=non_negative_float, help=f"fractional allowed, e.g. 0.5 "
                     f"({_d('gpus_per_trial')})")
    res.add_argument("--num-cpus", type=positive_int, help="CPUs of the local Ray (default: all)")
    res.add_argument("--concurrency", type=positive_int, help="max trials at once (default: as resources allow)")
    res.add_argument("--address", help="Ray address: none starts a local Ray; 'auto' joins a running cluster")
    where = p.add_argument_group("where things go")
    where.add_argument("--out", help=f"study folder root ({_d('out')})")
    where.add_argument("--storage", help="Tune storage: a folder or URI such as s3://bucket/path "
                       "(default: the --out folder)")
    where.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://head:5000 "
                       "(default: sqlite:///OUT/mlflow.db, artifacts in OUT/mlartifacts)")
    where.add_argument("--optuna-storage", help="Optuna RDB URI (default: sqlite in the study folder)")
    how = p.add_argument_group("search")
    how.add_argument("--seed", type=int, help=f"sampler seed ({_d('seed')})")
    how.add_argument("--train-seed", type=int, metavar="N",
                     help="every trial's training seed (the space's constant `seed`, 0 unless it says); "
                          "finalists re-run with N+1, N+2, ...")
    how.add_argument("--policy", "--scheduler", dest="policy", choices=POLICIES,
                     help="scheduler and the searcher it owns: asha stops weak trials early; hyperband: ASHA's "
                          "brackets, drawn uniformly; adaptive: brackets drawn by how well each rung's ranking "
                          "predicts the next; fifo runs every trial to the end (default: the space's "
                          "study.policy, else asha)")
    how.add_argument("--searcher", choices=SEARCHERS,
                     help="optuna: TPE, ASHA-stopped trials PRUNED in Optuna; random; optuna-stock: Ray's "
                          f"OptunaSearch, for comparison ({_d('searcher')})")
    how.add_argument("--objectives", type=objectives, metavar="M:DIR,...",
                     help="a multi-objective study, e.g. val_acc:max,cost_flops_per_image:min: the metric first, "
                          "then costs each trial measures once; ASHA keeps the non-dominated (MO-ASHA) and Optuna "
                          "samples for the front (default: the space's study.objectives, else the metric alone)")
    how.add_argument("--max-failures", type=non_negative_int, help=f"retries of a failed trial ({_d('max_failures')})")
    how.add_argument("--no-reuse-actors", dest="reuse_actors", action="store_false",
                     help="start a fresh Ray actor per trial")
    how.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip the space's baselines")
    how.add_argument("--no-test", dest="evaluate_test", action="store_false",
                     help="skip the final test-split evaluation of the best trials")
    how.add_argument("--quiet", dest="verbose", action="store_const", const=0, help="no live progress table")
    sim = p.add_argument_group("simulated trials (try a study's machinery at scale without training)")
    sim.add_argument("--trainable", choices=names.TRAINABLES,
                     help="rra: train the model; replay: report a learning curve computed from the config, "
                          f"sleeping --replay-epoch-s per epoch ({_d('trainable')})")
    sim.add_argument("--replay-epoch-s", type=non_negative_float, metavar="S",
                     help=f"seconds per simulated epoch ({_d('replay_epoch_s')})")
    sim.add_argument("--replay-table", metavar="FILE", type=lambda text: str(Path(text).expanduser().resolve()),
                     help="replay the recorded curves of a curve table (benchmarks/data/rra_curves.parquet, "
                          "made by python -m benchmarks.tables.curves) instead of the computed one")
    rep = p.add_argument_group("report (also: python -m study.report --name NAME)")
    rep.add_argument("--no-report", dest="report", action="store_false", help="skip the end-of-study report")
    rep.add_argument("--confirm-seeds", type=non_negative_int, metavar="N",
                     help="then rerun the best config and one-factor variations with N seeds, no early stopping")
    return p


def parse_options(argv: list[str] | None = None) -> StudyOptions:
    """Parses the command line (exits with code 2 on a bad flag, as argparse does)."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    if given.get("resume") and given.get("extend"):
        parser.error("--resume continues an interrupted study, --extend a finished one: give one of them")
    return StudyOptions(**given, given=frozenset(given))
