"""Clip transforms on torchvision ``tv_tensors``: geometry drawn once per clip, colour drawn per frame.

Inputs are ``frames`` uint8 ``[T, 3, H, W]`` and ``masks`` ``[M, T, H, W]``; outputs are ImageNet-normalized
float32 frames and bool masks of the same new size. A v2 transform called once on a ``tv_tensors.Video``
together with a ``tv_tensors.Mask`` draws its parameters once, so every frame and every mask gets the same
flip/resize/crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomSizeCrop(v2.Transform):
    """Crop a random ``h x w`` window, h and w each uniform in ``[min_size, min(side, max_size)]``.

    The original VisTR/DETR ``RandomSizeCrop``; a side shorter than ``min_size`` is kept whole. With
    ``prescales``, the window is drawn as if the frame had first been resized to a short side drawn from
    ``prescales`` (the original's ``RandomResize([400, 500, 600])`` before the crop) and is cut from the
    frame at its own resolution: the same geometry without the intermediate resize (a final resize follows).
    """

    def __init__(self, min_size: int, max_size: int, prescales: Sequence[int] | None = None):
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"RandomSizeCrop needs 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size = min_size
        self.max_size = max_size
        self.prescales = [int(s) for s in prescales] if prescales else []

    def _draw(self, side: int) -> int:
        low, high = min(self.min_size, side), min(self.max_size, side)
        return int(torch.randint(low, high + 1, ()).item())

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        scale = 1.0
        if self.prescales:
            short = self.prescales[int(torch.randint(len(self.prescales), ()).item())]
            scale = short / min(height, width)
        sized_h, sized_w = max(1, round(height * scale)), max(1, round(width * scale))
        crop_h, crop_w = self._draw(sized_h), self._draw(sized_w)
        top = int(torch.randint(0, sized_h - crop_h + 1, ()).item())
        left = int(torch.randint(0, sized_w - crop_w + 1, ()).item())
        # back to the frame's own pixels
        top, left = min(round(top / scale), height - 1), min(round(left / scale), width - 1)
        crop_h = min(max(1, round(crop_h / scale)), height - top)
        crop_w = min(max(1, round(crop_w / scale)), width - left)
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class RandomShortSideResize(v2.Transform):
    """Resize the short side to a size drawn uniformly from ``sizes``; if the long side would exceed
    ``max_size``, the long side becomes ``max_size`` instead (DETR's rule, also when ``max_size <= size``)."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None):
        super().__init__()
        if not sizes:
            raise ValueError("RandomShortSideResize needs at least one size")
        self.sizes = [int(s) for s in sizes]
        self.max_size = max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        short = self.sizes[int(torch.randint(len(self.sizes), ()).item())]
        return {"size": output_size(height, width, short, self.max_size)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, size=list(params["size"]))


def output_size(height: int, width: int, short: int, max_size: int | None = None) -> tuple[int, int]:
    """(H', W') with the short side ``short`` and the long side at most ``max_size`` (aspect ratio kept)."""
    small, large = min(height, width), max(height, width)
    new_small, new_large = short, int(short * large / small)
    if max_size is not None and new_large > max_size:
        new_small, new_large = max(1, round(max_size * small / large)), max_size
    return (new_small, new_large) if height <= width else (new_large, new_small)


class PerFrame(torch.nn.Module):
    """Apply ``transform`` to each frame of ``frames [T, 3, H, W]`` with an independent random draw."""

    def __init__(self, transform: torch.nn.Module):
        super().__init__()
        self.transform = transform

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.transform(frame) for frame in frames])


class ClipTransform(torch.nn.Module):
    """geometry (once per clip) -> photometric (per frame) -> float + ImageNet normalization.

    ``forward(frames uint8 [T, 3, H, W], masks [M, T, H, W]) -> (frames float32 [T, 3, H', W'], masks bool
    [M, T, H', W'])``.
    """

    def __init__(self, geometry: Sequence[torch.nn.Module], photometric: torch.nn.Module | None = None):
        super().__init__()
        self.geometry = v2.Compose(list(geometry)) if geometry else None
        self.photometric = PerFrame(photometric) if photometric is not None else None
        self.normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, frames: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be uint8 [T, 3, H, W], got {frames.dtype} {tuple(frames.shape)}")
        if masks.ndim != 4 or masks.shape[1:2] != frames.shape[:1] or masks.shape[-2:] != frames.shape[-2:]:
            raise ValueError(
                f"masks must be [M, T, H, W] matching frames {tuple(frames.shape)}, got {tuple(masks.shape)}"
            )
        video = tv_tensors.Video(frames)
        mask = tv_tensors.Mask(masks.to(torch.uint8))
        if self.geometry is not None:
            video, mask = self.geometry(video, mask)
        out = torch.as_tensor(video)
        if self.photometric is not None:
            out = self.photometric(out)
        out = self.normalize(F.to_dtype(out, torch.float32, scale=True))
        return out.contiguous(), torch.as_tensor(mask).bool()


def build_train_transform(
    scales: Sequence[int] = (300,),
    max_size: int | None = 540,
    crop_prescales: Sequence[int] | None = (400, 500, 600),
    crop_size: Sequence[int] | None = (384, 600),
    crop_prob: float = 1.0,
    hflip_prob: float = 0.5,
    photometric_prob: float = 0.5,
    vflip_prob: float = 0.0,
) -> ClipTransform:
    """The training transform. The defaults are the paper's R50 scales (crop, then short side 300, max 540).

    Geometry, drawn once per clip: with probability ``crop_prob``, a random ``crop_size=(min, max)`` crop
    measured on the frame resized to a short side in ``crop_prescales`` (None: on the frame as it is); then
    resize the short side to one of ``scales`` (long side <= ``max_size``); then a horizontal flip with
    probability ``hflip_prob`` and a vertical one with probability ``vflip_prob`` (not in the paper: for data
    without an up and down, such as synthvis's rotating shapes; flipping last is equivalent and cheapest).
    Photometric: SSD-style distortion, drawn per frame, each op with probability ``photometric_prob`` (0
    disables it).
    """
    geometry: list[torch.nn.Module] = []
    if crop_size is not None and crop_prob > 0:
        if len(crop_size) != 2:
            raise ValueError(f"crop_size must be (min, max), got {crop_size}")
        prescales = list(crop_prescales) if crop_prescales else None
        crop_ops: list[torch.nn.Module] = []
        if prescales and not scales:
            # without a final resize, the crop must really be taken at the prescaled resolution
            crop_ops.append(RandomShortSideResize(prescales))
            prescales = None
        crop_ops.append(RandomSizeCrop(int(crop_size[0]), int(crop_size[1]), prescales))
        geometry.append(v2.RandomApply(crop_ops, p=crop_prob) if crop_prob < 1 else v2.Compose(crop_ops))
    if scales:
        geometry.append(RandomShortSideResize(scales, max_size))
    if hflip_prob > 0:
        geometry.append(v2.RandomHorizontalFlip(hflip_prob))
    if vflip_prob > 0:
        geometry.append(v2.RandomVerticalFlip(vflip_prob))
    photometric = v2.RandomPhotometricDistort(p=photometric_prob) if photometric_prob > 0 else None
    return ClipTransform(geometry, photometric)


def build_eval_transform(short_side: int | None = 300, max_size: int | None = None) -> ClipTransform:
    """Evaluation: resize the short side to ``short_side`` (long side <= ``max_size``), normalize."""
    geometry = [RandomShortSideResize([short_side], max_size)] if short_side else []
    return ClipTransform(geometry, None)
