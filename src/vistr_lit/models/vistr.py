"""VisTR: a clip of T frames in, Q = T·N instance predictions (class, box, mask sequence) out."""

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistr_lit.models.backbone import Backbone
from vistr_lit.models.mask_classifier import MaskPooledClassifier
from vistr_lit.models.mask_head import (
    ConvexMaskUpsampler,
    InstanceSequenceHead,
    MaskHeadSmallConv,
    MHAttentionMap,
    PixelDecoder,
    RelativeCoordMaskMLP,
)
from vistr_lit.models.padding import downscale, keep_mask, size_mask, valid_sizes
from vistr_lit.models.position_encoding import PositionEmbeddingSine3D
from vistr_lit.models.transformer import Transformer

MASK_FUSIONS = ("attention", "concat", "dot_product")
MASK_CLASSIFIERS = ("none", "frame", "clip")  # MaskPooledClassifier off, per instance-frame, pooled per clip
# layer1's (the paper); with the dot-product head, 2 adds the backbone's stem and 1 upsamples the stride-4
# masks by the frames (ConvexMaskUpsampler)
MASK_STRIDES = (4, 2, 1)
STEM_MASK_STRIDE = 2
TEMPORAL_FUSIONS = ("conv3d", "none")
# Attributes of VisTR that form the mask branch: query/memory attention maps, FPN head, 3-D head (and the
# dot-product head's query mask embeddings and mask upsampler).
MASK_BRANCH = ("bbox_attention", "mask_head", "insmask_head", "mask_embed", "mask_upsampler")
DOT_PRODUCT_WIDTH_DIVISOR = 8  # dot-product masks: embedding width C/8 unless mask_dim says otherwise
POSITION_AXES = 3  # t, y, x
BOX_COORDS = 4  # cx, cy, w, h
BOX_MLP_LAYERS = 3
# masked attention: a memory cell is seen where a mask probability in it reaches this
MASKED_ATTENTION_THRESHOLD = 0.5


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's box head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


