"""VisTR's instance sequence segmentation: query attention maps, an FPN-style head with a deformable
convolution, and a 3-D convolution stack fusing each instance's mask features across time. Also a
dot-product alternative (``PixelDecoder``), not in the paper, that runs its FPN once per frame, and a learned
upsampling of its masks guided by the frames (``ConvexMaskUpsampler``) and a per-query mask MLP over relative
coordinates (``RelativeCoordMaskMLP``), not in the paper either.

Every piece works batched over all B·T frames or B·T·N (frame, instance) pairs and is padding-aware
(see ``padding.py``). Channel counts derive from the transformer width C: the FPN head narrows
``C + heads -> C/2 -> C/4 -> C/8 -> C/16`` (384 + 8 -> 192 -> 96 -> 48 -> 24 in the original) and the
temporal head works at ``C/32``.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from vistr_lit.models.padding import downscale, keep_mask, masked_group_norm, zero_padding

FPN_GROUPS = 8  # GroupNorm groups in the FPN head (fewer when a width is not divisible)
TEMPORAL_GROUPS = 4  # GroupNorm groups in the temporal head
DCN_KERNEL = 3
TEMPORAL_DILATION = 2  # the original's Conv3d(k=3, padding=2, dilation=2): 13 frames of receptive field
PIXEL_TEMPORAL_KERNEL = 3  # PixelDecoder's temporal conv: a frame and its two neighbours
STEM_LEVEL_FACTOR = 2  # PixelDecoder's stem level: the stem (stride 2) is one x2 level finer than layer1
CONVEX_NEIGHBOURHOOD = 3  # ConvexMaskUpsampler: a fine pixel mixes the 3x3 coarse cells around its own
BILINEAR_FLOOR = 0.01  # its initial weights: bilinear's, floored so that every neighbour can still learn
COORD_CHANNELS = 4  # RelativeCoordMaskMLP: (dx, dy) from the box centre in frame fractions and box sizes
REL_BOX_CLAMP = 4.0  # its offsets in box sizes are clamped to +-4
REL_MIN_BOX = 0.02  # and measured in boxes at least 2 % of the frame wide and high


def _group_norm(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _level_keep(t: Tensor, sizes: Tensor | None, clips: int, stride: int) -> Tensor | None:
    """Valid mask ``[R, 1, h, w]`` of features ``t`` ``[R, c, h, w]`` at ``stride``, whose R rows are the
    clips' frames or (frame, instance) pairs, clip-major; None when nothing is padded."""
    level_sizes = None if sizes is None else downscale(sizes, stride)
    return keep_mask(level_sizes, t.shape[-2], t.shape[-1], t.shape[0] // clips, t.dtype)


def _upsample_to(x: Tensor, factor: int, target: Tensor) -> Tensor:
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


ATTENTION_MAP_SCALES = ("none", "cells")


class MHAttentionMap(nn.Module):
    """Attention maps between each query and its frame's encoder memory (no values, no output projection).

    As in DETR, the softmax runs jointly over heads × pixels.

    Args:
        query_dim: C of the queries; hidden_dim: C of the projections; num_heads: maps per query.
        scale: ``"none"`` (the original: maps sum to 1, ~1/(heads·h·w) per cell, small beside the memory
            features they are concatenated with) or ``"cells"`` (maps times the frame's number of valid cells:
            mean 1/heads per cell, whatever the feature-map size).
    """

    def __init__(self, query_dim: int, hidden_dim: int, num_heads: int, scale: str = "none") -> None:
        super().__init__()
        if scale not in ATTENTION_MAP_SCALES:
            raise ValueError(f"attention_map_scale must be one of {ATTENTION_MAP_SCALES}, got {scale!r}")
        self.scale = scale
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
            ``[B', N, heads, h, w]`` attention weights; each query's maps sum to 1 over heads × pixels
            (with ``scale="cells"``: to the frame's number of valid cells).
        """
        q = self.q_linear(q)
        k = F.conv2d(k, self.k_linear.weight[..., None, None], self.k_linear.bias)
        qh = q.unflatten(-1, (self.num_heads, -1))  # B' x N x heads x C/heads
        kh = k.unflatten(1, (self.num_heads, -1))  # B' x heads x C/heads x h x w
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        if mask is not None:
            weights = weights.masked_fill(mask[:, None, None], float("-inf"))
        weights = weights.flatten(2).softmax(dim=-1).view_as(weights)
        if self.scale == "cells":  # times the valid cells of each frame: B' x 1 x 1 x 1 x 1
            valid = torch.ones_like(weights[:, :1, :1]) if mask is None else (~mask)[:, None, None]
            weights = weights * valid.sum(dim=(-2, -1), keepdim=True).to(weights.dtype)
        return weights


class MaskHeadSmallConv(nn.Module):
    """FPN-style conv head ending in a deformable 3×3 convolution (VisTR's ``mask_head``).

    Args:
        dim: input channels (memory C + heads for attention fusion, 2·C for concatenation).
        fpn_dims: channels of the backbone's layer3, layer2, layer1 features.
        context_dim: transformer width C (sets the inner widths C/2 .. C/16).
        strides: strides of the input (layer4) and of the three FPN levels, e.g. (32, 16, 8, 4).
        deformable: the last 3×3 conv is deformable (original). False makes it a plain conv with the same
            weight (the DCN's starting point) and no offset branch: torchvision's CPU deform_conv2d backward
            dominates a small model's training step on CPU.
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
        self.gn1 = _group_norm(FPN_GROUPS, inter[0])
        self.lay2 = nn.Conv2d(inter[0], inter[1], 3, padding=1)
        self.gn2 = _group_norm(FPN_GROUPS, inter[1])
        self.lay3 = nn.Conv2d(inter[1], inter[2], 3, padding=1)
        self.gn3 = _group_norm(FPN_GROUPS, inter[2])
        self.lay4 = nn.Conv2d(inter[2], inter[3], 3, padding=1)
        self.gn4 = _group_norm(FPN_GROUPS, inter[3])
        self.gn5 = _group_norm(FPN_GROUPS, inter[4])
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

    def forward(
        self,
        memory: Tensor,
        instance: Tensor,
        fpns: Sequence[Tensor],
        sizes: Tensor | None,
        num_instances: int,
    ) -> Tensor:
        """Mask features of every (frame, instance) pair.

        The head's input is ``cat([memory, instance])`` per pair (memory first, as the original); since
        ``lay1`` is linear, its memory part is computed once per frame and shared by the N instances.

        Args:
            memory: ``[B·T, C, h, w]`` each frame's encoder memory at the layer4 stride.
            instance: ``[B·T·N, dim - C, h, w]`` per-instance maps (attention maps or broadcast embedding).
            fpns: layer3, layer2, layer1 features, each ``[B·T, C_l, h_l, w_l]`` (shared by the N instances).
            sizes: int64 ``[B, 2]`` valid (height, width) of each clip, or None (no padding).
            num_instances: N.
        Returns:
            ``[B·T·N, C/16, h_1, w_1]`` mask features at the layer1 stride.
        """
        clips = 1 if sizes is None else sizes.shape[0]

        channels = memory.shape[1]
        weight, padding = self.lay1.weight, self.lay1.padding
        shared = F.conv2d(
            zero_padding(memory, _level_keep(memory, sizes, clips, self.strides[0])),
            weight[:, :channels],
            self.lay1.bias,
            padding=padding,
        )
        k = _level_keep(instance, sizes, clips, self.strides[0])
        own = F.conv2d(zero_padding(instance, k), weight[:, channels:], None, padding=padding)
        x = (shared[:, None] + own.unflatten(0, (-1, num_instances))).flatten(0, 1)  # B·T·N x dim x h x w
        x = F.relu(masked_group_norm(x, self.gn1, k))
        x = F.relu(masked_group_norm(self.lay2(zero_padding(x, k)), self.gn2, k))
        layers = (
            (self.adapter1, self.lay3, self.gn3),
            (self.adapter2, self.lay4, self.gn4),
            (self.adapter3,),
        )
        for level, (fpn, ops) in enumerate(zip(fpns, layers)):
            factor = self.strides[level] // self.strides[level + 1]
            # B·T·N x c x h x w -> B·T x N x c x h' x w' (nearest upsampling, cropped to the FPN size)
            up = _upsample_to(x, factor, fpn).unflatten(0, (-1, num_instances))
            x = (up + ops[0](fpn)[:, None]).flatten(0, 1)
            k = _level_keep(x, sizes, clips, self.strides[level + 1])
            if len(ops) > 1:
                x = F.relu(masked_group_norm(ops[1](zero_padding(x, k)), ops[2], k))
        if self.conv_offset is None:
            x = self.dcn(zero_padding(x, k))
        else:
            offset = self.conv_offset(x)
            x = zero_padding(x, k)
            # torchvision's deform_conv2d has no reduced-precision CPU kernel: run it in float32
            x = deform_conv2d(
                x.float(), offset.float(), self.dcn.weight.float(), padding=self.dcn.padding
            ).to(x.dtype)
        return F.relu(masked_group_norm(x, self.gn5, k))


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
            modules += [_group_norm(TEMPORAL_GROUPS, width), nn.ReLU()]
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


class PixelDecoder(nn.Module):
    """Per-frame pixel embeddings for dot-product masks (not in the paper: the mask head of later query-based
    segmenters such as MaskFormer, SeqFormer and Mask2Former-VIS, offered as a lighter alternative).

    An FPN top-down pass over the encoder memory and the backbone's layer3, layer2, layer1 features, run
    once per frame (B·T maps) where VisTR's head runs once per (frame, instance) pair (B·T·N maps). A
    query's mask is the dot product of its mask embedding with these pixel embeddings. With ``temporal``
    a residual 3×1×1 convolution mixes each pixel's embedding across neighbouring frames.

    Args:
        memory_dim: C of the encoder memory.
        fpn_dims: channels of the backbone's layer3, layer2, layer1 features.
        dim: D, the width of every level and of the output embeddings.
        strides: strides of the memory and of the three FPN levels, e.g. (32, 16, 8, 4).
        temporal: fuse the embeddings across frames.
        stem_dim: channels of the backbone's stem (stride 2) to end one level finer, at half the last
            FPN stride: nearest upsampling plus the projected stem, then a depthwise 3×3 conv (cheap at
            4× the pixels). None: the embeddings stay at the last FPN stride.
    """

    def __init__(
        self,
        memory_dim: int,
        fpn_dims: Sequence[int],
        dim: int,
        strides: Sequence[int],
        temporal: bool,
        stem_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.out_channels = dim
        self.lateral = nn.Conv2d(memory_dim, dim, 1)
        self.adapters = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in fpn_dims)
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in range(len(fpn_dims) + 1))
        self.norms = nn.ModuleList(_group_norm(FPN_GROUPS, dim) for _ in range(len(fpn_dims) + 1))
        kernel, padding = (PIXEL_TEMPORAL_KERNEL, 1, 1), (PIXEL_TEMPORAL_KERNEL // 2, 0, 0)
        self.temporal = TimePaddedConv3d(dim, dim, kernel, padding=padding) if temporal else None
        self.stem_adapter = self.stem_conv = self.stem_norm = None
        if stem_dim is not None:
            self.stem_adapter = nn.Conv2d(stem_dim, dim, 1)
            self.stem_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            self.stem_norm = _group_norm(FPN_GROUPS, dim)
        self.out = nn.Conv2d(dim, dim, 1)

    @property
    def out_stride(self) -> int:
        """Stride of the pixel embeddings: the last FPN level's, or half of it with the stem."""
        return self.strides[-1] // (1 if self.stem_adapter is None else STEM_LEVEL_FACTOR)

    def forward(
        self,
        memory: Tensor,
        fpns: Sequence[Tensor],
        sizes: Tensor | None,
        num_frames: int,
        stem: Tensor | None = None,
    ) -> Tensor:
        """Args:
            memory: ``[B·T, C, h, w]`` each frame's encoder memory at the layer4 stride (clip-major).
            fpns: layer3, layer2, layer1 features, each ``[B·T, C_l, h_l, w_l]``.
            sizes: int64 ``[B, 2]`` valid (height, width) of each clip, or None (no padding).
            num_frames: T.
            stem: ``[B·T, stem_dim, h_s, w_s]`` the backbone's stem; required iff built with ``stem_dim``.
        Returns:
            ``[B·T, D, h_o, w_o]`` pixel embeddings at ``out_stride``, zero on padding.
        """
        if (stem is None) != (self.stem_adapter is None):
            raise ValueError("PixelDecoder: pass the stem features exactly when built with stem_dim")
        clips = memory.shape[0] // num_frames
        k = _level_keep(memory, sizes, clips, self.strides[0])
        # the memory arrives as a permuted view: contiguous, so weight gradients keep DDP's bucket layout
        x = self.convs[0](zero_padding(self.lateral(memory.contiguous()), k))
        x = F.relu(masked_group_norm(x, self.norms[0], k))
        for level, fpn in enumerate(fpns):
            factor = self.strides[level] // self.strides[level + 1]
            x = _upsample_to(x, factor, fpn) + self.adapters[level](fpn)
            k = _level_keep(x, sizes, clips, self.strides[level + 1])
            x = self.convs[level + 1](zero_padding(x, k))
            x = F.relu(masked_group_norm(x, self.norms[level + 1], k))
        if self.temporal is not None:  # B·T x D x h x w -> B x D x T x h x w and back
            clip_major = zero_padding(x, k).unflatten(0, (clips, -1)).transpose(1, 2)
            x = x + self.temporal(clip_major).transpose(1, 2).flatten(0, 1)
        if stem is not None:
            x = _upsample_to(x, STEM_LEVEL_FACTOR, stem) + self.stem_adapter(stem)
            k = _level_keep(x, sizes, clips, self.out_stride)
            x = F.relu(masked_group_norm(self.stem_conv(zero_padding(x, k)), self.stem_norm, k))
        return zero_padding(self.out(x), k)


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


class RelativeCoordMaskMLP(nn.Module):
    """A per-query mask MLP over pixel embeddings and coordinates relative to the query's own box (not in the
    paper: CondInst's dynamic mask head, Tian et al., ECCV 2020, added to the dot-product masks).

    A dot product of a query's embedding with pixel embeddings cannot tell two instances of the same
    appearance apart: two overlapping crosses of one texture light up together. Here each query also
    generates the weights of a small MLP that reads, at every pixel, the pixel embedding and where the pixel
    lies relative to the query's predicted box, so a mask can prefer the instance around its own box. Its
    output is added to the dot-product logits. The generator's rows of the last layer start at zero, so an
    untrained MLP adds nothing and the head starts as the plain dot product.

    Coordinates (``COORD_CHANNELS``): the offset from the box centre in frame fractions and the same offset
    in box sizes (clamped to ``±REL_BOX_CLAMP``). The box is detached: the masks do not move the boxes.

    Args:
        query_dim: C, width of the decoder outputs.
        pixel_dim: D, width of the pixel embeddings.
        hidden_dim: width of the MLP's two hidden layers (8, as CondInst's). The generated weights are
            scaled by 1 / sqrt(fan-in), so that a generator of standard init gives layers of standard init.
    """

    def __init__(self, query_dim: int, pixel_dim: int, hidden_dim: int = 8) -> None:
        super().__init__()
        self.pixel_dim = pixel_dim
        fan_in = pixel_dim + COORD_CHANNELS
        # (weights, biases) of layers [D + 4 -> h], [h -> h], [h -> 1]
        self.shapes = [
            (hidden_dim, fan_in),
            (hidden_dim,),
            (hidden_dim, hidden_dim),
            (hidden_dim,),
            (1, hidden_dim),
            (1,),
        ]
        self.fan_ins = [fan_in, 1, hidden_dim, 1, hidden_dim, 1]
        sizes = [math.prod(s) for s in self.shapes]
        self.generator = nn.Linear(query_dim, sum(sizes))
        with torch.no_grad():  # the last layer's weights and bias start at zero
            last = sizes[-1] + sizes[-2]
            self.generator.weight[-last:].zero_()
            self.generator.bias[-last:].zero_()
        self.sizes = sizes

    @staticmethod
    def axis_offsets(centre: Tensor, size: Tensor, grid: Tensor) -> tuple[Tensor, Tensor]:
        """Offsets along one axis (x or y) from each query's box centre.

        Args:
            centre, size: ``[F, N]`` the boxes' centres and sizes along the axis (normalized).
            grid: ``[F, L]`` pixel centres along the axis in fractions of each frame's valid size.
        Returns:
            ``[F, N, L]`` twice: the offsets in frame fractions, then in box sizes (clamped).
        """
        offset = grid[:, None, :] - centre[..., None]
        in_boxes = offset / size.clamp(min=REL_MIN_BOX)[..., None]
        return offset, in_boxes.clamp(-REL_BOX_CLAMP, REL_BOX_CLAMP)

    def forward(self, queries: Tensor, pixels: Tensor, boxes: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """Args:
            queries: ``[F, N, C]`` each frame's N decoder outputs.
            pixels: ``[F, D, h, w]`` that frame's pixel embeddings.
            boxes: ``[F, N, 4]`` the queries' normalized cxcywh boxes (detached: masks do not move boxes).
            rows, cols: ``[F, h]`` and ``[F, w]`` the pixel centres in fractions of each frame's valid size.
        Returns:
            ``[F, N, h, w]`` mask logits to add to the dot product's.
        """
        f, n = queries.shape[:2]
        h, w = pixels.shape[-2:]
        params = self.generator(queries).split(self.sizes, dim=-1)
        w1, b1, w2, b2, w3, b3 = (
            p.view(f, n, *s) / math.sqrt(fan) for p, s, fan in zip(params, self.shapes, self.fan_ins)
        )
        d = self.pixel_dim
        x = torch.einsum("fnkd,fdhw->fnkhw", w1[..., :d], pixels.to(w1.dtype))
        # the coordinate channels (dx, dy, dx/w, dy/h) enter the first layer linearly and each depends on one
        # axis: their term is a per-column plus a per-row term, never an [F, N, 4, h, w] tensor
        cx, cy, bw, bh = boxes.float().unbind(-1)
        dx, dxb = self.axis_offsets(cx, bw, cols.float())  # F x N x w
        dy, dyb = self.axis_offsets(cy, bh, rows.float())  # F x N x h
        wc = w1[..., d:, None]  # F x N x k x 4 x 1
        x_term = wc[..., 0, :] * dx[:, :, None].to(wc.dtype) + wc[..., 2, :] * dxb[:, :, None].to(wc.dtype)
        y_term = wc[..., 1, :] * dy[:, :, None].to(wc.dtype) + wc[..., 3, :] * dyb[:, :, None].to(wc.dtype)
        x = F.relu(x + (y_term + b1[..., None])[..., None] + x_term[..., None, :])  # F x N x k x h x w
        x = F.relu(torch.einsum("fnjk,fnkhw->fnjhw", w2, x) + b2[..., None, None])
        return torch.einsum("fnk,fnkhw->fnhw", w3[:, :, 0], x) + b3[..., None]
