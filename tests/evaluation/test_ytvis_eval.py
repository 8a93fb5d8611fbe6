"""The evaluator on hand-computed cases and against a slow transcription of the official code."""

import copy

import numpy as np
import pytest
from ytvis_cases import random_case, rle
from ytvis_reference import reference_evaluate

from vistr_lit.evaluation import YTVIS_STATS, YTVISEval, evaluate_ytvis
from vistr_lit.evaluation.inputs import load_detections, load_ground_truth
from vistr_lit.evaluation.spatiotemporal_iou import spatiotemporal_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
EPS = np.spacing(1)  # the official precision is tp / (tp + fp + eps)
# pycocotools' decode (used by the reference) warns under NumPy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def make_gt(h, w, tracks, num_frames, category_ids=(1,), video_id=1):
    """``tracks``: dicts with ``masks`` (list of bool [h, w] or None) and optional ``id``,
    ``category_id``, ``video_id``, ``iscrowd``, ``areas``."""
    anns = []
    for i, t in enumerate(tracks):
        masks = t["masks"]
        anns.append(
            {
                "id": t.get("id", i + 1),
                "video_id": t.get("video_id", video_id),
                "category_id": t.get("category_id", category_ids[0]),
                "iscrowd": t.get("iscrowd", 0),
                "segmentations": [rle(m) if m is not None else None for m in masks],
                "areas": t.get("areas", [int(m.sum()) if m is not None else None for m in masks]),
            }
        )
    video_ids = sorted({a["video_id"] for a in anns} | {video_id})
    return {
        "videos": [{"id": v, "height": h, "width": w, "length": num_frames} for v in video_ids],
        "categories": [{"id": c, "name": str(c)} for c in category_ids],
        "annotations": anns,
    }


def det(masks, score, category_id=1, video_id=1):
    segs = [rle(m) if m is not None else None for m in masks]
    return {"video_id": video_id, "category_id": category_id, "score": score, "segmentations": segs}


def test_iou_sums_intersection_and_union_over_frames():
    h, w = 10, 10
    g = [box(h, w, 0, 2, 0, 5), box(h, w, 0, 2, 0, 5), None]  # 10 + 10 px
    d = [box(h, w, 0, 2, 0, 5), box(h, w, 0, 1, 0, 5), box(h, w, 5, 7, 5, 10)]  # 10 + 5 + 10 px
    gt = load_ground_truth(make_gt(h, w, [{"masks": g}], 3))
    dts = load_detections([det(d, 0.9)], gt, {1})[1]
    iou = spatiotemporal_iou(dts, np.array([0]), gt.tracks(1), np.array([0]))
    # frame 0: I 10, U 10; frame 1: I 5, U 10; frame 2: only the detection, U 10 -> 15 / 30
    assert iou[0, 0] == 15 / 30
    # one per-frame mean would give (1 + 0.5 + 0) / 3 = 0.5 too, so also check a case where they differ:
    d2 = [box(h, w, 0, 2, 0, 5), None, None]
    dts2 = load_detections([det(d2, 0.9)], gt, {1})[1]
    assert spatiotemporal_iou(dts2, np.array([0]), gt.tracks(1), np.array([0]))[0, 0] == 10 / 20


@pytest.mark.parametrize(("inter", "matches"), [(49, 0), (50, 1), (62, 3), (75, 6), (94, 9), (100, 10)])
def test_iou_equal_to_threshold_matches(inter, matches):
    """IoU = inter / 100 for one det inside one GT; AP is the fraction of thresholds reached (>= matches)."""
    h, w = 1, 100
    g = [box(h, w, 0, 1, 0, 100)]
    d = [box(h, w, 0, 1, 0, inter)]  # inside g: I = inter, U = 100
    stats = evaluate_ytvis(make_gt(h, w, [{"masks": g}], 1), [det(d, 0.5)])
    assert stats["AP"] == pytest.approx(matches / 10 / (1 + EPS), abs=1e-15)
    assert stats["AR100"] == pytest.approx(matches / 10, abs=1e-15)
    assert stats["AP50"] == pytest.approx(float(inter >= 50))
    assert stats["AP75"] == pytest.approx(float(inter >= 75))  # .75 is exact in binary: equality matches


@pytest.mark.parametrize(
    ("area", "expect"),
    [
        (16383, {"APs": 1, "APm": -1, "APl": -1}),
        (16384, {"APs": 1, "APm": 1, "APl": -1}),  # both ends closed: counts as small and medium
        (16385, {"APs": -1, "APm": 1, "APl": -1}),
        (65536, {"APs": -1, "APm": 1, "APl": 1}),
        (65537, {"APs": -1, "APm": -1, "APl": 1}),
    ],
)
def test_gt_area_range_boundaries_use_the_areas_field(area, expect):
    h, w = 4, 4
    g = [box(h, w, 0, 2, 0, 2)] * 2
    gt = make_gt(h, w, [{"masks": g, "areas": [area, None if area % 2 else area]}], 2)  # None is dropped
    stats = evaluate_ytvis(gt, [det(g, 0.9)])
    for name, value in expect.items():
        assert stats[name] == pytest.approx(value), name


