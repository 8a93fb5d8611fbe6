"""Validated YouTube-VIS ground truth and results, as per-video tracks of compressed RLEs.

Everything the official evaluator reads is checked, with errors naming the video, annotation (or results
index) and field: the ground truth by ``vistr_lit.ytvis_format`` (the validator the dataset checker uses), the
results here. Where the official code crashes or silently truncates, we raise instead:
per-frame lists whose length differs from the video's, frame masks whose size differs from the video's,
results for unknown videos or categories (the official code drops the latter silently).
"""

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from vistr_lit.ytvis_format import OCCLUSION_SCORES, num_frames, segmentation_problem, validate_ytvis

MAX_LISTED_PROBLEMS = 10  # a ground truth's problems named in the error, the rest counted


class YTVISFormatError(ValueError):
    """A ground-truth or results file that the metric cannot score as written."""


@dataclass
class Video:
    id: int
    height: int
    width: int
    num_frames: int


@dataclass
class VideoTracks:
    """The tracks of one kind (ground truth or detections) in one video, in input order.

    ``rles[j][f]`` is track j's compressed RLE at frame f or ``None``; ``areas`` int64 ``[J, V]`` are the mask
    areas (0 where absent); ``avg_area`` float64 ``[J]`` bins the track into area ranges.
    """

    rles: list[list[dict | None]]
    areas: np.ndarray
    avg_area: np.ndarray
    category_ids: np.ndarray
    ids: np.ndarray  # ground truth: annotation ids; detections: 1-based position in the results list
    scores: np.ndarray | None = None  # detections only
    iscrowd: np.ndarray | None = None  # ground truth only
    occ_score: np.ndarray | None = None  # ground truth with OVIS occlusion labels only

    def __len__(self) -> int:
        return len(self.rles)


def truthy_mean(values: list) -> float:
    """Official ``avg_area``: mean of the truthy values (None and 0 dropped), 0 if none; same float ops."""
    kept = [v for v in values if v]
    return float(np.array(kept, dtype=np.float64).mean()) if kept else 0.0


def _load_json(source: dict | list | str | Path, what: str):
    if isinstance(source, (str, Path)):
        try:
            return json.loads(Path(source).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise YTVISFormatError(f"{what} file {source}: {err}") from err
    return source


def _int_field(obj: dict, key: str, where: str) -> int:
    if not isinstance(obj, dict):
        raise YTVISFormatError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise YTVISFormatError(f"{where}: missing field '{key}'")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise YTVISFormatError(f"{where}: field '{key}' must be an integer, got {value!r}")
    return int(value)


def _list_field(obj: dict, key: str, length: int, where: str) -> list:
    value = obj.get(key)
    if not isinstance(value, list):
        raise YTVISFormatError(f"{where}: field '{key}' must be a list, got {type(value).__name__}")
    if len(value) != length:
        # The official evaluator zips lists and silently ignores the extra frames (OVIS asserts).
        raise YTVISFormatError(
            f"{where}: field '{key}' has {len(value)} entries, the video has {length} frames"
        )
    return value


def _to_rle(segm, video: Video, where: str, polygons_allowed: bool) -> dict:
    """A frame segmentation as compressed RLE of the video's size (as the official ``annToRLE``); its verdict
    is ``ytvis_format.segmentation_problem``'s."""
    why = segmentation_problem(segm, video.height, video.width, polygons=polygons_allowed)
    if why:
        raise YTVISFormatError(f"{where}: {why}")
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, video.height, video.width))
    if isinstance(segm["counts"], list):  # uncompressed RLE (what the public YTVIS json holds)
        return mask_utils.frPyObjects(segm, video.height, video.width)
    return {"size": [video.height, video.width], "counts": segm["counts"]}


def _frame_areas(rles: list[dict | None]) -> np.ndarray:
    """int64 ``[V]`` mask areas of one track, 0 where absent (one pycocotools call)."""
    areas = np.zeros(len(rles), dtype=np.int64)
    frames = [f for f, rle in enumerate(rles) if rle is not None]
    if frames:
        areas[frames] = mask_utils.area([rles[f] for f in frames])
    return areas


