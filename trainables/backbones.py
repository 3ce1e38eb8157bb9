"""Backbone registry: feature extractors built on torchvision, chosen by name.

Every backbone maps an image batch (B, 3, H, W) to a feature map (B, C, h, w) and knows its
channel count and the normalisation its weights expect. One factory, `create_backbone`, builds
any registered name; an unknown name raises an error that lists the known ones.

Weights are given as a string:
- ``"none"``: random initialisation;
- ``"imagenet"`` or a torchvision weight-enum member name (e.g. ``"IMAGENET1K_V1"``):
  torchvision's pretrained weights (downloaded once into the torch hub cache);
- a path to a local ``.pth`` file holding a state dict of the feature extractor, or of the
  whole torchvision classifier (keys of the classifier head are ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from trainables import names
from trainables.errors import TrialError

Triple = tuple[float, float, float]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    """A feature extractor and what callers need to know about it."""

    features: nn.Module
    out_channels: int
    mean: Triple
    std: Triple


# A builder takes (weights enum or None, drop_last_pool) and returns (features, out_channels).
_Builder = Callable[[object | None, bool], tuple[nn.Module, int]]
_REGISTRY: dict[str, tuple[_Builder, type | None]] = {}


def register_backbone(name: str, weights_enum: type | None = None) -> Callable[[_Builder], _Builder]:
    """Registers a backbone builder under `name` (decorator)."""

    def wrap(fn: _Builder) -> _Builder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        if name not in names.BACKBONES:  # the driver validates configs against that light list
            raise ValueError(f"backbone {name!r} is not listed in trainables.names.BACKBONES")
        _REGISTRY[name] = (fn, weights_enum)
        return fn

    return wrap


def list_backbones() -> list[str]:
    """Names accepted by `create_backbone`, sorted."""
    return sorted(_REGISTRY)


class UnknownBackboneError(TrialError, ValueError):
    """Raised for a backbone name that is not registered."""


class WeightsError(TrialError, ValueError):
    """Weights that do not exist or do not fit the backbone."""


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())}"
        )


def _vgg_features(weights: object | None) -> nn.Module:
    """VGG-19's `features`. Without weights, built as torchvision builds them, without paying for
    the classifier it drops (102M parameters, 90% of the build's time): the whole model on the
    meta device, then its convolutions initialised as torchvision's VGG does, in the same order,
    so that from the same random state the weights are the same (tests/unit/trainables/test_backbones.py
    compares them with a full build, and fails if torchvision's initialisation changes)."""
    if weights is not None:
        return torchvision.models.vgg19(weights=weights).features
    device = torch.get_default_device()  # where a build in this context puts its tensors (CPU, or meta)
    with torch.device("meta"):
        feats = torchvision.models.vgg19(weights=None).features
    feats = feats.to_empty(device=device)
    for module in feats.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)
    return feats


def _vgg19(weights: object | None, drop_last_pool: bool) -> tuple[nn.Module, int]:
    feats = _vgg_features(weights)
    if drop_last_pool:
        # The reference's local stream keeps 14x14 at 224 px by dropping the final max-pool.
        feats = nn.Sequential(*list(feats.children())[:-1])
    return feats, 512


def _resnet(arch: str, channels: int) -> _Builder:
    def build(weights: object | None, drop_last_pool: bool) -> tuple[nn.Module, int]:
        net = getattr(torchvision.models, arch)(weights=weights)
        # Everything up to layer4; ResNets end on a strided block, not a pool, so
        # drop_last_pool has nothing to drop.
        feats = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )
        return feats, channels

    return build


register_backbone("vgg19", torchvision.models.VGG19_Weights)(_vgg19)
register_backbone("resnet18", torchvision.models.ResNet18_Weights)(_resnet("resnet18", 512))
register_backbone("resnet50", torchvision.models.ResNet50_Weights)(_resnet("resnet50", 2048))


@register_backbone("tiny")
def _tiny(weights: object | None, drop_last_pool: bool) -> tuple[nn.Module, int]:
    """Four conv-BN-ReLU stages (16-32-64-96 channels, stride 8): trains fast on a laptop CPU."""

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    feats = nn.Sequential(stage(3, 16, 1), stage(16, 32, 2), stage(32, 64, 2), stage(64, 96, 2))
    return feats, 96


def _resolve_weights(name: str, weights: str, need_file: bool = True) -> tuple[object | None, Path | None]:
    """Splits a weights string into a torchvision enum member or a local file (which must exist
    when `need_file`)."""
    if weights == "none":
        return None, None
    enum = _REGISTRY[name][1]
    if weights.endswith((".pth", ".pt")) or "/" in weights:
        path = Path(weights).expanduser()
        if need_file and not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        return None, path
    if enum is None:
        raise WeightsError(f"backbone {name!r} has no torchvision weights; use 'none' or a .pth file")
    member = "DEFAULT" if weights == "imagenet" else weights
    try:
        return enum[member], None  # type: ignore[index]
    except KeyError:
        known = ", ".join(["imagenet", *(m.name for m in enum)])  # type: ignore[attr-defined]
        raise WeightsError(
            f"unknown weights {weights!r} for backbone {name!r}; known: {known}, none, or a .pth"
        ) from None


def _load_local(features: nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = features.state_dict()
    # Accept a features-only state dict or a whole torchvision model's ("features.0.weight",
    # "layer1.0.conv1.weight"): map the model's keys onto our Sequential by position.
    if set(own) <= set(state):
        features.load_state_dict({k: state[k] for k in own})
        return
    stripped = {k.removeprefix("features."): v for k, v in state.items()}
    if set(own) <= set(stripped):
        features.load_state_dict({k: stripped[k] for k in own})
        return
    candidates = [v for k, v in state.items() if not k.startswith(("fc.", "classifier."))]
    if len(candidates) != len(own):
        raise WeightsError(f"weights file {path} does not match this backbone's layers")
    features.load_state_dict(dict(zip(own, candidates, strict=True)))


def create_backbone(name: str, weights: str = "none", drop_last_pool: bool = False) -> Backbone:
    """Builds a registered backbone's feature extractor.

    Args:
        name: a registered name (see `list_backbones`).
        weights: ``"none"``, ``"imagenet"``, a torchvision weight-enum member name, or a .pth path.
        drop_last_pool: remove a trailing max-pool (VGG's), as the reference's local stream does.
    """
    _check_name(name)
    enum_member, path = _resolve_weights(name, weights)
    builder = _REGISTRY[name][0]
    features, channels = builder(enum_member, drop_last_pool)
    if path is not None:
        _load_local(features, path)
    return Backbone(features, channels, *_mean_std(enum_member))


def check_weights(name: str, weights: str = "none") -> None:
    """Raises WeightsError when backbone `name` cannot have `weights` (no such file, no such
    torchvision weights), without building the network or downloading anything."""
    _check_name(name)
    _resolve_weights(name, weights)


def normalisation(name: str, weights: str = "none") -> tuple[Triple, Triple]:
    """Mean and std the backbone's weights expect, without building the network (or reading a
    weights file: a checkpoint's model is evaluated without it)."""
    _check_name(name)
    return _mean_std(_resolve_weights(name, weights, need_file=False)[0])


def _mean_std(enum_member: object | None) -> tuple[Triple, Triple]:
    if enum_member is None:
        return IMAGENET_MEAN, IMAGENET_STD
    transforms = enum_member.transforms()  # type: ignore[attr-defined]
    return tuple(transforms.mean), tuple(transforms.std)
