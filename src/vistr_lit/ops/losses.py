"""Mask losses per matched pair, and their pairwise (every prediction x every target) matching costs.

Masks are logits / binary (or soft, in [0, 1]) targets flattened to `[..., L]` pixels. The per-pair losses
follow the original VisTR / DETR: sigmoid focal loss averaged over pixels, and dice with +1 smoothing. The
pairwise costs are the same quantities for every (prediction, target) pair, computed with
one matrix product per frame.
"""

import functools
import math
import operator

import torch
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

# DETR's dice smoothing: keeps the loss defined on empty masks.
DICE_SMOOTHING = 1.0


def focal_loss_per_mask(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss averaged over pixels, one value per mask.

    Args:
        logits: `[P, L]` mask logits.
        targets: `[P, L]` float targets in [0, 1].

    Returns:
        `[P]`.
    """
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none").mean(-1)


def dice_loss_per_mask(logits: Tensor, targets: Tensor) -> Tensor:
    """`1 - (2·Σpt + 1) / (Σp + Σt + 1)` with p = sigmoid(logits), one value per mask.

    Args:
        logits: `[P, L]` mask logits.
        targets: `[P, L]` float targets in [0, 1].

    Returns:
        `[P]`.
    """
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return 1 - (numerator + DICE_SMOOTHING) / (denominator + DICE_SMOOTHING)


def pairwise_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss of every (prediction, target) pair, frame by frame.

    Args:
        logits: `[N, T, L]` mask logits of N predictions over T frames.
        targets: `[M, T, L]` float targets.

    Returns:
        `[N, T, M]` dice loss of prediction n against target m in frame t.
    """
    probs = logits.sigmoid()
    numerator = 2 * torch.einsum("ntl,mtl->ntm", probs, targets)
    denominator = probs.sum(-1)[:, :, None] + targets.sum(-1).T[None, :, :]  # [N, T, 1] + [1, T, M]
    return 1 - (numerator + DICE_SMOOTHING) / (denominator + DICE_SMOOTHING)


def pairwise_focal_cost(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss (mean over pixels) of every (prediction, target) pair, frame by frame.

    Equal to `focal_loss_per_mask` on each pair for binary targets (the positive and negative per-pixel terms
    are computed once and mixed by the target); for soft targets it interpolates the two terms linearly.

    Args:
        logits: `[N, T, L]` mask logits.
        targets: `[M, T, L]` float targets in [0, 1].

    Returns:
        `[N, T, M]`.
    """
    num_pixels = logits.shape[-1]
    probs = logits.sigmoid()
    # Per-pixel loss if the target were 1 (pos) or 0 (neg); softplus(-x) = -log(sigmoid(x)).
    pos = alpha * (1 - probs) ** gamma * torch.nn.functional.softplus(-logits)  # [N, T, L]
    neg = (1 - alpha) * probs**gamma * torch.nn.functional.softplus(logits)
    cost = torch.einsum("ntl,mtl->ntm", pos, targets) + torch.einsum("ntl,mtl->ntm", neg, 1 - targets)
    return cost / num_pixels


def valid_mask_region(target: dict, grid: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of a `grid` over a clip's padded mask canvas that cover its valid (unpadded) pixels.

    Batched clips are zero-padded bottom-right to a common canvas (`collate_clips`); the padding is neither
    object nor background, so mask losses and costs are taken over the valid region only. Otherwise the
    predictions on the padding enter every dice denominator (the pixel embeddings are zero there: sigmoid
    0.5 on every padded pixel, more probability mass than a typical object).

    Args:
        target: a clip's target dict: `masks` `[..., H_c, W_c]` on the canvas (or already resized to `grid`,
            then `mask_canvas` holds the canvas size) and, optionally, `size` (its valid H, W in canvas
            pixels; without it the whole canvas is valid).
        grid: `(h, w)` of the grid the losses are computed on (the canvas itself, or a coarser grid whose
            cells are `⌈H_c/h⌉ x ⌈W_c/w⌉` pixels, as in `resize_mask_targets`).

    Returns:
        `(rows, cols)`: the valid region is `[:rows, :cols]` of the grid.
    """
    size = target.get("size")
    if size is None:
        return tuple(grid)
    canvas = target.get("mask_canvas", tuple(target["masks"].shape[-2:]))
    cell_h, cell_w = math.ceil(canvas[0] / grid[0]), math.ceil(canvas[1] / grid[1])
    return min(grid[0], math.ceil(int(size[0]) / cell_h)), min(grid[1], math.ceil(int(size[1]) / cell_w))


def resize_mask_targets(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Fraction of foreground in each cell of a coarser `size` grid (e.g. the prediction's stride-4 grid).

    Each output cell averages a block of `⌈H/h⌉ x ⌈W/w⌉` input pixels; the input is zero-padded bottom-right
    to a whole number of blocks (padding is background, as in the collate). For `H = 4h`, `W = 4w` this equals
    `F.interpolate(mode="area")`. Bool masks are summed as uint8 (8x less memory traffic than float).

    Args:
        masks: `[..., H, W]` bool or float masks.
        size: `(h, w)`.

    Returns:
        `[..., h, w]` float32 targets in [0, 1] (for binary masks).
    """
    height, width = masks.shape[-2:]
    out_h, out_w = size
    if (height, width) == (out_h, out_w):
        return masks.float()
    block_h, block_w = math.ceil(height / out_h), math.ceil(width / out_w)
    flat = masks.reshape(-1, height, width)  # [L, H, W]
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8) if block_h * block_w <= torch.iinfo(torch.uint8).max else flat.int()
    elif not flat.dtype.is_floating_point:
        flat = flat.int()
    pad_h, pad_w = out_h * block_h - height, out_w * block_w - width
    if pad_h or pad_w:
        flat = torch.nn.functional.pad(flat, (0, pad_w, 0, pad_h))
    rows = flat.view(
        -1, out_h, block_h, out_w * block_w
    )  # [L, h, bh, w·bw]: contiguous rows, vectorized adds
    summed = functools.reduce(operator.add, (rows[:, :, i] for i in range(block_h)))  # [L, h, w·bw]
    cols = summed.view(-1, out_h, out_w, block_w)  # [L, h, w, bw]
    total = functools.reduce(operator.add, (cols[..., j] for j in range(block_w)))  # [L, h, w]
    return (total.float() / (block_h * block_w)).reshape(*masks.shape[:-2], out_h, out_w)
