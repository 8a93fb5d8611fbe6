"""Memory and speed at paper scale, applied to a built ``VisTR`` without changing what it computes.

Three strategies. The first two are exact (the same outputs and gradients; dropout replays its random
numbers); the third is exact up to float rounding:

- **Activation checkpointing** (``torch.utils.checkpoint``, non-reentrant) of the backbone's blocks, the
  encoder layers and the mask head: their inner activations are not kept for the backward pass but
  recomputed there, one block (layer, instance chunk) at a time. Costs one more forward of those parts.
- **Instance chunks of the mask head**: the paper's mask branch (query attention maps
  ``[B·T·N, heads, h, w]``, the FPN-style head at the layer1 stride and the 3-D head) runs on every
  (frame, instance) pair; here it runs on ``mask_head_chunk`` instance slots at a time, so the peak holds
  one chunk's activations. The head's per-frame work (``MaskHeadSmallConv.frame_features``) runs once,
  shared by the chunks. With checkpointing, backward recomputes one chunk at a time too.

- **Frozen batch norm folded into its convolution**: ``conv(x, w) · s + t`` computed as
  ``conv(x, w · s) + t`` (``s``, ``t`` the frozen scale and shift), the fold redone at every call from the
  unchanged parameters, so it trains too. Exact in float32 up to rounding; it saves the batch norm's two
  passes over every activation of the backbone.

``apply_lean(model, checkpoint=("backbone", "encoder", "mask_head"), mask_head_chunk=1)`` patches the
instances' call paths (the parameters, their order and the state-dict keys are untouched), so checkpoints
load either way. Nothing here imports Hydra or Lightning.

Measured and not applied here: the frozen stem and layer1 already record no autograd graph (no input or
parameter of theirs requires gradients); the backbone already runs channels-last; AdamW is already fused
(``VisTRLitModule.configure_optimizers``); bf16 is the trainer's ``precision``. See docs/paper-scale.md.
"""

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from torchvision.models.resnet import Bottleneck

from vistr_lit.models.backbone import LEVELS, FrozenBatchNorm2d
from vistr_lit.models.vistr import VisTR

CHECKPOINT_PARTS = ("backbone", "encoder", "mask_head")


def _checkpointed(function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)``, its activations recomputed in backward when autograd records."""
    if not torch.is_grad_enabled():
        return function(*args, **kwargs)
    return checkpoint(function, *args, use_reentrant=False, **kwargs)


def _instance_chunks(
    predict: Callable[..., Tensor],
    num_frames: int,
    chunk: int | None,
    recompute: bool,
    queries: Tensor,
    *args,
) -> Tensor:
    """``VisTR._predict_instance_masks`` over instance chunks.

    Args:
        predict: the model's own ``_predict_instance_masks``.
        num_frames: T; chunk: instance slots a call (None: all N in one call).
        recompute: checkpoint each call.
        queries: ``[B, T·N, C]`` (query ``t·N + i``); ``args``: the rest of ``_predict_instance_masks``'s
            arguments (the frames' shared work, computed once).
    Returns:
        ``[B, T·N, h_1, w_1]`` mask logits, as one call over all N slots.
    """
    run = partial(_checkpointed, predict) if recompute else predict
    slots = queries.unflatten(1, (num_frames, -1))  # B x T x N x C
    chunk = chunk or slots.shape[2]
    masks = [
        run(slots[:, :, start : start + chunk].flatten(1, 2), *args).unflatten(1, (num_frames, -1))
        for start in range(0, slots.shape[2], chunk)
    ]  # each B x T x n x h_1 x w_1
    return torch.cat(masks, dim=2).flatten(1, 2)  # B x T·N x h_1 x w_1


def _conv_bn_pairs(body: nn.Module) -> list[tuple[nn.Conv2d, nn.Module]]:
    """(convolution, the batch norm right after it) in a torchvision ResNet: the stem, every block's convs and
    its downsample."""
    pairs = [(body.conv1, body.bn1)]
    for level in LEVELS:
        for block in getattr(body, level):
            count = 3 if isinstance(block, Bottleneck) else 2
            pairs += [(getattr(block, f"conv{i}"), getattr(block, f"bn{i}")) for i in range(1, count + 1)]
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1]))
    return pairs


def _folded_conv(conv: nn.Conv2d, norm: FrozenBatchNorm2d, x: Tensor) -> Tensor:
    """``norm(conv(x))`` as one convolution with the frozen scale in its weights and the shift as its bias."""
    scale, shift = norm.affine()
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    weight = conv.weight * scale[:, None, None, None]
    return F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)


def _identity(x: Tensor) -> Tensor:
    return x


def fold_frozen_batch_norm(model: VisTR) -> int:
    """Fold each frozen batch norm of the backbone into the convolution before it (see the module's
    docstring); trainable batch norms are left alone. Returns how many were folded."""
    pairs = [(c, n) for c, n in _conv_bn_pairs(model.backbone.body) if isinstance(n, FrozenBatchNorm2d)]
    for conv, norm in pairs:
        conv.forward = partial(_folded_conv, conv, norm)
        norm.forward = _identity
    return len(pairs)


def apply_lean(
    model: VisTR,
    checkpoint: Sequence[str] = (),
    mask_head_chunk: int | None = None,
    fold_frozen_bn: bool = False,
) -> VisTR:
    """Make ``model`` lean in place (and return it).

    Args:
        model: a built ``VisTR``.
        checkpoint: any of ``CHECKPOINT_PARTS``: recompute the activations of the backbone's blocks, the
            encoder layers and the mask head (per chunk) in backward instead of keeping them.
        mask_head_chunk: instance slots the paper's mask head (``mask_fusion`` "attention" or "concat") runs
            at a time (None: all N at once, as the paper). The dot-product head runs per frame: it has no
            per-instance work, and this setting does not change it.
        fold_frozen_bn: fold the backbone's frozen batch norms into their convolutions
            (``fold_frozen_batch_norm``).
    """
    unknown = set(checkpoint) - set(CHECKPOINT_PARTS)
    if unknown:
        raise ValueError(f"lean.checkpoint: unknown {sorted(unknown)}; choose from {CHECKPOINT_PARTS}")
    if mask_head_chunk is not None and mask_head_chunk < 1:
        raise ValueError(f"lean.mask_head_chunk must be >= 1 or null, got {mask_head_chunk}")
    paper_head = model.insmask_head is not None  # the dot-product head has no per-instance work to chunk
    if getattr(model, "lean", None) is not None:
        raise ValueError(f"apply_lean: this model is already lean ({model.lean})")
    model.lean = {
        "checkpoint": tuple(checkpoint),
        "mask_head_chunk": mask_head_chunk,
        "fold_frozen_bn": fold_frozen_bn,
    }
    if fold_frozen_bn:
        fold_frozen_batch_norm(model)
    if "backbone" in checkpoint:
        model.backbone.block_forward = partial(_checkpointed, model.backbone.block_forward)
    if "encoder" in checkpoint:
        for layer in model.transformer.encoder.layers:
            layer.forward = partial(_checkpointed, layer.forward)
    if paper_head and ("mask_head" in checkpoint or mask_head_chunk is not None):
        recompute = "mask_head" in checkpoint
        model._predict_instance_masks = partial(
            _instance_chunks, model._predict_instance_masks, model.num_frames, mask_head_chunk, recompute
        )
    elif "mask_head" in checkpoint:  # the dot-product head: one checkpoint around its per-frame pixel decoder
        decoder = model.mask_extension.pixel_decoder
        decoder.forward = partial(_checkpointed, decoder.forward)
    return model
