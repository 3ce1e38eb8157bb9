"""The study record: a study resolved once, at its start, into one file (STUDY/study.json).

It holds the space as resolved with every flag applied, the settings, the resources and where
every store lives. Resume, report and confirmation read this record and nothing else; on
`--resume`, a flag that contradicts it is a one-line error, and only the flags that say where
or how fast to run (those outside `study.options.DEFINING`) may change. No heavy imports.

`_recorded_flags` says where in the record each defining flag's value is; a test keeps its keys
equal to `DEFINING`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from study.errors import StudyInputError
from study.keys import SEARCH
from study.options import DEFINING, StudyOptions
from study.spaces import SearchSpace, SpaceError, load_space, space_from_raw

RECORD_FILE = "study.json"
SPACE_COPY = "space.yaml"  # the space file as the user wrote it, for people to read
FORMAT = 2
# Flags that set the study block's field of the same name (--max-epochs and --objectives do more).
STUDY_FLAGS = ("num_samples", "checkpoint_every", "epoch_budget", "finalists", "finalist_seeds", "ending",
               "race_target")


@dataclass(frozen=True)
class Stores:
    """Where a study's pieces live."""

    folder: str  # the study folder (this record, the Optuna SQLite file by default, summary, report)
    storage_path: str  # Tune's storage root: the experiment is storage_path/name
    optuna_storage: str
    tracking_uri: str
    artifact_location: str | None  # MLflow artifacts of a local store, beside the store

    def tune_path(self, name: str) -> str:
        """Tune's experiment `name` under storage_path: a local folder, or a URI whose query
        (pyarrow's form for an S3-compatible store, `s3://BUCKET/PATH?endpoint_override=HOST:PORT
        &scheme=http`) stays after the path."""
        return join_uri(self.storage_path, name)


def join_uri(base: str, name: str) -> str:
    """`base`/`name`, where base is a local path or a URI that may carry a query string."""
    if "://" not in base:
        return f"{base.rstrip('/')}/{name}"
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))