@pytest.mark.parametrize(("side", "small_ap"), [(128, 0.5), (129, 1.0)])
def test_unmatched_detection_area_boundary(side, small_ap):
    """An unmatched detection of avg area exactly 128² is inside 'small' (a FP); 129² is outside (ignored)."""
    h, w = 130, 130
    g = [box(h, w, 0, 10, 0, 10)]
    big = [box(h, w, h - side, h, w - side, w)]  # overlaps g a little: IoU < .5, unmatched
    stats = evaluate_ytvis(make_gt(h, w, [{"masks": g}], 1), [det(g, 0.5), det(big, 0.9)])
    # 'small': the big detection ranks first; as a FP the precision at recall 1 is 1/2
    assert stats["APs"] == pytest.approx(small_ap, rel=1e-12)


def test_crowd_is_ignored_multi_matched_and_uses_plain_iou():
    h, w = 20, 20
    regular = [box(h, w, 0, 4, 0, 4)]
    crowd = [box(h, w, 10, 20, 10, 20)]  # 100 px
    gt = make_gt(h, w, [{"masks": regular}, {"masks": crowd, "iscrowd": 1}], 1)
    inside_crowd = [box(h, w, 10, 18, 10, 18)]  # 64 px inside the crowd region: IoU .64
    results = [det(regular, 0.5), det(inside_crowd, 0.9), det(inside_crowd, 0.8)]
    stats = evaluate_ytvis(gt, results)
    assert stats["AP50"] == pytest.approx(1 / (1 + EPS))  # both crowd matches ignored, not FPs
    # a detection deep inside the crowd: plain IoU 25/100 < .5 -> FP (the COCO crowd rule I/area(d) = 1 would
    # ignore it and give AP50 = 1)
    small_inside = [box(h, w, 12, 17, 12, 17)]
    stats = evaluate_ytvis(gt, [det(regular, 0.5), det(small_inside, 0.9)])
    assert stats["AP50"] == pytest.approx(0.5)


@pytest.mark.parametrize(("order", "expected"), [((0, 1), 0.5), ((1, 0), 1.0)])
def test_score_ties_keep_results_file_order(order, expected):
    h, w = 10, 10
    g = [box(h, w, 0, 4, 0, 4)]
    miss = [box(h, w, 6, 10, 6, 10)]
    dets = [det(miss, 0.5), det(g, 0.5)]
    stats = evaluate_ytvis(make_gt(h, w, [{"masks": g}], 1), [dets[i] for i in order])
    assert stats["AP50"] == pytest.approx(expected, rel=1e-12)


def test_iou_tie_between_ground_truths_later_one_wins():
    """d1 has IoU .5 with g1 and g2 (tie): it takes the later g2, so d2 (IoU 1 with g2 only) is a FP at .5."""
    h, w = 4, 4
    a = box(h, w, 0, 2, 0, 2)
    g1, g2 = [a, None], [None, a]
    gt = make_gt(h, w, [{"masks": g1}, {"masks": g2}], 2)
    stats = evaluate_ytvis(gt, [det([a, a], 0.9), det([None, a], 0.8)])
    # at IoU .5: TP then FP, recall .5 -> precision 1 for the 51 recall thresholds <= .5
    assert stats["AP50"] == pytest.approx(51 / 101 / (1 + EPS))


def test_more_than_100_detections_per_video_and_category():
    h, w = 4, 4
    g = [box(h, w, 0, 2, 0, 2)]
    miss = [box(h, w, 2, 4, 2, 4)]
    results = [det(miss, 0.9)] * 100 + [det(g, 0.5)]  # the true positive ranks 101st and is cut
    assert evaluate_ytvis(make_gt(h, w, [{"masks": g}], 1), results)["AR100"] == 0
    # the cut is per (video, category): 100 misses of another category do not push it out
    gt = make_gt(h, w, [{"masks": g}], 1, category_ids=(1, 2))
    results = [det(miss, 0.9, category_id=2)] * 100 + [det(g, 0.5)]
    assert evaluate_ytvis(gt, results)["AR100"] == 1


