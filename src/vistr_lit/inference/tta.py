"""Test-time augmentation: a window's outputs averaged over mirrored and time-reversed copies of it.

Not in the paper (Detectron2's and mmdetection's flip TTA, here for a set predictor of instance sequences).
Each augmentation is applied to the window's frames, the model runs on every combination of the chosen
augmentations (2, 4, ... passes), and each pass's outputs are mapped back onto the window's own geometry and
frame order: ``hflip`` mirrors the frames left to right (mask logits are flipped back and re-sampled onto the
original stride grid, box centres mirrored), ``vflip`` mirrors them top to bottom the same way, ``transpose``
swaps their rows and columns (mask cells map back exactly; ``vflip`` and ``transpose`` are for data without an
up and down, such as synthvis's rotating shapes, not for YouTube-VIS); ``reverse`` plays the window backwards
(its frame predictions are put back in order). The instance slots of every pass are then matched one-to-one
to the slots of the plain pass: a query need not find the same object in an augmented window (DETR's queries
specialise by position), so slot i of one pass is not slot i of another. Matched slots are averaged: class
probabilities, mask probabilities and boxes. An object that only some passes find keeps that share of its
confidence, so disagreement lowers a score instead of adding a duplicate.
"""

from collections.abc import Callable, Sequence
from itertools import combinations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

AUGMENTATIONS = ("hflip", "vflip", "transpose", "reverse")
_EPS = torch.finfo(torch.float32).eps


def unflip_mask_logits(mask_logits: Tensor, size: int, stride: int, dim: int = -1) -> Tensor:
    """Mask logits of mirrored frames → logits on the stride grid of the frames themselves.

    Args:
        mask_logits: ``[..., h, w]`` logits of frames mirrored along ``dim`` (-1: left to right, -2: top to
            bottom), at stride s of a valid extent S along it (zero-padded at the end by the model to
            n·s ≥ S, n the mask's extent along ``dim``).
        size: S, the valid (unpadded) input width (``dim=-1``) or height (``dim=-2``) in pixels.
        stride: s, the mask stride.
        dim: the mirrored axis.
    Returns:
        ``[..., h, w]``: index j along ``dim`` holds the mirrored map at the pixel that ``(j + 0.5)·s`` maps
        to, ``S - (j + 0.5)·s``, linearly interpolated. When S is a multiple of s this is a plain flip;
        otherwise the flipped map is shifted by the (n·s - S) / s cells of padding that the flip moved to the
        front. Cells past the valid region repeat the last one (they lie in the padding).
    """
    mask_logits = mask_logits.movedim(dim, -1)
    n = mask_logits.shape[-1]
    pad = n * stride - size
    if not 0 <= pad < stride:
        raise ValueError(f"mask extent {n} at stride {stride} does not cover size {size} (need ⌈S/s⌉ cells)")
    flipped = mask_logits.flip(-1)
    if pad:
        shift = pad / stride  # in (0, 1): flipped cell j + shift is the pixel that cell j sees
        extended = torch.cat([flipped, flipped[..., -1:]], dim=-1)
        flipped = (1 - shift) * extended[..., :n] + shift * extended[..., 1:]
    return flipped.movedim(-1, dim)


def match_slots(masks_a: Tensor, masks_b: Tensor) -> Tensor:
    """One-to-one slot matching of two passes over one clip by soft mask IoU.

    Args:
        masks_a, masks_b: ``[N, T, h, w]`` mask probabilities of the N instance slots of each pass.
    Returns:
        int64 ``[N]``: slot ``perm[i]`` of pass b is matched to slot i of pass a (Hungarian, maximum total IoU
        over the clip's T frames; slots that are empty in both passes pair up arbitrarily).
    """
    a, b = masks_a.flatten(1).float(), masks_b.flatten(1).float()  # N x T·h·w
    intersection = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - intersection
    iou = intersection / union.clamp(min=_EPS)
    rows, cols = linear_sum_assignment(iou.cpu().numpy(), maximize=True)
    perm = torch.empty(len(rows), dtype=torch.int64)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm.to(masks_a.device)


def _slot_outputs(outputs: dict[str, Tensor], num_frames: int) -> dict[str, Tensor]:
    """The model's ``pred_logits``/``pred_masks``/``pred_boxes`` → slot-major ``[B, N, T, ...]`` class
    probabilities, mask probabilities and boxes (q = t·N + i)."""

    def slots(x: Tensor) -> Tensor:
        return x.float().unflatten(1, (num_frames, -1)).transpose(1, 2)

    return {
        "probs": slots(outputs["pred_logits"]).softmax(-1),
        "masks": slots(outputs["pred_masks"]).sigmoid(),
        "boxes": slots(outputs["pred_boxes"]),
    }