class VisTR(nn.Module):
    """The VisTR network with its mask branch.

    Args:
        backbone: multi-scale ResNet (``Backbone``).
        transformer: encoder/decoder (``Transformer``).
        num_classes: K (no-object is logit K).
        num_frames: T frames per clip; num_instances: N instance slots per frame (Q = T·N queries).
        mask_fusion: ``"attention"`` (per-head query/memory attention maps, original), ``"concat"``
            (the instance embedding broadcast over its frame's memory) or ``"dot_product"`` (not in the paper:
            each query's mask embedding dotted with per-frame pixel embeddings, ``PixelDecoder``; its FPN runs
            per frame instead of per instance, and its masks learn much faster on a small budget).
        temporal_fusion: ``"conv3d"`` (3-D convs across frames, original) or ``"none"`` (per-frame convs).
            With ``"dot_product"``: a residual 3×1×1 conv over the pixel embeddings, or none.
        aux_loss: also return the predictions of every decoder layer but the last.
        mask_deformable: deformable last conv in the mask head (original) or a plain one.
        mask_dim: width that sets the mask head's channels (``mask_dim/2 .. mask_dim/16``, then
            ``mask_dim/32`` across time); None = the transformer width C, as the original (C = 384). A small
            transformer keeps a usable mask head by setting it apart. With ``"dot_product"``: the width D of
            the pixel and mask embeddings (None = C/8).
        attention_map_scale: ``"none"`` (original) or ``"cells"``: the attention maps times the number of
            valid memory cells, so the instance signal is not ~1/(h·w) beside the memory features
            (``MHAttentionMap``).
        aux_masks: with ``"dot_product"`` (not in the paper, as in Mask2Former): every auxiliary decoder
            layer also predicts masks from the same pixel embeddings, so the mask losses supervise each layer.
        query_groups: G (not in the paper: Group DETR). In training, G - 1 extra groups of T·N queries
            decode the same memory, each attending only to itself and matched on its own; their outputs go
            to ``group_outputs`` and their losses are averaged with the main group's. More positive matches
            per step for a cheap decoder; in eval mode only the main group runs (same outputs as G = 1).
        mask_stride: stride of ``pred_masks``: 4 (layer1, the paper) or, with ``"dot_product"`` (not in the
            paper), 2 (the pixel decoder adds the backbone's stem: finer masks for small objects) or 1 (the
            stride-4 masks upsampled to the input size by ``ConvexMaskUpsampler``, its weights predicted from
            the pixel embeddings and the frames' own pixels).
        mask_classifier: with ``"dot_product"`` (not in the paper): the last layer's class logits get a
            correction read from each query's own mask, its shape over its box and the layer1 features
            under it (``MaskPooledClassifier``): ``"frame"`` (or True) per instance-frame, ``"clip"`` with
            the class corrections averaged over each slot's frames, ``"none"`` (or False) without.
        masked_attention: with ``"dot_product"`` (not in the paper: Mask2Former's masked attention, per
            instance sequence as in its video version): from the second decoder layer on, every query of
            an instance slot cross-attends only to the memory cells its slot's previous-layer masks cover
            in any frame (all cells when they cover none).
        mask_coords: with ``"dot_product"`` (not in the paper: CondInst's dynamic mask head): each query's
            mask logits also get a small MLP, its weights generated by the query, over the pixel embeddings
            and each pixel's offset from the query's own (detached) box (``RelativeCoordMaskMLP``), so that
            instances of one appearance separate by where they are.
    """

    def __init__(
        self,
        backbone: Backbone,
        transformer: Transformer,
        num_classes: int,
        num_frames: int,
        num_instances: int = 10,
        mask_fusion: str = "attention",
        temporal_fusion: str = "conv3d",
        aux_loss: bool = True,
        mask_deformable: bool = True,
        mask_dim: int | None = None,
        attention_map_scale: str = "none",
        aux_masks: bool = False,
        query_groups: int = 1,
        mask_stride: int = 4,
        mask_classifier: bool | str = False,
        masked_attention: bool = False,
        mask_coords: bool = False,
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
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if aux_masks and mask_fusion != "dot_product":
            raise ValueError(f"aux_masks needs mask_fusion 'dot_product', got {mask_fusion!r}")
        if mask_stride not in MASK_STRIDES or (
            mask_stride != MASK_STRIDES[0] and mask_fusion != "dot_product"
        ):
            raise ValueError(
                f"mask_stride must be one of {MASK_STRIDES} (2 and 1 only with mask_fusion 'dot_product'), "
                f"got {mask_stride} with {mask_fusion!r}"
            )
        if query_groups < 1:
            raise ValueError(f"query_groups must be >= 1, got {query_groups}")
        mask_classifier = {True: "frame", False: "none"}.get(mask_classifier, mask_classifier)
        if mask_classifier not in MASK_CLASSIFIERS:
            raise ValueError(f"mask_classifier must be one of {MASK_CLASSIFIERS}, got {mask_classifier!r}")
        if mask_classifier != "none" and mask_fusion != "dot_product":
            raise ValueError(f"mask_classifier needs mask_fusion 'dot_product', got {mask_fusion!r}")
        if masked_attention and mask_fusion != "dot_product":
            raise ValueError(f"masked_attention needs mask_fusion 'dot_product', got {mask_fusion!r}")
        if mask_coords and mask_fusion != "dot_product":
            raise ValueError(f"mask_coords needs mask_fusion 'dot_product', got {mask_fusion!r}")
        self.masked_attention = masked_attention
        hidden_dim, nheads = transformer.d_model, transformer.nhead
        if hidden_dim % (2 * POSITION_AXES):
            raise ValueError(
                f"hidden_dim must be divisible by 6 (sin/cos pairs for t, y, x), got {hidden_dim}"
            )
        self.num_classes, self.num_frames, self.num_instances = num_classes, num_frames, num_instances
        self.hidden_dim, self.mask_fusion, self.aux_loss = hidden_dim, mask_fusion, aux_loss
        self.backbone = backbone
        self.position_encoding = PositionEmbeddingSine3D(hidden_dim // POSITION_AXES)
        self.input_proj = nn.Conv2d(backbone.num_channels[-1], hidden_dim, kernel_size=1)
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_frames * num_instances, hidden_dim)
        self.query_groups, self.mask_stride = query_groups, mask_stride
        self.group_query_embed = (
            nn.Embedding((query_groups - 1) * num_frames * num_instances, hidden_dim)
            if query_groups > 1
            else None
        )
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, BOX_COORDS, BOX_MLP_LAYERS)
        fpn_dims = backbone.num_channels[2::-1]  # layer3, layer2, layer1
        temporal = temporal_fusion == "conv3d"
        self.bbox_attention = self.insmask_head = self.mask_embed = self.mask_upsampler = None
        self.mask_coord_mlp = None
        self.aux_masks = aux_masks
        if mask_fusion == "dot_product":
            dim = mask_dim or hidden_dim // DOT_PRODUCT_WIDTH_DIVISOR
            stem = backbone.stem_channels if mask_stride == STEM_MASK_STRIDE else None
            self.mask_head = PixelDecoder(hidden_dim, fpn_dims, dim, backbone.strides[::-1], temporal, stem)
            self.mask_embed = MLP(hidden_dim, hidden_dim, dim, BOX_MLP_LAYERS)
            if mask_stride < self.mask_head.out_stride:
                self.mask_upsampler = ConvexMaskUpsampler(dim, self.mask_head.out_stride // mask_stride)
            if mask_coords:
                self.mask_coord_mlp = RelativeCoordMaskMLP(hidden_dim, dim)
        else:
            if mask_fusion == "attention":
                self.bbox_attention = MHAttentionMap(hidden_dim, hidden_dim, nheads, attention_map_scale)
            mask_in = hidden_dim + nheads if mask_fusion == "attention" else 2 * hidden_dim
            self.mask_head = MaskHeadSmallConv(
                mask_in, fpn_dims, mask_dim or hidden_dim, backbone.strides[::-1], mask_deformable
            )
            self.insmask_head = InstanceSequenceHead(self.mask_head.out_channels, temporal)
        self.mask_classifier = (
            MaskPooledClassifier(
                backbone.num_channels[0], hidden_dim, num_classes + 1, clip_pooling=mask_classifier == "clip"
            )
            if mask_classifier != "none"
            else None
        )

    def forward(self, frames: Tensor, pad_mask: Tensor | None = None) -> dict:
        """Predict Q = T·N instance-frames for each clip.

        Args:
            frames: ``[B, T, 3, H, W]`` normalized frames, zero-padded bottom/right.
            pad_mask: bool ``[B, H, W]``, True on padding, or None (nothing padded).
        Returns:
            dict with ``pred_logits [B, Q, K+1]``, ``pred_boxes [B, Q, 4]`` (sigmoid cxcywh),
            ``pred_masks [B, Q, ⌈H/s⌉, ⌈W/s⌉]`` mask logits at s = ``mask_stride``, and with ``aux_loss``
            ``aux_outputs``: L-1 dicts of ``pred_logits``/``pred_boxes`` (and ``pred_masks`` with
            ``aux_masks``). Query ``q = t·N + i``.
        """
        if frames.dim() != 5 or frames.shape[1] != self.num_frames:
            raise ValueError(f"frames must be [B, {self.num_frames}, 3, H, W], got {list(frames.shape)}")
        batch, num_frames = frames.shape[0], self.num_frames
        if pad_mask is not None and pad_mask.shape != (batch, *frames.shape[-2:]):
            raise ValueError(
                f"pad_mask must be [B, H, W] = {[batch, *frames.shape[-2:]]}, got {list(pad_mask.shape)}"
            )
        sizes = None if pad_mask is None or not pad_mask.any() else valid_sizes(pad_mask)
        stem = None
        if self.mask_stride == STEM_MASK_STRIDE:  # B·T x C_s x h_s x w_s
            features, stem = self.backbone(frames.flatten(0, 1), sizes, return_stem=True)
        else:
            features = self.backbone(frames.flatten(0, 1), sizes)  # 4 x [B·T, C_l, h_l, w_l]

        src = self.input_proj(features[-1])  # B·T x C x h x w
        h, w = src.shape[-2:]
        mask = None if sizes is None else size_mask(downscale(sizes, self.backbone.strides[-1]), h, w)
        clip_mask = (src.new_zeros(batch, h, w, dtype=torch.bool) if mask is None else mask)[:, None]
        pos = self.position_encoding(clip_mask.expand(-1, num_frames, -1, -1)).flatten(1, 3)  # B x T·h·w x C
        tokens = src.unflatten(0, (batch, num_frames)).permute(0, 1, 3, 4, 2).flatten(1, 3)  # B x T·h·w x C
        token_mask = (
            None if mask is None else clip_mask.expand(-1, num_frames, -1, -1).flatten(1)
        )  # B x T·h·w
        groups = self.query_groups if self.training else 1  # extra groups only train (Group DETR)
        queries = self.query_embed.weight
        if groups > 1:
            queries = torch.cat([queries, self.group_query_embed.weight])
        memory = self.transformer.encode(tokens, pos.to(tokens.dtype), token_mask)  # B x T·h·w x C
        pixels = upsample = cross_masks = grid = None
        if self.mask_embed is not None:  # the dot-product head: per-frame pixel embeddings
            pixels = self._pixel_embeddings(memory, features, sizes, (h, w), stem)
            if self.mask_coord_mlp is not None:
                grid = self._pixel_grid(pixels, sizes, tuple(frames.shape[-2:]))
            if self.mask_upsampler is not None:
                upsample = self._mask_upsampling(pixels, frames.flatten(0, 1), sizes)
            if self.masked_attention:
                cross_masks = partial(
                    self._attention_masks, pixels=pixels, sizes=sizes, token_mask=token_mask
                )
        # L x B x G·Q x C
        hs = self.transformer.decode(memory, pos.to(tokens.dtype), queries, token_mask, groups, cross_masks)
        outputs = [
            self._group_outputs(group_hs, memory, features, sizes, mask, (h, w), pixels, upsample, grid)
            for group_hs in hs.chunk(groups, dim=2)
        ]
        if groups > 1:
            outputs[0]["group_outputs"] = outputs[1:]
        return outputs[0]

    def _group_outputs(
        self,
        hs: Tensor,
        memory: Tensor,
        features: Sequence[Tensor],
        sizes: Tensor | None,
        mask: Tensor | None,
        memory_size: tuple[int, int],
        pixels: Tensor | None,
        upsample: Callable[[Tensor], Tensor] | None,
        grid: tuple[Tensor, Tensor, Tensor | None] | None = None,
    ) -> dict:
        """The prediction dict of one query group from its decoder outputs ``hs [L, B, Q, C]`` (``pixels``,
        ``upsample`` and ``grid``: the dot-product head's embeddings, mask upsampling and pixel grid, or
        None)."""
        logits, boxes = self.class_embed(hs), self.bbox_embed(hs).sigmoid()  # L x B x Q x (K+1) / 4
        layers = [{"pred_logits": c, "pred_boxes": b} for c, b in zip(logits, boxes)]
        if pixels is not None:
            masked = range(len(layers)) if self.aux_loss and self.aux_masks else [len(layers) - 1]
            for layer in masked:
                self._dot_product_outputs(layers[layer], hs[layer], pixels, upsample, grid)
            if self.mask_classifier is not None:
                last = layers[-1]
                last["pred_logits"] = last["pred_logits"] + self._mask_class_logits(
                    hs[-1], last, features[0], sizes
                )
        else:
            layers[-1]["pred_masks"] = self._predict_masks(hs[-1], memory, features, sizes, mask, memory_size)
        out = layers[-1]
        if self.aux_loss:
            out["aux_outputs"] = layers[:-1]
        return out

    def _pixel_embeddings(
        self,
        memory: Tensor,
        features: Sequence[Tensor],
        sizes: Tensor | None,
        memory_size: tuple[int, int],
        stem: Tensor | None,
    ) -> Tensor:
        """memory ``[B, T·h·w, C]`` -> the dot-product head's pixel embeddings ``[B·T, D, h_m, w_m]``."""
        frame_memory, fpns = self._mask_head_inputs(memory, features, memory_size)
        return self.mask_head(frame_memory, fpns, sizes, self.num_frames, stem)

    def _mask_head_inputs(
        self, memory: Tensor, features: Sequence[Tensor], memory_size: tuple[int, int]
    ) -> tuple[Tensor, list[Tensor]]:
        """Memory ``[B, T·h·w, C]`` as per-frame maps ``[B·T, C, h, w]``, and layer3, layer2, layer1."""
        h, w = memory_size
        frame_memory = memory.unflatten(1, (self.num_frames, h, w)).permute(0, 1, 4, 2, 3).flatten(0, 1)
        return frame_memory, [features[2], features[1], features[0]]

    def _mask_upsampling(
        self, pixels: Tensor, frames: Tensor, sizes: Tensor | None
    ) -> Callable[[Tensor], Tensor]:
        """``ConvexMaskUpsampler`` with its weights computed once from pixels ``[B·T, D, h, w]`` and frames
        ``[B·T, 3, H, W]``, shared by every decoder layer, query group and instance: a function from
        ``[B·T, N, h, w]`` mask logits to ``[B·T, N, H, W]``."""
        level = None if sizes is None else downscale(sizes, self.mask_head.out_stride)
        keep = keep_mask(level, *pixels.shape[-2:], self.num_frames, pixels.dtype)
        weights = self.mask_upsampler.weights(pixels, frames, keep)
        return partial(self.mask_upsampler, weights=weights, size=tuple(frames.shape[-2:]))

    @torch.no_grad()
    def _attention_masks(
        self, hs: Tensor, pixels: Tensor, sizes: Tensor | None, token_mask: Tensor | None
    ) -> Tensor:
        """Masked attention's cross-attention masks from one decoder layer's outputs.

        Args:
            hs: ``[B, G·Q, C]`` the layer's normed outputs (G groups of Q = T·N queries).
            pixels: ``[B·T, D, h_p, w_p]`` the pixel embeddings.
            sizes: int64 ``[B, 2]`` valid sizes, or None.
            token_mask: bool ``[B, S]``, True on padded memory tokens (S = T·h·w), or None.
        Returns:
            bool ``[B, G·Q, S]``: query (g, t, i) may see the memory cells where slot (g, i)'s mask
            probability reaches ``MASKED_ATTENTION_THRESHOLD`` in any pixel, in any frame; every valid
            cell where the slot's masks reach it nowhere.
        """
        batch, frames, slots = hs.shape[0], self.num_frames, self.num_instances
        embed = self.mask_embed(hs.unflatten(1, (-1, frames, slots)))  # B x G x T x N x D
        frame_pixels = pixels.unflatten(0, (batch, frames)).to(embed.dtype)  # B x T x D x h_p x w_p
        probs = torch.einsum("bgtnd,btdhw->bgtnhw", embed, frame_pixels).float().sigmoid()
        stride = self.mask_head.out_stride
        if sizes is not None:  # the padding's logits are 0 (probability 0.5): not part of any mask
            probs = probs * (~size_mask(downscale(sizes, stride), *probs.shape[-2:]))[:, None, None, None]
        factor = self.backbone.strides[-1] // stride
        covered = F.max_pool2d(probs.flatten(0, 3), factor, ceil_mode=True).unflatten(0, probs.shape[:4])
        seen = (covered >= MASKED_ATTENTION_THRESHOLD).transpose(2, 3).flatten(3)  # B x G x N x T·h·w
        valid = None if token_mask is None else ~token_mask[:, None, None]
        if valid is not None:
            seen = seen & valid
        seen = seen | ~seen.any(dim=-1, keepdim=True)  # a slot that covers nothing sees everything
        if valid is not None:
            seen = seen & valid
        return seen[:, :, None].expand(-1, -1, frames, -1, -1).flatten(1, 3)  # B x G·T·N x S

    def _per_frame(self, x: Tensor) -> Tensor:
        """Query-indexed ``[B, T·N, ...]`` (query q = t·N + i) -> per frame ``[B·T, N, ...]``, clip-major."""
        return x.unflatten(1, (self.num_frames, self.num_instances)).flatten(0, 1)

    def _pixel_grid(
        self, pixels: Tensor, sizes: Tensor | None, frame_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Centres of the pixel embeddings' cells ``[B·T, h]`` (rows) and ``[B·T, w]`` (columns) in fractions
        of each frame's valid height and width (the boxes' normalization), and their valid mask
        ``[B·T, 1, h, w]`` (None without padding)."""
        h, w = pixels.shape[-2:]
        stride = self.mask_head.out_stride
        valid = (
            torch.tensor([frame_size], device=pixels.device) if sizes is None else sizes
        ).float()  # B x 2 (or 1 x 2)
        rows = (torch.arange(h, device=pixels.device) + 0.5) * stride / valid[:, :1]  # B x h
        cols = (torch.arange(w, device=pixels.device) + 0.5) * stride / valid[:, 1:]  # B x w
        frames = self.num_frames if sizes is not None else pixels.shape[0]
        keep = (
            None
            if sizes is None
            else keep_mask(downscale(sizes, stride), h, w, self.num_frames, pixels.dtype)
        )
        return rows.repeat_interleave(frames, 0), cols.repeat_interleave(frames, 0), keep

    def _dot_product_outputs(
        self,
        out: dict,
        queries: Tensor,
        pixels: Tensor,
        upsample: Callable[[Tensor], Tensor] | None,
        grid: tuple[Tensor, Tensor, Tensor | None] | None = None,
    ) -> None:
        """Add one decoder layer's ``pred_masks`` ``[B, Q, h_m, w_m]`` to ``out`` (queries ``[B, Q, C]``,
        pixels ``[B·T, D, h, w]``; ``upsample`` maps ``[B·T, N, h, w]`` logits to the mask stride; ``grid``
        from ``_pixel_grid`` with ``mask_coords``)."""
        batch, num_frames = queries.shape[0], self.num_frames
        frame_queries = self._per_frame(queries)  # B·T x N x C
        logits = torch.einsum("fnd,fdhw->fnhw", self.mask_embed(frame_queries), pixels)  # B·T x N x h x w
        if self.mask_coord_mlp is not None:
            rows, cols, keep = grid
            boxes = self._per_frame(out["pred_boxes"]).detach()  # B·T x N x 4
            extra = self.mask_coord_mlp(frame_queries, pixels, boxes, rows, cols)
            logits = logits + (extra if keep is None else extra * keep).to(logits.dtype)
        if upsample is not None:
            logits = upsample(logits)  # B·T x N x H x W
        out["pred_masks"] = logits.unflatten(0, (batch, num_frames)).flatten(1, 2)  # B x T·N x h_m x w_m

    def _mask_class_logits(
        self, queries: Tensor, out: dict, features: Tensor, sizes: Tensor | None
    ) -> Tensor:
        """``MaskPooledClassifier``'s correction ``[B, Q, K+1]`` of one layer's logits (queries ``[B, Q, C]``;
        ``out`` holds its ``pred_masks`` and ``pred_boxes``; features: layer1 ``[B·T, C_1, h_1, w_1]``)."""
        batch, num_frames = queries.shape[0], self.num_frames
        masks = self._per_frame(out["pred_masks"])
        height, width = masks.shape[-2:]
        if sizes is None:
            valid, keep = masks.new_tensor([[height, width]], dtype=torch.int64).expand(batch, -1), None
        else:
            valid = downscale(sizes, self.mask_stride)
            keep = (~size_mask(valid, height, width)).repeat_interleave(num_frames, dim=0)
        logits = self.mask_classifier(
            self._per_frame(queries),
            masks,
            self._per_frame(out["pred_boxes"]),
            features,
            valid.repeat_interleave(num_frames, dim=0),
            keep,
            num_frames,
            self.backbone.strides[0] // self.mask_stride,
        )
        return logits.unflatten(0, (batch, num_frames)).flatten(1, 2)

    def _predict_masks(
        self,
        queries: Tensor,
        memory: Tensor,
        features: Sequence[Tensor],
        sizes: Tensor | None,
        mask: Tensor | None,
        memory_size: tuple[int, int],
    ) -> Tensor:
        """queries ``[B, T·n, C]``, memory ``[B, T·h·w, C]``, mask ``[B, h, w]`` -> ``[B, T·n, h_1, w_1]``.

        n is N, or any subset of the instance slots (query ``t·n + i``): every slot's masks are computed
        independently of the others' (``lean.py`` runs them in chunks)."""
        batch, num_frames = queries.shape[0], self.num_frames
        n = queries.shape[1] // num_frames
        h, w = memory_size
        frame_queries = queries.unflatten(1, (num_frames, n)).flatten(0, 1)  # B·T x n x C
        frame_memory, fpns = self._mask_head_inputs(memory, features, memory_size)  # B·T x C x h x w
        if self.bbox_attention is not None:
            frame_mask = None if mask is None else mask.repeat_interleave(num_frames, dim=0)
            maps = self.bbox_attention(frame_queries, frame_memory, frame_mask)  # B·T x N x heads x h x w
        else:
            maps = frame_queries[..., None, None].expand(-1, -1, -1, h, w)  # B·T x N x C x h x w
        # B·T·N x c x h_1 x w_1
        mask_features = self.mask_head(
            frame_memory, maps.flatten(0, 1).to(frame_memory.dtype), fpns, sizes, n
        )
        # B·T·N x c x h_1 x w_1 -> B·N x c x T x h_1 x w_1
        sequences = mask_features.unflatten(0, (batch, num_frames, n)).permute(0, 2, 3, 1, 4, 5).flatten(0, 1)
        h1, w1 = sequences.shape[-2:]
        level_sizes = None if sizes is None else downscale(sizes, self.backbone.strides[0])
        keep = keep_mask(level_sizes, h1, w1, n, sequences.dtype)
        logits = self.insmask_head(
            sequences, None if keep is None else keep[:, :, None]
        )  # B·N x 1 x T x h_1 x w_1
        # B·N x 1 x T x h_1 x w_1 -> B x T·N x h_1 x w_1
        return logits[:, 0].unflatten(0, (batch, n)).transpose(1, 2).flatten(1, 2)


