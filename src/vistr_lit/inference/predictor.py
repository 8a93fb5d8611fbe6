"""Whole-video prediction: windows of T frames over a video of any length V, stitched into tracks.

Windows start every ``T - overlap`` frames; the last one is moved back to end on the last frame (so it holds
only real frames and overlaps its predecessor more), and a video shorter than T is repeated cyclically to fill
one window, as the original does, with the predictions on repeated frames dropped. Frames are consumed as a
stream: at most ``batch_size`` windows of frames and the stitcher's not-yet-final frames are held in memory.
"""

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from vistr_lit.evaluation.results import select_results
from vistr_lit.inference.stitching import TrackStitcher
from vistr_lit.inference.track import Track
from vistr_lit.inference.track_nms import suppress_duplicate_tracks
from vistr_lit.inference.tta import check_augmentations, tta_outputs
from vistr_lit.models.postprocess import MASK_STRIDE, ClipPredictions, PostProcessVideo


def window_starts(video_length: int, window: int, overlap: int) -> list[int]:
    """Start frames of the windows covering V = ``video_length`` frames; ``[0]`` when V ≤ T."""
    stride = window - overlap
    starts = list(range(0, max(video_length - window, 0) + 1, stride))
    if starts[-1] + window < video_length:
        starts.append(video_length - window)
    return starts


