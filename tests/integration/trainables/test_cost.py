"""A model's inference cost: the tests that start processes (the rest, and what they share, are in
tests/unit/trainables/test_cost.py)."""

from __future__ import annotations

import pytest
import torch

from trainables.cost import forward_flops
from trainables.model import RRA


@pytest.mark.slow  # the paper model's forward passes (two VGG-19), 15-20 s
def test_at_the_paper_configuration_repeat_pays_for_more_steps_with_the_lstm_only() -> None:
    # The reference code's refine: the local VGG-19 runs once; T = 10 adds 9 steps of a 2-layer
    # LSTM (512 in, 512 hidden) and the attention over them, nothing else
    import dataclasses

    from trainables.model import paper_config

    image = torch.randn(1, 3, 224, 224)  # the global stream at 224 px, not 448: a quarter of its cost
    one, ten = (forward_flops(RRA(paper_config(200, t)), image) for t in (1, 10))
    lstm_step = sum(2 * 4 * 512 * (512 + 512) for _ in range(2))
    assert ten - one == 9 * (lstm_step + 2 * 512)
    assert 77e9 < one < 80e9  # VGG-19 twice at 224 px (about 39 GFLOPs each), the add-on and the rest
    # zoom runs the local VGG-19 (224 px, without its last pool) again at every step
    zoom_two = forward_flops(RRA(dataclasses.replace(paper_config(200, 2), refine="zoom")), image)
    assert 38e9 < zoom_two - forward_flops(RRA(dataclasses.replace(paper_config(200, 1), refine="zoom")), image) < 40e9
