from __future__ import annotations

import dataclasses

import pytest
import torch

from trainables.backbones import list_backbones
from trainables.model import RRAConfig, build_model, count_parameters, paper_config

SMALL = RRAConfig(num_classes=5, patch_size=32, lstm_hidden=16, recursion_steps=3, crop_scale=0.5)


@pytest.mark.parametrize("backbone", list_backbones())
@pytest.mark.parametrize("refine", ["repeat", "zoom"])
def test_output_shapes_for_every_backbone(backbone: str, refine: str) -> None:
    model = build_model(dataclasses.replace(SMALL, backbone=backbone, refine=refine)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == out.global_logits.shape == (2, 5)
    assert out.local_logits is not None and out.local_logits.shape == (2, 5)
    assert out.attention is not None and out.attention.shape == (2, 3)
    assert out.boxes is not None and out.boxes.shape == (2, 3, 4)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("cfg", [SMALL, dataclasses.replace(SMALL, refine="zoom", peak="cam", add_on=True,
                                                            add_on_channels=8)])
def test_every_parameter_gets_a_gradient(cfg: RRAConfig) -> None:
    model = build_model(cfg)
    out = model(torch.randn(3, 3, 32, 32))
    assert out.local_logits is not None
    (out.global_logits.sum() + out.local_logits.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert all(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)


def test_fused_logits_are_global_plus_weighted_local() -> None:
    model = build_model(dataclasses.replace(SMALL, xent_coef=0.3)).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.local_logits is not None
    assert torch.allclose(out.logits, out.global_logits + 0.3 * out.local_logits)


def test_global_only_has_no_local_stream() -> None:
    model = build_model(dataclasses.replace(SMALL, local_stream=False))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.local_logits is None and out.attention is None
    assert torch.equal(out.logits, out.global_logits)
    assert not any(n.startswith(("local_", "lstm", "attention")) for n, _ in model.named_parameters())


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(dim=1).mean()


def test_attention_sums_to_one_and_flattens_as_temperature_rises() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)
    base = build_model(dataclasses.replace(SMALL, recursion_steps=6, refine="zoom", attention_temperature=0.1))
    with torch.no_grad():
        # Spread the attention scores so the temperature has something to act on.
        base.attention.weight.mul_(50.0)
    entropies = []
    for tau in (0.1, 1.0, 10.0, 1000.0):
        model = build_model(dataclasses.replace(base.cfg, attention_temperature=tau))
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            attn = model.eval()(x).attention
        assert attn is not None
        assert torch.allclose(attn.sum(dim=1), torch.ones(4), atol=1e-5)
        entropies.append(float(_entropy(attn)))
    assert entropies == sorted(entropies) and entropies[0] < entropies[-1]
    assert entropies[-1] == pytest.approx(torch.log(torch.tensor(6.0)).item(), abs=1e-3)


@pytest.mark.parametrize("scale", [0.2, 0.5, 1.0])
def test_crops_lie_inside_the_image_at_the_requested_scale(scale: float) -> None:
    model = build_model(dataclasses.replace(SMALL, crop_scale=scale, refine="zoom", zoom_ratio=0.8)).eval()
    with torch.no_grad():
        boxes = model(torch.randn(6, 3, 40, 40)).boxes
    assert boxes is not None
    side = boxes[..., 2] - boxes[..., 0]
    assert torch.allclose(side, boxes[..., 3] - boxes[..., 1])  # square
    assert torch.allclose(side[:, 0], torch.full((6,), 40 * scale))
    assert torch.allclose(side[:, 1], side[:, 0] * 0.8)  # zoom narrows step by step
    assert (boxes >= -1e-4).all() and (boxes <= 40 + 1e-4).all()
    # each step's crop lies inside the previous one
    prev, cur = boxes[:, :-1], boxes[:, 1:]
    assert (cur[..., :2] >= prev[..., :2] - 1e-4).all() and (cur[..., 2:] <= prev[..., 2:] + 1e-4).all()


def test_repeat_looks_at_the_same_crop_every_step() -> None:
    boxes = build_model(SMALL).eval()(torch.randn(2, 3, 32, 32)).boxes
    assert boxes is not None and torch.equal(boxes[:, 0], boxes[:, -1])


def test_given_boxes_centre_the_crop_and_nan_rows_fall_back_to_the_peak() -> None:
    model = build_model(dataclasses.replace(SMALL, crop_scale=0.25)).eval()
    x = torch.randn(2, 3, 64, 64)
    given = torch.tensor([[30.0, 10.0, 40.0, 20.0], [float("nan")] * 4])
    with torch.no_grad():
        boxes = model(x, given).boxes
        peak = model(x).boxes
    assert boxes is not None and peak is not None
    assert torch.allclose(boxes[0, 0], torch.tensor([27.0, 7.0, 43.0, 23.0]))
    assert torch.equal(boxes[1], peak[1])


def test_paper_configuration_has_the_reference_parameter_count() -> None:
    with torch.device("meta"):  # shapes only: no 46M weights to initialise
        assert count_parameters(build_model(paper_config())) == 46_134_289
        # independent of T
        assert count_parameters(build_model(paper_config(recursion_steps=3))) == 46_134_289


@pytest.mark.parametrize("bad", [{"crop_scale": 0.0}, {"crop_scale": 1.5}, {"recursion_steps": 0},
                                 {"attention_temperature": 0.0}, {"refine": "spiral"}])
def test_invalid_model_config_is_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        dataclasses.replace(SMALL, **bad)  # type: ignore[arg-type]


def test_the_local_stream_keeps_channels_last() -> None:
    # roi_align returns a contiguous NCHW batch; the local backbone must still get channels_last.
    model = build_model(SMALL).to(memory_format=torch.channels_last)
    seen: list[torch.Tensor] = []
    model.local_features.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    seen.clear()
    model(torch.randn(2, 3, 64, 64))
    assert seen[0].is_contiguous()  # a plain batch stays plain


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_the_lstm_trains_under_bf16_autocast(device: str) -> None:
    # On CUDA this is cuDNN's LSTM under autocast; on the CPU, PyTorch's own kernels.
    model = build_model(dataclasses.replace(SMALL, lstm_layers=2)).to(device)
    images = torch.randn(4, 3, 64, 64, device=device)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        out = model(images)
        loss = out.logits.float().logsumexp(1).mean()
    loss.backward()
    assert out.hidden is not None and out.hidden.dtype in (torch.bfloat16, torch.float32)
    grads = [p.grad for p in model.lstm.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert all(p.dtype == torch.float32 for p in model.lstm.parameters())  # autocast leaves the weights alone
