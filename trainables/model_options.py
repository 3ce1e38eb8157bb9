"""The RRA model's options, without torch: the one definition of every architecture field.

`trainables.model.RRAConfig` is these options plus the number of classes; `TrialConfig`
inherits them too, so a new model option is one field here (with its check) and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from trainables import names

Refine = Literal["repeat", "zoom"]
Peak = Literal["energy", "cam"]
REFINE: tuple[str, ...] = ("repeat", "zoom")
PEAK: tuple[str, ...] = ("energy", "cam")


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Architecture of an RRA model. Defaults are a small CPU-sized model.

    Attributes:
        local_backbone: None: the global backbone's architecture (with unshared weights).
        refine: "repeat" feeds the same patch at every step (the paper's code); "zoom" (this
            project's own variant) re-crops inside the previous crop by `zoom_ratio`.
        peak: how the activation map that places the crop is computed: "energy" is the mean
            over channels of the feature map; "cam" is the class activation map of the top
            predicted class (Zhou et al. 2016). Ignored when boxes are given.
    """

    backbone: str = "tiny"
    local_backbone: str | None = None
    weights: str = "none"
    add_on: bool = False
    add_on_channels: int = 1024
    local_stream: bool = True
    recursion_steps: int = 4
    crop_scale: float = 0.4
    attention_temperature: float = 1.0
    refine: Refine = "repeat"
    zoom_ratio: float = 0.75
    patch_size: int = 64
    lstm_hidden: int = 128
    lstm_layers: int = 2
    xent_coef: float = 1.0
    peak: Peak = "energy"

    def __post_init__(self) -> None:
        for key in ("backbone", "local_backbone"):
            name = getattr(self, key)
            if name is not None and name not in names.BACKBONES:
                raise ValueError(f"{key}: unknown backbone {name!r}; known: {', '.join(names.BACKBONES)}")
        for key, allowed in (("refine", REFINE), ("peak", PEAK)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}: expected one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        checks = {
            "recursion_steps": (self.recursion_steps >= 1, "an integer >= 1"),
            "crop_scale": (0.0 < self.crop_scale <= 1.0, "a value in (0, 1]"),
            "attention_temperature": (self.attention_temperature > 0.0, "a positive value"),
            "zoom_ratio": (0.0 < self.zoom_ratio <= 1.0, "a value in (0, 1]"),
            "patch_size": (self.patch_size >= 8, "an integer >= 8"),
            "lstm_hidden": (self.lstm_hidden >= 1, "an integer >= 1"),
            "lstm_layers": (self.lstm_layers >= 1, "an integer >= 1"),
            "add_on_channels": (self.add_on_channels >= 1, "an integer >= 1"),
        }
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"{key}: expected {expected}, got {getattr(self, key)!r}")
        self._check_weights()

    def _check_weights(self) -> None:
        """Named weights need a backbone that has them (a local .pth is checked when loaded)."""
        w = self.weights
        if w == "none" or w.endswith((".pth", ".pt")) or "/" in w:
            return
        for key in ("backbone", "local_backbone"):
            name = getattr(self, key)
            if name is not None and name not in names.PRETRAINED:
                raise ValueError(f"weights: backbone {name!r} has no pretrained weights {w!r}; "
                                 "use 'none' or a .pth file")

    @classmethod
    def option_names(cls) -> list[str]:
        """The model fields (those a TrialConfig shares with RRAConfig)."""
        return [f.name for f in fields(ModelOptions)]
