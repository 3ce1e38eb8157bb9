"""What a trained RRA model looks at: its crops, the attention over steps, a Grad-CAM per step.

Grad-CAM (Selvaraju et al. 2017) of step t: the gradient of step t's class score, the local
classifier applied to that step's LSTM output, with respect to the feature map of the look
step t saw, averaged over space to weight the map's channels, then ReLU. The target is the
class with weight 1 (a one-hot), unlike the reference script, which scales the one-hot by the
max logit and so flips the map when that logit is negative.

`crop_coverage` measures, over a split (or an even sample of it), how much of the dataset's part box (the synthetic
set's class code) the first crop covers, against a centred crop of the same size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from trainables.config import TrialConfig, settings
from trainables.crops import crop_and_resize, full_boxes, square_boxes
from trainables.loop import prepare_for
from trainables.model import RRA


@dataclass
class Explanation:
    """A few images as the model saw them (numpy arrays, images in [0, 1], channels last).

    Attributes:
        images: (N, H, W, 3); labels, predictions: (N,); part_boxes: (N, 4), NaN without one.
        boxes: (N, T, 4) crop of each step; attention: (N, T).
        patches: (N, T, P, P, 3) the crop each step saw; cams: (N, T, P, P) Grad-CAM in [0, 1].
    """

    images: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    part_boxes: np.ndarray
    boxes: np.ndarray
    attention: np.ndarray
    patches: np.ndarray
    cams: np.ndarray


def _stack(dataset: Dataset, indices: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    items = [dataset[i] for i in indices]
    return (torch.stack([it[0] for it in items]), torch.tensor([int(it[1]) for it in items]),
            torch.stack([it[2] for it in items]))


def _device(model: RRA) -> torch.device:
    return next(model.parameters()).device


def step_cams(model: RRA, images: Tensor, target: Tensor, boxes: Tensor | None = None) -> tuple[Any, Tensor]:
    """One forward pass and a Grad-CAM per step for class `target` (B,): (output, cams (B, T, h, w)),
    on the model's device."""
    model.eval()
    device = _device(model)
    images, target = images.to(device), target.to(device)
    boxes = boxes.to(device) if boxes is not None else None
    # cuDNN's LSTM has no backward in eval mode; PyTorch's own kernels have (the same numbers).
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        out = model(images, boxes)
        if out.hidden is None or out.local_maps is None:
            raise ValueError("Grad-CAM per step needs a model with a local stream")
        cams = []
        for t in range(out.hidden.shape[1]):
            fmap = out.local_maps[min(t, len(out.local_maps) - 1)]
            score = model.local_classifier(out.hidden[:, t]).gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(score, fmap, retain_graph=True)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cams.append(F.relu((weights * fmap).sum(dim=1)).detach())
    return out, torch.stack(cams, dim=1)


def _unit(maps: Tensor) -> Tensor:
    """Scales each map to [0, 1] (an all-zero map stays zero)."""
    peak = maps.flatten(2).amax(dim=2)[..., None, None]
    return maps / peak.clamp_min(1e-12)


def explain(model: RRA, cfg: TrialConfig, dataset: Dataset, indices: list[int]) -> Explanation:
    """Crops, attention and per-step Grad-CAM of the model on `dataset[indices]` (true class)."""
    raw, labels, part = _stack(dataset, indices)
    prepare = prepare_for(cfg, _device(model), train=False)
    images, _ = prepare(raw, part)
    use_boxes = part if cfg.crop_source == "box" else None
    out, cams = step_cams(model, images, labels, use_boxes)
    assert out.boxes is not None and out.attention is not None
    size = cfg.patch_size
    boxes = out.boxes.detach().float().cpu()
    steps = boxes.shape[1]
    unit = raw.float() / 255.0  # what the model saw, before normalisation
    patches = torch.stack([crop_and_resize(unit, boxes[:, t], size) for t in range(steps)], dim=1)
    cams = F.interpolate(cams.float().cpu(), size=(size, size), mode="bilinear", align_corners=False)

    def pixels(x: Tensor) -> np.ndarray:
        return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()

    return Explanation(
        images=pixels(unit),
        labels=labels.numpy(),
        predictions=out.logits.argmax(1).detach().cpu().numpy(),
        part_boxes=part.numpy(),
        boxes=boxes.numpy(),
        attention=out.attention.detach().float().cpu().numpy(),
        patches=np.stack([pixels(patches[:, t]) for t in range(steps)], axis=1),
        cams=_unit(cams).numpy(),
    )


