"""YouTube-VIS video mask AP: the 12 statistics of the official evaluator (18 with OVIS occlusion labels).

``YTVISEval(gt, results).run()`` reproduces the official ytvoseval/oviseval pipeline (per (video, category)
IoU and matching, accumulation per category, 12 summary statistics) on every valid input, with the same
float operations and sort orders; see ``../shared/reference/ytvis_metric.md`` for the rules and
``spatiotemporal_iou.py`` / ``matching.py`` for how each step is kept exact and fast. Inputs the official
code crashes on or truncates get a clear ``YTVISFormatError`` instead (``inputs.py``); empty results score 0.
"""

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vistr_lit.evaluation.inputs import (
    GroundTruth,
    VideoTracks,
    YTVISFormatError,
    load_detections,
    load_ground_truth,
)
from vistr_lit.evaluation.matching import VideoCategoryMatches, match_video_category
from vistr_lit.evaluation.spatiotemporal_iou import spatiotemporal_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # equals the official linspace(.5, .95, round(.45/.05)+1)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)  # per (video, category)
AREA_ALL = (0, 1e5**2)
AREA_RANGES = {"all": AREA_ALL, "small": (0, 128**2), "medium": (128**2, 256**2), "large": (256**2, 1e5**2)}
OCC_ALL = (0.0, 1.0)
OCC_RANGES = {"light": (0.0, 0.25), "medium": (0.25, 0.5), "heavy": (0.5, 1.0)}  # OVIS, closed ranges


@dataclass(frozen=True)
class EvalRange:
    """One (area range, occlusion range) cell; the official code evaluates only these combinations' stats."""

    name: str
    area: tuple[float, float]
    occlusion: tuple[float, float] = OCC_ALL


YTVIS_RANGES = tuple(EvalRange(name, area) for name, area in AREA_RANGES.items())
OVIS_RANGES = YTVIS_RANGES + tuple(EvalRange(f"occ_{n}", AREA_ALL, occ) for n, occ in OCC_RANGES.items())

# name -> (precision or recall, IoU threshold or None for the mean over .50:.95, range name, maxDets)
YTVIS_STATS = {
    "AP": ("precision", None, "all", 100),
    "AP50": ("precision", 0.5, "all", 100),
    "AP75": ("precision", 0.75, "all", 100),
    "APs": ("precision", None, "small", 100),
    "APm": ("precision", None, "medium", 100),
    "APl": ("precision", None, "large", 100),
    "AR1": ("recall", None, "all", 1),
    "AR10": ("recall", None, "all", 10),
    "AR100": ("recall", None, "all", 100),
    "ARs": ("recall", None, "small", 100),
    "ARm": ("recall", None, "medium", 100),
    "ARl": ("recall", None, "large", 100),
}
_OCC_AP = {f"AP_{n}": ("precision", None, f"occ_{n}", 100) for n in OCC_RANGES}
_OCC_AR = {f"AR_{n}": ("recall", None, f"occ_{n}", 100) for n in OCC_RANGES}
_ITEMS = list(YTVIS_STATS.items())
OVIS_STATS = dict(_ITEMS[:6] + list(_OCC_AP.items()) + _ITEMS[6:] + list(_OCC_AR.items()))  # official order


