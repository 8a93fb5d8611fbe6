"""ResNet backbone with frozen batch norm, returning the four stage outputs the VisTR mask head needs."""

from collections.abc import Sequence

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d as TorchvisionFrozenBatchNorm2d

from vistr_lit.models.padding import downscale, keep_mask, zero_padding

# name -> (block, blocks per stage); "resnet10" is a tiny CPU-friendly ResNet without published weights.
RESNET_ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet10": (BasicBlock, (1, 1, 1, 1)),
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}
STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")
LEVELS = ("layer1", "layer2", "layer3", "layer4")
STEM_STRIDE = 4  # conv1 (stride 2) then max-pool (stride 2)
STAGE_WIDTHS = (64, 128, 256, 512)  # torchvision's per-stage base widths (times block.expansion)
DC5_DILATION = 2  # a dilated layer4 keeps stride 16 (DETR-DC5)


class FrozenBatchNorm2d(TorchvisionFrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` whose output keeps the input's dtype (same buffers and keys).

    The affine is computed in float32 from the float32 statistics, as torchvision's, then applied in the
    input's dtype. torchvision's ``x * scale + bias`` with float32 ``scale`` promotes a bf16 input to
    float32, so under bf16 autocast every frozen norm turned the residual stream, the ReLUs and the saved
    activations into float32 and each next convolution cast them back. Float32 inputs give torchvision's
    values bit for bit.
    """

    def affine(self) -> tuple[Tensor, Tensor]:
        """The frozen ``(scale, shift)``, each ``[C]`` in float32: the norm is ``x · scale + shift``."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]`` in ``x``'s dtype."""
        scale, shift = self.affine()
        return x * scale.to(x.dtype)[:, None, None] + shift.to(x.dtype)[:, None, None]


# "frozen": FrozenBatchNorm2d (the original; right for pretrained weights). "batch": trainable BatchNorm2d,
# for training a backbone from scratch, where frozen identity statistics would leave the ResNet unnormalized.
NORMS: dict[str, type[nn.Module]] = {"frozen": FrozenBatchNorm2d, "batch": nn.BatchNorm2d}


def _build_resnet(
    name: str, dilation: bool, pretrained: str | None, norm: str = "frozen", width: int = STAGE_WIDTHS[0]
) -> ResNet:
    if name not in RESNET_ARCHS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(RESNET_ARCHS)}")
    block, layers = RESNET_ARCHS[name]
    if norm not in NORMS:
        raise ValueError(f"unknown backbone norm {norm!r}; choose one of {sorted(NORMS)}")
    # torchvision dilates Bottleneck stages only; a BasicBlock layer4 is dilated after construction
    dilate = [False, False, dilation and block is not BasicBlock]
    norm_layer = NORMS[norm]
    if pretrained is None:
        body = ResNet(block, list(layers), norm_layer=norm_layer, replace_stride_with_dilation=dilate)
        body = body if width == STAGE_WIDTHS[0] else _narrow(body, block, layers, width, dilate)
    else:
        if width != STAGE_WIDTHS[0]:
            raise ValueError(
                f"backbone width {width} differs from the published {STAGE_WIDTHS[0]}: "
                "use pretrained_backbone=None"
            )
        if name == "resnet10":
            raise ValueError("backbone 'resnet10' has no published weights; use pretrained_backbone=None")
        weights = torchvision.models.get_model_weights(name)[pretrained]
        body = torchvision.models.get_model(
            name, weights=weights, norm_layer=norm_layer, replace_stride_with_dilation=dilate
        )
    if dilation and block is BasicBlock:
        _dilate_basic_stage(body.layer4)
    return body


def _dilate_basic_stage(stage: nn.Sequential, dilation: int = DC5_DILATION) -> None:
    """Turn a BasicBlock stage's stride 2 into dilation ``dilation`` in place (DETR's DC5), the way
    torchvision dilates a Bottleneck stage: the first block's strided conv keeps dilation 1 at stride 1,
    every later 3×3 conv is dilated. Weights and their shapes are unchanged, so published weights load."""
    first = stage[0]
    first.conv1.stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    convs = [first.conv2] + [conv for block in stage[1:] for conv in (block.conv1, block.conv2)]
    for conv in convs:
        conv.dilation = conv.padding = (dilation, dilation)


def _narrow(body: ResNet, block: type[nn.Module], layers: Sequence[int], width: int, dilate: list[bool]):
    """Rebuild the stem and stages of ``body`` at base width ``width`` (stage i: ``width·2^i``)."""
    norm_layer = body._norm_layer
    body.inplanes, body.dilation = width, 1
    body.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    body.bn1 = norm_layer(width)
    for i, level in enumerate(LEVELS):
        stride, dilated = (1, False) if i == 0 else (2, dilate[i - 1])
        setattr(body, level, body._make_layer(block, width * 2**i, layers[i], stride=stride, dilate=dilated))
    for m in body.modules():  # as torchvision's ResNet.__init__
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return body


def _block_forward(block: nn.Module, x: Tensor, keep_in: Tensor | None, keep_out: Tensor | None) -> Tensor:
    """A ResNet block whose spatial convolutions see zeros on the padded region.

    ``keep_in``/``keep_out``: valid masks at the block's input/output resolution (None: no padding).
    """
    identity = x if block.downsample is None else block.downsample(x)
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn1(block.conv1(x)))  # 1x1: pointwise, padding cannot leak
        out = block.relu(block.bn2(block.conv2(zero_padding(out, keep_in))))  # 3x3, carries the stride
        out = block.bn3(block.conv3(out))
    else:
        out = block.relu(block.bn1(block.conv1(zero_padding(x, keep_in))))
        out = block.bn2(block.conv2(zero_padding(out, keep_out)))
    return block.relu(out + identity)


class Backbone(nn.Module):
    """torchvision ResNet (FrozenBatchNorm2d, no avgpool/fc) returning layer1..layer4.

    Args:
        name: one of ``RESNET_ARCHS``.
        trainable_stages: subset of ``STAGES`` whose parameters train (original: layer2-4).
        dilation: dilate layer4 instead of striding it (DC5): stride 16 instead of 32.
        pretrained: torchvision weights name (e.g. ``"IMAGENET1K_V1"``) or None for random init.
        norm: ``"frozen"`` (FrozenBatchNorm2d, the original) or ``"batch"`` (trainable BatchNorm2d, for
            backbones trained from scratch).
        width: channels of the first stage (torchvision: 64); stage i has ``width·2^i`` (times the block's
            expansion). Narrower backbones are for training from scratch on a CPU.
        channels_last: run the convolutions in channels-last memory format (oneDNN's and cuDNN's preferred
            layout; the same values, a training step of the quickstart ~6 % faster on CPU). The features
            come out in the default layout.

    Attributes:
        num_channels: channels of layer1..layer4.
        strides: strides of layer1..layer4 (layer4 is 16 with dilation, else 32).
        stem_channels, stem_stride: channels and stride (2) of the stem, before the max-pool.
    """

    def __init__(
        self,
        name: str = "resnet50",
        trainable_stages: Sequence[str] = ("layer2", "layer3", "layer4"),
        dilation: bool = False,
        pretrained: str | None = None,
        norm: str = "frozen",
        width: int = STAGE_WIDTHS[0],
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        unknown = set(trainable_stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown trainable_stages {sorted(unknown)}; choose from {STAGES}")
        body = _build_resnet(name, dilation, pretrained, norm, width)
        del body.fc, body.avgpool
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.body = body.to(memory_format=self.memory_format)
        for param_name, param in self.body.named_parameters():
            param.requires_grad_(param_name.split(".")[0] in trainable_stages)
        expansion = RESNET_ARCHS[name][0].expansion
        self.num_channels = [width * 2**i * expansion for i in range(len(LEVELS))]
        self.strides = [STEM_STRIDE * 2**i for i in range(len(LEVELS))]
        if dilation:
            self.strides[-1] = self.strides[-2]
        self.stem_channels, self.stem_stride = width, STEM_STRIDE // 2
        self.block_forward = _block_forward  # how a block runs (lean.py wraps it in activation checkpointing)

    def forward(
        self, frames: Tensor, sizes: Tensor | None = None, return_stem: bool = False
    ) -> list[Tensor] | tuple[list[Tensor], Tensor]:
        """Multi-scale features of a batch of frames.

        Args:
            frames: ``[B·T, 3, H, W]`` normalized frames (clip-major: the T frames of clip b are rows b·T..).
            sizes: int64 ``[B, 2]`` valid (height, width) of each clip, or None when nothing is padded.
            return_stem: also return the stem (conv1, before the max-pool) ``[B·T, width, ⌈H/2⌉, ⌈W/2⌉]``,
                zero on padding.
        Returns:
            ``[layer1, layer2, layer3, layer4]``, each ``[B·T, C_l, ⌈H/s_l⌉, ⌈W/s_l⌉]`` (and the stem).
        """
        repeats = 1 if sizes is None else frames.shape[0] // sizes.shape[0]
        keeps: dict[int, Tensor | None] = {}

        def keep(stride: int, height: int, width: int) -> Tensor | None:
            if stride not in keeps:
                level_sizes = None if sizes is None else downscale(sizes, stride)
                keeps[stride] = keep_mask(level_sizes, height, width, repeats, frames.dtype)
            return keeps[stride]

        body = self.body
        frames = frames.contiguous(memory_format=self.memory_format)
        x = body.relu(body.bn1(body.conv1(zero_padding(frames, keep(1, *frames.shape[-2:])))))
        stem = zero_padding(x, keep(self.stem_stride, *x.shape[-2:]))
        x = body.maxpool(stem)  # inputs >= 0: zeros never win the max
        stride = STEM_STRIDE
        features = []
        for level in LEVELS:
            for block in getattr(body, level):
                conv = block.conv2 if isinstance(block, Bottleneck) else block.conv1
                out_stride = stride * conv.stride[0]
                height, width = x.shape[-2:]
                keep_in = keep(stride, height, width)
                keep_out = keep(out_stride, -(-height // conv.stride[0]), -(-width // conv.stride[1]))
                x = self.block_forward(block, x, keep_in, keep_out)
                stride = out_stride
            features.append(x.contiguous())  # back to the default layout for the heads (and DDP's buckets)
        return (features, stem.contiguous()) if return_stem else features
