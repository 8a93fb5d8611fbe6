"""Class logits from what each query's own mask covers (not in the paper; an option of the dot-product head).

VisTR classifies an instance-frame from its decoder query alone, and the query sees the encoder memory at the
backbone's last stride (stride 16 or 32): at small input sizes an object is one or two memory cells, so its
shape and texture are hard to read there. This head adds a correction read from the query's own predicted mask
at the mask stride, in the spirit of the mask-pooled instance features of later query-based segmenters
(MaskFormer's mask classification, SeqFormer's box-guided instance features):

- **texture**: the backbone's finest features (layer1, stride 4) averaged under the mask probabilities;
- **shape**: the mask probabilities resampled over the query's own predicted box to an S×S grid
  (``torchvision.ops.roi_align``) and read by two strided convolutions.

Both are added to a projection of the query and mapped to K+1 logits that are *added* to the query's own
(the last layer is zero-initialized, so a new head starts as the plain classifier). With ``clip_pooling`` the
K class corrections of an instance slot are averaged over the clip's T frames, weighted by each frame's mask
mass (an instance keeps its class: every frame gets the evidence of all of them); the no-object logit stays
per frame (a slot may be absent from some frames). The masks and boxes it reads are detached: the
classification loss trains this head and the features, not the masks or boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

SHAPE_SIZE = 16  # S: the mask is resampled over its box to S x S
SHAPE_CHANNELS = (16, 32)  # the two stride-2 convolutions over the S×S mask crop
SHAPE_STRIDE = 4  # their total downsampling
# clip pooling: mask mass (in grid cells) added to every frame's weight, so no weight is zero
POOLING_PRIOR = 1.0


class MaskPooledClassifier(nn.Module):
    """Per instance-frame class-logit correction from its mask's shape and the features under it.

    Args:
        feature_dim: C_f, channels of the features pooled under the masks.
        hidden_dim: C, width of the decoder queries (and of this head's hidden layer).
        num_logits: K+1 (no-object included).
        shape_size: S, side of the mask crop over the box (a multiple of 4).
        clip_pooling: average each slot's class corrections over its clip's frames.
    """

    def __init__(
        self,
        feature_dim: int,
        hidden_dim: int,
        num_logits: int,
        shape_size: int = SHAPE_SIZE,
        clip_pooling: bool = False,
    ) -> None:
        super().__init__()
        if shape_size < SHAPE_STRIDE or shape_size % SHAPE_STRIDE:
            raise ValueError(f"shape_size must be a positive multiple of {SHAPE_STRIDE}, got {shape_size}")
        self.shape_size, self.clip_pooling = shape_size, clip_pooling
        c1, c2 = SHAPE_CHANNELS
        self.shape_net = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(c2 * (shape_size // SHAPE_STRIDE) ** 2, hidden_dim),
        )
        self.feature_proj = nn.Linear(feature_dim, hidden_dim)
        self.query_proj = nn.Linear(hidden_dim, hidden_dim)
        self.hidden = nn.Linear(hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, num_logits)
        nn.init.zeros_(self.out.weight)  # starts as the query's own classifier
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        queries: Tensor,
        mask_logits: Tensor,
        boxes: Tensor,
        features: Tensor,
        valid_size: Tensor,
        keep: Tensor | None = None,
        num_frames: int = 1,
        feature_factor: int | None = None,
    ) -> Tensor:
        """Args:
            queries: ``[F, N, C]`` decoder outputs of the N instance slots of F = B·T frames.
            mask_logits: ``[F, N, h, w]`` their masks on the mask grid.
            boxes: ``[F, N, 4]`` their boxes, cxcywh normalized by the frame's valid size.
            features: ``[F, C_f, h_f, w_f]`` backbone features on the mask grid or one k times coarser.
            valid_size: ``[F, 2]`` valid (rows, cols) of each frame on the mask grid.
            keep: bool ``[F, h, w]``, False on the batch padding, or None.
            num_frames: T; the F frames are B clips of T, clip-major (used by ``clip_pooling``).
            feature_factor: k, the features' stride over the masks'; None: from the two grids' heights.
        Returns:
            ``[F, N, K+1]`` logits to add to the queries' own.
        """
        frames, slots, height, width = mask_logits.shape
        probs = mask_logits.detach().float().sigmoid()
        if keep is not None:
            probs = probs * keep[:, None]
        weights = probs
        if features.shape[-2:] != (height, width):  # a finer mask grid: summed over each feature cell
            factor = feature_factor or -(-height // features.shape[-2])
            weights = F.avg_pool2d(probs, factor, ceil_mode=True, divisor_override=1)
            if weights.shape[-2:] != features.shape[-2:]:
                raise ValueError(
                    f"masks {list(mask_logits.shape[-2:])} and features {list(features.shape[-2:])} are not "
                    f"on grids {factor}x apart"
                )
        mass = probs.sum(dim=(-2, -1))  # F x N, in grid cells
        weights = weights / mass[..., None, None].clamp(min=1.0)  # the mean under the mask
        pooled = torch.einsum("fnhw,fchw->fnc", weights.to(features.dtype), features)  # F x N x C_f

        cx, cy, bw, bh = boxes.detach().float().unbind(-1)  # F x N each, normalized
        rows, cols = valid_size.to(probs.dtype).unbind(-1)  # F each
        x0, x1 = (cx - bw / 2) * cols[:, None], (cx + bw / 2) * cols[:, None]
        y0, y1 = (cy - bh / 2) * rows[:, None], (cy + bh / 2) * rows[:, None]
        index = torch.arange(frames * slots, device=probs.device, dtype=probs.dtype)
        rois = torch.stack([index, x0.flatten(), y0.flatten(), x1.flatten(), y1.flatten()], dim=1)
        crops = roi_align(probs.reshape(-1, 1, height, width), rois, self.shape_size, aligned=True)
        shape = self.shape_net(crops.to(queries.dtype)).view(frames, slots, -1)  # F x N x C

        hidden = F.relu(self.query_proj(queries) + self.feature_proj(pooled.to(queries.dtype)) + shape)
        logits = self.out(F.relu(self.hidden(hidden)))  # F x N x K+1
        if not self.clip_pooling:
            return logits
        if frames % num_frames:
            raise ValueError(f"{frames} frames are not whole clips of T={num_frames}")
        per_clip = logits.unflatten(0, (-1, num_frames))  # B x T x N x K+1
        frame_mass = mass.unflatten(0, (-1, num_frames))[..., None] + POOLING_PRIOR  # B x T x N x 1
        weighted = (per_clip[..., :-1] * frame_mass.to(logits.dtype)).sum(dim=1, keepdim=True)
        classes = weighted / frame_mass.sum(dim=1, keepdim=True)  # B x 1 x N x K
        pooled_logits = torch.cat([classes.expand_as(per_clip[..., :-1]), per_clip[..., -1:]], dim=-1)
        return pooled_logits.flatten(0, 1)
