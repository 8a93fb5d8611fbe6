"""Hungarian matching between predicted instance sequences and ground-truth instance sequences (VisTR §3.2).

`mode="sequence"` (the paper): one assignment per clip between the N slots and the M instances, the cost of a
(slot, instance) pair being its per-frame cost averaged over frames, so slot i follows one object in all T
frames.
`mode="per_frame"` (the ablation): each frame is assigned on its own from the same per-frame costs, so
identities may swap between frames. With T = 1 both modes are the same computation.

Queries are frame-major (`q = t·N + slot`), targets instance-major (`target_idx = m·T + t`).
"""

import warnings
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from vistr_lit.ops.box_ops import (
    ORIGINAL_IOU_SMOOTHING,
    box_cxcywh_to_xyxy,
    pairwise_box_iou,
    pairwise_generalized_box_iou,
)
from vistr_lit.ops.losses import (
    pairwise_dice_cost,
    pairwise_focal_cost,
    resize_mask_targets,
    valid_mask_region,
)

NUM_BOX_COORDS = 4
MatchIndices = list[tuple[Tensor, Tensor]]


def clip_dimensions(outputs: dict, targets: list[dict], need_masks: bool = False) -> tuple[int, int]:
    """Validate the matcher/criterion inputs and return `(T, N)`.

    T comes from `targets[b]["valid"].shape[1]` (defined also when M = 0), N = Q // T.
    Raises ValueError naming the clip index and the field on any inconsistency.
    """
    for key in ("pred_logits", "pred_boxes"):
        if key not in outputs:
            raise ValueError(f"outputs lacks '{key}' (keys: {sorted(outputs)})")
    logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
    if logits.dim() != 3:
        raise ValueError(f"outputs['pred_logits'] must be [B, Q, K+1], got {tuple(logits.shape)}")
    batch, num_queries, num_logits = logits.shape
    if tuple(boxes.shape) != (batch, num_queries, NUM_BOX_COORDS):
        raise ValueError(
            f"outputs['pred_boxes'] must be [B, Q, 4] = {[batch, num_queries, 4]}, got {list(boxes.shape)}"
        )
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} targets for a batch of {batch} clips")
    if batch == 0:
        raise ValueError("empty batch")
    num_frames = None
    for b, target in enumerate(targets):
        for key in ("labels", "boxes", "valid") + (("masks",) if need_masks else ()):
            if key not in target:
                raise ValueError(f"targets[{b}] lacks '{key}' (keys: {sorted(target)})")
        valid, labels = target["valid"], target["labels"]
        if valid.dim() != 2 or valid.dtype != torch.bool:
            raise ValueError(
                f"targets[{b}]['valid'] must be bool [M, T], got {valid.dtype} {list(valid.shape)}"
            )
        num_inst, frames_b = valid.shape
        if num_frames is None:
            num_frames = frames_b
        elif frames_b != num_frames:
            raise ValueError(f"targets[{b}]['valid'] has T={frames_b}, but targets[0] has T={num_frames}")
        if tuple(labels.shape) != (num_inst,) or labels.dtype.is_floating_point:
            raise ValueError(
                f"targets[{b}]['labels'] must be integer [M={num_inst}], "
                f"got {labels.dtype} {list(labels.shape)}"
            )
        if num_inst and (labels.min() < 0 or labels.max() >= num_logits - 1):
            raise ValueError(
                f"targets[{b}]['labels'] must lie in [0, K={num_logits - 1}) (no-object is K), "
                f"got {labels.tolist()}"
            )
        if tuple(target["boxes"].shape) != (num_inst, num_frames, NUM_BOX_COORDS):
            raise ValueError(
                f"targets[{b}]['boxes'] must be [M, T, 4] = {[num_inst, num_frames, 4]}, "
                f"got {list(target['boxes'].shape)}"
            )
        if not torch.isfinite(target["boxes"]).all():
            raise ValueError(f"targets[{b}]['boxes'] contains NaN or inf")
        masks = target.get("masks")
        if need_masks and (masks.dim() != 4 or tuple(masks.shape[:2]) != (num_inst, num_frames)):
            raise ValueError(
                f"targets[{b}]['masks'] must be [M, T, H, W] with M={num_inst}, T={num_frames}, "
                f"got {list(target['masks'].shape)}"
            )
    if num_frames == 0 or num_queries % num_frames:
        raise ValueError(
            f"Q={num_queries} queries is not a multiple of T={num_frames} frames (targets' 'valid')"
        )
    return num_frames, num_queries // num_frames