def _undo(
    outputs: dict[str, Tensor],
    augmentations: Sequence[str],
    num_frames: int,
    frame_size: tuple[int, int],
    stride: int,
) -> dict[str, Tensor]:
    """A pass's ``pred_logits``/``pred_masks``/``pred_boxes`` mapped back onto the plain window: its frames
    put back in order, its transposition and then its mirror images undone (on the mask logits, before any
    sigmoid); ``frame_size`` is the plain window's (H, W)."""
    logits, masks, boxes = outputs["pred_logits"], outputs["pred_masks"].float(), outputs["pred_boxes"]
    # reversed: frame t of the pass is frame T-1-t of the window, so q = t·N + i is put back in order in t
    if "reverse" in augmentations:

        def in_order(x: Tensor) -> Tensor:
            return x.unflatten(1, (num_frames, -1)).flip(1).flatten(1, 2)

        logits, masks, boxes = in_order(logits), in_order(masks), in_order(boxes)
    if "transpose" in augmentations:  # applied last by `augment`, so undone first
        masks = masks.transpose(-1, -2)  # the transposed grid's cell (i, j) is the frame's cell (j, i)
        boxes = boxes[..., [1, 0, 3, 2]]  # (cx, cy, w, h) → (cy, cx, h, w)
    height, width = frame_size
    if "hflip" in augmentations:
        masks = unflip_mask_logits(masks, width, stride, dim=-1)
        boxes = torch.cat([1 - boxes[..., :1], boxes[..., 1:]], dim=-1)  # cx → 1 - cx
    if "vflip" in augmentations:
        masks = unflip_mask_logits(masks, height, stride, dim=-2)
        boxes = torch.cat([boxes[..., :1], 1 - boxes[..., 1:2], boxes[..., 2:]], dim=-1)  # cy → 1 - cy
    return {"pred_logits": logits, "pred_masks": masks, "pred_boxes": boxes}


def augment(clips: Tensor, augmentations: Sequence[str]) -> Tensor:
    """Clips ``[B, T, 3, H, W]`` augmented (``reverse``: frames in reverse order, ``hflip``: mirrored left to
    right, ``vflip``: top to bottom, ``transpose``: rows and columns swapped, after the flips)."""
    if "reverse" in augmentations:
        clips = clips.flip(1)
    if "hflip" in augmentations:
        clips = clips.flip(-1)
    if "vflip" in augmentations:
        clips = clips.flip(-2)
    if "transpose" in augmentations:
        clips = clips.transpose(-1, -2)
    return clips


def check_augmentations(augmentations: Sequence[str]) -> tuple[str, ...]:
    """The augmentations, validated: each one of :data:`AUGMENTATIONS`, none twice."""
    augmentations = tuple(augmentations)
    unknown = [a for a in augmentations if a not in AUGMENTATIONS]
    if unknown or len(set(augmentations)) != len(augmentations):
        raise ValueError(
            f"tta must list distinct augmentations out of {list(AUGMENTATIONS)}, got {augmentations}"
        )
    return augmentations


def tta_outputs(
    model: Callable[[Tensor], dict[str, Tensor]],
    clips: Tensor,
    augmentations: Sequence[str],
    stride: int,
) -> dict[str, Tensor]:
    """Run ``model`` on every combination of ``augmentations`` of ``clips`` and average the matched slots.

    Args:
        model: clips ``[B, T, 3, H, W]`` (nothing padded) → dict with ``pred_logits [B, Q, K+1]``,
            ``pred_masks [B, Q, h, w]`` (logits at stride s), ``pred_boxes [B, Q, 4]`` (sigmoid cxcywh),
            Q = T·N, q = t·N + i.
        clips: the windows.
        augmentations: a subset of :data:`AUGMENTATIONS`; the plain pass always runs first, then each
            non-empty combination (2^k passes in all).
        stride: s, the model's mask stride.
    Returns:
        ``pred_logits`` (the log of the averaged class probabilities, so that their softmax is that
        average), ``pred_masks`` (the logit of the averaged mask probabilities) and ``pred_boxes``
        (averaged): every pass's slots averaged into the plain pass's slot they match (:func:`match_slots`).
    """
    augmentations = check_augmentations(augmentations)
    T, frame_size = clips.shape[1], tuple(clips.shape[-2:])
    plain = _slot_outputs(model(clips), T)
    total = {key: value.clone() for key, value in plain.items()}
    passes = [c for k in range(1, len(augmentations) + 1) for c in combinations(augmentations, k)]
    batch = torch.arange(clips.shape[0], device=clips.device)[:, None]
    for combination in passes:
        undone = _undo(model(augment(clips, combination)), combination, T, frame_size, stride)
        other = _slot_outputs(undone, T)
        perm = torch.stack([match_slots(p, o) for p, o in zip(plain["masks"], other["masks"])])  # B x N
        for key in total:
            total[key] += other[key][batch, perm]
    count = len(passes) + 1

    def queries(x: Tensor) -> Tensor:  # B x N x T x ... → B x Q x ...
        return (x / count).transpose(1, 2).flatten(1, 2)

    return {
        "pred_logits": queries(total["probs"]).clamp(min=_EPS).log(),
        "pred_masks": torch.logit(queries(total["masks"]), eps=_EPS),
        "pred_boxes": queries(total["boxes"]),
    }
