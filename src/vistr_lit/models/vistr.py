"""VisTR: a clip of T frames in, Q = T·N instance predictions (class, box, mask sequence) out."""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from vistr_lit.models.backbone import Backbone
from vistr_lit.models.extensions.interface import MaskExtension, MaskInputs
from vistr_lit.models.extensions.query_groups import QueryGroups
from vistr_lit.models.mask_head import (
    TEMPORAL_FUSIONS,
    FrameFeatures,
    InstanceSequenceHead,
    MaskHeadSmallConv,
    MHAttentionMap,
)
from vistr_lit.models.mlp import MLP
from vistr_lit.models.padding import downscale, keep_mask, size_mask, valid_sizes
from vistr_lit.models.position_encoding import PositionEmbeddingSine3D
from vistr_lit.models.transformer import Transformer

MASK_FUSIONS = ("attention", "concat")  # the paper's head and its ablation
# Parameters of the mask branch (``lr_mask_head``): query/memory attention maps, FPN head, 3-D head (and the
# dot-product head's pixel decoder, query mask embeddings and mask upsampler).
MASK_BRANCH = (
    "bbox_attention.",
    "mask_head.",
    "insmask_head.",
    "mask_extension.pixel_decoder.",
    "mask_extension.mask_embed.",
    "mask_extension.mask_upsampler.",
)
NUM_INSTANCES = 10  # N, the paper's instance slots per frame
POSITION_AXES = 3  # t, y, x
BOX_COORDS = 4  # cx, cy, w, h
BOX_MLP_LAYERS = 3