class HungarianMatcher(nn.Module):
    """One-to-one assignment of instance slots to ground-truth instances, by sequence or frame by frame.

    Per-frame cost of slot n against instance m in frame t (all weights ≥ 0):
    `cost_class·(-p(label_m)) + cost_bbox·L1 + cost_giou·(-GIoU or -IoU) + cost_mask·focal + cost_dice·dice`.
    The class term is 0 where m is absent (no class to score). Mask terms are used only when `pred_masks`
    is in the outputs, and are computed at the prediction's resolution (targets area-averaged down).

    Args:
        mode: "sequence" (one assignment per clip, the paper) or "per_frame" (one per frame, the ablation).
        cost_class, cost_bbox, cost_giou, cost_mask, cost_dice: weights; the paper's are 1, 5, 2, 0, 0.
        box_cost: "giou" (the paper) or "iou" (the original code: plain IoU smoothed by 1e-6).
        bbox_reduction: over the 4 coordinates, "sum" (L1 norm, the paper/DETR) or "mean" (the original code).
        absent_frames: "ignore" averages a pair's cost over the frames where the instance is visible, and
            never assigns an instance that is absent in every frame (per_frame: absent in that frame);
            "count" (the original code) averages over all T frames, comparing absent frames with the target's
            zero box / empty mask, and assigns every instance.
        focal_alpha, focal_gamma: of the focal mask cost.

    More instances than slots (M > N among the candidates): a warning is issued once, the rectangular
    assignment matches the N instances of lowest total cost, and the others stay unmatched in that clip
    (per_frame: that frame).
    Whatever the assignment, only frames where the instance is visible are returned as supervised pairs.
    """

    def __init__(
        self,
        mode: Literal["sequence", "per_frame"] = "sequence",
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        cost_mask: float = 0.0,
        cost_dice: float = 0.0,
        box_cost: Literal["giou", "iou"] = "giou",
        bbox_reduction: Literal["sum", "mean"] = "sum",
        absent_frames: Literal["ignore", "count"] = "ignore",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        choices = {"mode": (mode, ("sequence", "per_frame")), "box_cost": (box_cost, ("giou", "iou"))}
        choices |= {"bbox_reduction": (bbox_reduction, ("sum", "mean"))}
        choices |= {"absent_frames": (absent_frames, ("ignore", "count"))}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"HungarianMatcher {name}={value!r}; expected one of {allowed}")
        weights = dict(cost_class=cost_class, cost_bbox=cost_bbox, cost_giou=cost_giou)
        weights |= dict(cost_mask=cost_mask, cost_dice=cost_dice)
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"HungarianMatcher cost weights must be ≥ 0 and not all 0, got {weights}")
        self.mode, self.box_cost, self.bbox_reduction, self.absent_frames = (
            mode,
            box_cost,
            bbox_reduction,
            absent_frames,
        )
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.cost_mask, self.cost_dice = cost_mask, cost_dice
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self._warned_excess = False

    @classmethod
    def original_vistr(cls, mode: Literal["sequence", "per_frame"] = "sequence") -> "HungarianMatcher":
        """The authors' code's cost: weights 1/5/2, plain IoU, L1 mean over coords, absent frames counted."""
        return cls(mode=mode, box_cost="iou", bbox_reduction="mean", absent_frames="count")

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode}, cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, "
            f"cost_giou={self.cost_giou}, "
            f"cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, box_cost={self.box_cost}, "
            f"bbox_reduction={self.bbox_reduction}, absent_frames={self.absent_frames}"
        )

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> MatchIndices:
        """Assign slots to instances.

        Args:
            outputs: `pred_logits` `[B, Q, K+1]` (no-object last), `pred_boxes` `[B, Q, 4]` normalized cxcywh,
                optionally `pred_masks` `[B, Q, h, w]` logits; Q = T·N, frame-major.
            targets: B dicts with `labels` `[M]` int64 in [0, K), `boxes` `[M, T, 4]` normalized cxcywh,
                `valid` `[M, T]` bool, and `masks` `[M, T, H, W]` when mask costs are used.

        Returns:
            Per clip `(query_idx [P], target_idx [P])` int64 on the CPU, sorted by query, over the supervised
            instance-frames only: `query_idx = t·N + slot`, `target_idx = m·T + t`, `valid[m, t]` True.
        """
        use_masks = "pred_masks" in outputs and (self.cost_mask > 0 or self.cost_dice > 0)
        num_frames, num_slots = clip_dimensions(outputs, targets, need_masks=use_masks)
        frame_cost = self.frame_costs(outputs, targets, num_frames, num_slots, use_masks)  # [B, T, N, ΣM]
        valid = torch.cat([t["valid"] for t in targets]).to(frame_cost.device)  # [ΣM, T]
        if self.mode == "sequence":
            if self.absent_frames == "count":
                cost = frame_cost.mean(1)  # [B, N, ΣM]
            else:
                visible = valid.T[None, :, None, :]  # [1, T, 1, ΣM]
                summed = torch.where(visible, frame_cost, 0.0).sum(1)
                cost = summed / valid.sum(1).clamp(min=1)
        else:
            cost = frame_cost  # [B, T, N, ΣM]
        self._check_finite(cost, targets)
        cost = cost.cpu().numpy()  # the one device -> host transfer
        indices, offset = [], 0
        for b, target in enumerate(targets):
            num_inst = len(target["labels"])
            cost_b = cost[b, ..., offset : offset + num_inst]
            offset += num_inst
            valid_b = target["valid"].cpu()
            if self.mode == "sequence":
                indices.append(self._match_sequence(b, cost_b, valid_b, num_slots, num_frames))
            else:
                indices.append(self._match_per_frame(b, cost_b, valid_b, num_slots, num_frames))
        return indices

    def frame_costs(
        self, outputs: dict, targets: list[dict], num_frames: int, num_slots: int, use_masks: bool
    ) -> Tensor:
        """Weighted per-frame cost of every slot against every instance of the batch: `[B, T, N, ΣM]`.

        Entries pairing clip b's slots with another clip's instances are computed (cheaper than gathering
        blocks) and never used; mask terms are filled only on each clip's own block.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        batch, num_queries, _ = logits.shape
        labels = torch.cat([t["labels"] for t in targets]).to(logits.device)  # [ΣM]
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes)  # [ΣM, T, 4]
        valid = torch.cat([t["valid"] for t in targets]).to(logits.device)  # [ΣM, T]
        total = len(labels)
        shape = (batch, num_frames, num_slots, total)

        probs = logits.float().softmax(-1)[:, :, labels]  # [B, Q, ΣM]
        cost = -self.cost_class * probs.view(shape) * valid.T[None, :, None, :]

        pred = boxes.float().view(batch, num_frames, num_slots, NUM_BOX_COORDS)
        pred = pred.permute(1, 0, 2, 3).reshape(num_frames, batch * num_slots, NUM_BOX_COORDS)  # [T, B·N, 4]
        tgt = tgt_boxes.float().transpose(0, 1)  # [T, ΣM, 4]
        l1 = torch.cdist(pred, tgt, p=1)  # [T, B·N, ΣM]
        if self.bbox_reduction == "mean":
            l1 = l1 / NUM_BOX_COORDS
        pred_xyxy, tgt_xyxy = box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(tgt)
        if self.box_cost == "giou":
            overlap = pairwise_generalized_box_iou(pred_xyxy, tgt_xyxy)
        else:
            overlap = pairwise_box_iou(pred_xyxy, tgt_xyxy, smoothing=ORIGINAL_IOU_SMOOTHING)
        box_cost = self.cost_bbox * l1 - self.cost_giou * overlap  # [T, B·N, ΣM]
        cost = cost + box_cost.view(num_frames, batch, num_slots, total).transpose(0, 1)

        if use_masks:
            cost = cost + self._mask_costs(outputs["pred_masks"], targets, num_frames, num_slots, shape)
        return cost

    def _mask_costs(
        self, pred_masks: Tensor, targets: list[dict], num_frames: int, num_slots: int, shape
    ) -> Tensor:
        """Focal/dice costs on each clip's own block of `[B, T, N, ΣM]`, at the prediction's resolution, over
        the clip's valid region (`valid_mask_region`)."""
        cost = pred_masks.new_zeros(shape, dtype=torch.float32)
        size = tuple(pred_masks.shape[-2:])
        offset = 0
        for b, target in enumerate(targets):  # one iteration per clip, vectorized over slots and instances
            num_inst = len(target["labels"])
            if num_inst:
                rows, cols = valid_mask_region(target, size)  # the clip's unpadded part of the grid
                logits = pred_masks[b, :, :rows, :cols].float()
                logits = logits.reshape(num_frames, num_slots, -1).transpose(0, 1)  # [N, T, rows·cols]
                tgt = resize_mask_targets(target["masks"].to(pred_masks.device), size)
                tgt = tgt[..., :rows, :cols].flatten(2)  # [M, T, rows·cols]
                block = self.cost_dice * pairwise_dice_cost(logits, tgt) if self.cost_dice else 0.0
                if self.cost_mask:
                    focal = pairwise_focal_cost(logits, tgt, alpha=self.focal_alpha, gamma=self.focal_gamma)
                    block = block + self.cost_mask * focal
                cost[b, :, :, offset : offset + num_inst] = block.transpose(0, 1)  # [N, T, M] -> [T, N, M]
            offset += num_inst
        return cost

    def _check_finite(self, cost: Tensor, targets: list[dict]) -> None:
        if torch.isfinite(cost).all():
            return
        bad = (~torch.isfinite(cost)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(
            f"non-finite matching cost for clip(s) {bad}: outputs['pred_logits'], 'pred_boxes' or "
            "'pred_masks' contain NaN or inf"
        )

    def _assign(
        self, cost: np.ndarray, candidates: np.ndarray, num_slots: int, where: str
    ) -> tuple[Tensor, Tensor]:
        """Rectangular Hungarian on `cost[:, candidates]` `[N, C]` -> (slots, instance indices) int64."""
        if len(candidates) > num_slots and not self._warned_excess:
            warnings.warn(
                f"HungarianMatcher: {where} has {len(candidates)} ground-truth instances to match but only "
                f"{num_slots} slots; the {num_slots} best-matching are supervised and the rest are left "
                "unmatched (warned once per matcher)",
                stacklevel=3,
            )
            self._warned_excess = True
        rows, cols = linear_sum_assignment(cost[:, candidates])
        return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(candidates[cols], dtype=torch.int64)

    def _match_sequence(self, b: int, cost: np.ndarray, valid: Tensor, num_slots: int, num_frames: int):
        """`cost` `[N, M]`, `valid` `[M, T]` -> supervised (query_idx, target_idx)."""
        keep = valid.any(1) if self.absent_frames == "ignore" else torch.ones(len(valid), dtype=torch.bool)
        slots, inst = self._assign(cost, keep.nonzero().flatten().numpy(), num_slots, f"clip {b}")
        pair, frame = valid[inst].nonzero(as_tuple=True)  # visible frames of each assigned pair
        query = frame * num_slots + slots[pair]
        target = inst[pair] * num_frames + frame
        order = query.argsort()
        return query[order], target[order]

    def _match_per_frame(self, b: int, cost: np.ndarray, valid: Tensor, num_slots: int, num_frames: int):
        """`cost` `[T, N, M]`, `valid` `[M, T]` -> supervised (query_idx, target_idx)."""
        queries, targets = [], []
        everyone = torch.ones(len(valid), dtype=torch.bool)
        for t in range(num_frames):
            keep = valid[:, t] if self.absent_frames == "ignore" else everyone
            slots, inst = self._assign(
                cost[t], keep.nonzero().flatten().numpy(), num_slots, f"clip {b} frame {t}"
            )
            visible = valid[inst, t]
            queries.append(t * num_slots + slots[visible])
            targets.append(inst[visible] * num_frames + t)
        query, target = torch.cat(queries), torch.cat(targets)
        order = query.argsort()
        return query[order], target[order]
