"""VisTR's instance sequence segmentation: query attention maps, an FPN-style head with a deformable
convolution, and a 3-D convolution stack fusing each instance's mask features across time.

Every piece works batched over all B·T frames or B·T·N (frame, instance) pairs and is padding-aware
(see ``padding.py``). Channel counts derive from the transformer width C: the FPN head narrows
``C + heads -> C/2 -> C/4 -> C/8 -> C/16`` (384 + 8 -> 192 -> 96 -> 48 -> 24 in the original) and the
temporal head works at ``C/32``.
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistr_lit.models.deform_conv import deform_conv2d
from vistr_lit.models.padding import downscale, keep_mask, masked_group_norm, zero_padding

FPN_GROUPS = 8  # GroupNorm groups in the FPN head (fewer when a width is not divisible)
TEMPORAL_GROUPS = 4  # GroupNorm groups in the temporal head
DCN_KERNEL = 3
TEMPORAL_FUSIONS = ("conv3d", "none")  # 3-D convs across frames (the paper) or per-frame convs
TEMPORAL_DILATION = 2  # the original's Conv3d(k=3, padding=2, dilation=2): 13 frames of receptive field


def group_norm(groups: int, channels: int) -> nn.GroupNorm:
    """GroupNorm with gcd(groups, channels) groups (fewer when ``channels`` is not divisible)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def level_keep(t: Tensor, sizes: Tensor | None, clips: int, stride: int) -> Tensor | None:
    """Valid mask ``[R, 1, h, w]`` of features ``t`` ``[R, c, h, w]`` at ``stride``, whose R rows are the
    clips' frames or (frame, instance) pairs, clip-major; None when nothing is padded."""
    level_sizes = None if sizes is None else downscale(sizes, stride)
    return keep_mask(level_sizes, t.shape[-2], t.shape[-1], t.shape[0] // clips, t.dtype)


def upsample_to(x: Tensor, factor: int, target: Tensor) -> Tensor:
    """``x`` ``[R, c, h, w]`` nearest-upsampled by ``factor``, cropped to ``target``'s ``h' × w'``."""
    up = F.interpolate(x, scale_factor=factor, mode="nearest") if factor > 1 else x
    return up[..., : target.shape[-2], : target.shape[-1]]


class TimePaddedConv3d(nn.Conv3d):
    """``nn.Conv3d`` that zero-pads the time axis itself (``F.pad``), leaving only the spatial padding to the
    convolution: the same function, parameters and state-dict keys.

    Why: on CPUs with native bf16 (AVX512-BF16, AMX), oneDNN's bf16 Conv3d computes wrong weight gradients
    for some clip lengths when it pads time itself. Measured under ``torch.autocast("cpu", torch.bfloat16)``
    with T = 2 frames: a 3×1×1 kernel padded (1, 0, 0) gets infinite weight gradients, a 3×3×3 kernel padded
    (1, 1, 1) gradients 79 % off the float32 ones; the same convolutions on explicitly padded input are
    within bf16 rounding of float32 (0.2 %), and so is every other T from 1 to 8.

    Args:
        padding: ``(time, height, width)`` zero padding, as ``nn.Conv3d``'s (an int pads all three).
        The other arguments are ``nn.Conv3d``'s.
    """

    def __init__(self, *args, padding: int | tuple[int, int, int] = 0, **kwargs) -> None:
        pad_t, pad_h, pad_w = (padding,) * 3 if isinstance(padding, int) else padding
        super().__init__(*args, padding=(0, pad_h, pad_w), **kwargs)
        self.time_padding = pad_t

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, T, h, w]`` -> ``[B, C_out, T', h', w']`` as ``nn.Conv3d`` with the full padding."""
        if self.time_padding:
            x = F.pad(x, (0, 0, 0, 0, self.time_padding, self.time_padding))
        return super().forward(x)


class MHAttentionMap(nn.Module):
    """Attention maps between each query and its frame's encoder memory (no values, no output projection).

    As in DETR, the softmax runs jointly over heads × pixels, so each query's maps sum to 1 (~1/(heads·h·w) a
    cell). ``models/extensions/cell_scaled_maps.py`` rescales them.

    Args:
        query_dim: C of the queries; hidden_dim: C of the projections; num_heads: maps per query.
    """

    def __init__(self, query_dim: int, hidden_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(query_dim, hidden_dim)
        self.k_linear = nn.Linear(query_dim, hidden_dim)
        for linear in (self.q_linear, self.k_linear):
            nn.init.zeros_(linear.bias)
            nn.init.xavier_uniform_(linear.weight)
        self.normalize_fact = float(hidden_dim / num_heads) ** -0.5

    def forward(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """Args:
            q: ``[B', N, C]`` the N queries of each frame; k: ``[B', C, h, w]`` that frame's memory.
            mask: bool ``[B', h, w]``, True on padding, or None.
        Returns:
            ``[B', N, heads, h, w]`` attention weights; each query's maps sum to 1 over heads × pixels.
        """
        q = self.q_linear(q)
        k = F.conv2d(k, self.k_linear.weight[..., None, None], self.k_linear.bias)
        qh = q.unflatten(-1, (self.num_heads, -1))  # B' x N x heads x C/heads
        kh = k.unflatten(1, (self.num_heads, -1))  # B' x heads x C/heads x h x w
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        if mask is not None:
            weights = weights.masked_fill(mask[:, None, None], float("-inf"))
        return weights.flatten(2).softmax(dim=-1).view_as(weights)


class FrameFeatures(NamedTuple):
    """``MaskHeadSmallConv``'s per-frame work, shared by each frame's N instances."""

    memory: Tensor  # [B·T, dim, h, w]: lay1 on the memory channels (with lay1's bias)
    fpns: tuple[Tensor, ...]  # adapter1..3 on layer3, layer2, layer1: [B·T, C/2 | C/4 | C/8, h_l, w_l]


class MaskHeadSmallConv(nn.Module):
    """FPN-style conv head ending in a deformable 3×3 convolution (VisTR's ``mask_head``).

    Args:
        dim: input channels (memory C + heads for attention fusion, 2·C for concatenation).
        fpn_dims: channels of the backbone's layer3, layer2, layer1 features.
        context_dim: transformer width C (sets the inner widths C/2 .. C/16).
        strides: strides of the input (layer4) and of the three FPN levels, e.g. (32, 16, 8, 4).
        deformable: the last 3×3 conv is deformable (original). False makes it a plain conv with the same
            weight (the DCN's starting point) and no offset branch.
    """

    def __init__(
        self,
        dim: int,
        fpn_dims: Sequence[int],
        context_dim: int,
        strides: Sequence[int],
        deformable: bool = True,
    ) -> None:
        super().__init__()
        inter = [dim] + [context_dim // 2**i for i in range(1, 5)]
        if min(inter) < 1:
            raise ValueError(f"context_dim {context_dim} is too small for the mask head (needs >= 16)")
        self.strides = tuple(strides)
        self.out_channels = inter[4]
        self.lay1 = nn.Conv2d(dim, inter[0], 3, padding=1)
        self.gn1 = group_norm(FPN_GROUPS, inter[0])
        self.lay2 = nn.Conv2d(inter[0], inter[1], 3, padding=1)
        self.gn2 = group_norm(FPN_GROUPS, inter[1])
        self.lay3 = nn.Conv2d(inter[1], inter[2], 3, padding=1)
        self.gn3 = group_norm(FPN_GROUPS, inter[2])
        self.lay4 = nn.Conv2d(inter[2], inter[3], 3, padding=1)
        self.gn4 = group_norm(FPN_GROUPS, inter[3])
        self.gn5 = group_norm(FPN_GROUPS, inter[4])
        self.conv_offset = nn.Conv2d(inter[3], 2 * DCN_KERNEL * DCN_KERNEL, 1) if deformable else None
        self.dcn = nn.Conv2d(inter[3], inter[4], DCN_KERNEL, padding=DCN_KERNEL // 2, bias=False)
        self.adapter1 = nn.Conv2d(fpn_dims[0], inter[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], inter[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], inter[3], 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.conv_offset is not None:
            nn.init.zeros_(self.conv_offset.weight)  # offsets start at 0: the DCN begins as a plain conv

    def frame_features(self, memory: Tensor, fpns: Sequence[Tensor], sizes: Tensor | None) -> FrameFeatures:
        """The head's work on each frame, shared by the frame's N instances.

        The head's input is ``cat([memory, instance])`` per pair (memory first, as the original); since
        ``lay1`` is linear, its memory part is computed once per frame. The FPN adapters see only frames too.

        Args:
            memory: ``[B·T, C, h, w]`` each frame's encoder memory at the layer4 stride.
            fpns: layer3, layer2, layer1 features, each ``[B·T, C_l, h_l, w_l]``.
            sizes: int64 ``[B, 2]`` valid (height, width) of each clip, or None (no padding).
        """
        clips = 1 if sizes is None else sizes.shape[0]
        channels = memory.shape[1]
        memory = F.conv2d(
            zero_padding(memory, level_keep(memory, sizes, clips, self.strides[0])),
            self.lay1.weight[:, :channels],
            self.lay1.bias,
            padding=self.lay1.padding,
        )
        adapters = (self.adapter1, self.adapter2, self.adapter3)
        return FrameFeatures(memory, tuple(adapter(fpn) for adapter, fpn in zip(adapters, fpns)))

    def instance_features(
        self, frames: FrameFeatures, instance: Tensor, sizes: Tensor | None, num_instances: int
    ) -> Tensor:
        """Mask features of every (frame, instance) pair.

        Args:
            frames: ``frame_features`` of the B·T frames.
            instance: ``[B·T·N, dim - C, h, w]`` per-instance maps (attention maps or broadcast embedding).
            sizes: int64 ``[B, 2]`` valid (height, width) of each clip, or None (no padding).
            num_instances: N.
        Returns:
            ``[B·T·N, C/16, h_1, w_1]`` mask features at the layer1 stride.
        """
        clips = 1 if sizes is None else sizes.shape[0]
        weight = self.lay1.weight
        own_weight = weight[:, weight.shape[1] - instance.shape[1] :]  # lay1's instance part (memory first)
        k = level_keep(instance, sizes, clips, self.strides[0])
        own = F.conv2d(zero_padding(instance, k), own_weight, None, padding=self.lay1.padding)
        x = frames.memory[:, None] + own.unflatten(0, (-1, num_instances))  # B·T x N x dim x h x w
        x = F.relu(masked_group_norm(x.flatten(0, 1), self.gn1, k))
        x = F.relu(masked_group_norm(self.lay2(zero_padding(x, k)), self.gn2, k))
        layers = ((self.lay3, self.gn3), (self.lay4, self.gn4), ())
        for level, (fpn, ops) in enumerate(zip(frames.fpns, layers)):
            factor = self.strides[level] // self.strides[level + 1]
            # B·T·N x c x h x w -> B·T x N x c x h' x w' (nearest upsampling, cropped to the FPN size)
            up = upsample_to(x, factor, fpn).unflatten(0, (-1, num_instances))
            x = (up + fpn[:, None]).flatten(0, 1)
            k = level_keep(x, sizes, clips, self.strides[level + 1])
            if ops:
                x = F.relu(masked_group_norm(ops[0](zero_padding(x, k)), ops[1], k))
        if self.conv_offset is None:
            x = self.dcn(zero_padding(x, k))
        else:
            offset = self.conv_offset(x)
            x = zero_padding(x, k)
            x = deform_conv2d(x, offset, self.dcn.weight, padding=self.dcn.padding).to(x.dtype)
        return F.relu(masked_group_norm(x, self.gn5, k))

    def forward(
        self,
        memory: Tensor,
        instance: Tensor,
        fpns: Sequence[Tensor],
        sizes: Tensor | None,
        num_instances: int,
    ) -> Tensor:
        """Mask features of every (frame, instance) pair: ``instance_features(frame_features(...), ...)``.

        Args:
            memory: ``[B·T, C, h, w]`` each frame's encoder memory at the layer4 stride.
            instance: ``[B·T·N, dim - C, h, w]`` per-instance maps (attention maps or broadcast embedding).
            fpns: layer3, layer2, layer1 features, each ``[B·T, C_l, h_l, w_l]`` (shared by the N instances).
            sizes: int64 ``[B, 2]`` valid (height, width) of each clip, or None (no padding).
            num_instances: N.
        Returns:
            ``[B·T·N, C/16, h_1, w_1]`` mask features at the layer1 stride.
        """
        return self.instance_features(
            self.frame_features(memory, fpns, sizes), instance, sizes, num_instances
        )


class InstanceSequenceHead(nn.Sequential):
    """3-D conv stack over one instance's per-frame mask features (VisTR's ``insmask_head``).

    ``Conv3d -> GroupNorm -> ReLU`` three times, then a 1×1×1 conv to one mask logit. With
    ``temporal=True`` the convs are 3×3×3 dilated by 2 (fusion across frames, as the original); with
    ``temporal=False`` they are 1×3×3 (each frame alone), keeping the same parameter names.

    Args:
        in_dim: channels of the per-frame mask features; the stack works at ``in_dim // 2``.
        temporal: fuse across frames.
        num_layers: Conv3d/GN/ReLU repetitions (3 in the original).
    """

    def __init__(self, in_dim: int, temporal: bool = True, num_layers: int = 3) -> None:
        width = max(in_dim // 2, 1)
        k_t, d_t = (3, TEMPORAL_DILATION) if temporal else (1, 1)
        spatial = dict(kernel_size=(k_t, 3, 3), padding=(d_t * (k_t // 2), 2, 2), dilation=(d_t, 2, 2))
        modules: list[nn.Module] = []
        for i in range(num_layers):
            modules += [TimePaddedConv3d(in_dim if i == 0 else width, width, **spatial)]
            modules += [group_norm(TEMPORAL_GROUPS, width), nn.ReLU()]
        modules.append(nn.Conv3d(width, 1, 1))
        super().__init__(*modules)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Args:
            x: ``[B·N, C, T, h, w]`` one instance's mask features over the T frames.
            keep: ``[B·N, 1, 1, h, w]`` 1 on valid pixels, or None.
        Returns:
            ``[B·N, 1, T, h, w]`` mask logits.
        """
        for module in self:
            if isinstance(module, nn.Conv3d):
                x = module(zero_padding(x, keep))
            elif isinstance(module, nn.GroupNorm):
                x = masked_group_norm(x, module, keep)
            else:
                x = module(x)
        return x
