"""Streaming frame sources for inference: a video file, a folder of frames, the videos of a YouTube-VIS file.

Each source yields uint8 ``[3, height, width]`` RGB frames one at a time, in order, and can be read again
(the overlay pass reads it a second time). Unreadable input raises :class:`InputError` naming the path and
the reason.
"""

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class InputError(ValueError):
    """An inference input that cannot be read."""


def _natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _read_image(path: Path) -> Tensor:
    try:
        with Image.open(path) as image:
            return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    except (OSError, UnidentifiedImageError) as err:
        raise InputError(f"cannot read frame {path}: {err}") from err


@dataclass
class VideoSource:
    """One video to predict.

    Attributes:
        name: a short name (file or folder name) for output files.
        video_id: the id written to results (the annotation file's id, else the input's position, from 1).
        size: (height, width) of the frames.
        fps: frame rate of the overlay video.
        frame_paths: the frame files in order, or None for a video file (decoded with PyAV).
    """

    name: str
    video_id: int
    size: tuple[int, int]
    fps: Fraction
    path: Path
    frame_paths: list[Path] | None = None  # None: a video file decoded with PyAV

    @property
    def frame_names(self) -> list[str] | None:
        return [p.stem for p in self.frame_paths] if self.frame_paths is not None else None

    def frames(self) -> Iterator[Tensor]:
        """Yield uint8 ``[3, height, width]`` frames in order; a frame of another size raises InputError."""
        reader = self._image_frames() if self.frame_paths is not None else self._decoded_frames()
        for index, frame in enumerate(reader):
            if tuple(frame.shape[1:]) != self.size:
                where = (
                    self.frame_paths[index] if self.frame_paths is not None else f"{self.path} frame {index}"
                )
                raise InputError(
                    f"{where}: size {tuple(frame.shape[1:])} differs from the video's {self.size}"
                )
            yield frame

    def _image_frames(self) -> Iterator[Tensor]:
        for path in self.frame_paths or []:
            yield _read_image(path)

    def _decoded_frames(self) -> Iterator[Tensor]:
        try:
            with av.open(str(self.path)) as container:
                for frame in container.decode(video=0):
                    yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
        except av.FFmpegError as err:
            raise InputError(f"cannot decode video file {self.path}: {err}") from err


def open_video_file(path: Path, video_id: int = 1) -> VideoSource:
    """A video file PyAV can decode (MP4, AVI, MKV, WebM, GIF, ...)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: the file has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            first = next(container.decode(video=0), None)
    except av.FFmpegError as err:
        raise InputError(f"cannot read video file {path}: {err}") from err
    if first is None:
        raise InputError(f"{path}: the video has no frames")
    if not rate:
        raise InputError(f"{path}: the video stream has no frame rate")
    return VideoSource(path.stem, video_id, (first.height, first.width), Fraction(rate), path)


def open_frame_folder(path: Path, fps: float, video_id: int = 1) -> VideoSource:
    """A folder of image files, ordered by name (numbers compare as numbers; gaps are fine)."""
    frame_paths = sorted(
        (p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: _natural_key(p.name)
    )
    if not frame_paths:
        raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    first = _read_image(frame_paths[0])
    return VideoSource(path.name, video_id, tuple(first.shape[1:]), _fraction(fps), path, frame_paths)


def open_ytvis(path: Path, frames_root: Path | None, fps: float) -> tuple[list[VideoSource], object]:
    """Every video of a YouTube-VIS annotation or test file, and the file's ``CategoryMap``.

    ``frames_root`` holds ``file_names``; by default ``<dir>/<stem>/JPEGImages`` or else ``<dir>/JPEGImages``.
    """
    from vistr_lit.data.ytvis import load_ytvis

    data = load_ytvis(path)
    if frames_root is None:
        candidates = [path.parent / path.stem / "JPEGImages", path.parent / "JPEGImages"]
        frames_root = next((c for c in candidates if c.is_dir()), None)
        if frames_root is None:
            raise InputError(
                f"{path}: no frames folder at {' or '.join(map(str, candidates))}; set frames_root"
            )
    sources = []
    for video in data.videos:
        frame_paths = [frames_root / name for name in video.file_names]
        missing = [str(p) for p in frame_paths if not p.is_file()]
        if missing:
            raise InputError(
                f"{path}: video {video.id}: {len(missing)} frame files missing, e.g. {missing[0]}"
            )
        name = Path(video.file_names[0]).parent.name or str(video.id)
        sources.append(
            VideoSource(name, video.id, (video.height, video.width), _fraction(fps), frames_root, frame_paths)
        )
    return sources, data.category_map


def _fraction(fps: float) -> Fraction:
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def open_input(path: str | Path, fps: float, frames_root: str | Path | None = None):
    """Sources of ``path`` (a video file, a folder of frames or a YouTube-VIS json) and its category map.

    Args:
        path: the input.
        fps: frame rate given to frame folders and json videos (a video file keeps its own).
        frames_root: for a json, the folder holding its ``file_names``.
    Returns:
        (list of :class:`VideoSource`, ``CategoryMap`` of the json or None).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        return [open_frame_folder(path, fps)], None
    if path.suffix.lower() == ".json":
        return open_ytvis(path, Path(frames_root) if frames_root else None, fps)
    return [open_video_file(path)], None


def transformed_frames(frames: Iterable[Tensor], transform) -> Iterator[Tensor]:
    """Apply the evaluation transform (``vistr_lit.data.transforms.build_eval_transform``) frame by frame.

    uint8 ``[3, height, width]`` → float ``[3, H, W]`` (resized, ImageNet-normalized).
    """
    for frame in frames:
        no_masks = torch.zeros(0, 1, *frame.shape[-2:], dtype=torch.bool)  # M = 0 instances, T = 1 frame
        yield transform(frame[None], no_masks)[0][0]
