"""Search spaces: YAML files in search_spaces/, validated on load.

A space file has five blocks:

    description: one line
    study:        {metric, mode, max_epochs, grace_period, reduction_factor, num_samples, checkpoint_every,
                   policy, epoch_budget, finalists, finalist_seeds, finalist_share, ending, race_target, objectives}
    constants:    trial config keys fixed for every trial
    parameters:   NAME: {type: int|float|categorical, low, high, log, step, choices, when}
    baselines:    NAME: {trial config overrides}   # run once each, outside the sampler
    enqueue:      [{parameter values}, ...]        # the sampler's first points

`when: "recursion_steps > 1"` makes a parameter conditional on an earlier one (Optuna's
define-by-run: an inactive parameter is not sampled and keeps its constant or default).
`max_epochs` is ASHA's max_t and every trial's epoch count. `objectives: {val_acc: max,
cost_flops_per_image: min}` makes a multi-objective study (the metric first, then costs the
trial measures). Every error names the file, the key and what was expected, as one line.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from study.keys import COST_METRICS
from study.names import POLICIES
from trainables import yamlio

if TYPE_CHECKING:
    import optuna

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}
_WHEN = re.compile(r"^\s*([A-Za-z_]\w*)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")


class SpaceError(ValueError):
    """A search space file that does not follow the schema (one line: file, key, expected)."""


@dataclass(frozen=True)
class Condition:
    """`param op value`: when a conditional parameter is active."""

    param: str
    op: str
    value: Any

    def holds(self, values: dict[str, Any]) -> bool:
        return self.param in values and _OPS[self.op](values[self.param], self.value)

    def __str__(self) -> str:
        return f"{self.param} {self.op} {self.value}"


@dataclass(frozen=True)
class Parameter:
    """One searched hyperparameter."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: Condition | None = None

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution this parameter samples from."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "int":
            assert self.low is not None and self.high is not None
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        if self.type == "float":
            assert self.low is not None and self.high is not None
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        return CategoricalDistribution(self.choices)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Samples this parameter on an Optuna trial."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def spec(self) -> dict[str, Any]:
        """The parameter as its YAML mapping (what `load_space` reads back)."""
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            number = int if self.type == "int" else float
            assert self.low is not None and self.high is not None
            out.update(low=number(self.low), high=number(self.high))
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = number(self.step)
        if self.when is not None:
            out["when"] = str(self.when)
        return out

    def contains(self, value: Any) -> bool:
        """Whether `value` is a point of this parameter's range."""
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and not float(value).is_integer():
            return False
        assert self.low is not None and self.high is not None
        return self.low <= value <= self.high