def build_vistr(
    num_classes: int,
    num_frames: int,
    num_instances: int = 10,
    backbone: str = "resnet50",
    hidden_dim: int = 384,
    nheads: int = 8,
    enc_layers: int = 6,
    dec_layers: int = 6,
    dim_feedforward: int = 2048,
    dropout: float = 0.1,
    attention_dropout: float = 0.0,
    dilation: bool = False,
    trainable_stages: Sequence[str] = ("layer2", "layer3", "layer4"),
    pretrained_backbone: str | None = None,
    backbone_norm: str = "frozen",
    backbone_width: int = 64,
    mask_fusion: str = "attention",
    temporal_fusion: str = "conv3d",
    mask_deformable: bool = True,
    mask_dim: int | None = None,
    aux_loss: bool = True,
    attention_map_scale: str = "none",
    aux_masks: bool = False,
    query_groups: int = 1,
    mask_stride: int = 4,
    mask_classifier: bool | str = False,
    masked_attention: bool = False,
    mask_coords: bool = False,
) -> VisTR:
    """Build VisTR from plain arguments (defaults: the original R50 configuration, T and K to choose).

    ``pretrained_backbone`` is a torchvision weights name such as ``"IMAGENET1K_V1"`` (loaded from the local
    torch hub cache or downloaded by torchvision), or None for random initialization. ``backbone_norm``:
    ``"frozen"`` (FrozenBatchNorm2d, the original) or ``"batch"`` (trainable BatchNorm2d for a backbone
    trained from scratch). ``backbone_width``: channels of its first stage (64 published; narrower ones for
    training from scratch on a CPU).
    """
    return VisTR(
        Backbone(
            backbone, tuple(trainable_stages), dilation, pretrained_backbone, backbone_norm, backbone_width
        ),
        Transformer(hidden_dim, nheads, enc_layers, dec_layers, dim_feedforward, dropout, attention_dropout),
        num_classes,
        num_frames,
        num_instances,
        mask_fusion,
        temporal_fusion,
        aux_loss,
        mask_deformable,
        mask_dim,
        attention_map_scale,
        aux_masks,
        query_groups,
        mask_stride,
        mask_classifier,
        masked_attention,
        mask_coords,
    )
