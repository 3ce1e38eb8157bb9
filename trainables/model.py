"""The RRA model (Recursively Refined Attention, arXiv 2005.10979): module, config, builder.

Two streams trained jointly:
- global: backbone on the whole image, optional add-on block (two 1x1 convs), global average
  pool, linear classifier;
- local: a square crop of side ``crop_scale`` x image side, centred on the peak of the global
  stream's activation map (or on a given box), resized to ``patch_size``, a second unshared
  backbone, average pool, an LSTM run for ``recursion_steps`` steps, a softmax attention over
  the steps with ``attention_temperature``, linear classifier.

Fused logits = global + xent_coef x local. ``refine="repeat"`` feeds the same patch at every
step, as the paper's code does. ``refine="zoom"`` is this project's own variant, not the
paper's: each step re-crops inside the previous crop (side x ``zoom_ratio``), centred on that
crop's activation peak, so the focus narrows step by step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainables.backbones import create_backbone
from trainables.crops import crop_and_resize, full_boxes, peak_centres, square_boxes
from trainables.model_options import ModelOptions, Peak, Refine

__all__ = ["RRA", "ModelOptions", "Peak", "RRAConfig", "RRAOutput", "Refine", "build_model", "paper_config"]


@dataclass(frozen=True, kw_only=True)
class RRAConfig(ModelOptions):
    """Architecture of one RRA model: the model options (see `ModelOptions`) and the classes."""

    num_classes: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes < 2:
            raise ValueError(f"num_classes: expected an integer >= 2, got {self.num_classes!r}")


@dataclass
class RRAOutput:
    """What one forward pass returns.

    Attributes:
        logits: fused logits (B, C): global + xent_coef x local; global only without a local
            stream.
        global_logits: (B, C).
        local_logits: (B, C), or None without a local stream.
        attention: (B, T) attention weight of each recursion step, or None.
        boxes: (B, T, 4) crop box (x1, y1, x2, y2, image pixels) seen at each step, or None.
        hidden: (B, T, H) LSTM output of each step, or None.
        local_maps: the local backbone's feature maps (B, C, h, w) of each look: one map shared
            by every step with ``refine="repeat"``, one per step with ``"zoom"``; or None.
    """

    logits: Tensor
    global_logits: Tensor
    local_logits: Tensor | None = None
    attention: Tensor | None = None
    boxes: Tensor | None = None
    hidden: Tensor | None = None
    local_maps: list[Tensor] | None = None


def _init_classifier(layer: nn.Linear) -> None:
    nn.init.normal_(layer.weight, 0.0, 0.01)
    nn.init.zeros_(layer.bias)


class RRA(nn.Module):
    """Recursively Refined Attention: a global stream fused with a recurrent local stream."""

    def __init__(self, cfg: RRAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        glob = create_backbone(cfg.backbone, cfg.weights)
        self.global_features = glob.features
        channels = glob.out_channels
        self.add_on: nn.Module = nn.Identity()
        if cfg.add_on:
            self.add_on = nn.Sequential(
                nn.Conv2d(channels, cfg.add_on_channels, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(cfg.add_on_channels, cfg.add_on_channels, 1),
                nn.ReLU(inplace=True),
            )
            for m in self.add_on.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)  # type: ignore[arg-type]
            channels = cfg.add_on_channels
        self.global_classifier = nn.Linear(channels, cfg.num_classes)
        _init_classifier(self.global_classifier)
        if not cfg.local_stream:
            return
        local = create_backbone(cfg.local_backbone or cfg.backbone, cfg.weights, drop_last_pool=True)
        self.local_features = local.features
        self.lstm = nn.LSTM(local.out_channels, cfg.lstm_hidden, cfg.lstm_layers, batch_first=True)
        self.attention = nn.Linear(cfg.lstm_hidden, 1)
        self.local_classifier = nn.Linear(cfg.lstm_hidden, cfg.num_classes)
        _init_classifier(self.local_classifier)

    def forward(self, images: Tensor, boxes: Tensor | None = None) -> RRAOutput:
        """Classifies a batch.

        Args:
            images: (B, 3, H, W), normalised.
            boxes: optional (B, 4) boxes (x1, y1, x2, y2, pixels) to centre the first crop on;
                rows with a NaN fall back to the activation peak.
        """
        fmap = self.add_on(self.global_features(images))
        global_logits = self.global_classifier(fmap.mean(dim=(2, 3)))
        if not self.cfg.local_stream:
            return RRAOutput(global_logits, global_logits)
        whole = full_boxes(images)
        centres = peak_centres(self._activation(fmap, global_logits), whole)
        if boxes is not None:
            given = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
            centres = torch.where(torch.isnan(given), centres, given.to(centres.dtype))
        side = self.cfg.crop_scale * min(images.shape[-2:]) * torch.ones_like(whole[:, 0])
        box = square_boxes(centres, side, whole)
        feats, steps, maps = self._look(images, box)
        hidden, _ = self.lstm(feats)  # (B, T, hidden)
        scores = self.attention(hidden).squeeze(-1) / self.cfg.attention_temperature
        attn = torch.softmax(scores.float(), dim=1).to(hidden.dtype)
        context = (attn.unsqueeze(-1) * hidden).sum(dim=1)
        local_logits = self.local_classifier(context)
        logits = global_logits + self.cfg.xent_coef * local_logits
        return RRAOutput(logits, global_logits, local_logits, attn, torch.stack(steps, dim=1), hidden, maps)

    def _activation(self, fmap: Tensor, logits: Tensor | None) -> Tensor:
        """(B, h, w) map whose peak places the crop; no gradient flows through it."""
        fmap = fmap.detach()
        if self.cfg.peak == "cam" and logits is not None:
            weights = self.global_classifier.weight[logits.detach().argmax(dim=1)]  # (B, C)
            return torch.einsum("bchw,bc->bhw", fmap, weights.detach().to(fmap.dtype))
        return fmap.mean(dim=1)

    def _patches(self, images: Tensor, box: Tensor) -> Tensor:
        """The crops resized to the patch size, in the images' memory format (roi_align returns
        a contiguous NCHW batch, which would undo channels_last for the local backbone)."""
        patches = crop_and_resize(images, box, self.cfg.patch_size)
        if images.dim() == 4 and not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last):
            patches = patches.contiguous(memory_format=torch.channels_last)
        return patches

    def _look(self, images: Tensor, box: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Runs the local backbone on the crop(s): (B, T, D) LSTM inputs, each step's box and
        the feature map of each look."""
        steps = self.cfg.recursion_steps
        if self.cfg.refine == "repeat":
            x = self.local_features(self._patches(images, box))
            pooled = x.mean(dim=(2, 3))
            return pooled.unsqueeze(1).expand(-1, steps, -1), [box] * steps, [x]
        inputs, boxes, maps = [], [], []
        for step in range(steps):
            x = self.local_features(self._patches(images, box))
            inputs.append(x.mean(dim=(2, 3)))
            boxes.append(box)
            maps.append(x)
            if step + 1 < steps:
                centre = peak_centres(x.detach().mean(dim=1), box)
                side = (box[:, 2] - box[:, 0]) * self.cfg.zoom_ratio
                box = square_boxes(centre, side, box)
        return torch.stack(inputs, dim=1), boxes, maps


def build_model(cfg: RRAConfig) -> RRA:
    """Builds an RRA model from its config."""
    return RRA(cfg)


def paper_config(num_classes: int = 200, recursion_steps: int = 10) -> RRAConfig:
    """The reference code's architecture: VGG-19 in both streams, add-on, LSTM 2 x 512.

    Images 448 px and patches 224 px; ImageNet weights on both backbones in the paper
    (pass ``weights`` via dataclasses.replace to load them).
    """
    return RRAConfig(
        num_classes=num_classes,
        backbone="vgg19",
        add_on=True,
        add_on_channels=1024,
        recursion_steps=recursion_steps,
        crop_scale=0.25,  # the reference's boxes: median side about 112 of 448 px
        patch_size=224,
        lstm_hidden=512,
        lstm_layers=2,
        xent_coef=1.0,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
