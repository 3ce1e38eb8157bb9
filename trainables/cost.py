"""What a model costs at inference: FLOPs per image, parameters, latency, peak memory.

FLOPs come from PyTorch's public counter (`torch.utils.flop_counter.FlopCounterMode`), which
counts matrix products and convolutions (2 FLOPs a multiply-add; bias adds, normalisation,
activations and pooling are not counted). It does not know two ops that RRA's forward runs:

- the LSTM's fused kernels (`aten.mkldnn_rnn_layer` on the CPU, `aten._cudnn_rnn` on CUDA):
  here 2 FLOPs per multiply-add of the input and recurrent matrices at every step
  (`rnn_flops`), what the counter gives an LSTM that runs unfused (as matrix products);
- the crops (`torchvision.roi_align`): here FLOPS_PER_SAMPLE per bilinear sample of every
  output value, with the op's own adaptive sampling grid read from the boxes (`roi_align_flops`).

They are counted through the counter's `custom_mapping`, so the total is the counter's own.
`tests/unit/trainables/test_cost.py` checks it against a hand count of a whole model.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

# A bilinear sample: 4 multiply-adds (the four neighbours' weights), then the sum over the
# bin's samples; counted as 8 FLOPs.
FLOPS_PER_SAMPLE = 8


def _numel(shape: Any) -> int:
    return math.prod(int(d) for d in shape)


def rnn_flops(input_shape: Any, weight_shapes: list[Any]) -> int:
    """FLOPs of a fused RNN call: 2 per multiply-add of each weight matrix (the 2-D weights;
    biases are adds, not counted) for every (batch, step) row of the input."""
    rows = _numel(input_shape) // int(input_shape[-1])
    return sum(2 * rows * _numel(w) for w in weight_shapes if len(w) == 2)


def _mkldnn_rnn_layer(input: Any, weight0: Any, weight1: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return rnn_flops(input, [weight0, weight1])


def _cudnn_rnn(input: Any, weight: list[Any], *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return rnn_flops(input, list(weight))


def roi_align_flops(images: Tensor, rois: Tensor, spatial_scale: float, height: int, width: int,
                    sampling_ratio: int) -> int:
    """FLOPs of torchvision's roi_align: FLOPS_PER_SAMPLE per bilinear sample, each output
    value averaging a grid of samples (`sampling_ratio` a side, or adaptive: ceil(box side /
    output side), as the op itself takes it)."""
    channels = int(images.shape[1])
    if sampling_ratio > 0:
        samples = rois.shape[0] * sampling_ratio * sampling_ratio
    else:
        sides = (rois[:, 3:5] - rois[:, 1:3]).float() * spatial_scale
        grid_h = torch.ceil(sides[:, 1] / height).clamp(min=1)
        grid_w = torch.ceil(sides[:, 0] / width).clamp(min=1)
        samples = int((grid_h * grid_w).sum().item())
    return FLOPS_PER_SAMPLE * channels * height * width * int(samples)


def _roi_align(images: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int,
               sampling_ratio: int, aligned: bool, out_val: Any = None) -> int:
    return roi_align_flops(images, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio)


_roi_align._get_raw = True  # type: ignore[attr-defined]  # the counter passes the boxes themselves


def _custom_mapping() -> dict[Any, Any]:
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    mapping = {torch.ops.aten.mkldnn_rnn_layer: _mkldnn_rnn_layer, torch.ops.torchvision.roi_align: _roi_align}
    if hasattr(torch.ops.aten, "_cudnn_rnn"):
        mapping[torch.ops.aten._cudnn_rnn] = _cudnn_rnn
    return mapping


def forward_flops(model: nn.Module, images: Tensor) -> int:
    """FLOPs of one forward pass of `model` on `images` (in eval mode, without gradients)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
            model(images)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class Cost:
    """A model's inference cost on one device."""

    flops_per_image: int
    parameters: int
    latency_ms_batch1: float  # median time of a batch of one image
    latency_ms_per_image: float  # median time of a batch of `batch_size`, per image
    batch_size: int
    peak_memory_mb: float | None  # CUDA's peak allocation during a batch; None on the CPU
    device: str

    def metrics(self) -> dict[str, float]:
        """As a trial reports them (prefix `cost_`)."""
        return {f"cost_{k}": float(v) for k, v in asdict(self).items() if isinstance(v, (int, float))}


def _timed(model: nn.Module, images: Tensor, repeats: int, warmup: int, budget_s: float,
           context: Callable[[], AbstractContextManager[Any]]) -> float:
    """The median seconds of a forward pass, after `warmup` untimed ones; `repeats` timed ones,
    or fewer (at least one) once `budget_s` seconds were spent timing."""
    cuda = images.device.type == "cuda"
    times: list[float] = []
    with torch.no_grad(), context():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize(images.device)
            start = time.perf_counter()
            model(images)
            if cuda:
                torch.cuda.synchronize(images.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
                if sum(times) >= budget_s:
                    break
    return statistics.median(times)


def measure(model: nn.Module, image_size: int, batch_size: int, device: torch.device | str = "cpu",
            repeats: int = 10, warmup: int = 2, channels_last: bool = False, budget_s: float = 10.0,
            context: Callable[[], AbstractContextManager[Any]] = nullcontext) -> Cost:
    """The inference cost of `model` on `device`: FLOPs per image (a batch of one), parameters,
    the median latency of a batch of one and of `batch_size` (per image) after `warmup` passes
    (at most `repeats` timed passes each, fewer once `budget_s` is spent: a large model on a
    CPU), and on CUDA the peak memory allocated during a batch of `batch_size`. `context` wraps
    the timed passes (the trial's autocast). Random inputs come from a generator of their own:
    the caller's random streams are not touched."""
    device = torch.device(device)
    model = model.to(device)
    generator = torch.Generator().manual_seed(0)
    was_training = model.training
    model.eval()
    try:
        def batch(n: int) -> Tensor:
            x = torch.randn(n, 3, image_size, image_size, generator=generator).to(device)
            return x.contiguous(memory_format=torch.channels_last) if channels_last else x

        flops = forward_flops(model, batch(1))
        one = _timed(model, batch(1), repeats, warmup, budget_s, context)
        peak = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        many = one if batch_size == 1 else _timed(model, batch(batch_size), repeats, warmup, budget_s, context)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
    finally:
        model.train(was_training)
    return Cost(flops_per_image=flops, parameters=sum(p.numel() for p in model.parameters()),
                latency_ms_batch1=1000 * one, latency_ms_per_image=1000 * many / batch_size, batch_size=batch_size,
                peak_memory_mb=peak, device=str(device))