def _covered(crop: Tensor, part: Tensor) -> Tensor:
    """Fraction of each part box's area inside its crop box."""
    w = (torch.minimum(crop[:, 2], part[:, 2]) - torch.maximum(crop[:, 0], part[:, 0])).clamp_min(0)
    h = (torch.minimum(crop[:, 3], part[:, 3]) - torch.maximum(crop[:, 1], part[:, 1])).clamp_min(0)
    area = ((part[:, 2] - part[:, 0]) * (part[:, 3] - part[:, 1])).clamp_min(1e-12)
    return w * h / area


COVERAGE_IMAGES = 512  # images of the split that crop_coverage looks at, spread evenly


@torch.no_grad()
def crop_coverage(model: RRA, dataset: Dataset, cfg: TrialConfig, batch_size: int = 64,
                  max_images: int | None = COVERAGE_IMAGES) -> dict[str, float]:
    """Over a split with part boxes (at most `max_images` of it, spread evenly over the split):
    mean fraction of the part inside the model's first crop (of side cfg.crop_scale), share of images whose crop holds
    the whole part, and the same for a centred crop. "images" counts the images with a part
    box among the "looked_at" ones, "of_images" is the split's size."""
    model.eval()
    prepare, crop_scale = prepare_for(cfg, _device(model), train=False), cfg.crop_scale
    n = len(dataset)  # type: ignore[arg-type]
    chosen = list(range(n))
    if max_images is not None and n > max_images:
        chosen = np.linspace(0, n - 1, max_images).round().astype(int).tolist()
    covered, centred = [], []
    for start in range(0, len(chosen), batch_size):
        images, _, part = _stack(dataset, chosen[start:start + batch_size])
        keep = ~torch.isnan(part).any(dim=1)
        if not bool(keep.any()):
            continue
        out = model(prepare(images, part)[0])
        if out.boxes is None:
            return {}
        whole = full_boxes(images)
        side = crop_scale * min(images.shape[-2:]) * torch.ones_like(whole[:, 0])
        middle = torch.stack([whole[:, 2] / 2, whole[:, 3] / 2], dim=1)
        covered.append(_covered(out.boxes[:, 0].float().cpu(), part)[keep])
        centred.append(_covered(square_boxes(middle, side, whole), part)[keep])
    if not covered:
        return {}
    model_cov, centre_cov = torch.cat(covered), torch.cat(centred)
    return {"images": float(model_cov.numel()), "looked_at": float(len(chosen)), "of_images": float(n),
            "part_covered": float(model_cov.mean()),
            "whole_part_inside": float((model_cov > 0.999).float().mean()),
            "centred_part_covered": float(centre_cov.mean()),
            "centred_whole_part_inside": float((centre_cov > 0.999).float().mean())}


def explain_checkpoint(config: dict[str, Any], checkpoint_dir: str, images: int = 4) -> tuple[Explanation, dict]:
    """Loads a trial's checkpoint (the model alone: no training data, optimizer or pretrained
    weights) and explains its first validation images of distinct classes; also returns the
    crop coverage over up to COVERAGE_IMAGES validation images."""
    from trainables.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from trainables.data.build import build_split
    from trainables.loop import load_model

    cfg = TrialConfig.from_dict({**settings(config), "device": "cpu", "amp": "none", "channels_last": False})
    model = load_model(cfg, load_checkpoint(Path(checkpoint_dir) / CHECKPOINT_NAME)["model"])
    val = build_split(cfg, "val")
    chosen: dict[int, int] = {}
    for i in range(len(val)):  # type: ignore[arg-type]
        label = int(val[i][1])
        chosen.setdefault(label, i)
        if len(chosen) == images:
            break
    return explain(model, cfg, val, sorted(chosen.values())), crop_coverage(model, val, cfg)