def _in_range(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    return (values >= bounds[0]) & (values <= bounds[1])  # closed on both ends, as the official test


class YTVISEval:
    """Evaluate results against ground truth; after ``run()``, ``precision`` float64 ``[T, 101, K, R, 3]``
    and ``recall`` ``[T, K, R, 3]`` (T IoU thresholds, K categories in ``category_ids`` order, R ranges in
    ``ranges`` order, maxDets 1/10/100) hold -1 where a category has no ground truth to score, and ``stats``
    maps the statistic names to floats.
    """

    def __init__(
        self,
        gt: GroundTruth | dict | str | Path,
        results: list[dict] | str | Path,
        video_ids: Iterable[int] | None = None,
    ):
        self.gt = gt if isinstance(gt, GroundTruth) else load_ground_truth(gt)
        if video_ids is None:
            self.video_ids = sorted(self.gt.videos)
        else:
            self.video_ids = sorted({int(v) for v in video_ids})
            unknown = [v for v in self.video_ids if v not in self.gt.videos]
            if unknown:
                raise YTVISFormatError(f"video_ids {unknown[:10]} are not videos of the ground truth")
        self.detections = load_detections(results, self.gt, set(self.video_ids))
        self.category_ids = self.gt.category_ids
        self.ranges = OVIS_RANGES if self.gt.has_occlusion else YTVIS_RANGES
        self.stat_defs = OVIS_STATS if self.gt.has_occlusion else YTVIS_STATS
        self.precision: np.ndarray | None = None
        self.recall: np.ndarray | None = None
        self.stats: dict[str, float] = {}

    def run(self) -> dict[str, float]:
        per_category = self._evaluate_videos()
        self._accumulate(per_category)
        self.stats = self._summarize()
        return self.stats

    def _evaluate_videos(self) -> dict[int, list[VideoCategoryMatches]]:
        """Per category, the matches of each (video, category) holding ground truth or detections."""
        per_category: dict[int, list[VideoCategoryMatches]] = {k: [] for k in self.category_ids}
        area_bounds = [r.area for r in self.ranges]
        warned = False
        for vid in self.video_ids:
            gts = self.gt.tracks(vid)
            dts = self.detections.get(vid)
            if not warned and (gts.ids == 0).any():
                warnings.warn(
                    "ground truth has annotation id 0: as in the official evaluator, a match to it counts as "
                    "unmatched",
                    stacklevel=2,
                )
                warned = True
            gt_cats = set(gts.category_ids.tolist())
            dt_by_cat = {}
            if dts is not None:
                for cat in np.unique(dts.category_ids).tolist():
                    dt_idx = np.flatnonzero(dts.category_ids == cat)
                    # stable sort by descending score (ties keep results-file order), then the top maxDets[-1]
                    dt_by_cat[cat] = dt_idx[np.argsort(-dts.scores[dt_idx], kind="stable")][: MAX_DETS[-1]]
            # IoU of every kept detection whose category has ground truth here against every ground truth
            # of the video: one pass over the frames per video (cross-category pairs are cheap and unused).
            with_gt = [c for c in sorted(dt_by_cat) if c in gt_cats]
            rows = np.concatenate([dt_by_cat[c] for c in with_gt]) if with_gt else np.zeros(0, np.int64)
            iou = spatiotemporal_iou(dts, rows, gts, np.arange(len(gts))) if len(rows) else None
            first_row = dict(zip(with_gt, np.cumsum([0] + [len(dt_by_cat[c]) for c in with_gt]).tolist()))
            for cat in sorted(gt_cats | set(dt_by_cat)):
                dt_idx = dt_by_cat.get(cat, np.zeros(0, dtype=np.int64))
                gt_idx = np.flatnonzero(gts.category_ids == cat)
                if cat in first_row:
                    cat_iou = iou[first_row[cat] : first_row[cat] + len(dt_idx)][:, gt_idx]
                else:
                    cat_iou = np.zeros((len(dt_idx), len(gt_idx)))
                per_category[cat].append(self._evaluate_pair(gts, dts, gt_idx, dt_idx, cat_iou, area_bounds))
        return per_category

    def _evaluate_pair(
        self,
        gts: VideoTracks,
        dts: VideoTracks | None,
        gt_idx: np.ndarray,
        dt_idx: np.ndarray,
        iou: np.ndarray,
        area_bounds: list,
    ) -> VideoCategoryMatches:
        """Match one (video, category): ``dt_idx`` [D] in score order, ``gt_idx`` [G], ``iou`` [D, G]."""
        ignore = np.repeat(gts.iscrowd[gt_idx][None, :], len(self.ranges), axis=0)  # [R, G]
        for r, rng in enumerate(self.ranges):
            ignore[r] |= ~_in_range(gts.avg_area[gt_idx], rng.area)
            if gts.occ_score is not None:
                ignore[r] |= ~_in_range(gts.occ_score[gt_idx], rng.occlusion)
        scores = dts.scores[dt_idx] if len(dt_idx) else np.zeros(0)
        dt_area = dts.avg_area[dt_idx] if len(dt_idx) else np.zeros(0)
        out_of_range = np.stack([~_in_range(dt_area, bounds) for bounds in area_bounds])  # [R, D]
        return match_video_category(
            iou, scores, gts.ids[gt_idx], gts.iscrowd[gt_idx], ignore, out_of_range, IOU_THRESHOLDS
        )

    def _accumulate(self, per_category: dict[int, list[VideoCategoryMatches]]) -> None:
        """Official ``accumulate``: per category, range and maxDets, detections of all videos by score."""
        num_thr, num_rec, num_ranges = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(self.ranges)
        shape = (num_thr, len(self.category_ids), num_ranges, len(MAX_DETS))
        self.recall = -np.ones(shape)
        self.precision = -np.ones((num_thr, num_rec, *shape[1:]))
        for k, cat in enumerate(self.category_ids):
            entries = per_category[cat]
            if not entries:
                continue
            num_gt = np.sum([e.num_gt for e in entries], axis=0)  # [R]
            scores = np.concatenate([e.scores for e in entries])  # video order, then score order
            rank = np.concatenate([np.arange(len(e.scores)) for e in entries])
            matched = np.concatenate([e.matched for e in entries], axis=2)  # [R, T, N]
            dt_ignore = np.concatenate([e.dt_ignore for e in entries], axis=2)
            for m, max_det in enumerate(MAX_DETS):
                keep = np.flatnonzero(rank < max_det)
                order = keep[np.argsort(-scores[keep], kind="stable")]
                for r in range(num_ranges):
                    if num_gt[r] == 0:
                        continue
                    self._fill(k, r, m, matched[r][:, order], dt_ignore[r][:, order], int(num_gt[r]))

    def _fill(self, k: int, r: int, m: int, matched: np.ndarray, ignore: np.ndarray, num_gt: int) -> None:
        """Precision/recall of one (category, range, maxDets) from ``matched``/``ignore`` bool ``[T, N]``."""
        tp = np.cumsum(matched & ~ignore, axis=1).astype(np.float64)
        fp = np.cumsum(~matched & ~ignore, axis=1).astype(np.float64)
        num_dt = tp.shape[1]
        if num_dt == 0:
            self.recall[:, k, r, m] = 0
            self.precision[:, :, k, r, m] = 0
            return
        rc = tp / num_gt
        pr = tp / (fp + tp + np.spacing(1))
        self.recall[:, k, r, m] = rc[:, -1]
        envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # pr[i] = max(pr[i:])
        for t in range(len(IOU_THRESHOLDS)):
            idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
            inside = idx < num_dt
            self.precision[t, :, k, r, m] = np.where(inside, envelope[t, np.minimum(idx, num_dt - 1)], 0.0)

    def _summarize(self) -> dict[str, float]:
        names = [r.name for r in self.ranges]
        stats = {}
        for stat, (kind, iou_thr, range_name, max_det) in self.stat_defs.items():
            s = self.precision if kind == "precision" else self.recall
            if iou_thr is not None:
                s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
            # same indexing as the official code, so np.mean adds the same values in the same order
            rind, mind = [names.index(range_name)], [MAX_DETS.index(max_det)]
            s = s[:, :, :, rind, mind] if kind == "precision" else s[:, :, rind, mind]
            valid = s[s > -1]
            stats[stat] = float(np.mean(valid)) if len(valid) else -1.0
        return stats


def evaluate_ytvis(
    gt: GroundTruth | dict | str | Path,
    results: list[dict] | str | Path,
    video_ids: Iterable[int] | None = None,
) -> dict[str, float]:
    """The official YouTube-VIS statistics (12 keys, 18 with OVIS occlusion labels) as fractions, -1 where
    a statistic has no ground truth to score. ``video_ids`` restricts the ground truth to those videos;
    results must then lie within them."""
    return YTVISEval(gt, results, video_ids).run()
