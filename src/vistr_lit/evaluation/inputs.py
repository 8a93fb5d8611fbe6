"""Validated YouTube-VIS ground truth and results, as per-video tracks of compressed RLEs.

Everything the official evaluator reads is checked here, with errors naming the video, annotation (or
results index) and field. Where the official code crashes or silently truncates, we raise instead:
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

# OVIS per-frame occlusion labels and their scores (OVIS challenge paper; oviseval.py `occann2score`).
OCCLUSION_SCORES = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}


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
    """A truthy frame segmentation as compressed RLE of the video's size (as the official ``annToRLE``)."""
    size = [video.height, video.width]
    if isinstance(segm, list):
        if not polygons_allowed:
            raise YTVISFormatError(f"{where}: polygons are not accepted in results; write compressed RLE")
        if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segm):
            raise YTVISFormatError(f"{where}: a polygon must be a list of >= 3 (x, y) pairs")
        return mask_utils.merge(mask_utils.frPyObjects(segm, video.height, video.width))
    if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
        raise YTVISFormatError(f"{where}: expected an RLE {{'size', 'counts'}}, a polygon list or null")
    if list(segm["size"]) != size:
        raise YTVISFormatError(f"{where}: mask size {list(segm['size'])} differs from the video's {size}")
    counts = segm["counts"]
    if isinstance(counts, list):  # uncompressed RLE (what the public YTVIS json holds)
        if sum(counts) != video.height * video.width:
            raise YTVISFormatError(f"{where}: uncompressed RLE counts do not sum to {size[0]}x{size[1]}")
        return mask_utils.frPyObjects(segm, video.height, video.width)
    if isinstance(counts, (str, bytes)):
        return {"size": size, "counts": counts}
    raise YTVISFormatError(f"{where}: RLE counts must be a string or a list of ints")


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
            where = f"ground truth video {video_id}, annotation {ann['id']}"
            rles.append(
                [
                    _to_rle(s, video, f"{where}, segmentations[{f}]", polygons_allowed=True) if s else None
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
    """OVIS ``occ_score``: mean of the top ceil(n/2) per-frame occlusion scores (same float ops)."""
    scores = sorted(OCCLUSION_SCORES[label] for label in ann["occlusion"] if label is not None)
    if not scores:  # the official code divides by zero here
        raise YTVISFormatError(
            f"ground truth video {video_id}, annotation {ann['id']}: field 'occlusion' has no labelled frame"
        )
    top = scores[-math.ceil(len(scores) / 2) :]
    return sum(top) / len(top)


def load_ground_truth(source: dict | str | Path) -> GroundTruth:
    """Parse and validate a YouTube-VIS (or OVIS) ground-truth dict or json path."""
    data = _load_json(source, "ground truth")
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise YTVISFormatError("ground truth: expected a dict with a 'videos' list")
    if not isinstance(data.get("categories"), list):
        raise YTVISFormatError("ground truth: expected a 'categories' list")
    videos: dict[int, Video] = {}
    for i, v in enumerate(data["videos"]):
        vid = _int_field(v, "id", f"ground truth videos[{i}]")
        where = f"ground truth video {vid}"
        if vid in videos:
            raise YTVISFormatError(f"{where}: duplicate video id")
        height, width = _int_field(v, "height", where), _int_field(v, "width", where)
        if "file_names" in v:
            num_frames = len(v["file_names"])
            if "length" in v and _int_field(v, "length", where) != num_frames:
                raise YTVISFormatError(f"{where}: 'length' {v['length']} != {num_frames} 'file_names'")
        else:
            num_frames = _int_field(v, "length", where)
        videos[vid] = Video(vid, height, width, num_frames)
    category_ids = [
        _int_field(c, "id", f"ground truth categories[{i}]") for i, c in enumerate(data["categories"])
    ]
    if len(set(category_ids)) != len(category_ids):
        raise YTVISFormatError(f"ground truth: duplicate category ids in {category_ids}")
    annotations: dict[int, list[dict]] = {}
    seen_ids: set[int] = set()
    anns = data.get("annotations") or []  # OVIS tolerates `annotations: null`
    if not isinstance(anns, list):
        raise YTVISFormatError(f"ground truth: 'annotations' must be a list, got {type(anns).__name__}")
    labelled = [isinstance(a, dict) and "occlusion" in a for a in anns]
    if any(labelled) and not all(labelled):
        first = anns[labelled.index(False)]
        first = first.get("id") if isinstance(first, dict) else first
        raise YTVISFormatError(f"ground truth annotation {first}: missing field 'occlusion' (others have it)")
    for i, ann in enumerate(anns):
        ann_id = _int_field(ann, "id", f"ground truth annotations[{i}]")
        vid = _int_field(ann, "video_id", f"ground truth annotation {ann_id}")
        where = f"ground truth video {vid}, annotation {ann_id}"
        if ann_id in seen_ids:
            raise YTVISFormatError(f"{where}: duplicate annotation id")
        seen_ids.add(ann_id)
        if vid not in videos:
            raise YTVISFormatError(f"{where}: field 'video_id' is not a video of the ground truth")
        if _int_field(ann, "category_id", where) not in category_ids:
            raise YTVISFormatError(f"{where}: field 'category_id' {ann['category_id']} is not a category")
        if "iscrowd" not in ann:
            raise YTVISFormatError(f"{where}: missing field 'iscrowd'")
        if ann["iscrowd"] not in (0, 1):  # True/False compare equal to 1/0
            raise YTVISFormatError(f"{where}: field 'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}")
        num_frames = videos[vid].num_frames
        _list_field(ann, "segmentations", num_frames, where)
        for f, area in enumerate(_list_field(ann, "areas", num_frames, where)):
            if area is not None and (
                not isinstance(area, numbers.Real) or not math.isfinite(area) or area < 0
            ):
                raise YTVISFormatError(
                    f"{where}: areas[{f}] must be a finite number >= 0 or null, got {area!r}"
                )
        if labelled and labelled[0]:
            for f, label in enumerate(_list_field(ann, "occlusion", num_frames, where)):
                if label is not None and label not in OCCLUSION_SCORES:
                    raise YTVISFormatError(
                        f"{where}: occlusion[{f}] = {label!r} not in {list(OCCLUSION_SCORES)}"
                    )
        annotations.setdefault(vid, []).append(ann)
    names = {c["id"]: str(c.get("name", "")) for c in data["categories"]}
    return GroundTruth(videos, sorted(category_ids), annotations, bool(anns) and all(labelled), names)


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