@dataclass
class GroundTruth:
    """A validated YouTube-VIS ground-truth file; tracks are converted to RLE per video on first use."""

    videos: dict[int, Video]
    category_ids: list[int]  # sorted
    annotations: dict[int, list[dict]]  # video id -> its annotations, file order
    has_occlusion: bool
    category_names: dict[int, str] = field(default_factory=dict)
    name: str = "ground truth"  # in the messages, as the validator's
    _tracks: dict[int, VideoTracks] = field(default_factory=dict, repr=False)

    def tracks(self, video_id: int) -> VideoTracks:
        if video_id not in self._tracks:
            self._tracks[video_id] = self._convert(video_id)
        return self._tracks[video_id]

    def _convert(self, video_id: int) -> VideoTracks:
        video = self.videos[video_id]
        anns = self.annotations.get(video_id, [])
        rles = []
        for ann in anns:
            where = f"{self.name}, video {video_id}, annotation {ann['id']}"
            rles.append(
                [
                    _to_rle(s, video, f"{where}: field 'segmentations[{f}]'", polygons_allowed=True)
                    if s is not None
                    else None
                    for f, s in enumerate(ann["segmentations"])
                ]
            )
        areas = (
            np.stack([_frame_areas(r) for r in rles]) if rles else np.zeros((0, video.num_frames), np.int64)
        )
        occ = None
        if self.has_occlusion:
            occ = np.array([_occlusion_score(a, video_id) for a in anns], dtype=np.float64)
        return VideoTracks(
            rles=rles,
            areas=areas,
            avg_area=np.array([truthy_mean(a["areas"]) for a in anns], dtype=np.float64),
            category_ids=np.array([a["category_id"] for a in anns], dtype=np.int64),
            ids=np.array([a["id"] for a in anns], dtype=np.int64),
            iscrowd=np.array([bool(a["iscrowd"]) for a in anns], dtype=bool),
            occ_score=occ,
        )


def _occlusion_score(ann: dict, video_id: int) -> float:
    """OVIS ``occ_score``: mean of the top ceil(n/2) per-frame occlusion scores (same float ops); the
    validator has refused annotations without a labelled frame (the official code divides by zero)."""
    scores = sorted(OCCLUSION_SCORES[label] for label in ann["occlusion"] if label is not None)
    top = scores[-math.ceil(len(scores) / 2) :]
    return sum(top) / len(top)


def load_ground_truth(source: dict | str | Path) -> GroundTruth:
    """Parse and validate a YouTube-VIS (or OVIS) ground-truth dict or json path (``validate_ytvis``; the
    frame segmentations are checked, by the same rules, when a video's masks are converted)."""
    data = _load_json(source, "ground truth")
    name = f"ground truth {source}" if isinstance(source, str | Path) else "ground truth"
    problems = validate_ytvis(data, name, segmentations=False)
    if problems:
        listed = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(listed)
        raise YTVISFormatError("; ".join(listed) + (f"; and {more} more problem(s)" if more else ""))
    videos = {v["id"]: Video(v["id"], v["height"], v["width"], num_frames(v)) for v in data["videos"]}
    anns = data.get("annotations") or []
    annotations: dict[int, list[dict]] = {}
    for ann in anns:
        annotations.setdefault(ann["video_id"], []).append(ann)
    names = {c["id"]: str(c.get("name", "")) for c in data["categories"]}
    category_ids = sorted(c["id"] for c in data["categories"])
    has_occlusion = bool(anns) and all("occlusion" in a for a in anns)
    return GroundTruth(videos, category_ids, annotations, has_occlusion, names, name)


def load_detections(
    source: list[dict] | str | Path, gt: GroundTruth, video_ids: set[int]
) -> dict[int, VideoTracks]:
    """Parse and validate a results list or json path into per-video detection tracks (file order kept)."""
    data = _load_json(source, "results")
    if not isinstance(data, list):
        raise YTVISFormatError(f"results: expected a list of entries, got {type(data).__name__}")
    per_video: dict[int, list[tuple[int, dict]]] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise YTVISFormatError(f"results[{i}]: expected a dict, got {type(entry).__name__}")
        vid = _int_field(entry, "video_id", f"results[{i}]")
        where = f"results[{i}] (video {vid})"
        if vid not in gt.videos:
            raise YTVISFormatError(f"{where}: field 'video_id' is not a video of the ground truth")
        if vid not in video_ids:
            raise YTVISFormatError(f"{where}: field 'video_id' is not among the evaluated video_ids")
        if _int_field(entry, "category_id", where) not in gt.category_ids:
            raise YTVISFormatError(f"{where}: field 'category_id' {entry['category_id']} is not a category")
        score = entry.get("score")
        if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
            raise YTVISFormatError(f"{where}: field 'score' must be a finite number, got {score!r}")
        _list_field(entry, "segmentations", gt.videos[vid].num_frames, where)
        per_video.setdefault(vid, []).append((i, entry))
    out = {}
    for vid, entries in per_video.items():
        video = gt.videos[vid]
        rles = [
            [
                _to_rle(s, video, f"results[{i}] (video {vid}), segmentations[{f}]", polygons_allowed=False)
                if s
                else None
                for f, s in enumerate(e["segmentations"])
            ]
            for i, e in entries
        ]
        areas = np.stack([_frame_areas(r) for r in rles])
        out[vid] = VideoTracks(
            rles=rles,
            areas=areas,
            avg_area=np.array([truthy_mean(a.tolist()) for a in areas], dtype=np.float64),
            category_ids=np.array([e["category_id"] for _, e in entries], dtype=np.int64),
            ids=np.array([i + 1 for i, _ in entries], dtype=np.int64),
            scores=np.array([float(e["score"]) for _, e in entries], dtype=np.float64),
        )
    return out
