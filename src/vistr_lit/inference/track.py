"""One instance followed across a whole video: per-frame RLE masks, scores and classes; its results entry."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils
from torch import Tensor

from vistr_lit.evaluation.results import encode_track


def encode_mask(mask: Tensor) -> dict:
    """bool ``[height, width]`` → compressed RLE ``{"size": [height, width], "counts": str}`` (JSON-ready)."""
    return encode_track(mask[None])[0]  # the evaluator's writer, one frame at a time (streaming)


def coco_rle(rle: dict) -> dict:
    """A JSON-ready compressed RLE (string counts) → pycocotools' form (bytes counts)."""
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def decode_mask(rle: dict) -> np.ndarray:
    """Compressed RLE → bool ``[height, width]``."""
    return mask_utils.decode(coco_rle(rle)).astype(bool)


def _category_id(category_ids, label: int) -> int:
    """Original category id of class ``label``; ``category_ids`` is a sequence or a ``CategoryMap``."""
    if hasattr(category_ids, "to_category_id"):
        return int(category_ids.to_category_id(label))
    if hasattr(category_ids, "category_ids"):
        category_ids = category_ids.category_ids
    if not 0 <= label < len(category_ids):
        raise ValueError(f"class index {label} has no category id (the map has {len(category_ids)} classes)")
    return int(category_ids[label])


@dataclass
class Track:
    """An instance over the frames ``first_frame .. first_frame + len(frame_scores) - 1`` of a V-frame video.

    Attributes:
        track_id: identity, unique within the video, stable across windows.
        first_frame: video frame index of the first covered frame.
        segmentations: per covered frame, compressed RLE, or ``None`` where the frame score is below the
            floor.
        frame_scores: per covered frame, best class probability.
        frame_labels: per covered frame, argmax contiguous class.
        frame_probs: per covered frame, the K class probabilities (float32 numpy), when the predictions
            carried them (needed for more than one class per track in :meth:`to_results`).
        video_length: V, set when the video has been read to the end.
        score_scale: factor on the track's score, below 1 for a suppressed duplicate (``track_nms``).
    """

    track_id: int
    first_frame: int
    segmentations: list[dict | None] = field(default_factory=list)
    frame_scores: list[float] = field(default_factory=list)
    frame_labels: list[int] = field(default_factory=list)
    frame_probs: list[np.ndarray] = field(default_factory=list)
    video_length: int | None = None
    score_scale: float = 1.0

    def append(self, rle: dict | None, score: float, label: int, probs: Tensor | None = None) -> None:
        if self.frame_scores and (probs is None) != (len(self.frame_probs) == 0):
            raise ValueError(f"track {self.track_id}: class probabilities for some frames but not all")
        self.segmentations.append(rle)
        self.frame_scores.append(score)
        self.frame_labels.append(label)
        if probs is not None:
            self.frame_probs.append(probs.detach().float().cpu().numpy())

    @property
    def last_frame(self) -> int:
        return self.first_frame + len(self.frame_scores) - 1

    @property
    def score(self) -> float:
        """Mean of the frame scores over the frames the track covers, times ``score_scale``."""
        return float(np.mean(self.frame_scores)) * self.score_scale if self.frame_scores else 0.0

    @property
    def label(self) -> int:
        """Most frequent per-frame class over the covered frames (ties: smallest index)."""
        return int(np.bincount(np.asarray(self.frame_labels, dtype=np.int64)).argmax())

    def class_scores(self) -> np.ndarray:
        """float ``[K]``: each class's probability averaged over the covered frames, times ``score_scale``."""
        if not self.frame_probs:
            raise ValueError(f"track {self.track_id} has no class probabilities")
        return np.mean(self.frame_probs, axis=0) * self.score_scale

    def segmentation(self, frame: int) -> dict | None:
        """RLE at video frame ``frame``, ``None`` outside the covered frames or where absent."""
        offset = frame - self.first_frame
        return self.segmentations[offset] if 0 <= offset < len(self.segmentations) else None

    def to_result(self, video_id: int, category_ids: Sequence[int], video_length: int | None = None) -> dict:
        """The YouTube-VIS results entry ``{"video_id", "category_id", "score", "segmentations"}``.

        Args:
            video_id: the video's id in the annotation file.
            category_ids: original category id of each contiguous class (a sequence or a ``CategoryMap``).
            video_length: V; defaults to ``self.video_length``.
        """
        length = video_length if video_length is not None else self.video_length
        if length is None:
            raise ValueError(f"track {self.track_id} of video {video_id}: video length unknown")
        if self.last_frame >= length:
            raise ValueError(
                f"track {self.track_id} covers frame {self.last_frame} of a {length}-frame video"
            )
        return {
            "video_id": int(video_id),
            "category_id": _category_id(category_ids, self.label),
            "score": self.score,
            "segmentations": [self.segmentation(frame) for frame in range(length)],
        }

    def to_results(
        self,
        video_id: int,
        category_ids: Sequence[int],
        classes: int = 1,
        video_length: int | None = None,
    ) -> list[dict]:
        """The track's results entries: ``[to_result(...)]`` for ``classes=1`` (the original); otherwise one
        entry per class among the ``classes`` best by :meth:`class_scores`, each scored by its class score,
        all with the same masks (Mask2Former-VIS's top-k over (query, class) pairs, per track). A wrong
        top class then still leaves the right one in the results, below it.
        """
        if classes < 1:
            raise ValueError(f"classes must be >= 1, got {classes}")
        entry = self.to_result(video_id, category_ids, video_length)
        if classes == 1:
            return [entry]
        class_scores = self.class_scores()
        best = np.argsort(-class_scores, kind="stable")[:classes]
        return [
            dict(entry, category_id=_category_id(category_ids, int(c)), score=float(class_scores[c]))
            for c in best
        ]
