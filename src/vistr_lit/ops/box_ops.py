"""Box conversions and pairwise overlaps, batched over leading dimensions.

torchvision's `box_iou` / `generalized_box_iou` take 2-D inputs only; the matcher needs one pairwise overlap
per frame (`[T, Q, 4]` against `[T, M, 4]`), so the pairwise versions here broadcast over leading dimensions
and are tested against torchvision's on 2-D inputs. Conversions use `torchvision.ops.box_convert`.
"""

import torch
from torch import Tensor
from torchvision.ops import box_convert

# The original's `multi_box_iou` smooths numerator and denominator by this; only `box_cost="iou"` uses it.
ORIGINAL_IOU_SMOOTHING = 1e-6
# Guards 0/0 when both boxes are degenerate (torchvision's `generalized_box_iou_loss` default).
GIOU_EPS = 1e-7


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """`[..., 4]` normalized (cx, cy, w, h) -> `[..., 4]` (x0, y0, x1, y1)."""
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """`[..., 4]` (x0, y0, x1, y1) -> `[..., 4]` (cx, cy, w, h)."""
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def _box_area(boxes: Tensor) -> Tensor:
    """`[..., 4]` xyxy -> `[...]` area (negative extents count as zero)."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _pairwise_inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """`[..., N, 4]`, `[..., M, 4]` xyxy -> intersection and union, each `[..., N, M]`."""
    area1 = _box_area(boxes1)  # [..., N]
    area2 = _box_area(boxes2)  # [..., M]
    lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # [..., N, M, 2]
    rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])  # [..., N, M, 2]
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # [..., N, M]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter, union


def pairwise_box_iou(boxes1: Tensor, boxes2: Tensor, smoothing: float = 0.0) -> Tensor:
    """IoU of every pair, batched over leading dimensions.

    Args:
        boxes1: `[..., N, 4]` xyxy.
        boxes2: `[..., M, 4]` xyxy (same leading dimensions, or broadcastable).
        smoothing: added to intersection and union, `(inter + s) / (union + s)`; the original VisTR cost uses
            `ORIGINAL_IOU_SMOOTHING`, plain IoU is `0`.

    Returns:
        `[..., N, M]` IoU.
    """
    inter, union = _pairwise_inter_union(boxes1, boxes2)
    return (inter + smoothing) / (union + smoothing)


def pairwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU (Rezatofighi et al. 2019) of every pair, batched over leading dimensions.

    Args:
        boxes1: `[..., N, 4]` xyxy.
        boxes2: `[..., M, 4]` xyxy.

    Returns:
        `[..., N, M]` GIoU in [-1, 1].
    """
    inter, union = _pairwise_inter_union(boxes1, boxes2)
    iou = inter / (union + GIOU_EPS)
    lt = torch.minimum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # [..., N, M, 2]
    rb = torch.maximum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosure = wh[..., 0] * wh[..., 1]
    return iou - (enclosure - union) / (enclosure + GIOU_EPS)
