"""Visual output of tracks: overlays (stable colour per track, class, score), MP4/GIF and PNG writers."""

import colorsys
from fractions import Fraction
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.ops import masks_to_boxes
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from vistr_lit.inference.track import Track, decode_mask

GOLDEN_RATIO = 0.618033988749895  # hue step: consecutive track ids get well-separated hues
MASK_ALPHA = 0.5
BOX_WIDTH = 2
CAPTION_TEXT_COLOUR = "black"
VIDEO_CODEC = "libx264"
VIDEO_PIXEL_FORMAT = "yuv420p"  # plays everywhere; needs even width and height
GIF_FRAME_UNIT = 1000  # imageio's GIF duration is in milliseconds


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A colour fixed by the track id (same in every frame and every run)."""
    r, g, b = colorsys.hsv_to_rgb((track_id * GOLDEN_RATIO) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_tracks(frame: Tensor, masks: Tensor, track_ids: list[int], captions: list[str]) -> Tensor:
    """Overlay masks, boxes and captions on one frame.

    Args:
        frame: uint8 ``[3, height, width]``.
        masks: bool ``[n, height, width]`` the tracks' masks in this frame.
        track_ids: n track ids (they pick the colours).
        captions: n texts, e.g. ``"person 0.93"``.
    Returns:
        uint8 ``[3, height, width]``.
    """
    nonempty = [k for k in range(len(track_ids)) if masks[k].any()]
    if not nonempty:
        return frame
    masks = masks[nonempty]
    colours = [track_colour(track_ids[k]) for k in nonempty]
    frame = draw_segmentation_masks(frame, masks, alpha=MASK_ALPHA, colors=colours)
    return draw_bounding_boxes(
        frame,
        masks_to_boxes(masks),
        labels=[captions[k] for k in nonempty],
        colors=colours,
        width=BOX_WIDTH,
        label_colors=CAPTION_TEXT_COLOUR,
        fill_labels=True,  # caption on a box-coloured background: readable on any frame
    )


def instance_id_image(
    masks: Tensor, track_ids: list[int], scores: list[float], size: tuple[int, int]
) -> np.ndarray:
    """Per-pixel ``track_id + 1`` (0 = background), uint16 ``[height, width]``; overlaps: best score wins."""
    image = np.zeros(size, dtype=np.uint16)
    for k in sorted(range(len(track_ids)), key=lambda k: scores[k]):  # best score painted last
        image[masks[k].numpy()] = track_ids[k] + 1
    return image


class OverlayWriter:
    """Writes overlay frames as an MP4 (PyAV, libx264) or a GIF (imageio) at the input frame rate.

    Frames are encoded as they arrive (MP4) or kept until :meth:`close` (GIF: imageio writes a GIF at once).
    """

    def __init__(self, path: str | Path, fps: Fraction, video_format: str = "mp4"):
        if video_format not in ("mp4", "gif"):
            raise ValueError(f"video_format must be mp4 or gif, got {video_format!r}")
        self.path = Path(path).with_suffix(f".{video_format}")
        self.fps = Fraction(fps)
        self.video_format = video_format
        self._container = None
        self._stream = None
        self._gif_frames: list[np.ndarray] = []

    def write(self, frame: Tensor) -> None:
        """Append one uint8 ``[3, height, width]`` frame."""
        image = frame.permute(1, 2, 0).contiguous().numpy()
        if self.video_format == "gif":
            self._gif_frames.append(image)
            return
        height, width = image.shape[:2]
        # yuv420p needs even sides: pad the last row/column by edge replication
        image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        if self._container is None:
            self._container = av.open(str(self.path), mode="w")
            self._stream = self._container.add_stream(VIDEO_CODEC, rate=self.fps)
            self._stream.width, self._stream.height = image.shape[1], image.shape[0]
            self._stream.pix_fmt = VIDEO_PIXEL_FORMAT
        video_frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def close(self) -> Path:
        """Finish the file and return its path."""
        if self.video_format == "gif":
            if self._gif_frames:
                duration = float(GIF_FRAME_UNIT / self.fps)
                iio.imwrite(self.path, np.stack(self._gif_frames), duration=duration, loop=0)
            self._gif_frames = []
        elif self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
        return self.path


def save_instance_png(path: str | Path, image: np.ndarray) -> None:
    """Write an instance-id image (uint16 when ids exceed 255, else uint8) as a PNG."""
    if image.max(initial=0) <= np.iinfo(np.uint8).max:
        image = image.astype(np.uint8)
    Image.fromarray(image).save(path)


def frame_track_masks(tracks: list[Track], frame: int, size: tuple[int, int]) -> tuple[list[Track], Tensor]:
    """The tracks present at ``frame`` and their masks bool ``[n, height, width]`` (decoded from RLE)."""
    present = [track for track in tracks if track.segmentation(frame) is not None]
    masks = [torch.from_numpy(decode_mask(track.segmentation(frame))) for track in present]
    return present, torch.stack(masks) if masks else torch.zeros(0, *size, dtype=torch.bool)


def write_visual_outputs(
    frames,
    tracks: list[Track],
    size: tuple[int, int],
    class_names: list[str],
    output_dir: Path,
    fps: Fraction,
    score_threshold: float = 0.0,
    video_format: str | None = "mp4",
    png_dir: Path | None = None,
    frame_names: list[str] | None = None,
) -> Path | None:
    """Second pass over a video: overlay video and/or per-frame instance-id PNGs of the tracks.

    Args:
        frames: iterable of uint8 ``[3, height, width]`` frames (read again from the source, streamed).
        tracks: the video's tracks; only those with score ≥ ``score_threshold`` are drawn or written.
        size: (height, width).
        class_names: name of each contiguous class, for captions.
        output_dir: where the overlay video goes (named ``overlay.<format>``).
        video_format: "mp4", "gif", or None for no video.
        png_dir: folder for the PNGs (``<frame name>.png``), None for none.
        frame_names: stems of the PNG files; default zero-padded frame indices.
    Returns:
        the overlay video's path, or None.
    """
    shown = [track for track in tracks if track.score >= score_threshold]
    captions = {t.track_id: f"{class_names[t.label]} {t.score:.2f}" for t in shown}
    writer = OverlayWriter(output_dir / "overlay", fps, video_format) if video_format else None
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        present, masks = frame_track_masks(shown, index, size)
        ids = [t.track_id for t in present]
        if writer is not None:
            writer.write(draw_tracks(frame, masks, ids, [captions[i] for i in ids]))
        if png_dir is not None:
            name = frame_names[index] if frame_names is not None else f"{index:05d}"
            save_instance_png(
                png_dir / f"{name}.png", instance_id_image(masks, ids, [t.score for t in present], size)
            )
    return writer.close() if writer is not None else None
