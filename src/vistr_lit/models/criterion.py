"""VisTR's set-prediction loss: Hungarian-matched class, box and mask losses, per decoder layer."""

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from vistr_lit.models.matcher import HungarianMatcher, MatchIndices, clip_dimensions
from vistr_lit.ops.box_ops import box_cxcywh_to_xyxy
from vistr_lit.ops.losses import (
    dice_loss_per_mask,
    focal_loss_per_mask,
    resize_mask_targets,
    valid_mask_region,
)
from vistr_lit.ops.point_sampling import point_labels, point_sample, uncertain_points

# DETR's loss names (`_{i}` appended for auxiliary layer i), in the order they are computed and weighted
LOSS_NAMES = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice")
# the groups of `SetCriterion(losses=...)` and the losses each computes
LOSS_GROUPS = {"labels": LOSS_NAMES[:1], "boxes": LOSS_NAMES[1:3], "masks": LOSS_NAMES[3:]}
# The original's weights (`--bbox_loss_coef 5 --giou_loss_coef 2 --mask_loss_coef 1 --dice_loss_coef 1`).
PAPER_WEIGHTS = dict(zip(LOSS_NAMES, (1.0, 5.0, 2.0, 1.0, 1.0), strict=True))
# The original's decoder has 6 layers: 5 auxiliary outputs.
DEFAULT_NUM_AUX_LAYERS = 5
MASK_LOSS_RESOLUTIONS = ("target", "prediction", "points")
# Mask2Former's point sampling: 3 candidates a point, 3/4 of the points where the prediction is least certain
POINT_OVERSAMPLE_RATIO = 3.0
POINT_IMPORTANCE_RATIO = 0.75


def default_weight_dict(num_aux_layers: int = DEFAULT_NUM_AUX_LAYERS) -> dict[str, float]:
    """The paper's weights for the last layer and, as `{name}_{i}`, for aux layers 0..num_aux_layers-1."""
    weights = dict(PAPER_WEIGHTS)
    for i in range(num_aux_layers):
        weights |= {f"{name}_{i}": w for name, w in PAPER_WEIGHTS.items()}
    return weights


