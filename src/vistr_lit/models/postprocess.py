"""Post-processing of one clip's VisTR outputs into per-clip instance predictions, as the original does it.

For each instance slot i the clip holds the T frame predictions at queries ``q = t·N + i``. The original
(``inference.py``) scores a slot by the mean over frames of its best class probability (no-object dropped),
labels it with the most frequent per-frame class, upsamples its mask logits to the original frame size and
thresholds their sigmoid, drops slots whose mask is empty in every frame, and reports a frame as absent when
its frame score is below a floor. Unlike the original, the padded part of a batched input is cropped away
first and the number of kept slots can be capped (``top_k``). Not in the original: ``mask_scoring`` multiplies
a slot's scores by its mask's confidence (Mask2Former's mask score), ranking confident masks first; and
``refine_radius`` snaps the coarse masks to the colour edges of the input frames with a guided filter.
"""

from dataclasses import dataclass

import torch
from kornia.filters import guided_blur
from torch import Tensor
from torchvision.ops import roi_align

MASK_STRIDE = 4  # pred_masks are at 1/4 of the padded input size (docs/design.md)


@dataclass
class ClipPredictions:
    """The kept instance slots of one clip, sorted by decreasing score.

    Attributes:
        scores: float ``[k]`` mean over the T frames of the frame scores.
        labels: int64 ``[k]`` contiguous class index, the most frequent per-frame class (ties: smallest).
        frame_scores: float ``[k, T]`` best class probability per frame (no-object excluded), times the slot's
            mask score with ``mask_scoring``.
        frame_labels: int64 ``[k, T]`` argmax class per frame.
        masks: bool ``[k, T, height, width]`` at the original frame size.
        present: bool ``[k, T]`` frame score ≥ the score floor; absent frames are ``None`` in results files.
        slots: int64 ``[k]`` instance slot index i of each kept prediction.
        frame_probs: float ``[k, T, K]`` class probabilities per frame (no-object dropped), times the mask
            score with ``mask_scoring`` (their maximum is ``frame_scores``); None where not computed.
    """

    scores: Tensor
    labels: Tensor
    frame_scores: Tensor
    frame_labels: Tensor
    masks: Tensor
    present: Tensor
    slots: Tensor
    frame_probs: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, keep: Tensor) -> "ClipPredictions":
        """Predictions at indices (or boolean mask) ``keep`` along k."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}  # type: ignore[attr-defined]
        return ClipPredictions(**{name: None if v is None else v[keep] for name, v in fields.items()})

    def frames(self, start: int, stop: int) -> "ClipPredictions":
        """The same predictions restricted to frames ``start:stop`` (scores and labels are recomputed)."""
        frame_scores = self.frame_scores[:, start:stop]
        frame_labels = self.frame_labels[:, start:stop]
        return ClipPredictions(
            scores=frame_scores.mean(dim=1),
            labels=mode_per_row(frame_labels),
            frame_scores=frame_scores,
            frame_labels=frame_labels,
            masks=self.masks[:, start:stop],
            present=self.present[:, start:stop],
            slots=self.slots,
            frame_probs=None if self.frame_probs is None else self.frame_probs[:, start:stop],
        )


def mode_per_row(values: Tensor) -> Tensor:
    """Most frequent value of each row of non-negative ints ``[k, T]`` → ``[k]``; ties: the smallest."""
    if values.numel() == 0:
        return torch.zeros(values.shape[0], dtype=torch.int64, device=values.device)
    counts = torch.zeros(values.shape[0], int(values.max()) + 1, dtype=torch.int64, device=values.device)
    counts.scatter_add_(1, values, torch.ones_like(values))
    return counts.argmax(dim=1)  # argmax returns the first maximum: the smallest tied value


class PostProcessVideo:
    """Turns the outputs of B clips into one :class:`ClipPredictions` per clip.

    Args:
        mask_threshold: a pixel belongs to the instance when sigmoid(mask logit) > this.
        score_floor: frames whose frame score is below this are reported absent (the original's 0.001).
        top_k: keep at most this many slots per clip, by score; ``None`` keeps all (the original).
        mask_scoring: multiply each slot's frame scores by its mask score, the mean mask probability over the
            pixels of its thresholded masks in all T frames (in (threshold, 1]). Not in the original.
        refine_radius: r > 0 refines the mask probabilities with a colour guided filter (He et al., "Guided
            Image Filtering", TPAMI 2013; ``kornia.filters.guided_blur``) over (2r+1)-pixel windows, guided by
            the input frames, at the input resolution and before the upsampling to the original size: inside
            each window the refined probability is an affine function of the frame's colour, so the edges of
            the stride-s masks move onto the colour edges of the objects. 0 (the original) turns it off. The
            radius is capped at the frame's smaller side minus 1 (reflect padding). Not in the original.
        refine_eps: the filter's regularization ε, in units of the variance of the normalized frames the
            model sees (≈ 20× a variance of [0, 1] intensities): larger keeps the refined masks closer to the
            unrefined ones.
    """

    def __init__(
        self,
        mask_threshold: float = 0.5,
        score_floor: float = 0.001,
        top_k: int | None = None,
        mask_scoring: bool = False,
        refine_radius: int = 0,
        refine_eps: float = 0.01,
    ):
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be None or ≥ 1, got {top_k}")
        self.mask_threshold = mask_threshold
        self.score_floor = score_floor
        self.top_k = top_k
        self.mask_scoring = mask_scoring
        if refine_radius < 0 or refine_eps <= 0:
            raise ValueError(f"need refine_radius >= 0 and refine_eps > 0, got {refine_radius}, {refine_eps}")
        self.refine_radius, self.refine_eps = int(refine_radius), float(refine_eps)

    @torch.no_grad()
    def __call__(
        self,
        outputs: dict[str, Tensor],
        sizes: Tensor,
        orig_sizes: Tensor,
        num_frames: int,
        mask_stride: int = MASK_STRIDE,
        frames: Tensor | None = None,
    ) -> list[ClipPredictions]:
        """
        Args:
            outputs: the model's dict with ``pred_logits`` ``[B, Q, K+1]`` and ``pred_masks`` ``[B, Q, h, w]``
                (mask logits at 1/``mask_stride`` of the padded input size), Q = T·N.
            sizes: int ``[B, 2]`` valid (unpadded) input size (H, W) of each clip.
            orig_sizes: int ``[B, 2]`` original frame size (height, width) of each clip's video.
            num_frames: T, the frames per clip.
            mask_stride: the model's mask stride (``VisTR.mask_stride``: 4, or 2 with the stem level).
            frames: ``[B, T, 3, H_pad, W_pad]`` the normalized input frames; needed with ``refine_radius``.
        Returns:
            B :class:`ClipPredictions`, masks at each clip's original size.
        """
        logits, mask_logits = outputs["pred_logits"], outputs["pred_masks"]
        B, Q, _ = logits.shape
        if Q % num_frames:
            raise ValueError(f"Q = {Q} queries is not a multiple of T = {num_frames} frames")
        T, N = num_frames, Q // num_frames
        if not torch.isfinite(logits).all():
            raise ValueError("pred_logits contains NaN or inf")
        if self.refine_radius and (frames is None or frames.shape[:2] != (B, T)):
            raise ValueError(
                f"refine_radius={self.refine_radius} needs the input frames [B={B}, T={T}, 3, H, W], got "
                f"{None if frames is None else list(frames.shape)}"
            )
        probs = logits.float().softmax(dim=-1)[..., :-1]  # B x Q x K, no-object dropped
        # q = t·N + i: B x Q x K → B x N x T x K (slot-major)
        frame_probs = probs.view(B, T, N, -1).transpose(1, 2)
        mask_logits = mask_logits.view(B, T, N, *mask_logits.shape[-2:]).transpose(1, 2)  # B x N x T x h x w
        clips = []
        for b in range(B):
            clip_masks, stride = mask_logits[b], mask_stride
            if self.refine_radius:  # N x T x H x W at the input resolution
                clip_masks, stride = self.refine(clip_masks, frames[b], sizes[b], mask_stride), 1
            clips.append(self._one_clip(frame_probs[b], clip_masks, sizes[b], orig_sizes[b], stride))
        return clips

    def refine(self, mask_logits: Tensor, frames: Tensor, size: Tensor, mask_stride: int) -> Tensor:
        """One clip's mask logits ``[N, T, h, w]`` at stride s → guided-filtered logits ``[N, T, H, W]`` of
        its valid input region (H, W) = ``size``, guided by its frames ``[T, 3, H_pad, W_pad]``."""
        N, T = mask_logits.shape[:2]
        H, W = (int(v) for v in size)
        logits = self._upsample(mask_logits.flatten(0, 1), size, (H, W), mask_stride)  # N·T x H x W
        probs = logits.sigmoid().unflatten(0, (N, T)).transpose(0, 1)  # T x N x H x W
        radius = min(self.refine_radius, min(H, W) - 1)
        guide = frames[:, :, :H, :W].to(probs.device, torch.float32)  # the frames may still be on the GPU
        refined = guided_blur(guide, probs, 2 * radius + 1, self.refine_eps) if radius > 0 else probs
        eps = torch.finfo(refined.dtype).eps
        return torch.logit(refined.transpose(0, 1), eps=eps)

    def _one_clip(
        self,
        frame_probs: Tensor,
        mask_logits: Tensor,
        size: Tensor,
        orig_size: Tensor,
        mask_stride: int,
    ) -> ClipPredictions:
        """frame_probs ``[N, T, K]``, mask_logits ``[N, T, h, w]`` → the clip's kept predictions."""
        frame_scores, frame_labels = frame_probs.max(dim=-1)  # N x T each
        N, T = frame_scores.shape
        height, width = (int(v) for v in orig_size)

        def upsampled(slot: int) -> Tensor:  # [T, height, width] mask logits
            return self._upsample(mask_logits[slot], size, (height, width), mask_stride)

        binary: dict[int, Tensor] = {}  # slot -> bool [T, height, width], computed at most once
        if self.mask_scoring:  # every slot's masks first: the scores that order the slots depend on them
            mask_scores = torch.ones_like(frame_scores[:, 0])
            for slot in range(N):
                logits = upsampled(slot)
                binary[slot] = logits > self._logit_threshold
                if binary[slot].any():
                    mask_scores[slot] = logits[binary[slot]].sigmoid().mean()
            frame_scores = frame_scores * mask_scores[:, None]
            frame_probs = frame_probs * mask_scores[:, None, None]
        scores = frame_scores.mean(dim=1)
        order = scores.argsort(descending=True, stable=True)
        kept, masks = [], []
        for slot in order.tolist():
            if self.top_k is not None and len(kept) == self.top_k:
                break
            slot_masks = binary[slot] if slot in binary else upsampled(slot) > self._logit_threshold
            if not slot_masks.any():  # empty in every frame: the original drops the slot
                continue
            kept.append(slot)
            masks.append(slot_masks)
        keep = torch.tensor(kept, dtype=torch.int64, device=scores.device)
        frame_scores, frame_labels = frame_scores[keep], frame_labels[keep]
        return ClipPredictions(
            scores=scores[keep],
            labels=mode_per_row(frame_labels),
            frame_scores=frame_scores,
            frame_labels=frame_labels,
            masks=torch.stack(masks) if masks else torch.zeros(0, T, height, width, dtype=torch.bool),
            present=frame_scores >= self.score_floor,
            slots=keep,
            frame_probs=frame_probs[keep],
        )

    @property
    def _logit_threshold(self) -> float:
        # sigmoid(x) > p  ⇔  x > logit(p): threshold the logits, no sigmoid over the full-size masks
        return float(torch.logit(torch.tensor(self.mask_threshold, dtype=torch.float64)))

    @staticmethod
    def _upsample(mask_logits: Tensor, size: Tensor, orig_size: tuple[int, int], stride: int) -> Tensor:
        """Mask logits ``[T, h, w]`` of the padded input → ``[T, height, width]`` of the valid region.

        The valid region (H, W) covers ``[0, W/s] x [0, H/s]`` of the stride-s map (fractional when H or W is
        not a multiple of s); ``roi_align`` with one sample per output pixel and ``aligned=True`` is exactly
        bilinear interpolation (``align_corners=False``) of that region. Only the last half-pixel rows and
        columns differ from cropping first: they interpolate towards their padded neighbours.
        """
        H, W = (float(v) for v in size)
        box = torch.tensor([[0.0, 0.0, 0.0, W / stride, H / stride]], device=mask_logits.device)
        return roi_align(
            mask_logits.float().unsqueeze(0),
            box,
            orig_size,
            spatial_scale=1.0,
            sampling_ratio=1,
            aligned=True,
        )[0]
