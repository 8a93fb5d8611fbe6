"""3-D sine position encoding over (t, y, x), normalized by each clip's valid extent."""

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine3D(nn.Module):
    """DETR's sine encoding extended to time: ``num_pos_feats`` channels each for t, y and x, in that order.

    Coordinates are 1-based cumulative counts of non-padded positions along each axis; with ``normalize`` they
    are divided by the axis' valid length and multiplied by ``scale``, so a padded clip gets the same encoding
    on its valid region as the clip alone. Within each axis block sin and cos alternate
    (``[sin f0, cos f0, sin f1, ...]``) with frequencies ``temperature^(2⌊i/2⌋/num_pos_feats)``.

    Args:
        num_pos_feats: channels per axis (even); the encoding has ``3 · num_pos_feats`` channels.
        temperature: frequency base.
        normalize: normalize coordinates to ``(0, scale]``.
        scale: range of normalized coordinates (default 2π).
        eps: added to the axis length before dividing.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even (sin/cos pairs), got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps

    def forward(self, mask: Tensor) -> Tensor:
        """Encode every (t, y, x) position.

        Args:
            mask: bool ``[B, T, h, w]``, True on padding.
        Returns:
            float32 ``[B, T, h, w, 3 · num_pos_feats]`` (channels: t block, y block, x block).
        """
        not_mask = (~mask).float()
        coords = [not_mask.cumsum(dim) for dim in (1, 2, 3)]  # 3 x [B, T, h, w], 1-based t, y, x
        if self.normalize:
            coords = [
                c / (c.narrow(dim, c.shape[dim] - 1, 1) + self.eps) * self.scale
                for c, dim in zip(coords, (1, 2, 3))
            ]
        index = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / self.num_pos_feats)
        blocks = []
        for c in coords:
            angles = c[..., None] / dim_t  # B x T x h x w x F
            blocks.append(torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2))
        return torch.cat(blocks, dim=-1)