@dataclass(frozen=True)
class StudySettings:
    """Constants of a study, named once: the metric and ASHA's budget."""

    metric: str = "val_acc"
    mode: str = "max"
    max_epochs: int = 10
    grace_period: int = 1
    reduction_factor: float = 3.0
    num_samples: int = 20
    checkpoint_every: int = 1  # full checkpoints every N epochs (and where a trial may stop; its last)
    # the space's policy (study.names.POLICIES); --policy overrides it. The default: adaptive,
    # the least regret on both curve tables of the search benchmark and not significantly worse
    # than random search + FIFO on either (README, Measured)
    policy: str = "adaptive"
    epoch_budget: int | None = None  # the study ends once its trials have run this many epochs in all
    # The noise-aware ending (study.phases.finalists): the best `finalists` trials at max_t are
    # trained again with `finalist_seeds` new seeds each, and the best is named on the mean.
    # With an epoch budget, these re-runs take at most `finalist_share` of it (fewer finalists
    # if they would take more). finalists: 0 turns it off.
    finalists: int = 3
    finalist_seeds: int = 2
    finalist_share: float = 0.2
    # How the re-runs are spent: "fixed", every finalist `finalist_seeds` times; or "race", the
    # same number of runs a round at a time to the finalists that could still be best, from one
    # more trial than `finalists`, until one is the best with probability `race_target`
    # (study.phases.finalists.race).
    ending: str = "fixed"
    race_target: float = 0.9
    # A multi-objective study: the metric and mode first, then costs the trial measures once
    # (keys.COST_METRICS), each with its mode: ((metric, mode), ...). Empty: the metric alone.
    objectives: tuple[tuple[str, str], ...] = ()

    def objective_list(self) -> list[tuple[str, str]]:
        """(metric, mode) of every objective, the study's metric first."""
        return list(self.objectives) or [(self.metric, self.mode)]

    def finalist_count(self) -> int:
        """The finalists these settings re-run: `finalists`, or with an epoch budget as many as fit
        in `finalist_share` of it (0 if not one fits)."""
        if self.epoch_budget is None:
            return self.finalists
        fit = int(self.finalist_share * self.epoch_budget) // (self.finalist_seeds * self.max_epochs)
        return min(self.finalists, fit)

    def directions(self) -> list[Literal["maximize", "minimize"]]:
        """Optuna's direction of every objective ("maximize" or "minimize"), the metric first."""
        return ["maximize" if mode == "max" else "minimize" for _, mode in self.objective_list()]

    def rerun_epochs(self) -> int:
        """The epochs the finalists' re-runs take (`finalist_seeds` full runs of each)."""
        return self.finalist_count() * self.finalist_seeds * self.max_epochs

    def search_epochs(self) -> int | None:
        """The epochs the search itself may run: the budget less the finalists' re-runs (None
        without a budget)."""
        if self.epoch_budget is None:
            return None
        return self.epoch_budget - self.rerun_epochs()


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space file."""

    name: str
    path: Path
    description: str
    study: StudySettings
    constants: dict[str, Any]
    parameters: dict[str, Parameter]
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    enqueue: tuple[dict[str, Any], ...] = ()

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Samples the active parameters, define-by-run (conditions see earlier values)."""
        values: dict[str, Any] = {}
        for p in self.parameters.values():
            if p.when is None or p.when.holds(values):
                values[p.name] = p.suggest(trial)
        return values

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """Every parameter's Optuna distribution."""
        return {name: p.distribution() for name, p in self.parameters.items()}

    def trial_config(self, values: dict[str, Any]) -> dict[str, Any]:
        """The config dict of one trial: constants, then the sampled values, then the budget."""
        return {**self.constants, **values, "epochs": self.study.max_epochs}

    def to_raw(self) -> dict[str, Any]:
        """The space as a mapping of the file's schema, with every override applied: what a
        study records, and what `space_from_raw` reads back into an equal space."""
        study = {**dataclasses.asdict(self.study), "objectives": dict(self.study.objectives)}
        if not self.study.objectives:
            del study["objectives"]
        return {"description": self.description, "study": study,
                "constants": dict(self.constants), "parameters": {n: p.spec() for n, p in self.parameters.items()},
                "baselines": {n: dict(v) for n, v in self.baselines.items()},
                "enqueue": [dict(e) for e in self.enqueue]}


def resolve(name_or_path: str) -> Path:
    """A space name (search_spaces/NAME.yaml) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpaceError(f"{path}: search space file not found")
        return path
    candidate = SPACES_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
        raise SpaceError(f"unknown search space {name_or_path!r}; known: {known} (or a path to a .yaml file)")
    return candidate


def list_spaces() -> list[str]:
    """Names of the spaces shipped in search_spaces/."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str, trial_keys: list[str] | None = None) -> SearchSpace:
    """Loads and validates a space.

    Args:
        name_or_path: a name from search_spaces/ or a YAML path.
        trial_keys: the trial config keys constants, parameters and baselines may set;
            defaults to TrialConfig's fields.

    Raises:
        SpaceError: one line naming the file, the key and what was expected.
    """
    path = resolve(name_or_path)
    try:
        raw = yamlio.load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpaceError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None
    return _Loader(path, trial_keys).space(raw)


def space_from_raw(raw: dict[str, Any], name: str, origin: Path) -> SearchSpace:
    """A space from a mapping of the file's schema (a study record's resolved space).

    Raises:
        SpaceError: as `load_space`, naming `origin`.
    """
    return dataclasses.replace(_Loader(origin, None).space(raw), name=name, path=origin)


