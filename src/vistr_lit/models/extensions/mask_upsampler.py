"""Learned, frame-guided upsampling of mask logits (not in the paper: RAFT's convex upsampling, for masks).

The dot-product head's ``mask_stride=1``: its stride-4 masks upsampled to the input size.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistr_lit.models.padding import zero_padding

CONVEX_NEIGHBOURHOOD = 3  # a fine pixel mixes the 3x3 coarse cells around its own
BILINEAR_FLOOR = 0.01  # the initial weights: bilinear's, floored so that every neighbour can still learn


class ConvexMaskUpsampler(nn.Module):
    """Learned ×f upsampling of mask logits, guided by the frame (not in the paper: the convex upsampling of
    RAFT, Teed & Deng, ECCV 2020, applied to masks).

    Every fine pixel's logit is a convex combination of the 3×3 coarse logits around its own cell. The
    combination weights are predicted once per frame, from the pixel embeddings and the frame's own pixels
    (space-to-depth: the f×f colours of each cell as channels), so they are shared by all instances and a mask
    edge can follow a colour edge inside a cell. The weights start as bilinear upsampling's (the last layer is
    zero-initialized, its bias the logarithm of the bilinear weights, floored at ``BILINEAR_FLOOR``).

    Args:
        embed_dim: D, channels of the pixel embeddings.
        factor: f, the upsampling factor (the embeddings' stride over the frame's).
        hidden_dim: width of the weight predictor.
        image_channels: channels of the frames.
    """

    def __init__(self, embed_dim: int, factor: int, hidden_dim: int = 32, image_channels: int = 3) -> None:
        super().__init__()
        if factor < 2:
            raise ValueError(f"factor must be >= 2, got {factor}")
        self.factor = factor
        cells = CONVEX_NEIGHBOURHOOD**2
        self.weight_net = nn.Sequential(
            nn.Conv2d(embed_dim + image_channels * factor**2, hidden_dim, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, cells * factor**2, 1),
        )
        last = self.weight_net[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(_bilinear_convex_weights(factor).clamp(min=BILINEAR_FLOOR).log().flatten())

    def weights(self, pixels: Tensor, frames: Tensor, keep: Tensor | None = None) -> Tensor:
        """Args:
            pixels: ``[F, D, h, w]`` pixel embeddings (zero on padding).
            frames: ``[F, C_img, H, W]`` the frames, H ≤ f·h, W ≤ f·w (zero on padding).
            keep: ``[F, 1, h, w]`` 1 on the valid cells, 0 on the batch padding, or None (no padding): the
                3×3 layer sees zeros there, as an unpadded frame's border sees its zero padding.
        Returns:
            ``[F, 9, f, f, h, w]`` each fine pixel's weights over its cell's 3×3 neighbourhood (sum 1).
        """
        f = self.factor
        h, w = pixels.shape[-2:]
        height, width = frames.shape[-2:]
        if height > f * h or width > f * w or height <= f * (h - 1) or width <= f * (w - 1):
            raise ValueError(f"frames {[height, width]} are not the {f}x of pixel embeddings {[h, w]}")
        image = F.pixel_unshuffle(F.pad(frames, (0, f * w - width, 0, f * h - height)), f)
        x = torch.cat([pixels, image.to(pixels.dtype)], dim=1)
        for module in self.weight_net:
            x = module(zero_padding(x, keep) if isinstance(module, nn.Conv2d) and module.padding[0] else x)
        return x.unflatten(1, (CONVEX_NEIGHBOURHOOD**2, f, f)).softmax(dim=1)

    def forward(self, mask_logits: Tensor, weights: Tensor, size: tuple[int, int]) -> Tensor:
        """Args:
            mask_logits: ``[F, N, h, w]`` coarse mask logits.
            weights: ``[F, 9, f, f, h, w]`` from ``weights``.
            size: (H, W), the fine size to crop to.
        Returns:
            ``[F, N, H, W]`` fine mask logits.
        """
        frames, slots, h, w = mask_logits.shape
        k = CONVEX_NEIGHBOURHOOD
        patches = F.unfold(mask_logits.flatten(0, 1)[:, None], k, padding=k // 2)  # F·N x 9 x h·w
        patches = patches.view(frames, slots, k * k, h, w)
        # F x N x h x f x w x f
        fine = torch.einsum("fkabhw,fnkhw->fnhawb", weights.to(patches.dtype), patches)
        return fine.reshape(frames, slots, h * self.factor, w * self.factor)[..., : size[0], : size[1]]


def _bilinear_convex_weights(factor: int) -> Tensor:
    """``[9, f, f]``: the weights bilinear ×f upsampling (``align_corners=False``) gives the 3×3 cells around
    each fine pixel's cell (rows -1, 0, +1 × columns -1, 0, +1)."""
    offsets = (torch.arange(factor, dtype=torch.float64) + 0.5) / factor - 0.5  # from the cell's centre
    per_axis = torch.stack([(-offsets).clamp(min=0), 1 - offsets.abs(), offsets.clamp(min=0)])  # 3 x f
    return torch.einsum("ia,jb->ijab", per_axis, per_axis).flatten(0, 1).float()
