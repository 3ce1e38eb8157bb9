"""A model's inference cost: the FLOP count against a hand count of the whole model (the
backbones' convolutions, the LSTM, the attention, the classifiers and the crops), the fused
LSTM counted as the counter counts an unfused one, and the latency and parameters measured."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from trainables.cost import FLOPS_PER_SAMPLE, forward_flops, measure
from trainables.model import RRA, RRAConfig


def _tiny_convs(size: int) -> int:
    """The tiny backbone's 3x3 convolutions (16-32-64-96 channels, strides 1-2-2-2, padding 1,
    no bias) on a size x size input: 2 FLOPs a multiply-add."""
    flops, cin = 0, 3
    for cout, stride in ((16, 1), (32, 2), (64, 2), (96, 2)):
        size = math.ceil(size / stride)
        flops += 2 * cin * cout * 9 * size * size
        cin = cout
    return flops


def _hand_count(cfg: RRAConfig, image: int) -> int:
    """Every product of a forward pass of one image, counted from the architecture."""
    hidden, steps, classes = cfg.lstm_hidden, cfg.recursion_steps, cfg.num_classes
    looks = 1 if cfg.refine == "repeat" else steps  # zoom runs the local backbone at every step
    lstm = sum(2 * steps * 4 * hidden * ((96 if layer == 0 else hidden) + hidden) for layer in range(cfg.lstm_layers))
    crops = looks * FLOPS_PER_SAMPLE * 3 * cfg.patch_size ** 2  # one bilinear sample a value: crops <= patch
    return (_tiny_convs(image) + 2 * 96 * classes  # global stream and its classifier
            + looks * _tiny_convs(cfg.patch_size) + crops + lstm
            + 2 * steps * hidden  # attention scores
            + 2 * hidden * classes)  # local classifier


@pytest.mark.parametrize("refine", ["repeat", "zoom"])
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_the_flop_count_is_the_hand_count_of_the_whole_model(refine: str, steps: int) -> None:
    # crop scale 0.5 of 64 px: a 32 px crop into a 32 px patch, one sample per value (zoom only shrinks it)
    cfg = RRAConfig(num_classes=10, backbone="tiny", recursion_steps=steps, patch_size=32, lstm_hidden=128,
                    lstm_layers=2, crop_scale=0.5, refine=refine)
    assert forward_flops(RRA(cfg), torch.randn(1, 3, 64, 64)) == _hand_count(cfg, 64)


def test_the_fused_lstm_counts_as_the_counter_counts_an_unfused_one() -> None:
    lstm = torch.nn.LSTM(96, 128, 2, batch_first=True)
    x = torch.randn(3, 10, 96)
    with warnings.catch_warnings():  # oneDNN's TF32 note on a CPU build
        warnings.simplefilter("ignore", UserWarning)
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as unfused:
            lstm(x)
    assert unfused.get_total_flops() > 0
    assert forward_flops(lstm, x) == unfused.get_total_flops()


def test_a_crop_larger_than_its_patch_takes_more_samples() -> None:
    # 0.9 of 64 px is a 57.6 px crop into a 32 px patch: a 2 x 2 grid of samples per value
    small = RRAConfig(num_classes=10, backbone="tiny", recursion_steps=1, patch_size=32, crop_scale=0.5)
    large = RRAConfig(num_classes=10, backbone="tiny", recursion_steps=1, patch_size=32, crop_scale=0.9)
    image = torch.randn(1, 3, 64, 64)
    extra = forward_flops(RRA(large), image) - forward_flops(RRA(small), image)
    assert extra == FLOPS_PER_SAMPLE * 3 * 32 * 32 * (4 - 1)


def test_cost_measures_parameters_latency_and_leaves_the_model_as_it_was() -> None:
    model = RRA(RRAConfig(num_classes=10, backbone="tiny", recursion_steps=3, patch_size=32, lstm_hidden=32))
    model.train()
    cost = measure(model, image_size=64, batch_size=8, repeats=3, warmup=1)
    assert model.training  # back in training mode
    assert cost.parameters == sum(p.numel() for p in model.parameters())
    assert cost.flops_per_image == forward_flops(model, torch.randn(1, 3, 64, 64))
    assert cost.latency_ms_batch1 > 0 and cost.latency_ms_per_image > 0 and cost.peak_memory_mb is None
    metrics = cost.metrics()
    assert metrics["cost_flops_per_image"] == cost.flops_per_image and "cost_device" not in metrics