class VideoPredictor:
    """Runs a VisTR over whole videos in windows of its T frames and stitches the windows into tracks.

    Args:
        model: a ``VisTR`` (``forward(frames [B, T, 3, H, W], pad_mask) -> dict``, attribute ``num_frames``).
        postprocess: turns one window's outputs into :class:`ClipPredictions`.
        overlap: frames shared by consecutive windows, ``0 ≤ overlap < T``; ``None`` = T // 2.
        match_iou: minimum mask IoU over shared frames to continue a track (see :class:`TrackStitcher`).
        first_window_only: predict only the first T frames (the original); later frames are absent.
        batch_size: windows per forward pass.
        track_nms_iou: not in the paper: when set, soft NMS over the video's tracks: a track whose video
            mask IoU with a better-scored kept track exceeds this has its score multiplied by
            ``track_nms_decay`` (:func:`suppress_duplicate_tracks`). None (the original): off.
        track_nms_decay: the score factor of a suppressed track, in [0, 1).
        classes_per_track: results entries per track (:meth:`results`): 1 (the original) gives the track's
            most frequent frame class; c > 1 gives its c best classes by mean class probability, each scored
            by that probability (not in the paper; Mask2Former-VIS ranks (query, class) pairs the same way).
        tta: not in the paper: test-time augmentations, a subset of ``["hflip", "vflip", "transpose",
            "reverse"]``. Each window also runs mirrored left to right, top to bottom, transposed and/or
            played backwards (every combination: 2^k passes, 2^k times the model time), and the passes'
            matched slots are averaged (:func:`~vistr_lit.inference.tta.tta_outputs`). Empty (the
            original): one plain pass.
    """

    def __init__(
        self,
        model: nn.Module,
        postprocess: PostProcessVideo,
        overlap: int | None = None,
        match_iou: float = 0.5,
        first_window_only: bool = False,
        batch_size: int = 1,
        track_nms_iou: float | None = None,
        track_nms_decay: float = 0.3,
        classes_per_track: int = 1,
        tta: Sequence[str] = (),
    ):
        self.model = model
        self.postprocess = postprocess
        self.window = int(model.num_frames)
        self.overlap = self.window // 2 if overlap is None else int(overlap)
        if not 0 <= self.overlap < self.window:
            raise ValueError(f"overlap must be in [0, T = {self.window}), got {self.overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        TrackStitcher(match_iou)  # validates match_iou now rather than at the first video
        self.match_iou = match_iou
        self.first_window_only = first_window_only
        self.batch_size = batch_size
        if track_nms_iou is not None:  # validated now rather than at the first video
            suppress_duplicate_tracks([], 0, track_nms_iou, track_nms_decay)
        self.track_nms_iou, self.track_nms_decay = track_nms_iou, track_nms_decay
        if classes_per_track < 1:
            raise ValueError(f"classes_per_track must be >= 1, got {classes_per_track}")
        self.classes_per_track = int(classes_per_track)
        self.tta = check_augmentations(tta)

    def results(self, tracks: Iterable[Track], video_id: int, category_ids) -> list[dict]:
        """The YouTube-VIS results entries of a video's tracks, ``classes_per_track`` per track, less those
        that cannot score (no mask in any frame; beyond the 100 per category the evaluation reads:
        ``evaluation.results.select_results``)."""
        return select_results(
            entry
            for track in tracks
            for entry in track.to_results(video_id, category_ids, self.classes_per_track)
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def predict_video(self, frames: Tensor, orig_size: tuple[int, int] | Tensor) -> list[Track]:
        """
        Args:
            frames: float ``[V, 3, H, W]``, the whole video, transformed as for evaluation.
            orig_size: (height, width) of the original frames: the size of the predicted masks.
        Returns:
            the video's tracks, each with ``video_length`` = V.
        """
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"frames must be [V ≥ 1, 3, H, W], got {tuple(frames.shape)}")
        return self.predict_stream(iter(frames), orig_size)

    @torch.no_grad()
    def predict_stream(self, frames: Iterable[Tensor], orig_size: tuple[int, int] | Tensor) -> list[Track]:
        """Like :meth:`predict_video` for frames ``[3, H, W]`` that arrive one by one (any number)."""
        was_training = self.model.training
        self.model.eval()  # the original never called eval(): its dropout stayed on at inference
        try:
            return self._predict_stream(frames, orig_size)
        finally:
            self.model.train(was_training)

    def _predict_stream(self, frames: Iterable[Tensor], orig_size) -> list[Track]:
        stitcher = TrackStitcher(self.match_iou)
        counted = _CountedFrames(frames)
        batch: list[tuple[int, Tensor]] = []
        for start, window in self._windows(counted):
            batch.append((start, window))
            if len(batch) == self.batch_size:
                self._run(batch, orig_size, stitcher)
                batch = []
        if batch:
            self._run(batch, orig_size, stitcher)
        for _ in counted:  # first_window_only: the rest is only counted (reported absent)
            pass
        if counted.count == 0:
            raise ValueError("the video has no frames")
        tracks = stitcher.close(counted.count)
        if self.track_nms_iou is not None:
            tracks = suppress_duplicate_tracks(
                tracks, counted.count, self.track_nms_iou, self.track_nms_decay
            )
        return tracks

    def _windows(self, frames: Iterator[Tensor]) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(start, window frames [T', 3, H, W])``; T' < T only for a video shorter than T.

        Holds the last T frames. A window is yielded as soon as its frames are read; when the stream ends, a
        last window ending on the last frame is yielded if frames are left uncovered.
        """
        T, stride = self.window, self.window - self.overlap
        buffer: deque[Tensor] = deque(maxlen=T)
        next_start, covered, count = 0, 0, 0  # covered: frames already inside a yielded window
        for frame in frames:
            if buffer and frame.shape != buffer[-1].shape:
                raise ValueError(
                    f"frame {count}: shape {tuple(frame.shape)}, earlier {tuple(buffer[-1].shape)}"
                )
            buffer.append(frame)
            count += 1
            if count == next_start + T:
                yield next_start, torch.stack(list(buffer))
                if self.first_window_only:
                    return
                covered, next_start = count, next_start + stride
        if covered < count:
            yield max(count - T, 0), torch.stack(list(buffer))  # the buffer holds exactly these frames

    def _run(self, batch: list[tuple[int, Tensor]], orig_size, stitcher: TrackStitcher) -> None:
        """Forward the windows of ``batch`` (cycle-padded to T frames) and add their predictions in order."""
        T = self.window
        lengths = [window.shape[0] for _, window in batch]
        # B x T x 3 x H x W
        clips = torch.stack([_cycle_pad(window, T) for _, window in batch]).to(self.device)
        B, H, W = clips.shape[0], clips.shape[-2], clips.shape[-1]
        sizes = torch.tensor([[H, W]] * B)
        orig_sizes = torch.as_tensor(orig_size).reshape(1, 2).expand(B, 2)
        stride = getattr(self.model, "mask_stride", MASK_STRIDE)  # models other than VisTR: the usual 4
        if self.tta:
            outputs = tta_outputs(partial(self.model, pad_mask=None), clips, self.tta, stride)
        else:
            outputs = self.model(clips, None)
        clip_predictions = self.postprocess(_to_cpu(outputs), sizes, orig_sizes, T, stride, clips)
        for (start, _), length, predictions in zip(batch, lengths, clip_predictions):
            stitcher.add_window(start, _drop_padded(predictions, length))


class _CountedFrames:
    """An iterator over frames that counts them (the video length V is known once it is exhausted)."""

    def __init__(self, frames: Iterable[Tensor]):
        self._frames = iter(frames)
        self.count = 0

    def __iter__(self) -> "_CountedFrames":
        return self

    def __next__(self) -> Tensor:
        frame = next(self._frames)
        self.count += 1
        return frame


def _cycle_pad(window: Tensor, length: int) -> Tensor:
    """Repeat frames ``[T', 3, H, W]`` cyclically to ``length`` frames (the original's short-video rule)."""
    index = torch.arange(length) % window.shape[0]
    return window[index]


def _drop_padded(predictions: ClipPredictions, length: int) -> ClipPredictions:
    """Keep the predictions of the first ``length`` (real) frames; drop those now empty in every frame."""
    if predictions.masks.shape[1] == length:
        return predictions
    predictions = predictions.frames(0, length)
    return predictions.select(predictions.masks.flatten(1).any(dim=1))


def _to_cpu(outputs: dict) -> dict[str, Tensor]:
    return {key: outputs[key].cpu() for key in ("pred_logits", "pred_masks")}