class VisTR(nn.Module):
    """The VisTR network with its mask branch.

    Args:
        backbone: multi-scale ResNet (``Backbone``).
        transformer: encoder/decoder (``Transformer``).
        num_classes: K (no-object is logit K).
        num_frames: T frames per clip; num_instances: N instance slots per frame (Q = T·N queries).
        aux_loss: also return the predictions of every decoder layer but the last.
        query_groups: G (not in the paper: Group DETR, ``QueryGroups``): in training, G - 1 extra groups of
            T·N queries decode the same memory; their outputs go to ``group_outputs``. 1 = the paper.
        mask_fusion: ``"attention"`` (per-head query/memory attention maps, the paper) or ``"concat"`` (the
            instance embedding broadcast over its frame's memory).
        temporal_fusion: ``"conv3d"`` (3-D convs across frames, the paper) or ``"none"`` (per-frame convs).
        mask_deformable: deformable last conv in the mask head (the paper) or a plain one.
        mask_dim: width that sets the mask head's channels (``mask_dim/2 .. mask_dim/16``, then
            ``mask_dim/32`` across time); None = the transformer width C, as the original (C = 384). A small
            transformer keeps a usable mask head by setting it apart.
        attention_map: builder of the query/memory attention maps of ``mask_fusion="attention"``, called
            with (query C, projection C, heads): the paper's ``MHAttentionMap``, or one from
            ``models/extensions`` (e.g. ``CellScaledAttentionMap``).
        mask_extension: a builder of a mask head beside the paper's (``models/extensions``), called with
            the network's ``hidden_dim``, ``num_classes``, ``num_frames``, ``num_instances`` and the
            backbone's ``feature_channels``, ``feature_strides``, ``stem_channels`` where the paper's mask
            branch would be built (so a seeded build draws the same weights in the same order); its head
            replaces the paper's mask branch and the five arguments above. None: the paper's.
    """

    def __init__(
        self,
        backbone: Backbone,
        transformer: Transformer,
        num_classes: int,
        num_frames: int,
        num_instances: int = NUM_INSTANCES,
        aux_loss: bool = True,
        query_groups: int = 1,
        mask_fusion: str = "attention",
        temporal_fusion: str = "conv3d",
        mask_deformable: bool = True,
        mask_dim: int | None = None,
        attention_map: Callable[[int, int, int], MHAttentionMap] = MHAttentionMap,
        mask_extension: Callable[[], MaskExtension] | None = None,
    ) -> None:
        super().__init__()
        if mask_fusion not in MASK_FUSIONS:
            raise ValueError(f"mask_fusion must be one of {MASK_FUSIONS}, got {mask_fusion!r}")
        if temporal_fusion not in TEMPORAL_FUSIONS:
            raise ValueError(f"temporal_fusion must be one of {TEMPORAL_FUSIONS}, got {temporal_fusion!r}")
        for name, value in (
            ("num_classes", num_classes),
            ("num_frames", num_frames),
            ("num_instances", num_instances),
            ("query_groups", query_groups),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        hidden_dim, nheads = transformer.d_model, transformer.nhead
        if hidden_dim % (2 * POSITION_AXES):
            raise ValueError(
                f"hidden_dim must be divisible by 6 (sin/cos pairs for t, y, x), got {hidden_dim}"
            )
        self.num_classes, self.num_frames, self.num_instances = num_classes, num_frames, num_instances
        self.hidden_dim, self.aux_loss = hidden_dim, aux_loss
        self.backbone = backbone
        self.position_encoding = PositionEmbeddingSine3D(hidden_dim // POSITION_AXES)
        self.input_proj = nn.Conv2d(backbone.num_channels[-1], hidden_dim, kernel_size=1)
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_frames * num_instances, hidden_dim)
        self.group_query_embed = (
            QueryGroups(query_groups, num_frames * num_instances, hidden_dim) if query_groups > 1 else None
        )
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, BOX_COORDS, BOX_MLP_LAYERS)
        self.bbox_attention = self.mask_head = self.insmask_head = self.mask_extension = None
        if mask_extension is not None:
            self.mask_extension = mask_extension(
                hidden_dim=hidden_dim,
                num_classes=num_classes,
                num_frames=num_frames,
                num_instances=num_instances,
                feature_channels=backbone.num_channels,
                feature_strides=backbone.strides,
                stem_channels=backbone.stem_channels,
            )
            return
        # the paper's mask branch: attention maps, an FPN head per (frame, instance), a 3-D head per instance
        if mask_fusion == "attention":
            self.bbox_attention = attention_map(hidden_dim, hidden_dim, nheads)
        mask_in = hidden_dim + nheads if mask_fusion == "attention" else 2 * hidden_dim
        fpn_dims = backbone.num_channels[2::-1]  # layer3, layer2, layer1
        self.mask_head = MaskHeadSmallConv(
            mask_in, fpn_dims, mask_dim or hidden_dim, backbone.strides[::-1], mask_deformable
        )
        self.insmask_head = InstanceSequenceHead(self.mask_head.out_channels, temporal_fusion == "conv3d")

    @property
    def mask_stride(self) -> int:
        """Stride of ``pred_masks``: layer1's (4) for the paper's head, the extension's otherwise."""
        return self.backbone.strides[0] if self.mask_extension is None else self.mask_extension.mask_stride

    def forward(self, frames: Tensor, pad_mask: Tensor | None = None) -> dict:
        """Predict Q = T·N instance-frames for each clip.

        Args:
            frames: ``[B, T, 3, H, W]`` normalized frames, zero-padded bottom/right.
            pad_mask: bool ``[B, H, W]``, True on padding, or None (nothing padded).
        Returns:
            dict with ``pred_logits [B, Q, K+1]``, ``pred_boxes [B, Q, 4]`` (sigmoid cxcywh),
            ``pred_masks [B, Q, ⌈H/s⌉, ⌈W/s⌉]`` mask logits at s = ``mask_stride``, and with ``aux_loss``
            ``aux_outputs``: L-1 dicts of ``pred_logits``/``pred_boxes`` (and ``pred_masks`` where a mask
            extension predicts them). Query ``q = t·N + i``. In training with ``query_groups`` G > 1,
            ``group_outputs``: G-1 such dicts.
        """
        if frames.dim() != 5 or frames.shape[1] != self.num_frames:
            raise ValueError(f"frames must be [B, {self.num_frames}, 3, H, W], got {list(frames.shape)}")
        batch, num_frames = frames.shape[0], self.num_frames
        if pad_mask is not None and pad_mask.shape != (batch, *frames.shape[-2:]):
            raise ValueError(
                f"pad_mask must be [B, H, W] = {[batch, *frames.shape[-2:]]}, got {list(pad_mask.shape)}"
            )
        sizes = None if pad_mask is None or not pad_mask.any() else valid_sizes(pad_mask)
        extension = self.mask_extension
        stem = None
        if extension is not None and extension.uses_stem:  # B·T x C_s x h_s x w_s
            features, stem = self.backbone(frames.flatten(0, 1), sizes, return_stem=True)
        else:
            features = self.backbone(frames.flatten(0, 1), sizes)  # 4 x [B·T, C_l, h_l, w_l]

        src = self.input_proj(features[-1])  # B·T x C x h x w
        h, w = src.shape[-2:]
        mask = None if sizes is None else size_mask(downscale(sizes, self.backbone.strides[-1]), h, w)
        clip_mask = (src.new_zeros(batch, h, w, dtype=torch.bool) if mask is None else mask)[:, None]
        pos = self.position_encoding(clip_mask.expand(-1, num_frames, -1, -1)).flatten(1, 3)  # B x T·h·w x C
        pos = pos.to(src.dtype)
        tokens = src.unflatten(0, (batch, num_frames)).permute(0, 1, 3, 4, 2).flatten(1, 3)  # B x T·h·w x C
        token_mask = (
            None if mask is None else clip_mask.expand(-1, num_frames, -1, -1).flatten(1)
        )  # B x T·h·w
        queries, groups = self.query_embed.weight, 1
        if self.group_query_embed is not None and self.training:  # extra groups only train (Group DETR)
            queries, groups = self.group_query_embed.extend(queries)
        memory = self.transformer.encode(tokens, pos, token_mask)  # B x T·h·w x C
        state = cross_masks = None
        if extension is not None:
            inputs = MaskInputs(memory, (h, w), features, stem, frames.flatten(0, 1), sizes, token_mask)
            state = extension.prepare(inputs)
            cross_masks = extension.decoder_masks(state)
        hs = self.transformer.decode(memory, pos, queries, token_mask, groups, cross_masks)  # L x B x G·Q x C
        outputs = [
            self._predictions(group_hs, memory, features, sizes, mask, (h, w), state)
            for group_hs in hs.chunk(groups, dim=2)
        ]
        return outputs[0] if groups == 1 else QueryGroups.merge(outputs)

    def _predictions(
        self,
        hs: Tensor,
        memory: Tensor,
        features: Sequence[Tensor],
        sizes: Tensor | None,
        mask: Tensor | None,
        memory_size: tuple[int, int],
        state: object,
    ) -> dict:
        """The prediction dict of one query group from its decoder outputs ``hs [L, B, Q, C]`` (``state``: the
        mask extension's, or None)."""
        logits, boxes = self.class_embed(hs), self.bbox_embed(hs).sigmoid()  # L x B x Q x (K+1) / 4
        layers = [{"pred_logits": c, "pred_boxes": b} for c, b in zip(logits, boxes)]
        if not self.aux_loss:
            hs, layers = hs[-1:], layers[-1:]
        if self.mask_extension is None:
            layers[-1]["pred_masks"] = self._predict_masks(hs[-1], memory, features, sizes, mask, memory_size)
        else:
            for layer, update in zip(layers, self.mask_extension(state, hs, layers)):
                layer.update(update)
        out = layers[-1]
        if self.aux_loss:
            out["aux_outputs"] = layers[:-1]
        return out

    def _predict_masks(
        self,
        queries: Tensor,
        memory: Tensor,
        features: Sequence[Tensor],
        sizes: Tensor | None,
        mask: Tensor | None,
        memory_size: tuple[int, int],
    ) -> Tensor:
        """The paper's instance sequence segmentation: each frame's share, then every instance's masks.

        Args:
            queries: ``[B, T·N, C]`` the last decoder layer's outputs (query ``t·N + i``).
            memory: ``[B, T·h·w, C]`` the encoder memory; memory_size: (h, w).
            features: the backbone's layer1..layer4, each ``[B·T, C_l, h_l, w_l]``.
            sizes: int64 ``[B, 2]`` valid sizes, or None; mask: bool ``[B, h, w]`` memory padding, or None.
        Returns:
            ``[B, T·N, h_1, w_1]`` mask logits at layer1's stride.
        """
        h, w = memory_size
        # B x T·h·w x C -> B·T x C x h x w
        frame_memory = memory.unflatten(1, (self.num_frames, h, w)).permute(0, 1, 4, 2, 3).flatten(0, 1)
        fpns = [features[2], features[1], features[0]]
        frames = self.mask_head.frame_features(frame_memory, fpns, sizes)
        return self._predict_instance_masks(queries, frame_memory, frames, sizes, mask)

    def _predict_instance_masks(
        self,
        queries: Tensor,
        frame_memory: Tensor,
        frames: FrameFeatures,
        sizes: Tensor | None,
        mask: Tensor | None,
    ) -> Tensor:
        """Mask logits of the instances ``queries``, given their frames' shared work.

        Args:
            queries: ``[B, T·n, C]`` all N instance slots, or any subset of n of them, since every slot's
                masks are computed independently of the others' (``lean.py`` runs them in chunks).
            frame_memory: ``[B·T, C, h, w]`` each frame's encoder memory.
            frames: ``mask_head.frame_features`` of the B·T frames.
            sizes: int64 ``[B, 2]`` valid sizes, or None; mask: bool ``[B, h, w]`` memory padding, or None.
        Returns:
            ``[B, T·n, h_1, w_1]`` mask logits at layer1's stride.
        """
        batch, num_frames = queries.shape[0], self.num_frames
        n = queries.shape[1] // num_frames
        h, w = frame_memory.shape[-2:]
        frame_queries = queries.unflatten(1, (num_frames, n)).flatten(0, 1)  # B·T x n x C
        if self.bbox_attention is not None:
            frame_mask = None if mask is None else mask.repeat_interleave(num_frames, dim=0)
            maps = self.bbox_attention(frame_queries, frame_memory, frame_mask)  # B·T x n x heads x h x w
        else:
            maps = frame_queries[..., None, None].expand(-1, -1, -1, h, w)  # B·T x n x C x h x w
        # B·T·n x c x h_1 x w_1
        mask_features = self.mask_head.instance_features(
            frames, maps.flatten(0, 1).to(frame_memory.dtype), sizes, n
        )
        # B·T·n x c x h_1 x w_1 -> B·n x c x T x h_1 x w_1
        sequences = mask_features.unflatten(0, (batch, num_frames, n)).permute(0, 2, 3, 1, 4, 5).flatten(0, 1)
        h1, w1 = sequences.shape[-2:]
        level_sizes = None if sizes is None else downscale(sizes, self.backbone.strides[0])
        keep = keep_mask(level_sizes, h1, w1, n, sequences.dtype)
        logits = self.insmask_head(
            sequences, None if keep is None else keep[:, :, None]
        )  # B·n x 1 x T x h_1 x w_1
        # B·n x 1 x T x h_1 x w_1 -> B x T·n x h_1 x w_1
        return logits[:, 0].unflatten(0, (batch, n)).transpose(1, 2).flatten(1, 2)
