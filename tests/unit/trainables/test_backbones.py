from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from trainables.backbones import (
    IMAGENET_MEAN,
    UnknownBackboneError,
    WeightsError,
    create_backbone,
    list_backbones,
    normalisation,
)


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_maps_images_to_a_feature_map(name: str) -> None:
    bb = create_backbone(name)
    out = bb.features(torch.randn(2, 3, 64, 64))
    assert out.shape[:2] == (2, bb.out_channels)
    assert out.shape[2] >= 1 and torch.isfinite(out).all()


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(UnknownBackboneError, match=r"known backbones: .*resnet18.*tiny.*vgg19"):
        create_backbone("resnet1000")


def test_vgg_drop_last_pool_doubles_the_map_side() -> None:
    x = torch.randn(1, 3, 64, 64)
    kept = create_backbone("vgg19").features(x)
    dropped = create_backbone("vgg19", drop_last_pool=True).features(x)
    assert dropped.shape[-1] == 2 * kept.shape[-1]


def test_local_weights_file_loads_features_or_whole_model(tmp_path: Path) -> None:
    net = torchvision.models.resnet18()
    whole = tmp_path / "r18.pth"
    torch.save(net.state_dict(), whole)
    bb = create_backbone("resnet18", str(whole))
    assert torch.equal(bb.features[0].weight, net.conv1.weight)
    feats = tmp_path / "tiny.pth"
    src = create_backbone("tiny")
    torch.save(src.features.state_dict(), feats)
    assert torch.equal(create_backbone("tiny", str(feats)).features[0][0].weight, src.features[0][0].weight)


def test_bad_weights_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        create_backbone("tiny", str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="no torchvision weights"):
        create_backbone("tiny", "imagenet")
    with pytest.raises(WeightsError, match=r"unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        create_backbone("resnet18", "IMAGENET9K")
    other = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), other)
    with pytest.raises(WeightsError, match="does not match"):
        create_backbone("tiny", str(other))


def test_imagenet_weights_resolve_through_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No network here: put a state dict where torch hub caches the download, as a user's
    # first download would, and check the backbone loads it and takes its normalisation.
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), cache / Path(weights.url).name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    bb = create_backbone("resnet18", "imagenet")
    assert torch.equal(bb.features[0].weight, reference.conv1.weight)
    assert bb.mean == tuple(weights.transforms().mean)
    assert normalisation("tiny") == (IMAGENET_MEAN, bb.std)


def test_vgg_features_without_weights_are_initialised_as_torchvisions_full_build() -> None:
    # The classifier-free build (`_vgg_features`) repeats torchvision's initialisation of the
    # convolutions: the same layers, zero biases, and per layer the spread torchvision gives
    # (kaiming normal, fan out); a torchvision that initialises otherwise fails here.
    from torch import nn

    from trainables.backbones import _vgg_features

    torch.manual_seed(0)
    ours = _vgg_features(None)
    torch.manual_seed(0)
    full = torchvision.models.vgg19(weights=None).features
    assert [type(m) for m in ours.modules()] == [type(m) for m in full.modules()]
    convs = [(a, b) for a, b in zip(ours.modules(), full.modules(), strict=True) if isinstance(a, nn.Conv2d)]
    assert len(convs) == 16
    for a, b in convs:
        assert a.weight.shape == b.weight.shape and a.weight.device.type == "cpu"
        assert not a.bias.any() and not b.bias.any()
        assert a.weight.std().item() == pytest.approx(b.weight.std().item(), rel=0.1)
        assert abs(a.weight.mean().item()) < 0.1 * a.weight.std().item()