class _Loader:
    def __init__(self, path: Path, trial_keys: list[str] | None) -> None:
        self.path = path
        if trial_keys is None:
            from trainables.config import TrialConfig

            trial_keys = TrialConfig.field_names()
        self.trial_keys = set(trial_keys)

    def fail(self, key: str, expected: str, got: Any = None) -> SpaceError:
        tail = f", got {got!r}" if got is not None else ""
        return SpaceError(f"{self.path}: {key}: expected {expected}{tail}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "a mapping", value)
        return value

    def space(self, raw: Any) -> SearchSpace:
        top = self.mapping(raw, "(top level)")
        allowed = {"description", "study", "constants", "parameters", "baselines", "enqueue"}
        for key in top:
            if key not in allowed:
                raise self.fail(str(key), f"one of {', '.join(sorted(allowed))} (unknown block)")
        constants = self.trial_values(self.mapping(top.get("constants"), "constants"), "constants")
        parameters = self.parameters(self.mapping(top.get("parameters"), "parameters"))
        clash = sorted(set(constants) & set(parameters))
        if clash:
            raise self.fail(f"constants.{clash[0]}", "a key that is not also a parameter")
        if "epochs" in constants or "epochs" in parameters:
            raise self.fail("constants.epochs", "no epochs key: study.max_epochs sets every trial's epochs")
        study_block = self.mapping(top.get("study"), "study")
        settings = self.study(study_block)
        baselines = {
            str(name): self.trial_values(self.mapping(v, f"baselines.{name}"), f"baselines.{name}")
            for name, v in self.mapping(top.get("baselines"), "baselines").items()
        }
        if not parameters and "num_samples" not in study_block:
            raise self.fail("parameters", "at least one parameter to search; nothing to search here (a fixed "
                            "point belongs in constants with study.num_samples set, as the paper space does)")
        return SearchSpace(
            name=self.path.stem,
            path=self.path,
            description=str(top.get("description", "")),
            study=settings,
            constants=constants,
            parameters=parameters,
            baselines=baselines,
            enqueue=self.enqueue(top.get("enqueue"), parameters),
        )

    def trial_values(self, values: dict[str, Any], block: str) -> dict[str, Any]:
        for key in values:
            if key not in self.trial_keys:
                raise self.fail(f"{block}.{key}", "a trial config key (see python -m trainables.train --help)")
        return dict(values)

    def study(self, raw: dict[str, Any]) -> StudySettings:
        defaults = StudySettings()
        checks: dict[str, tuple[Callable[[Any], bool], str]] = {
            "metric": (lambda v: isinstance(v, str) and bool(v), "a metric name"),
            "mode": (lambda v: v in ("min", "max"), "min or max"),
            "max_epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "grace_period": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "reduction_factor": (lambda v: _is_number(v) and v > 1, "a number > 1"),
            "num_samples": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "checkpoint_every": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "policy": (lambda v: v in POLICIES, f"one of {', '.join(POLICIES)}"),
            "epoch_budget": (lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 (epochs in all)"),
            "finalists": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: no noise-aware ending)"),
            "finalist_seeds": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "finalist_share": (lambda v: _is_number(v) and 0 < v < 1, "a share of the epoch budget in (0, 1)"),
            "ending": (lambda v: v in ("fixed", "race"), "fixed or race"),
            "race_target": (lambda v: _is_number(v) and 0.5 <= v < 1, "a probability in [0.5, 1)"),
            "objectives": (lambda v: isinstance(v, dict) and all(m in ("min", "max") for m in v.values()),
                           "a mapping of metric to min or max, the study's metric first"),
        }
        for key, value in raw.items():
            if key not in checks:
                raise self.fail(f"study.{key}", f"one of {', '.join(checks)}")
            ok, expected = checks[key]
            if not ok(value):
                raise self.fail(f"study.{key}", expected, value)
        raw = dict(raw)
        if "objectives" in raw:
            raw["objectives"] = self.objectives(raw["objectives"], raw.get("metric", defaults.metric),
                                                raw.get("mode", defaults.mode))
        settings = StudySettings(**{**defaults.__dict__, **raw})
        if settings.grace_period > settings.max_epochs:
            raise self.fail("study.grace_period", f"at most max_epochs ({settings.max_epochs})", settings.grace_period)
        return settings

    def objectives(self, raw: dict[str, str], metric: str, mode: str) -> tuple[tuple[str, str], ...]:
        """A study's objectives: the metric with its mode first, then costs the trial measures."""
        pairs = tuple((str(k), str(v)) for k, v in raw.items())
        if len(pairs) == 1 and pairs[0] == (metric, mode):
            return ()
        if not pairs or pairs[0] != (metric, mode):
            raise self.fail("study.objectives", f"the study's metric first ({metric}: {mode}), then costs",
                            dict(pairs))
        for name, _ in pairs[1:]:
            if name not in COST_METRICS:
                raise self.fail(f"study.objectives.{name}", f"a cost a trial measures ({', '.join(COST_METRICS)})")
        return pairs

    def parameters(self, raw: dict[str, Any]) -> dict[str, Parameter]:
        out: dict[str, Parameter] = {}
        for name, spec in raw.items():
            key = f"parameters.{name}"
            if name not in self.trial_keys:
                raise self.fail(key, "a trial config key (see python -m trainables.train --help)")
            out[name] = self.parameter(name, self.mapping(spec, key), key, out)
        return out

    def parameter(self, name: str, spec: dict[str, Any], key: str, earlier: dict[str, Parameter]) -> Parameter:
        kind = spec.get("type")
        allowed = {"int": {"low", "high", "log", "step"}, "float": {"low", "high", "log", "step"},
                   "categorical": {"choices"}}
        if kind not in allowed:
            raise self.fail(f"{key}.type", "int, float or categorical", kind)
        for k in spec:
            if k not in allowed[kind] | {"type", "when"}:
                raise self.fail(f"{key}.{k}", f"one of type, when, {', '.join(sorted(allowed[kind]))} for {kind}")
        when = self.condition(spec.get("when"), f"{key}.when", earlier)
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise self.fail(f"{key}.choices", "a non-empty list", choices)
            return Parameter(name, kind, choices=tuple(choices), when=when)
        low: Any = spec.get("low")
        high: Any = spec.get("high")
        log, step = spec.get("log", False), spec.get("step")
        number = _is_int if kind == "int" else _is_number
        for k, v in (("low", low), ("high", high)):
            if not number(v):
                raise self.fail(f"{key}.{k}", "an integer" if kind == "int" else "a number", v)
        if not low < high:
            raise self.fail(f"{key}.high", f"a value above low ({low})", high)
        if not isinstance(log, bool):
            raise self.fail(f"{key}.log", "true or false", log)
        if log and low <= 0:
            raise self.fail(f"{key}.low", "a positive value with log: true", low)
        if step is not None and (not number(step) or step <= 0 or log):
            raise self.fail(f"{key}.step", "a positive number, and no step with log: true", step)
        return Parameter(name, kind, float(low), float(high), log, None if step is None else float(step), when=when)

    def condition(self, raw: Any, key: str, earlier: dict[str, Parameter]) -> Condition | None:
        if raw is None:
            return None
        match = _WHEN.match(str(raw))
        if match is None:
            raise self.fail(key, "'<earlier parameter> <op> <value>' with op one of > >= < <= == !=", raw)
        param, op, text = match.groups()
        if param not in earlier:
            raise self.fail(key, f"a parameter defined above this one, got {param!r}")
        return Condition(param, op, yamlio.load(text))

    def enqueue(self, raw: Any, parameters: dict[str, Parameter]) -> tuple[dict[str, Any], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise self.fail("enqueue", "a list of parameter mappings", raw)
        points = []
        for i, point in enumerate(raw):
            point = self.mapping(point, f"enqueue[{i}]")
            for name, value in point.items():
                if name not in parameters:
                    raise self.fail(f"enqueue[{i}].{name}", "a parameter of this space (use baselines for others)")
                if not parameters[name].contains(value):
                    raise self.fail(f"enqueue[{i}].{name}", "a value in the parameter's range", value)
            points.append(dict(point))
        return tuple(points)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
