"""Mask losses per matched pair, and their pairwise (every prediction x every target) matching costs.

Masks are logits / binary (or soft, in [0, 1]) targets flattened to `[..., L]` pixels. The per-pair losses
follow the original VisTR / DETR: sigmoid focal loss averaged over pixels, and dice with +1 smoothing. The
pairwise costs are the same quantities for every (prediction, target) pair, computed with
one matrix product per frame.
"""

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


def resize_mask_targets(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-average binary masks to `size`, giving the fraction of each output cell that is foreground.

    Brings padded targets down to the prediction's 1/4 resolution (`mask_loss_resolution="prediction"`).

    Args:
        masks: `[..., H, W]` bool or float masks.
        size: `(h, w)`.

    Returns:
        `[..., h, w]` float targets in [0, 1].
    """
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()  # [(...), 1, H, W]
    if tuple(flat.shape[-2:]) != tuple(size):
        flat = torch.nn.functional.interpolate(flat, size=size, mode="area")
    return flat.reshape(*lead, *size)
