"""Crops, attention and per-step Grad-CAM of a small trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from trainables.crops import crop_and_resize
from trainables.explain import _covered, crop_coverage, explain, step_cams
from trainables.loop import fit, prepare_for


@pytest.mark.parametrize("refine", ["repeat", "zoom"])
def test_explanation_shapes_ranges_and_crops(refine: str) -> None:
    cfg = tiny_config(refine=refine, recursion_steps=3, epochs=1)
    trial = fit(cfg, lambda metrics, state: None)
    expl = explain(trial.model, cfg, trial.data.val, [0, 1, 2])
    n, t, p = 3, 3, cfg.patch_size
    assert expl.images.shape == (n, cfg.image_size, cfg.image_size, 3)
    assert expl.patches.shape == (n, t, p, p, 3) and expl.cams.shape == (n, t, p, p)
    assert expl.attention.shape == (n, t) and np.allclose(expl.attention.sum(1), 1.0, atol=1e-5)
    assert expl.cams.min() >= 0.0 and expl.cams.max() <= 1.0 + 1e-6
    assert expl.images.min() >= 0.0 and expl.images.max() <= 1.0
    assert (expl.boxes[..., :2] >= -1e-4).all() and (expl.boxes[..., 2:] <= cfg.image_size + 1e-4).all()
    assert not np.isnan(expl.part_boxes).any()  # the synthetic set records the deciding part
    if refine == "zoom":  # each step looks inside the previous crop
        sides = expl.boxes[:, :, 2] - expl.boxes[:, :, 0]
        assert (np.diff(sides, axis=1) < 0).all()


def test_step_cams_follow_the_target_class_gradient() -> None:
    cfg = tiny_config(recursion_steps=2, epochs=1)
    trial = fit(cfg, lambda metrics, state: None)
    raw = torch.stack([trial.data.val[i][0] for i in range(4)])
    images, _ = prepare_for(cfg, torch.device("cpu"), train=False)(raw, torch.zeros(4, 4))
    target = torch.tensor([0, 1, 2, 3])
    out, cams = step_cams(trial.model, images, target)
    assert cams.shape[:2] == (4, 2) and (cams >= 0).all()
    # by hand for step 1, image 0: ReLU(sum_c mean(d score / d A_c) A_c)
    fmap = out.local_maps[0]
    score = trial.model.local_classifier(out.hidden[:, 0])[0, 0]
    (grad,) = torch.autograd.grad(score, fmap)
    expected = torch.relu((grad[0].mean(dim=(1, 2), keepdim=True) * fmap[0]).sum(0))
    assert torch.allclose(cams[0, 0], expected.detach(), atol=1e-6)
    # another class gives another map: the target is used, not the top logit
    _, other = step_cams(trial.model, images, (target + 1) % 4)
    assert not torch.allclose(other, cams)


def test_part_coverage_geometry() -> None:
    crop = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    part = torch.tensor([[2.0, 2.0, 4.0, 4.0], [8.0, 0.0, 12.0, 2.0], [20.0, 20.0, 22.0, 22.0]])
    assert torch.allclose(_covered(crop, part), torch.tensor([1.0, 0.5, 0.0]))


def test_crop_coverage_reports_model_and_centred_crops() -> None:
    cfg = tiny_config(epochs=1, crop_scale=1.0)
    trial = fit(cfg, lambda metrics, state: None)
    cov = crop_coverage(trial.model, trial.data.val, cfg)
    # a crop of the whole image holds every part, wherever the model looks
    assert cov["images"] == cov["looked_at"] == cov["of_images"] == len(trial.data.val)
    assert cov["part_covered"] == pytest.approx(1.0) and cov["centred_whole_part_inside"] == pytest.approx(1.0)


def test_crop_coverage_looks_at_an_even_sample_of_a_large_split() -> None:
    cfg = tiny_config(epochs=1, crop_scale=0.5, synthetic_images_per_class=40)
    trial = fit(cfg, lambda metrics, state: None)
    val = trial.data.val
    sample = crop_coverage(trial.model, val, cfg, max_images=10)
    assert (sample["looked_at"], sample["of_images"]) == (10, len(val)) and len(val) > 10
    every = np.linspace(0, len(val) - 1, 10).round().astype(int).tolist()
    picked = crop_coverage(trial.model, torch.utils.data.Subset(val, every), cfg, max_images=None)
    assert picked["part_covered"] == pytest.approx(sample["part_covered"])


def test_patches_are_the_crops_of_the_boxes() -> None:
    cfg = tiny_config(epochs=1)
    trial = fit(cfg, lambda metrics, state: None)
    expl = explain(trial.model, cfg, trial.data.val, [0])
    image = torch.stack([trial.data.val[0][0]]).float() / 255  # the pixels, in [0, 1]
    box = torch.from_numpy(expl.boxes[:, 0]).float()
    expected = crop_and_resize(image, box, cfg.patch_size)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert np.allclose(expl.patches[0, 0], expected, atol=1e-5)
    assert np.array_equal(expl.images[0], image[0].permute(1, 2, 0).numpy())