@dataclass(frozen=True)
class Settings:
    """The search's own settings, as the flags gave them at the study's start (the rest of what
    defines a study is its space, with the flags applied, and its stores). Typed and frozen:
    every reader takes an attribute, never a key with a default restated."""

    seed: int
    policy: str
    searcher: str
    max_failures: int
    reuse_actors: bool
    baselines: bool
    evaluate_test: bool
    trainable: str
    replay_epoch_s: float
    replay_table: str | None
    warm_start: tuple[str, ...]  # earlier studies the sampler starts from (study.warmstart), as given

    @classmethod
    def of(cls, opts: StudyOptions, policy: str) -> Settings:
        """The settings the flags give (`policy`: the flag's, else the space's)."""
        return cls(**{**{f.name: getattr(opts, f.name) for f in dataclasses.fields(cls)}, "policy": policy})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        """Settings as a record holds them; one a record predates takes the flag's default."""
        defaults = StudyOptions()
        values = {f.name: data.get(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(cls)}
        return cls(**{**values, "warm_start": tuple(values["warm_start"])})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Resources:
    """How a study runs now (may differ between a start and a resume)."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    num_cpus: int | None = None
    concurrency: int | None = None
    address: str | None = None
    verbose: int = 1


@dataclass(frozen=True)
class Extension:
    """One `--extend` of a finished study: when, what it added, and the Tune experiment its
    trials run in (the study's own trials run in the experiment named as the study)."""

    experiment: str  # STUDY-extN
    when: str
    num_samples: tuple[int, int]  # before, after
    epoch_budget: tuple[int | None, int | None]  # before, after
    trials: int  # sampled trials the extension runs (the larger count less the trials run before)
    git_revision: str = "unknown"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Extension:
        return cls(**{**data, "num_samples": tuple(data["num_samples"]), "epoch_budget": tuple(data["epoch_budget"])})

    def line(self) -> str:
        """What it added, as the summary, the report and MLflow say it."""
        grew = [f"{name} {a} -> {b}" for name, (a, b) in (("samples", self.num_samples),
                                                            ("epoch budget", self.epoch_budget)) if a != b]
        most = "" if self.epoch_budget[1] is None else "up to "  # the budget may end it before
        return f"{self.when}: {', '.join(grew)} ({most}{self.trials} trial(s) in Tune experiment {self.experiment})"


@dataclass(frozen=True)
class StudyRecord:
    """One study, as resolved at its start (and grown by each `--extend`)."""

    name: str
    space: SearchSpace
    settings: Settings
    stores: Stores
    resources: Resources
    created: str = ""
    experiment_id: str | None = None  # MLflow, once the parent run exists
    parent_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # git revision, library versions
    extensions: tuple[Extension, ...] = ()  # each `--extend`, in order

    @property
    def folder(self) -> Path:
        return Path(self.stores.folder)

    @property
    def experiment(self) -> str:
        """The Tune experiment the study runs trials in now: its own, or its latest extension's."""
        return self.extensions[-1].experiment if self.extensions else self.name

    @property
    def experiments(self) -> tuple[str, ...]:
        """Every Tune experiment of the study's searched trials, in order."""
        return (self.name, *(e.experiment for e in self.extensions))

    @property
    def tune_path(self) -> str:
        """The Tune experiment the study runs trials in now (`experiment`)."""
        return self.stores.tune_path(self.experiment)

    @property
    def tune_paths(self) -> tuple[str, ...]:
        """Every Tune experiment of the study's searched trials (what its results read)."""
        return tuple(self.stores.tune_path(name) for name in self.experiments)

    @property
    def confirm_path(self) -> str:
        return self.stores.tune_path(f"{self.experiment}-confirm")

    @property
    def finalists_path(self) -> str:
        """The ending's re-runs (an extension's ending runs its new re-runs in its own)."""
        return self.stores.tune_path(f"{self.experiment}-finalists")

    @property
    def train_seed(self) -> int:
        """Every searched trial's training seed (re-runs take the next ones)."""
        return int(self.constant("seed"))

    def constant(self, key: str) -> Any:
        """A trial setting of the space (a constant), else the trial's own default
        (trainables.config.TrialConfig)."""
        from trainables.config import TrialConfig

        return self.space.constants.get(key, getattr(TrialConfig, key))

    @property
    def metric(self) -> str:
        return self.space.study.metric

    @property
    def mode(self) -> str:
        return self.space.study.mode

    @property
    def max_epochs(self) -> int:
        return self.space.study.max_epochs

    def expected_trials(self) -> int:
        """The trials of the experiment the study runs now: the samples and the baselines, or
        an extension's added samples (the baselines ran at the start)."""
        if self.extensions:
            return self.extensions[-1].trials
        return self.space.study.num_samples + len(self.space.baselines)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "space_name": self.space.name, "space_file": str(self.space.path),
                "space": self.space.to_raw(), "settings": self.settings.to_json(),
                "stores": dataclasses.asdict(self.stores), "resources": dataclasses.asdict(self.resources),
                "created": self.created,
                "experiment_id": self.experiment_id, "parent_run_id": self.parent_run_id, "extra": self.extra,
                "extensions": [dataclasses.asdict(e) for e in self.extensions]}

    def save(self) -> None:
        """Writes the record atomically (a crash never leaves half a record)."""
        path = self.folder / RECORD_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        os.replace(tmp, path)


def load(folder: Path) -> StudyRecord:
    """The record of the study in `folder` (a one-line error if it is missing or unreadable)."""
    path = folder / RECORD_FILE
    if not path.is_file():
        raise StudyInputError(f"no study {folder.name!r} in {folder.parent} ({path} is missing)")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise StudyInputError(f"{path}: a study record of another format ({data.get('format')!r}); "
                                  f"this version reads format {FORMAT}")
        space = space_from_raw(data["space"], data["space_name"], Path(data["space_file"]))
        return StudyRecord(name=data["name"], space=space, settings=Settings.from_json(data["settings"]),
                           stores=Stores(**data["stores"]),
                           resources=Resources(**data["resources"]), created=data["created"],
                           experiment_id=data["experiment_id"], parent_run_id=data["parent_run_id"],
                           extra=data.get("extra", {}),
                           extensions=tuple(Extension.from_json(e) for e in data.get("extensions", [])))
    except (KeyError, TypeError, ValueError, SpaceError) as err:
        if isinstance(err, StudyInputError):
            raise
        raise StudyInputError(f"{path}: not a readable study record ({err})") from None


def study_folder(out: str, name: str) -> Path:
    """The folder of study `name` under `out`."""
    return Path(out).expanduser().resolve() / name


# ---------------------------------------------------------------- a new study


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
    if opts.train_seed is not None:
        constants["seed"] = opts.train_seed
    for key in ("data_dir", "boxes_file", "test_boxes_file"):
        # Trials may run in another working directory: make local paths absolute.
        if constants.get(key) and "://" not in str(constants[key]):
            constants[key] = str(Path(constants[key]).expanduser().resolve())
    study = space.study
    if opts.max_epochs is not None:
        study = dataclasses.replace(study, max_epochs=opts.max_epochs,
                                    grace_period=min(study.grace_period, opts.max_epochs))
    given = {key: getattr(opts, key) for key in STUDY_FLAGS if getattr(opts, key) is not None}
    study = dataclasses.replace(study, **given)
    if opts.objectives is not None:
        (metric, mode), *costs = opts.objectives
        study = dataclasses.replace(study, metric=metric, mode=mode, objectives=opts.objectives if costs else ())
    if len(study.objective_list()) > 1 and opts.searcher == "optuna-stock":
        raise StudyInputError("--searcher optuna-stock takes one objective: use optuna or random with objectives")
    if study.epoch_budget is not None and study.epoch_budget < study.max_epochs:
        raise StudyInputError(f"epoch budget {study.epoch_budget} is less than one full trial ({study.max_epochs} "
                              "epochs): raise --epoch-budget or lower --max-epochs")
    baselines = space.baselines if opts.baselines and opts.searcher != "optuna-stock" else {}
    return with_threads(dataclasses.replace(space, constants=constants, study=study, baselines=baselines),
                        opts.cpus_per_trial)


def with_threads(space: SearchSpace, cpus_per_trial: float) -> SearchSpace:
    """The space with each trial's torch threads following the CPUs Ray gives it (so trials do
    not oversubscribe cores): set at the start, and again at a resume with --cpus-per-trial."""
    return dataclasses.replace(space, constants={**space.constants, "threads": max(1, int(cpus_per_trial))})


def _name_ok(name: str) -> bool:
    return bool(name) and name.replace("-", "").replace("_", "").replace(".", "").isalnum()


def default_stores(opts: StudyOptions, folder: Path) -> Stores:
    """The stores of a new study: the user's, else local ones under --out (never the source
    tree, unless --out points there)."""
    out = folder.parent
    tracking = opts.tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
    artifacts = None
    if tracking.startswith("sqlite:///"):
        artifacts = (Path(tracking.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    elif "://" not in tracking or tracking.startswith(("postgresql:", "mysql:", "mssql:")):
        artifacts = (out / "mlartifacts").as_uri()  # absolute: not relative to a trial's working directory
    return Stores(folder=str(folder), storage_path=opts.storage or str(out),
                  optuna_storage=opts.optuna_storage or f"sqlite:///{folder / 'optuna.db'}",
                  tracking_uri=tracking, artifact_location=artifacts)


def new_record(opts: StudyOptions, space: SearchSpace) -> StudyRecord:
    """Names a new study and resolves it; refuses to overwrite one that exists."""
    out = Path(opts.out).expanduser().resolve()
    name = opts.name or f"{space.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if not _name_ok(name):
        raise StudyInputError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only")
    folder = out / name
    if (folder / RECORD_FILE).is_file():
        raise StudyInputError(f"study {name!r} already exists in {out}; add --resume to continue it, "
                              "or choose another --name")
    return StudyRecord(name=name, space=space, settings=Settings.of(opts, opts.policy or space.study.policy),
                       stores=default_stores(opts, folder), resources=resources(opts),
                       created=dt.datetime.now().isoformat(timespec="seconds"))


def resources(opts: StudyOptions, recorded: Resources | None = None) -> Resources:
    """The resources to run with: the flags given now, else the recorded ones, else defaults."""
    base = dataclasses.asdict(recorded or Resources())
    now = {k: getattr(opts, k) for k in base if k in opts.given or recorded is None}
    return Resources(**{**base, **now})


# ---------------------------------------------------------------- resume


def find_for_resume(opts: StudyOptions) -> Path:
    """The folder of the study `--resume` continues: --name, else the latest study of --space."""
    out = Path(opts.out).expanduser().resolve()
    if opts.name is not None:
        return out / opts.name
    stem = Path(opts.space).stem
    candidates = sorted((p.parent for p in out.glob(f"*/{RECORD_FILE}") if _space_of(p) == stem),
                        key=lambda p: (p / RECORD_FILE).stat().st_mtime)
    if not candidates:
        raise StudyInputError(f"--resume: no study of space {stem!r} in {out}")
    return candidates[-1]


def _space_of(record_file: Path) -> str | None:
    try:
        return str(json.loads(record_file.read_text()).get("space_name"))
    except (OSError, ValueError, AttributeError):
        return None


def for_resume(opts: StudyOptions) -> StudyRecord:
    """The record of the study to continue, with today's resources; a flag that contradicts
    the record is a one-line error."""
    record = load(find_for_resume(opts))
    _check_flags(opts, record, "--resume")
    res = resources(opts, record.resources)
    return dataclasses.replace(record, resources=res, space=with_threads(record.space, res.cpus_per_trial))


def _check_flags(opts: StudyOptions, record: StudyRecord, verb: str, grows: frozenset[str] = frozenset()) -> None:
    """A defining flag given (other than those in `grows`) equals the record's; else a one-line
    error."""
    recorded = _recorded_flags(record)
    for key in sorted((opts.given & set(DEFINING)) - grows):
        mine, theirs = _comparable(key, getattr(opts, key)), recorded.get(key)
        if mine != theirs:
            flag = "--" + key.replace("_", "-")
            raise StudyInputError(f"{verb}: {flag} {mine} contradicts study {record.name!r}, which was started with "
                                  f"{theirs}; drop the flag (the study keeps its own settings)")


# ---------------------------------------------------------------- extend

GROWS = frozenset({"num_samples", "epoch_budget"})  # the flags `--extend` takes a larger value of


def finished(record: StudyRecord, summary: dict[str, Any] | None) -> bool:
    """Whether the study ran to its end in every experiment it has (`summary`: its saved
    summary, which names the experiments it covers)."""
    return summary is not None and list(summary.get("experiments", [record.name])) == list(record.experiments)


def for_extend(opts: StudyOptions) -> StudyRecord:
    """The record of a finished study grown by `--extend`: a larger `--num-samples` or
    `--epoch-budget`, its new trials to run in a Tune experiment of their own (STUDY-extN),
    today's resources. Light (reads the record and the summary); a one-line error when the study
    is not finished, a flag contradicts it, or nothing would grow."""
    from study import summary as summaries

    record = load(find_for_resume(opts))
    done = summaries.load(record.folder)
    again = f"python -m study.run --name {record.name} --out {record.folder.parent} --resume"
    if not finished(record, done):
        raise StudyInputError(f"--extend: study {record.name!r} did not finish (it was interrupted); resume it "
                              f"first: {again}")
    assert done is not None
    if record.settings.searcher == "optuna-stock":
        raise StudyInputError("--extend: Ray's stock searcher cannot continue a finished study; studies of the optuna "
                              "or random searcher can be extended")
    _check_flags(opts, record, "--extend", GROWS)
    study = record.space.study
    samples = opts.num_samples if opts.num_samples is not None else study.num_samples
    budget = opts.epoch_budget if opts.epoch_budget is not None else study.epoch_budget
    has = f"{study.num_samples} samples" + (f" and a budget of {study.epoch_budget} epochs"
                                             if study.epoch_budget is not None else "")
    if samples < study.num_samples or (budget or 0) < (study.epoch_budget or 0):
        raise StudyInputError(f"--extend adds to a study: study {record.name!r} has {has}; give a larger value")
    if study.epoch_budget is None and budget is not None:
        raise StudyInputError(f"--extend: study {record.name!r} was started without an epoch budget; extend it "
                              "with --num-samples")
    if (samples, budget) == (study.num_samples, study.epoch_budget):
        raise StudyInputError(f"--extend needs a larger --num-samples or --epoch-budget (study {record.name!r} "
                              f"has {has})")
    grown = dataclasses.replace(study, num_samples=samples, epoch_budget=budget)
    run = sum(1 for t in done["trials"] if t["kind"] == SEARCH)
    if samples <= run:
        raise StudyInputError(f"--extend: study {record.name!r} has run {run} sampled trials already; raise "
                              "--num-samples above that")
    reruns = int(done.get("rerun_epochs") or 0)
    searched = int(done["epochs_spent"]) - reruns
    left = grown.search_epochs()  # the budget counts every epoch: the re-runs made so far too
    if left is not None and left - reruns <= searched:
        raise StudyInputError(f"--extend: study {record.name!r} has spent {searched + reruns} epochs ({reruns} of "
                              f"them re-runs); an epoch budget of {budget} leaves its search nothing after the "
                              "finalists' re-runs; raise --epoch-budget")
    extension = Extension(experiment=f"{record.name}-ext{len(record.extensions) + 1}",
                          when=dt.datetime.now().isoformat(timespec="seconds"),
                          num_samples=(study.num_samples, samples), epoch_budget=(study.epoch_budget, budget),
                          trials=samples - run, git_revision=git_revision())
    res = resources(opts, record.resources)
    space = with_threads(dataclasses.replace(record.space, study=grown), res.cpus_per_trial)
    return dataclasses.replace(record, space=space, resources=res, extensions=(*record.extensions, extension))


def _recorded_flags(record: StudyRecord) -> dict[str, Any]:
    """The value each defining flag has in the record, as the flag would say it."""
    space, stores = record.space, record.stores
    return {
        "space": space.name, "dataset": record.constant("dataset"),
        "data_dir": space.constants.get("data_dir"), "backbone": record.constant("backbone"),
        "num_samples": space.study.num_samples, "max_epochs": space.study.max_epochs,
        "checkpoint_every": space.study.checkpoint_every, "epoch_budget": space.study.epoch_budget,
        "finalists": space.study.finalists, "finalist_seeds": space.study.finalist_seeds,
        "ending": space.study.ending, "race_target": space.study.race_target,
        "train_seed": record.train_seed, "objectives": tuple(space.study.objective_list()),
        "storage": stores.storage_path, "tracking_uri": stores.tracking_uri, "optuna_storage": stores.optuna_storage,
        **record.settings.to_json(),
    }


def _comparable(key: str, value: Any) -> Any:
    if key == "space":
        return Path(str(value)).stem
    if key in ("data_dir", "storage") and value is not None and "://" not in str(value):
        return str(Path(str(value)).expanduser().resolve())
    return value


# ---------------------------------------------------------------- provenance


def git_revision() -> str:
    """The checkout's commit (with -dirty when it has changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=here,
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return rev or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries a study's numbers depend on."""
    out = {}
    for name in ("torch", "torchvision", "ray", "optuna", "mlflow", "pandas", "pyarrow", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out