def test_empty_results_score_zero_and_empty_gt_scores_minus_one():
    h, w = 4, 4
    gt = make_gt(h, w, [{"masks": [box(h, w, 0, 2, 0, 2)]}], 1)
    stats = evaluate_ytvis(gt, [])
    assert stats["AP"] == 0 and stats["AR100"] == 0 and stats["APl"] == -1
    no_gt = make_gt(h, w, [], 1)
    assert set(evaluate_ytvis(no_gt, [det([box(h, w, 0, 2, 0, 2)], 0.5)]).values()) == {-1.0}


def test_gt_annotation_id_zero_counts_as_unmatched_like_the_official_code():
    h, w = 4, 4
    g = [box(h, w, 0, 2, 0, 2)]
    with pytest.warns(UserWarning, match="id 0"):
        stats = evaluate_ytvis(make_gt(h, w, [{"masks": g, "id": 0}], 1), [det(g, 0.9)])
    assert stats["AP"] == 0


def test_video_ids_restricts_the_ground_truth():
    h, w = 4, 4
    g = [box(h, w, 0, 2, 0, 2)]
    gt = make_gt(h, w, [{"masks": g, "video_id": 1}, {"masks": g, "video_id": 2}], 1)
    assert evaluate_ytvis(gt, [det(g, 0.9)])["AR100"] == 0.5
    assert evaluate_ytvis(gt, [det(g, 0.9)], video_ids=[1])["AR100"] == 1


def test_per_category_precision_is_exposed():
    h, w = 4, 4
    g = [box(h, w, 0, 2, 0, 2)]
    gt = make_gt(h, w, [{"masks": g, "category_id": 3}], 1, category_ids=(3, 7))
    ev = YTVISEval(gt, [det(g, 0.9, category_id=3)])
    ev.run()
    assert ev.precision.shape == (10, 101, 2, 4, 3)
    assert (ev.precision[:, :, 1] == -1).all()  # category 7 has no ground truth
    assert (ev.precision[:, :, 0, 0] > 0.99).all()  # category 3, range 'all': a perfect detection
    assert (ev.precision[:, :, 0, 2:] == -1).all()  # its 4-pixel GT is not medium or large


def _renumber(gt, results, rng):
    """Videos renumbered by a random permutation (with distinct scores, nothing may change)."""
    old = [v["id"] for v in gt["videos"]]
    new = dict(zip(old, rng.permutation(np.arange(100, 100 + len(old))).tolist()))
    for v in gt["videos"]:
        v["id"] = new[v["id"]]
    for a in gt["annotations"]:
        a["video_id"] = new[a["video_id"]]
    for r in results:
        r["video_id"] = new[r["video_id"]]


@pytest.mark.parametrize("seed", range(12))
def test_invariant_to_video_renumbering_and_results_order(seed):
    gt, results = random_case(seed)
    rng = np.random.default_rng(seed)
    for i, r in enumerate(results):  # distinct scores: order across the file and across videos is defined
        r["score"] = float(rng.random()) + i * 1e-9
    base = evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(results))
    shuffled = [results[i] for i in rng.permutation(len(results))]
    assert evaluate_ytvis(copy.deepcopy(gt), shuffled) == base
    gt2, results2 = copy.deepcopy(gt), copy.deepcopy(results)
    _renumber(gt2, results2, rng)
    assert evaluate_ytvis(gt2, results2) == base


@pytest.mark.filterwarnings("ignore:ground truth has annotation id 0")
@pytest.mark.parametrize("block", range(4))
def test_equals_the_reference_transcription_on_random_cases(block):
    """Score ties, crowd, >100 detections, absent frames, sizes across the area boundaries; OVIS every 5th."""
    for seed in range(block * 50, (block + 1) * 50):
        gt, results = random_case(seed, ovis=seed % 5 == 0)
        expected = reference_evaluate(gt, results)
        got = evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(results))
        assert got == expected, seed  # bit-identical: same float operations in the same order


@pytest.mark.slow
@pytest.mark.parametrize("block", range(20))
def test_equals_the_reference_on_many_random_cases(block):
    for seed in range(1000 + block * 100, 1000 + (block + 1) * 100):
        gt, results = random_case(seed, ovis=seed % 4 == 0, big=seed % 7 == 0)
        expected = reference_evaluate(gt, results)
        assert evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(results)) == expected, seed


def test_stat_names():
    gt, results = random_case(3)
    assert list(evaluate_ytvis(gt, results)) == list(YTVIS_STATS)
    gt, results = random_case(3, ovis=True)
    assert list(evaluate_ytvis(gt, results)) == [
        "AP", "AP50", "AP75", "APs", "APm", "APl", "AP_light", "AP_medium", "AP_heavy",
        "AR1", "AR10", "AR100", "ARs", "ARm", "ARl", "AR_light", "AR_medium", "AR_heavy",
    ]  # fmt: skip
