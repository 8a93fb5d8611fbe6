"""Mask losses per pair and their pairwise costs."""

import torch
from torchvision.ops import sigmoid_focal_loss

from vistr_lit.ops import (
    dice_loss_per_mask,
    focal_loss_per_mask,
    pairwise_dice_cost,
    pairwise_focal_cost,
    resize_mask_targets,
    valid_mask_region,
)


def test_dice_values():
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    confident = torch.tensor([[20.0, 20.0, -20.0, -20.0]])
    assert dice_loss_per_mask(confident, target).item() < 1e-6
    wrong = -confident
    # p ≈ (0, 0, 1, 1): 1 - (0 + 1) / (2 + 2 + 1)
    torch.testing.assert_close(dice_loss_per_mask(wrong, target), torch.tensor([0.8]), atol=1e-6, rtol=0)
    empty = torch.zeros(1, 4)
    assert dice_loss_per_mask(torch.full((1, 4), -20.0), empty).item() < 1e-6


def test_focal_is_torchvision_mean_over_pixels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, generator=gen)
    target = (torch.rand(3, 7, generator=gen) > 0.5).float()
    expected = sigmoid_focal_loss(logits, target, alpha=0.3, gamma=1.5).mean(1)
    torch.testing.assert_close(focal_loss_per_mask(logits, target, alpha=0.3, gamma=1.5), expected)


def test_pairwise_costs_equal_per_pair_losses():
    gen = torch.Generator().manual_seed(1)
    num_pred, frames, num_tgt, pixels = 4, 3, 5, 12
    logits = torch.randn(num_pred, frames, pixels, generator=gen) * 3
    targets = (torch.rand(num_tgt, frames, pixels, generator=gen) > 0.6).float()
    dice = pairwise_dice_cost(logits, targets)
    focal = pairwise_focal_cost(logits, targets, alpha=0.25, gamma=2.0)
    assert dice.shape == focal.shape == (num_pred, frames, num_tgt)
    for n in range(num_pred):
        for m in range(num_tgt):
            torch.testing.assert_close(dice[n, :, m], dice_loss_per_mask(logits[n], targets[m]))
            torch.testing.assert_close(focal[n, :, m], focal_loss_per_mask(logits[n], targets[m]))


def test_resize_mask_targets_is_area_fraction():
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)  # [M, T, H, W]
    mask[0, 0, :2, :2] = True
    mask[1, 0, 0, :] = True
    out = resize_mask_targets(mask, (2, 2))
    assert out.shape == (2, 1, 2, 2) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(out[1, 0], torch.tensor([[0.5, 0.5], [0.0, 0.0]]))
    # same size: unchanged values
    torch.testing.assert_close(resize_mask_targets(mask, (4, 4)), mask.float())


def test_resize_mask_targets_pads_to_whole_blocks_and_matches_area_pooling():
    gen = torch.Generator().manual_seed(2)
    exact = torch.rand(3, 2, 16, 20, generator=gen) > 0.5
    pooled = torch.nn.functional.interpolate(exact.view(-1, 1, 16, 20).float(), size=(4, 5), mode="area")
    torch.testing.assert_close(resize_mask_targets(exact, (4, 5)), pooled.view(3, 2, 4, 5))
    ragged = torch.rand(3, 2, 13, 18, generator=gen) > 0.5  # ⌈13/4⌉ = 4, ⌈18/4⌉ = 5: pad to 16 x 20
    padded = torch.nn.functional.pad(ragged.float(), (0, 2, 0, 3))
    expected = torch.nn.functional.avg_pool2d(padded.view(-1, 1, 16, 20), 4).view(3, 2, 4, 5)
    torch.testing.assert_close(resize_mask_targets(ragged, (4, 5)), expected)
    soft = torch.rand(2, 8, 8, generator=gen)
    torch.testing.assert_close(resize_mask_targets(soft, (2, 2)), soft.view(2, 2, 4, 2, 4).mean((2, 4)))


def test_resize_mask_targets_with_no_instances():
    empty = torch.zeros(0, 3, 13, 16, dtype=torch.bool)
    assert resize_mask_targets(empty, (4, 4)).shape == (0, 3, 4, 4)


def test_valid_mask_region_on_the_canvas_and_coarser_grids():
    masks = torch.zeros(2, 3, 80, 114, dtype=torch.bool)
    target = {"masks": masks, "size": torch.tensor([80, 80])}
    assert valid_mask_region(target, (80, 114)) == (80, 80)  # the canvas itself
    assert valid_mask_region(target, (20, 29)) == (20, 20)  # stride-4 cells of 4x4 pixels
    assert valid_mask_region({"masks": masks, "size": torch.tensor([78, 81])}, (20, 29)) == (20, 21)
    assert valid_mask_region({"masks": masks}, (20, 29)) == (20, 29)  # no size: everything is valid
    resized = {"masks": masks[..., :20, :29], "size": torch.tensor([80, 80]), "mask_canvas": (80, 114)}
    assert valid_mask_region(resized, (20, 29)) == (20, 20)  # already resized: the canvas is recorded
