"""Per-frame pixel embeddings for dot-product masks (not in the paper).

The mask head of later query-based segmenters (MaskFormer, SeqFormer, Mask2Former-VIS), beside VisTR's:
an FPN top-down pass run once per frame (B·T maps) where VisTR's head runs once per (frame, instance)
pair (B·T·N maps). Padding-aware like the paper's head (``padding.py``).
"""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from vistr_lit.models.mask_head import FPN_GROUPS, TimePaddedConv3d, group_norm, level_keep, upsample_to
from vistr_lit.models.padding import masked_group_norm, zero_padding

PIXEL_TEMPORAL_KERNEL = 3  # the temporal conv: a frame and its two neighbours
STEM_LEVEL_FACTOR = 2  # the stem level: the stem (stride 2) is one x2 level finer than layer1


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
        self.norms = nn.ModuleList(group_norm(FPN_GROUPS, dim) for _ in range(len(fpn_dims) + 1))
        kernel, padding = (PIXEL_TEMPORAL_KERNEL, 1, 1), (PIXEL_TEMPORAL_KERNEL // 2, 0, 0)
        self.temporal = TimePaddedConv3d(dim, dim, kernel, padding=padding) if temporal else None
        self.stem_adapter = self.stem_conv = self.stem_norm = None
        if stem_dim is not None:
            self.stem_adapter = nn.Conv2d(stem_dim, dim, 1)
            self.stem_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            self.stem_norm = group_norm(FPN_GROUPS, dim)
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
        k = level_keep(memory, sizes, clips, self.strides[0])
        # the memory arrives as a permuted view: contiguous, so weight gradients keep DDP's bucket layout
        x = self.convs[0](zero_padding(self.lateral(memory.contiguous()), k))
        x = F.relu(masked_group_norm(x, self.norms[0], k))
        for level, fpn in enumerate(fpns):
            factor = self.strides[level] // self.strides[level + 1]
            x = upsample_to(x, factor, fpn) + self.adapters[level](fpn)
            k = level_keep(x, sizes, clips, self.strides[level + 1])
            x = self.convs[level + 1](zero_padding(x, k))
            x = F.relu(masked_group_norm(x, self.norms[level + 1], k))
        if self.temporal is not None:  # B·T x D x h x w -> B x D x T x h x w and back
            clip_major = zero_padding(x, k).unflatten(0, (clips, -1)).transpose(1, 2)
            x = x + self.temporal(clip_major).transpose(1, 2).flatten(0, 1)
        if stem is not None:
            x = upsample_to(x, STEM_LEVEL_FACTOR, stem) + self.stem_adapter(stem)
            k = level_keep(x, sizes, clips, self.out_stride)
            x = F.relu(masked_group_norm(self.stem_conv(zero_padding(x, k)), self.stem_norm, k))
        return zero_padding(self.out(x), k)
