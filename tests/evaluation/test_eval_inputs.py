"""Bad ground truth or results: a clear error naming the video, annotation (or results index) and field."""

import copy
import json

import numpy as np
import pytest
from test_ytvis_eval import box, det, make_gt
from ytvis_cases import rle, uncompressed_rle

from vistr_lit.evaluation import YTVISFormatError, evaluate_ytvis

H, W = 6, 8


def fresh():
    g = [box(H, W, 0, 3, 0, 3), None, box(H, W, 1, 4, 1, 4)]
    gt = make_gt(H, W, [{"masks": g, "id": 7}], 3, category_ids=(1, 2), video_id=5)
    return gt, [det(g, 0.9, video_id=5)]


def _raises(gt, results, *fragments):
    with pytest.raises(YTVISFormatError) as info:
        evaluate_ytvis(gt, results)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_valid_case_scores():
    assert evaluate_ytvis(*fresh())["AP"] > 0.99


@pytest.mark.parametrize("length", [2, 4])
def test_results_with_wrong_number_of_frames(length):
    gt, results = fresh()
    results[0]["segmentations"] = (results[0]["segmentations"] + [None])[:length]
    _raises(gt, results, "results[0]", "video 5", "'segmentations'", f"{length} entries", "3 frames")


def test_gt_with_wrong_number_of_frames():
    gt, results = fresh()
    gt["annotations"][0]["segmentations"].append(None)
    _raises(gt, results, "video 5", "annotation 7", "'segmentations'")
    gt, results = fresh()
    gt["annotations"][0]["areas"].pop()
    _raises(gt, results, "annotation 7", "'areas'")


def test_mask_size_differs_from_video():
    gt, results = fresh()
    results[0]["segmentations"][0] = rle(np.ones((H + 1, W), dtype=bool))
    _raises(gt, results, "results[0]", "video 5", "segmentations[0]", "[7, 8]", "[6, 8]")
    gt, results = fresh()
    gt["annotations"][0]["segmentations"][2] = uncompressed_rle(np.ones((H, W + 2), dtype=bool))
    _raises(gt, results, "video 5", "annotation 7", "segmentations[2]", "size")


def test_unknown_video_and_category():
    gt, results = fresh()
    results[0]["video_id"] = 6
    _raises(gt, results, "results[0]", "video 6", "'video_id'")
    gt, results = fresh()
    results[0]["category_id"] = 3  # the official code drops these silently
    _raises(gt, results, "results[0]", "'category_id' 3")
    gt, results = fresh()
    gt["annotations"][0]["category_id"] = 9
    _raises(gt, results, "annotation 7", "'category_id' = 9")  # the dataset checker's words


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("score", float("nan"), "'score'"),
        ("score", None, "'score'"),
        ("score", True, "'score'"),
        ("video_id", "5", "'video_id'"),
        ("segmentations", None, "'segmentations'"),
    ],
)
def test_bad_result_fields(field, value, fragment):
    gt, results = fresh()
    results[0][field] = value
    _raises(gt, results, "results[0]", fragment)


def test_results_must_be_rle():
    gt, results = fresh()
    results[0]["segmentations"][0] = [[0.0, 0.0, 3.0, 0.0, 3.0, 3.0]]
    _raises(gt, results, "results[0]", "segmentations[0]", "polygons")
    results[0]["segmentations"][0] = {"counts": "abc"}
    _raises(gt, results, "results[0]", "segmentations[0]", "RLE")


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (lambda gt: gt["annotations"][0].pop("iscrowd"), ("annotation 7", "'iscrowd'")),
        (lambda gt: gt["annotations"][0].pop("areas"), ("annotation 7", "'areas'")),
        (lambda gt: gt["annotations"][0]["areas"].__setitem__(0, float("nan")), ("annotation 7", "areas[0]")),
        (lambda gt: gt["annotations"].append(dict(gt["annotations"][0])), ("annotation 7", "duplicate")),
        (
            lambda gt: gt["annotations"][0].__setitem__("video_id", 99),
            ("video 99", "annotation 7", "'video_id'"),
        ),
        (lambda gt: gt["videos"].append(dict(gt["videos"][0])), ("video 5", "duplicate")),
        (lambda gt: gt["videos"][0].pop("height"), ("video 5", "'height'")),
        (lambda gt: gt["annotations"][0].__setitem__("iscrowd", 2), ("annotation 7", "'iscrowd'")),
        (lambda gt: gt["annotations"].append(5), ("annotations[1]", "expected an object")),
        (
            lambda gt: gt["annotations"][0]["segmentations"].__setitem__(0, "x"),
            ("annotation 7", "segmentations[0]"),
        ),
    ],
)
def test_bad_ground_truth(mutate, fragments):
    gt, results = fresh()
    mutate(gt)
    _raises(gt, results, *fragments)


def test_ovis_occlusion_labels():
    gt, results = fresh()
    ann = gt["annotations"][0]
    ann["occlusion"] = ["severe_occlusion", None, "no_occlusion"]  # occ_score .75: heavy
    stats = evaluate_ytvis(gt, results)
    assert len(stats) == 18 and stats["AP_heavy"] > 0.99 and stats["AP_light"] == -1
    ann["occlusion"] = ["bad", None, None]
    _raises(gt, results, "annotation 7", "occlusion[0]")
    ann["occlusion"] = [None, None, None]  # the official code divides by zero
    _raises(gt, results, "annotation 7", "'occlusion'")
    gt["annotations"].append({**ann, "id": 8, "occlusion": ["no_occlusion"] * 3})
    del gt["annotations"][0]["occlusion"]
    _raises(gt, results, "annotation 7", "missing field 'occlusion'")


def test_gt_formats_agree():
    """Polygon, uncompressed and compressed RLE ground truth, and a json path, all score the same."""
    gt, results = fresh()
    base = evaluate_ytvis(gt, results)
    m = box(H, W, 0, 3, 0, 3)
    gt["annotations"][0]["segmentations"][0] = uncompressed_rle(m)
    assert evaluate_ytvis(copy.deepcopy(gt), results) == base
    gt["annotations"][0]["segmentations"][0] = [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0]]
    assert evaluate_ytvis(copy.deepcopy(gt), results)["AP"] < base["AP"]  # a different (rasterised) mask


def test_json_paths(tmp_path):
    gt, results = fresh()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    assert evaluate_ytvis(tmp_path / "gt.json", str(tmp_path / "res.json")) == evaluate_ytvis(gt, results)
    (tmp_path / "bad.json").write_text("{")
    _raises(tmp_path / "gt.json", tmp_path / "bad.json", "results file", "bad.json")
    _raises(gt, {"not": "a list"}, "expected a list")
