"""Pure tensor functions shared by matching and losses: box conversions/overlaps and mask losses/costs."""

from vistr_lit.ops.box_ops import (
    box_cxcywh_to_xyxy,
    box_xyxy_to_cxcywh,
    pairwise_box_iou,
    pairwise_generalized_box_iou,
)
from vistr_lit.ops.losses import (
    dice_loss_per_mask,
    focal_loss_per_mask,
    pairwise_dice_cost,
    pairwise_focal_cost,
    resize_mask_targets,
    valid_mask_region,
)

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "dice_loss_per_mask",
    "focal_loss_per_mask",
    "pairwise_box_iou",
    "pairwise_dice_cost",
    "pairwise_focal_cost",
    "pairwise_generalized_box_iou",
    "resize_mask_targets",
    "valid_mask_region",
]
