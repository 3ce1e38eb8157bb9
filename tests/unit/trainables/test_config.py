from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.config import ConfigError, TrialConfig


def test_defaults_are_the_embedded_cpu_default() -> None:
    cfg = TrialConfig()
    assert (cfg.dataset, cfg.backbone, cfg.device) == ("synthetic", "tiny", "auto")


def test_from_dict_accepts_sampler_types_and_round_trips() -> None:
    cfg = TrialConfig.from_dict({"recursion_steps": np.int64(5), "crop_scale": np.float64(0.3),
                                 "lr": 1, "milestones": [3, 6]})
    assert cfg.recursion_steps == 5 and isinstance(cfg.recursion_steps, int)
    assert cfg.lr == 1.0 and cfg.milestones == (3, 6)
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"recursion_step": 3}, "unknown trial config key.*recursion_step"),
        ({"recursion_steps": 2.5}, "recursion_steps: expected an integer"),
        ({"local_stream": "yes"}, "local_stream: expected true or false"),
        ({"crop_scale": 0}, "crop_scale"),
        ({"optimizer": "lion"}, "optimizer: expected one of sgd, adamw"),
        ({"backbone": "vit"}, "backbone: unknown backbone 'vit'; known: .*tiny"),
        ({"dataset": "cub"}, "data_dir: dataset 'cub' needs a data_dir"),
        ({"dataset": "imagenet"}, "dataset: expected one of synthetic, cub"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"epochs": None}, "epochs: expected a value"),
        ({"augment": "rotate"}, "augment: expected one of none, flip, flip_crop"),
        ({"synthetic_classes": 17}, r"synthetic num_classes must be in \[2, 16\]"),
        ({"weights": "imagenet"}, "weights: backbone 'tiny' has no pretrained weights"),
        ({"refine": "spiral"}, "refine: expected one of repeat, zoom"),
        ({"local_backbone": "vit"}, "local_backbone: unknown backbone 'vit'"),
    ],
)
def test_bad_values_name_the_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_dict(values)


def test_differences_lists_changed_keys() -> None:
    cfg = TrialConfig()
    other = TrialConfig(recursion_steps=7, threads=2).to_dict()
    assert cfg.differences(other, ignore=("threads",)) == ["recursion_steps"]


def test_the_paper_example_config_builds_the_reference_architecture() -> None:
    import dataclasses
    from pathlib import Path

    import yaml

    from trainables.model import build_model, count_parameters

    values = yaml.safe_load((Path(__file__).parents[3] / "docs/examples/paper_cub.yaml").read_text())
    cfg = TrialConfig.from_dict(values)
    model_cfg = dataclasses.replace(cfg.model_config(num_classes=200), weights="none")  # no download in tests
    with torch.device("meta"):  # shapes only: no 46M weights to initialise
        assert count_parameters(build_model(model_cfg)) == 46_134_289


def test_model_options_are_defined_once() -> None:
    """TrialConfig and RRAConfig inherit every model field from ModelOptions (one edit adds an
    option to both), and a TrialConfig's model part is exactly those fields."""
    import dataclasses

    from trainables.model import RRAConfig
    from trainables.model_options import ModelOptions

    options = set(ModelOptions.option_names())
    assert options <= set(TrialConfig.field_names())
    assert {f.name for f in dataclasses.fields(RRAConfig)} == options | {"num_classes"}
    cfg = TrialConfig(recursion_steps=7, crop_scale=0.3, refine="zoom")
    model = cfg.model_config(num_classes=5)
    assert {k: getattr(model, k) for k in options} == {k: getattr(cfg, k) for k in options}


def test_the_light_name_registries_match_the_real_ones() -> None:
    """The driver validates names against trainables.names (no torch); every name there has a
    builder, and every builder a name."""
    from trainables import names
    from trainables.backbones import list_backbones
    from trainables.data.augment import AUGMENTATIONS
    from trainables.data.formats import READERS

    assert tuple(list_backbones()) == names.BACKBONES
    assert tuple(READERS) == names.DATASET_FORMATS
    assert tuple(AUGMENTATIONS) == names.AUGMENTATIONS
    from trainables.registry import TRAINABLES

    assert tuple(TRAINABLES) == names.TRAINABLES


def test_a_registry_refuses_unlisted_and_unknown_names() -> None:
    from trainables.data.formats import READERS
    from trainables.names import Registry

    registry: Registry[int] = Registry("trainable", ("a", "b"))
    registry.register("a", 1)
    with pytest.raises(ValueError, match="not listed"):
        registry.register("c", 3)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a", 2)
    with pytest.raises(ValueError, match="unknown trainable 'b'; known: a"):
        registry["b"]
    with pytest.raises(ValueError, match="unknown dataset format 'cubb'; known: cub, "):
        READERS["cubb"]