class SetCriterion(nn.Module):
    """Losses of one batch after Hungarian matching, for the last decoder layer and every auxiliary layer.

    - `loss_ce`: cross-entropy over all B·Q queries, unmatched queries targeting no-object (index K), whose
      class weight is `eos_coef`; PyTorch's weighted mean (as DETR / the original).
    - `loss_bbox` (L1 summed over coordinates) and `loss_giou` (1 - GIoU): Σ over matched pairs / normalizer.
    - `loss_mask` (sigmoid focal, mean over pixels) and `loss_dice`, summed over matched pairs / normalizer.
      `mask_loss_resolution="target"` upsamples predictions bilinearly (align_corners=False) to the padded
      target size (the original); `"prediction"` area-averages targets down to the prediction size (cheaper);
      `"points"` (not in the paper: PointRend / Mask2Former) takes both losses on `mask_loss_points` points
      per mask of the target canvas, `point_importance_ratio` of them the most uncertain of
      `point_oversample_ratio` times as many uniform candidates, the rest uniform: the `"target"` losses on
      K pixels instead of all (the prediction sampled bilinearly, each point labelled by its target pixel).
    - Normalizer: `"visible"` counts visible instance-frames (Σ valid) in the batch; `"all_frames"` (the
      original) counts M·T per clip including absent frames. It is summed over DDP ranks and divided by the
      world size when `torch.distributed` is initialized, then clamped to ≥ 1.

    Auxiliary layers (`outputs["aux_outputs"][i]`) get their own matching and the same losses as `name_{i}`;
    mask losses there only if that layer has `pred_masks`.

    Args:
        num_classes: K (no-object is index K).
        matcher: a `HungarianMatcher`.
        weight_dict: loss name -> weight; default `default_weight_dict(num_aux_layers)` (paper: 1/5/2/1/1).
        eos_coef: class weight of no-object in `loss_ce`.
        losses: which of "labels", "boxes", "masks".
        num_aux_layers: number of auxiliary layers the default `weight_dict` covers.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float] | None = None,
        eos_coef: float = 0.1,
        losses: Sequence[str] = ("labels", "boxes", "masks"),
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        mask_loss_resolution: Literal["target", "prediction", "points"] = "target",
        normalizer: Literal["visible", "all_frames"] = "visible",
        num_aux_layers: int = DEFAULT_NUM_AUX_LAYERS,
        mask_loss_points: int | None = None,
        point_oversample_ratio: float = POINT_OVERSAMPLE_RATIO,
        point_importance_ratio: float = POINT_IMPORTANCE_RATIO,
    ):
        super().__init__()
        unknown = set(losses) - set(LOSS_GROUPS)
        if unknown or not losses:
            raise ValueError(
                f"SetCriterion losses={list(losses)}; expected a non-empty subset of {list(LOSS_GROUPS)}"
            )
        if mask_loss_resolution not in MASK_LOSS_RESOLUTIONS:
            raise ValueError(
                f"mask_loss_resolution={mask_loss_resolution!r}; expected one of {MASK_LOSS_RESOLUTIONS}"
            )
        if mask_loss_resolution == "points" and not (
            isinstance(mask_loss_points, int) and mask_loss_points > 0
        ):
            raise ValueError(
                f"mask_loss_resolution='points' needs mask_loss_points > 0, got {mask_loss_points!r}"
            )
        if point_oversample_ratio < 1 or not 0 <= point_importance_ratio <= 1:
            raise ValueError(
                f"need point_oversample_ratio >= 1 and point_importance_ratio in [0, 1], got "
                f"{point_oversample_ratio}, {point_importance_ratio}"
            )
        if normalizer not in ("visible", "all_frames"):
            raise ValueError(f"normalizer={normalizer!r}; expected 'visible' or 'all_frames'")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = (
            dict(weight_dict) if weight_dict is not None else default_weight_dict(num_aux_layers)
        )
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.mask_loss_resolution = mask_loss_resolution
        self.mask_loss_points = mask_loss_points
        self.point_oversample_ratio = point_oversample_ratio
        self.point_importance_ratio = point_importance_ratio
        self.normalizer = normalizer
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """Unweighted losses.

        Args:
            outputs: `pred_logits` `[B, Q, K+1]`, `pred_boxes` `[B, Q, 4]`, `pred_masks` `[B, Q, h, w]`
                (needed for "masks"), optional `aux_outputs`: list of dicts with the same keys, optional
                `group_outputs`: list of dicts like `outputs` from extra query groups (Group DETR), whose
                losses are averaged with the main group's, each group with its own matching.
            targets: B dicts with `labels` `[M]`, `boxes` `[M, T, 4]`, `valid` `[M, T]`,
                `masks` `[M, T, H, W]`.

        Returns:
            `loss_ce, loss_bbox, loss_giou, loss_mask, loss_dice` (those of `losses`) and `{name}_{i}` per
            auxiliary layer i; scalars.
        """
        if "masks" in self.losses and "pred_masks" not in outputs:
            raise ValueError("SetCriterion computes 'masks' losses but outputs lack 'pred_masks'")
        num_frames, num_slots = clip_dimensions(outputs, targets, need_masks="masks" in self.losses)
        if outputs["pred_logits"].shape[-1] != self.num_classes + 1:
            raise ValueError(
                f"outputs['pred_logits'] has {outputs['pred_logits'].shape[-1]} logits, expected K+1 = "
                f"{self.num_classes + 1}"
            )
        normalizer = self.num_boxes(targets, outputs["pred_logits"].device)
        if "masks" in self.losses and self.mask_loss_resolution == "prediction":
            # once for every layer's matching and losses, instead of once per use
            size = tuple(outputs["pred_masks"].shape[-2:])
            targets = [
                dict(t, masks=resize_mask_targets(t["masks"], size), mask_canvas=tuple(t["masks"].shape[-2:]))
                for t in targets
            ]  # [M, T, h, w]
        per_group = [
            self.group_losses(group, targets, normalizer, num_frames)
            for group in [outputs, *outputs.get("group_outputs", [])]
        ]
        if len(per_group) == 1:
            return per_group[0]
        return {name: torch.stack([group[name] for group in per_group]).mean() for name in per_group[0]}

    def group_losses(
        self, outputs: dict, targets: list[dict], normalizer: Tensor, num_frames: int
    ) -> dict[str, Tensor]:
        """The losses of one query group: its last layer and, as ``{name}_{i}``, its auxiliary layers."""
        losses = self.layer_losses(outputs, targets, normalizer, num_frames)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            layer = self.layer_losses(aux, targets, normalizer, num_frames)
            losses |= {f"{name}_{i}": value for name, value in layer.items()}
        return losses

    def weighted_total(self, losses: dict[str, Tensor]) -> Tensor:
        """`Σ weight_dict[k] · losses[k]`; KeyError for a loss without a weight (none dropped)."""
        missing = sorted(set(losses) - set(self.weight_dict))
        if missing:
            raise KeyError(
                f"losses {missing} have no weight in SetCriterion.weight_dict "
                f"(keys: {sorted(self.weight_dict)})"
            )
        return sum(self.weight_dict[name] * value for name, value in losses.items())

    def num_boxes(self, targets: list[dict], device: torch.device) -> Tensor:
        """Loss normalizer: visible instance-frames (or M·T), averaged over DDP ranks, clamped to ≥ 1."""
        if self.normalizer == "visible":
            count = sum(int(t["valid"].sum()) for t in targets)
        else:
            count = sum(t["valid"].numel() for t in targets)
        count = torch.tensor(float(count), device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(count)
            count = count / torch.distributed.get_world_size()
        return count.clamp(min=1)

    def layer_losses(
        self, outputs: dict, targets: list[dict], normalizer: Tensor, num_frames: int
    ) -> dict[str, Tensor]:
        """Match one decoder layer's outputs and compute its losses (unsuffixed names)."""
        indices = self.matcher(outputs, targets)
        losses = {}
        if "labels" in self.losses:
            losses |= self.loss_labels(outputs, targets, indices)
        if "boxes" in self.losses:
            losses |= self.loss_boxes(outputs, targets, indices, normalizer, num_frames)
        if "masks" in self.losses and "pred_masks" in outputs:
            losses |= self.loss_masks(outputs, targets, indices, normalizer)
        return losses

    def loss_labels(self, outputs: dict, targets: list[dict], indices: MatchIndices) -> dict[str, Tensor]:
        """`loss_ce` over all queries; matched queries target their instance's label."""
        logits = outputs["pred_logits"]  # [B, Q, K+1]
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        num_frames = targets[0]["valid"].shape[1]
        for b, (query_idx, target_idx) in enumerate(indices):
            labels = targets[b]["labels"].to(logits.device)
            target_classes[b, query_idx.to(logits.device)] = labels[
                target_idx.to(logits.device) // num_frames
            ]
        loss = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=self.empty_weight.to(logits))
        return {"loss_ce": loss}

    def loss_boxes(
        self, outputs: dict, targets: list[dict], indices: MatchIndices, normalizer: Tensor, num_frames: int
    ) -> dict[str, Tensor]:
        """`loss_bbox` (L1) and `loss_giou` over matched pairs, each summed / normalizer."""
        pred_boxes = outputs["pred_boxes"]
        batch_idx, query_idx = _flat_query_index(indices, pred_boxes.device)
        src = pred_boxes[batch_idx, query_idx]  # [ΣP, 4]
        tgt = torch.cat(
            [t["boxes"].flatten(0, 1)[j.to(t["boxes"].device)] for t, (_, j) in zip(targets, indices)]
        )
        tgt = tgt.to(src)  # [ΣP, 4]
        loss_bbox = F.l1_loss(src, tgt, reduction="sum") / normalizer
        giou = generalized_box_iou_loss(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt), reduction="sum")
        return {"loss_bbox": loss_bbox, "loss_giou": giou / normalizer}

    def loss_masks(
        self, outputs: dict, targets: list[dict], indices: MatchIndices, normalizer: Tensor
    ) -> dict[str, Tensor]:
        """`loss_mask` (focal) and `loss_dice` over matched pairs, each summed / normalizer; each pair's
        pixels are those of its clip's valid region (`valid_mask_region`: the batch padding is left out)."""
        pred_masks = outputs["pred_masks"]  # [B, Q, h, w]
        if self.mask_loss_resolution == "points":
            return self.loss_masks_at_points(pred_masks, targets, indices, normalizer)
        focal, dice = pred_masks.new_zeros(()), pred_masks.new_zeros(())
        for b, (query_idx, target_idx) in enumerate(
            indices
        ):  # one iteration per clip: clips may differ in size
            if len(query_idx) == 0:
                # Keep every head in the graph even when nothing is matched (DDP needs all gradients).
                focal, dice = focal + 0 * pred_masks[b].sum(), dice + 0 * pred_masks[b].sum()
                continue
            src = pred_masks[b, query_idx.to(pred_masks.device)]  # [P, h, w]
            tgt = targets[b]["masks"].flatten(0, 1)[target_idx.to(targets[b]["masks"].device)]  # [P, H, W]
            tgt = tgt.to(pred_masks.device)
            if self.mask_loss_resolution == "target":
                src = F.interpolate(src[:, None], size=tgt.shape[-2:], mode="bilinear", align_corners=False)[
                    :, 0
                ]
                tgt = tgt.to(src.dtype)
            else:  # already resized in forward
                tgt = resize_mask_targets(tgt, tuple(src.shape[-2:])).to(src.dtype)
            rows, cols = valid_mask_region(targets[b], tuple(src.shape[-2:]))  # the clip's unpadded part
            src, tgt = src[:, :rows, :cols].flatten(1), tgt[:, :rows, :cols].flatten(1)  # [P, L]
            focal = focal + focal_loss_per_mask(src, tgt, self.focal_alpha, self.focal_gamma).sum()
            dice = dice + dice_loss_per_mask(src, tgt).sum()
        return {"loss_mask": focal / normalizer, "loss_dice": dice / normalizer}

    def loss_masks_at_points(
        self, pred_masks: Tensor, targets: list[dict], indices: MatchIndices, normalizer: Tensor
    ) -> dict[str, Tensor]:
        """`loss_mask` and `loss_dice` on `mask_loss_points` points per matched pair (``uncertain_points``
        inside its clip's valid region), all pairs of the batch at once. ``pred_masks`` ``[B, Q, h, w]``;
        every clip's target ``masks`` share the batch's padded canvas ``[M, T, Hp, Wp]``."""
        batch_idx, query_idx = _flat_query_index(indices, pred_masks.device)
        if len(query_idx) == 0:  # keep every head in the graph (DDP needs all gradients)
            zero = 0 * pred_masks.sum()
            return {"loss_mask": zero, "loss_dice": zero}
        src = pred_masks[batch_idx, query_idx].float()  # [ΣP, h, w]
        tgt = torch.cat(
            [t["masks"].flatten(0, 1)[j.to(t["masks"].device)] for t, (_, j) in zip(targets, indices)]
        ).to(src.device)  # [ΣP, Hp, Wp]
        canvas = tuple(tgt.shape[-2:])
        regions = [valid_mask_region(t, canvas) for t in targets]  # (rows, cols) per clip
        fractions = src.new_tensor([(cols / canvas[1], rows / canvas[0]) for rows, cols in regions])  # B x 2
        pairs = torch.tensor([len(j) for _, j in indices], device=src.device)
        extent = fractions.repeat_interleave(pairs, dim=0)  # [ΣP, 2]: each pair's valid (x, y) fraction
        points = uncertain_points(
            src, self.mask_loss_points, self.point_oversample_ratio, self.point_importance_ratio, extent
        )  # [ΣP, K, 2]
        logits, labels = point_sample(src, points), point_labels(tgt, points)  # [ΣP, K]
        focal = focal_loss_per_mask(logits, labels, self.focal_alpha, self.focal_gamma).sum()
        dice = dice_loss_per_mask(logits, labels).sum()
        return {"loss_mask": focal / normalizer, "loss_dice": dice / normalizer}


def _flat_query_index(indices: MatchIndices, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-clip query indices -> (batch_idx [ΣP], query_idx [ΣP]) for advanced indexing of `[B, Q, ...]`."""
    batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)])
    query_idx = torch.cat([q for q, _ in indices])
    return batch_idx.to(device), query_idx.to(device)
