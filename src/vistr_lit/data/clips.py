"""Clip sampling, the training clip dataset, the whole-video evaluation dataset, their collate functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.ops import box_convert, masks_to_boxes

from vistr_lit.data.ytvis import Video, YTVISData, decode_segmentation

SHORT_VIDEO_POLICIES = ("cycle", "pingpong", "repeat_last")
ASPECT_DECIMALS = 2  # aspect-ratio groups: 16:9 (1.78) and 4:3 (1.33) videos of any resolution group together
ClipTransformFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class ClipSampler:
    """Draws the T frame indices of a training clip from a video of length V.

    Stride: ``max_stride`` s; with ``fixed_stride`` the stride is always s, else uniform in ``1..s``. If the
    clip would not fit, the stride shrinks to the largest that fits. Start: uniform over the valid starts.
    Videos shorter than T (even at stride 1) follow ``short_video``:
    ``cycle`` (the original VisTR: frames repeat cyclically from a random start, ``0..V-1, 0..``),
    ``pingpong`` (``0..V-1, V-2..0, 1..``, no temporal jump) or ``repeat_last`` (``0..V-1``, then the last
    frame repeated).
    """

    def __init__(
        self, num_frames: int, max_stride: int = 1, fixed_stride: bool = False, short_video: str = "cycle"
    ):
        if num_frames < 1 or max_stride < 1:
            raise ValueError(f"num_frames and max_stride must be >= 1, got {num_frames}, {max_stride}")
        if short_video not in SHORT_VIDEO_POLICIES:
            raise ValueError(f"short_video must be one of {SHORT_VIDEO_POLICIES}, got {short_video!r}")
        self.num_frames = num_frames
        self.max_stride = max_stride
        self.fixed_stride = fixed_stride
        self.short_video = short_video

    def __call__(self, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Frame indices int64 ``[T]`` into a video of ``length`` frames."""
        if length < 1:
            raise ValueError("cannot sample a clip from a video with no frames")
        T = self.num_frames

        def randint(high: int) -> int:  # uniform in 0..high-1
            return int(torch.randint(high, (), generator=generator).item())

        if length >= T:
            stride = self.max_stride if self.fixed_stride else 1 + randint(self.max_stride)
            if T > 1:
                stride = min(stride, (length - 1) // (T - 1))
            span = (T - 1) * stride + 1
            return randint(length - span + 1) + stride * torch.arange(T)
        steps = torch.arange(T)
        if self.short_video == "cycle":
            return (randint(length) + steps) % length
        if self.short_video == "pingpong":
            period = max(2 * (length - 1), 1)
            phase = steps % period
            return torch.where(phase < length, phase, period - phase)
        return steps.clamp(max=length - 1)  # repeat_last


def read_frames(root: Path, video: Video, indices: Sequence[int]) -> torch.Tensor:
    """Decode frames ``indices`` of ``video`` -> uint8 ``[T, 3, H, W]``; errors name the file and video."""
    cache: dict[int, torch.Tensor] = {}
    frames = []
    for t in indices:
        t = int(t)
        if t not in cache:
            path = root / video.file_names[t]
            try:
                image = decode_image(str(path), mode=ImageReadMode.RGB)
            except (RuntimeError, OSError, ValueError) as err:
                raise OSError(
                    f"{path} (video {video.id}, frame {t}): cannot read or decode frame: {err}"
                ) from err
            if tuple(image.shape[-2:]) != (video.height, video.width):
                raise ValueError(
                    f"{path} (video {video.id}, frame {t}): size {tuple(image.shape[-2:])} != video "
                    f"height/width ({video.height}, {video.width})"
                )
            cache[t] = image
        frames.append(cache[t])
    return torch.stack(frames)


class YTVISClipDataset(Dataset):
    """Training clips: ``dataset[i] -> (frames [T, 3, H, W], target)`` as in ``docs/design.md``.

    One item is one random clip of one video. ``clips_per_video`` items per video and epoch; ``None`` gives
    the original's epoch of one item per frame (long videos drawn more often). Crowd annotations
    (``iscrowd=1``) are not training targets. Instances absent from the whole clip are kept, all invalid.
    """

    def __init__(
        self,
        data: YTVISData,
        frames_root: str | Path,
        sampler: ClipSampler,
        transform: ClipTransformFn,
        clips_per_video: int | None = 1,
        video_ids: Sequence[int] | None = None,
    ):
        if not data.has_annotations:
            raise ValueError(
                f"{data.path}: a training dataset needs 'annotations' (this looks like a test split)"
            )
        self.data = data
        self.frames_root = Path(frames_root)
        self.sampler = sampler
        self.transform = transform
        chosen = set(video_ids) if video_ids is not None else None
        self.videos = [v for v in data.videos if chosen is None or v.id in chosen]
        if chosen is not None and len(self.videos) != len(chosen):
            missing = sorted(chosen - {v.id for v in self.videos})
            raise KeyError(f"{data.path}: video ids {missing[:10]} are not in the file")
        if clips_per_video is None:
            self.index = [k for k, v in enumerate(self.videos) for _ in range(v.length)]
        else:
            self.index = [k for k in range(len(self.videos)) for _ in range(clips_per_video)]

    def __len__(self) -> int:
        return len(self.index)

    def aspect_ratio_groups(self, decimals: int = ASPECT_DECIMALS) -> list[float]:
        """Each item's video width / height, rounded: items of one group resize to one size (+-1 px)."""
        return [round(self.videos[k].width / self.videos[k].height, decimals) for k in self.index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        video = self.videos[self.index[i]]
        indices = self.sampler(video.length)
        frames = read_frames(self.frames_root, video, indices.tolist())
        anns = [a for a in self.data.annotations[video.id] if not a.iscrowd]
        H, W = video.height, video.width
        masks = torch.zeros((len(anns), len(indices), H, W), dtype=torch.uint8)  # [M, T, H, W]
        for m, ann in enumerate(anns):
            for t, f in enumerate(indices.tolist()):
                if ann.segmentations[f] is not None:
                    masks[m, t] = torch.from_numpy(decode_segmentation(ann.segmentations[f], H, W))
        frames, masks = self.transform(frames, masks)
        target = clip_target(masks)
        cat_map = self.data.category_map
        target.update(
            labels=torch.tensor([cat_map.to_index(a.category_id) for a in anns], dtype=torch.int64),
            instance_ids=torch.tensor([a.id for a in anns], dtype=torch.int64),
            video_id=video.id,
            frame_indices=indices.to(torch.int64),
            size=torch.tensor(frames.shape[-2:], dtype=torch.int64),
            orig_size=torch.tensor([H, W], dtype=torch.int64),
        )
        return frames, target


def clip_target(masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """bool masks ``[M, T, H, W]`` -> ``masks``, ``valid [M, T]`` (non-empty) and ``boxes [M, T, 4]``.

    Boxes are normalized cxcywh of each mask's extent (pixel edges: x1 = first column, x2 = last + 1),
    zeros where not valid; so a frame emptied by a crop is invalid and boxless.
    """
    M, T, H, W = masks.shape
    valid = masks.flatten(2).any(-1)  # [M, T]
    boxes = torch.zeros((M, T, 4), dtype=torch.float32)
    if valid.any():
        xyxy = masks_to_boxes(masks[valid]).float()  # [P, 4], inclusive last pixel
        xyxy[:, 2:] += 1
        scale = torch.tensor([W, H, W, H], dtype=torch.float32)
        boxes[valid] = box_convert(xyxy / scale, "xyxy", "cxcywh")
    return {"masks": masks, "valid": valid, "boxes": boxes}


class YTVISVideoDataset(Dataset):
    """Whole videos for evaluation: ``dataset[i] -> {"frames" [V, 3, H, W], "video_id", "orig_size", "size",
    "file_names"}`` (works on test splits without annotations)."""

    def __init__(
        self,
        data: YTVISData,
        frames_root: str | Path,
        transform: ClipTransformFn,
        video_ids: Sequence[int] | None = None,
    ):
        self.data = data
        self.frames_root = Path(frames_root)
        self.transform = transform
        chosen = set(video_ids) if video_ids is not None else None
        self.videos = [v for v in data.videos if chosen is None or v.id in chosen]
        if chosen is not None and len(self.videos) != len(chosen):
            missing = sorted(chosen - {v.id for v in self.videos})
            raise KeyError(f"{data.path}: video ids {missing[:10]} are not in the file")

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict:
        video = self.videos[i]
        frames = read_frames(self.frames_root, video, range(video.length))
        no_masks = torch.zeros((0, video.length, video.height, video.width), dtype=torch.uint8)
        frames, _ = self.transform(frames, no_masks)
        return {
            "frames": frames,
            "video_id": video.id,
            "orig_size": (video.height, video.width),
            "size": tuple(frames.shape[-2:]),
            "file_names": list(video.file_names),
        }


def collate_clips(samples: Sequence[tuple[torch.Tensor, dict]]) -> dict:
    """Batch clips of different sizes: ``frames [B, T, 3, Hp, Wp]`` zero-padded bottom/right, ``pad_mask
    [B, Hp, Wp]`` (True = padding), ``targets``: B dicts whose ``masks`` are padded to ``[M, T, Hp, Wp]``."""
    if not samples:
        raise ValueError("collate_clips got an empty batch")
    lengths = {f.shape[0] for f, _ in samples}
    if len(lengths) != 1:
        raise ValueError(f"all clips in a batch need the same T, got {sorted(lengths)}")
    Hp = max(f.shape[-2] for f, _ in samples)
    Wp = max(f.shape[-1] for f, _ in samples)
    B, T = len(samples), samples[0][0].shape[0]
    frames = torch.zeros((B, T, 3, Hp, Wp), dtype=samples[0][0].dtype)
    pad_mask = torch.ones((B, Hp, Wp), dtype=torch.bool)
    targets = []
    for b, (clip, target) in enumerate(samples):
        H, W = clip.shape[-2:]
        frames[b, :, :, :H, :W] = clip
        pad_mask[b, :H, :W] = False
        masks = target["masks"]
        padded = torch.zeros((*masks.shape[:2], Hp, Wp), dtype=torch.bool)
        padded[..., :H, :W] = masks
        targets.append({**target, "masks": padded})
    return {"frames": frames, "pad_mask": pad_mask, "targets": targets}


def collate_videos(samples: Sequence[dict]) -> list[dict]:
    """Evaluation batches stay a list of whole-video dicts (videos differ in length)."""
    return list(samples)
