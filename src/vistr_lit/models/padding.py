"""Padding-aware helpers: the valid (unpadded) region of each clip at every feature stride.

Clips of a batch are zero-padded bottom/right to a common ``[Hp, Wp]`` (docs/design.md). A clip whose
valid size is ``(H, W)`` has a valid region of ``(⌈H/s⌉, ⌈W/s⌉)`` at stride ``s``: every ResNet and mask-head
convolution maps ``H`` to ``⌈H/stride⌉``. Zeroing the padded region before each spatial convolution makes the
padded pixels look exactly like a convolution's own zero padding, and group norms that average over the valid
region only make the whole network give the same outputs on the valid region of a padded clip as on the clip
alone.
"""

import torch
from torch import Tensor, nn


def valid_sizes(pad_mask: Tensor) -> Tensor:
    """Valid (unpadded) size of each clip.

    Args:
        pad_mask: bool ``[B, H, W]``, True on padding, which must be a bottom/right band.
    Returns:
        int64 ``[B, 2]`` = (valid height, valid width).
    Raises:
        ValueError: if a mask is not a top-left rectangle of valid pixels, or a clip has no valid pixel.
    """
    if pad_mask.dim() != 3 or pad_mask.dtype != torch.bool:
        raise ValueError(f"pad_mask must be bool [B, H, W], got {pad_mask.dtype} {list(pad_mask.shape)}")
    valid = ~pad_mask
    sizes = torch.stack([valid.any(dim=2).sum(dim=1), valid.any(dim=1).sum(dim=1)], dim=1)
    if (sizes == 0).any():
        empty = torch.nonzero((sizes == 0).any(dim=1)).flatten().tolist()
        raise ValueError(f"pad_mask marks every pixel as padding for batch element(s) {empty}")
    rebuilt = size_mask(sizes, pad_mask.shape[-2], pad_mask.shape[-1])
    if not torch.equal(rebuilt, pad_mask):
        bad = torch.nonzero((rebuilt != pad_mask).flatten(1).any(dim=1)).flatten().tolist()
        raise ValueError(
            f"pad_mask of batch element(s) {bad} is not a bottom/right padding band "
            "(valid pixels must form a top-left rectangle)"
        )
    return sizes


def downscale(sizes: Tensor, stride: int) -> Tensor:
    """Valid sizes ``[B, 2]`` at a feature stride: ``⌈size / stride⌉``."""
    return torch.div(sizes + stride - 1, stride, rounding_mode="floor")


def size_mask(sizes: Tensor, height: int, width: int) -> Tensor:
    """Padding mask from valid sizes.

    Args:
        sizes: int64 ``[B, 2]`` valid (height, width).
    Returns:
        bool ``[B, height, width]``, True on padding.
    """
    rows = torch.arange(height, device=sizes.device)[None, :, None] >= sizes[:, 0, None, None]
    cols = torch.arange(width, device=sizes.device)[None, None, :] >= sizes[:, 1, None, None]
    return rows | cols


def keep_mask(
    sizes: Tensor | None, height: int, width: int, repeats: int, dtype: torch.dtype
) -> Tensor | None:
    """Multiplicative valid mask for a batch whose rows repeat each clip ``repeats`` times (e.g. B·T frames).

    Returns:
        ``[B·repeats, 1, height, width]`` with 1 on valid pixels and 0 on padding, or None when ``sizes``
        is None (no padding anywhere).
    """
    if sizes is None:
        return None
    keep = (~size_mask(sizes, height, width)).to(dtype)
    return keep.repeat_interleave(repeats, dim=0)[:, None]


def zero_padding(x: Tensor, keep: Tensor | None) -> Tensor:
    """``x * keep`` in ``x``'s dtype (``keep`` broadcast over channels and any time axis), or ``x`` when
    ``keep`` is None.

    ``keep`` holds only 0 and 1, exact in any dtype, so it is cast to ``x``'s: under bf16 autocast a float32
    ``keep`` would otherwise promote the product, and with it a backbone's whole residual stream, to float32
    (a padded batch then runs slower than an unpadded one, with float32 copies before every convolution)."""
    if keep is None:
        return x
    return x * keep.to(x.dtype)


def masked_group_norm(x: Tensor, norm: nn.GroupNorm, keep: Tensor | None) -> Tensor:
    """Group norm whose statistics use only the valid pixels.

    Args:
        x: ``[B', C, *S]`` features (S spatial or temporal-spatial axes).
        norm: the GroupNorm holding ``num_groups``, ``eps`` and the affine parameters.
        keep: ``[B', 1, *S]`` (or broadcastable to it) 1 on valid pixels, or None for a plain group norm.
    Returns:
        ``[B', C, *S]`` normalized features (padded pixels hold arbitrary finite values).
    """
    if keep is None:
        return norm(x)
    groups = norm.num_groups
    shape, dtype = x.shape, x.dtype
    xg = x.float().reshape(shape[0], groups, -1)  # B' x G x (C/G·S); statistics in float32, as autocast does
    kg = keep.float().expand(shape[0], shape[1], *shape[2:]).reshape(shape[0], groups, -1)
    count = kg.sum(dim=-1, keepdim=True).clamp_min(1.0)
    mean = (xg * kg).sum(dim=-1, keepdim=True) / count
    var = ((xg - mean).square() * kg).sum(dim=-1, keepdim=True) / count
    y = ((xg - mean) * torch.rsqrt(var + norm.eps)).reshape(shape)
    if norm.affine:
        affine_shape = (1, shape[1]) + (1,) * (len(shape) - 2)
        y = y * norm.weight.reshape(affine_shape) + norm.bias.reshape(affine_shape)
    return y.to(dtype)
