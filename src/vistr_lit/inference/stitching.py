"""Association of instances between consecutive windows: Hungarian matching on mask IoU over shared frames.

The paper's §4.2 "instance matching in overlapping frames", which the original repository never shipped.
Windows arrive in order of their start frame. A prediction of the new window continues the track of the
previous window whose masks over the shared frames overlap it best (one-to-one, IoU ≥ ``match_iou``); any
other prediction starts a new track. In a shared frame a continued track keeps the earlier window's prediction
in the first half of the overlap and the new window's in the second half, so each frame is judged by the
window in which it sits more centrally. Windows that only abut are associated through the last frame of one
and the first of the next. Frames no later window can touch are encoded to RLE and dropped: memory is bounded
by the window, not by the video.
"""

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from vistr_lit.inference.track import Track, encode_mask
from vistr_lit.models.postprocess import ClipPredictions


@dataclass
class _FramePrediction:
    """One track's prediction in one not-yet-final frame."""

    mask: Tensor  # bool [height, width]
    score: float
    label: int
    present: bool
    probs: Tensor | None = None  # float [K] class probabilities, when the window has them

    @property
    def visible_mask(self) -> Tensor:
        return self.mask if self.present else torch.zeros_like(self.mask)


def mask_iou(masks_a: Tensor, masks_b: Tensor) -> Tensor:
    """Video mask IoU of bool ``[a, F, height, width]`` and ``[b, F, height, width]`` → ``[a, b]``.

    Intersections and unions are summed over the F frames (the YouTube-VIS IoU); 0 where both are empty.
    """
    a = masks_a.flatten(1).float()  # a x (F·height·width)
    b = masks_b.flatten(1).float()
    intersection = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))


class TrackStitcher:
    """Accumulates window predictions into tracks with one identity per object.

    Args:
        match_iou: minimum mask IoU over the shared frames for a prediction to continue a track.
    """

    def __init__(self, match_iou: float = 0.5):
        if not 0.0 < match_iou <= 1.0:
            raise ValueError(f"match_iou must be in (0, 1], got {match_iou}")
        self.match_iou = match_iou
        self.tracks: list[Track] = []
        self._pending: dict[int, dict[int, _FramePrediction]] = {}  # frame → track id → prediction
        self._active: list[int] = []  # track ids of the previous window
        self._next_final = 0  # frames before this are final
        self._last_start = -1

    def add_window(self, start: int, predictions: ClipPredictions) -> list[int]:
        """Add the predictions of the window covering frames ``start .. start + T' - 1``.

        Args:
            start: video index of the window's first frame; windows must come in increasing order of start.
            predictions: the window's predictions with T' frames (padded frames already dropped).
        Returns:
            the track id given to each of the k predictions.
        """
        if start <= self._last_start or start < self._next_final:
            raise ValueError(f"window at frame {start} arrives after the window at frame {self._last_start}")
        self._last_start = start
        num_frames = predictions.masks.shape[1]
        shared = [f for f in sorted(self._pending) if start <= f < start + num_frames]
        track_ids = self._match(start, shared, predictions)
        split = start + (len(shared) + 1) // 2  # shared frames before this keep the earlier window
        for k, track_id in enumerate(track_ids):
            continued = track_id in self._active
            for t in range(num_frames):
                frame = start + t
                if continued and frame < split and track_id in self._pending.get(frame, {}):
                    continue
                self._pending.setdefault(frame, {})[track_id] = _FramePrediction(
                    predictions.masks[k, t],
                    float(predictions.frame_scores[k, t]),
                    int(predictions.frame_labels[k, t]),
                    bool(predictions.present[k, t]),
                    None if predictions.frame_probs is None else predictions.frame_probs[k, t],
                )
        self._active = track_ids
        self.finalize_before(start)
        return track_ids

    def _match(self, start: int, shared: list[int], predictions: ClipPredictions) -> list[int]:
        """Track id per new prediction: the matched previous-window track, else a new one.

        Masks are compared over the shared frames; windows that only abut (no overlap) compare the previous
        window's last frame with the new window's first.
        """
        track_ids: list[int | None] = [None] * len(predictions)
        if shared:
            previous_frames, offsets = shared, [f - start for f in shared]
        else:
            previous_frames, offsets = [start - 1], [0]
        if self._active and len(predictions) and all(f in self._pending for f in previous_frames):
            empty = torch.zeros(predictions.masks.shape[-2:], dtype=torch.bool)
            previous = torch.stack(
                [
                    torch.stack(
                        [
                            self._pending[f][i].visible_mask if i in self._pending[f] else empty
                            for f in previous_frames
                        ]
                    )
                    for i in self._active
                ]
            )  # A x F x height x width
            current = (
                predictions.masks[:, offsets] & predictions.present[:, offsets, None, None]
            )  # k x F x h x w
            iou = mask_iou(previous, current)  # A x k
            rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
            for row, col in zip(rows.tolist(), cols.tolist()):
                if iou[row, col] >= self.match_iou:
                    track_ids[col] = self._active[row]
        for k, track_id in enumerate(track_ids):
            if track_id is None:
                track_ids[k] = len(self.tracks)
                self.tracks.append(Track(track_id=len(self.tracks), first_frame=start))
        return track_ids  # type: ignore[return-value]

    def finalize_before(self, frame: int) -> None:
        """Encode the frames before ``frame`` into their tracks and free them."""
        for f in sorted(f for f in self._pending if f < frame):
            for track_id, prediction in sorted(self._pending.pop(f).items()):
                track = self.tracks[track_id]
                if len(track.frame_scores) == 0:
                    track.first_frame = f
                rle = encode_mask(prediction.mask) if prediction.present else None
                track.append(rle, prediction.score, prediction.label, prediction.probs)
        self._next_final = max(self._next_final, frame)

    def close(self, video_length: int) -> list[Track]:
        """Finalize every frame and return the tracks, each with ``video_length`` = V set."""
        self.finalize_before(video_length)
        if self._pending:
            raise ValueError(
                f"predictions for frames {sorted(self._pending)} beyond the video's {video_length}"
            )
        for track in self.tracks:
            track.video_length = video_length
        return self.tracks
