from __future__ import annotations

import torch

from trainables.crops import crop_and_resize, full_boxes, peak_centres, square_boxes


def test_peak_centre_maps_the_hottest_cell_into_the_box() -> None:
    act = torch.zeros(2, 4, 4)
    act[0, 1, 2] = 5.0  # row 1, col 2
    act[1, 3, 0] = 5.0
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [10.0, 20.0, 30.0, 40.0]])
    centres = peak_centres(act, boxes)
    assert torch.allclose(centres[0], torch.tensor([40.0, 24.0]))  # (2.5 * 16, 1.5 * 16)
    assert torch.allclose(centres[1], torch.tensor([12.5, 37.5]))


def test_square_boxes_shift_inside_bounds_and_keep_their_side() -> None:
    bounds = torch.tensor([[0.0, 0.0, 100.0, 100.0]] * 3)
    centres = torch.tensor([[50.0, 50.0], [2.0, 98.0], [120.0, -5.0]])
    side = torch.full((3,), 40.0)
    boxes = square_boxes(centres, side, bounds)
    assert torch.allclose(boxes[0], torch.tensor([30.0, 30.0, 70.0, 70.0]))
    assert torch.allclose(boxes[1], torch.tensor([0.0, 60.0, 40.0, 100.0]))
    assert torch.allclose(boxes[2], torch.tensor([60.0, 0.0, 100.0, 40.0]))


def test_crop_and_resize_takes_the_boxed_region() -> None:
    # An image whose value is its column index: a crop of columns [8, 24) resized to 16 px
    # keeps those values.
    img = torch.arange(32.0).expand(1, 3, 32, 32).contiguous()
    box = torch.tensor([[8.0, 0.0, 24.0, 16.0]])
    out = crop_and_resize(img, box, 16)
    assert out.shape == (1, 3, 16, 16)
    assert torch.allclose(out[0, 0, 0], torch.arange(8.0, 24.0), atol=1e-4)
    whole = crop_and_resize(img.repeat(2, 1, 1, 1), full_boxes(img.repeat(2, 1, 1, 1)), 32)
    assert torch.allclose(whole, img.repeat(2, 1, 1, 1), atol=1e-4)
