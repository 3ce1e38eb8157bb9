"""TrialConfig: everything one trial needs (model, data, optimisation), in one frozen dataclass.

Built from a flat dict (a Ray Tune sample, a YAML file, command-line flags) by
`TrialConfig.from_dict`, which rejects unknown keys and invalid values with a message that
names the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from trainables import names
from trainables.errors import TrialError
from trainables.model_options import ModelOptions

if TYPE_CHECKING:
    from trainables.data.synthetic import SyntheticSpec
    from trainables.model import RRAConfig

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["step", "cosine", "constant"]
Amp = Literal["none", "bf16", "fp16"]


_CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": names.DATASETS,
    "augment": names.AUGMENTATIONS,
    "crop_source": ("peak", "box"),
    "optimizer": ("sgd", "adamw"),
    "schedule": ("step", "cosine", "constant"),
    "amp": ("none", "bf16", "fp16"),
}


class ConfigError(TrialError, ValueError):
    """A trial config with an unknown key or an invalid value."""


@dataclass(frozen=True, kw_only=True)
class TrialConfig(ModelOptions):
    """One trial: the model options (inherited from `ModelOptions`), data, optimisation and
    hardware. Defaults: the embedded CPU default (synthetic data, tiny backbone)."""

    # data
    dataset: str = "synthetic"
    data_dir: str | None = None
    boxes_file: str | None = None  # the reference code's .npy boxes of the train split
    test_boxes_file: str | None = None  # ... and of the test split
    crop_source: Literal["peak", "box"] = "peak"
    image_size: int = 64
    val_fraction: float = 0.15
    split_seed: int = 0  # the validation split's seed: fixed per study, so `seed` varies training only
    augment: str = "flip"
    synthetic_classes: int = 10
    synthetic_images_per_class: int = 120
    synthetic_test_images_per_class: int = 40
    synthetic_seed: int = 0
    synthetic_distractors: int = 3
    synthetic_distractor_contrast: float = 0.7
    num_workers: int = 0
    # on-disk datasets: images decoded and resized once per node, into "auto" (the node's
    # temporary folder) or a folder given here; "off" decodes them in every epoch
    image_cache: str = "auto"
    # optimisation
    optimizer: Optimizer = "adamw"
    lr: float = 0.002
    global_lr: float | None = None  # None: same as lr
    momentum: float = 0.9
    weight_decay: float = 0.01
    schedule: Schedule = "cosine"
    milestones: tuple[int, ...] = (30, 60)
    gamma: float = 0.1
    epochs: int = 15
    batch_size: int = 32
    seed: int = 0
    # hardware
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Amp = "none"
    channels_last: bool = False
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}: expected one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        positive = ("image_size", "epochs", "batch_size", "lr")
        for key in positive:
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key}: expected a positive value, got {getattr(self, key)!r}")
        if self.global_lr is not None and self.global_lr <= 0:
            raise ConfigError(f"global_lr: expected a positive value or null, got {self.global_lr!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction: expected a value in (0, 1), got {self.val_fraction!r}")
        if self.num_workers < 0 or self.threads < 0 or self.weight_decay < 0:
            raise ConfigError("num_workers, threads and weight_decay must be >= 0")
        if not self.image_cache:
            raise ConfigError('image_cache: expected "auto", "off" or a folder')
        if self.dataset != "synthetic" and not self.data_dir:
            raise ConfigError(f"data_dir: dataset {self.dataset!r} needs a data_dir")
        if self.dataset == "synthetic":
            self.synthetic_spec()  # its own range checks, now rather than in every trial

    def synthetic_spec(self) -> SyntheticSpec:
        """The synthetic dataset this config asks for (ConfigError if out of range)."""
        from trainables.data.synthetic import SyntheticSpec

        try:
            return SyntheticSpec(num_classes=self.synthetic_classes, images_per_class=self.synthetic_images_per_class,
                                 test_images_per_class=self.synthetic_test_images_per_class,
                                 image_size=self.image_size, seed=self.synthetic_seed,
                                 distractors=self.synthetic_distractors,
                                 distractor_contrast=self.synthetic_distractor_contrast)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the settable fields."""
        return [f.name for f in dataclasses.fields(cls) if f.init]

    @classmethod
    def text_keys(cls) -> set[str]:
        """Fields whose values are free text (names, paths)."""
        return {f.name for f in dataclasses.fields(cls) if str(f.type) in ("str", "str | None")}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Builds a config; unknown keys and wrong types raise ConfigError naming the key."""
        known = set(cls.field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown trial config key(s): {', '.join(unknown)}")
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        clean = {k: _coerce(k, v, str(hints[k])) for k, v in values.items()}
        try:
            return cls(**clean)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def differences(self, other: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
        """Keys whose values differ from `other` (a `to_dict()` result), except `ignore`d ones."""
        mine = self.to_dict()
        return sorted(k for k in mine if k not in ignore and other.get(k) != mine[k])

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain values (for logging)."""
        out = {k: getattr(self, k) for k in self.field_names()}
        out["milestones"] = list(self.milestones)
        return out

    def model_config(self, num_classes: int) -> RRAConfig:
        """The model part of the config."""
        from trainables.model import RRAConfig

        try:
            return RRAConfig(num_classes=num_classes, **{k: getattr(self, k) for k in ModelOptions.option_names()})
        except ValueError as err:
            raise ConfigError(str(err)) from None


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """A trial config dict without the keys a study adds for its own bookkeeping (those that
    start with "_": the trial's kind, run name, searched values)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _coerce(key: str, value: Any, hint: str) -> Any:
    """Accepts the types YAML and Ray produce (numpy scalars, ints for floats, lists)."""
    if value is None:
        if "None" not in hint:
            raise ConfigError(f"{key}: expected a value, got null")
        return None
    if hasattr(value, "item") and not isinstance(value, (list, tuple, str)):
        value = value.item()  # numpy scalar from a sampler
    base = hint.replace(" | None", "")
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if base == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if base.startswith("tuple"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
            raise ConfigError(f"{key}: expected a list of integers, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value
