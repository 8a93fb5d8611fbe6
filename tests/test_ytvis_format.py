"""One YouTube-VIS ground-truth validator: the dataset checker and the evaluator accept and refuse the same
files, with the same words."""

import copy
import json

import pytest

from vistr_lit.data.check import check_dataset
from vistr_lit.evaluation.inputs import YTVISFormatError, load_ground_truth

H, W, FRAMES = 4, 5, 3


def rle(ones_from: int, ones: int) -> dict:
    """Uncompressed RLE (column-major) of a mask with ``ones`` pixels from pixel ``ones_from`` on."""
    return {"size": [H, W], "counts": [ones_from, ones, H * W - ones_from - ones]}


def valid_gt() -> dict:
    return {
        "videos": [{"id": 1, "width": W, "height": H, "length": FRAMES, "file_names": ["a/0", "a/1", "a/2"]}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {
                "id": 7,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": [rle(0, 4), None, rle(2, 6)],
                "areas": [4, None, 6],
                "bboxes": [[0, 0, 1, 4], None, [0, 2, 2, 4]],
            },
            {
                "id": 8,
                "video_id": 1,
                "category_id": 2,
                "iscrowd": 0,
                "segmentations": [None, [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0]], None],
                "areas": [None, 2, None],
            },
        ],
    }


def checker_problems(tmp_path, gt: dict) -> list[str]:
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(gt))
    return check_dataset(tmp_path, ann, check_frames=False).problems


def evaluator_error(gt: dict) -> str | None:
    """The evaluator's refusal (its ground-truth loader and every video's mask conversion), or None."""
    try:
        loaded = load_ground_truth(copy.deepcopy(gt))
        for video_id in loaded.videos:
            loaded.tracks(video_id)
    except YTVISFormatError as err:
        return str(err)
    return None


def annotation(gt, i=0) -> dict:
    return gt["annotations"][i]


REFUSED = {
    "iscrowd missing": lambda gt: annotation(gt).pop("iscrowd"),
    "iscrowd 2": lambda gt: annotation(gt).update(iscrowd=2),
    "areas missing": lambda gt: annotation(gt).pop("areas"),
    "area NaN": lambda gt: annotation(gt)["areas"].__setitem__(0, float("nan")),
    "area negative": lambda gt: annotation(gt)["areas"].__setitem__(0, -1),
    "unknown category": lambda gt: annotation(gt).update(category_id=9),
    "unknown video": lambda gt: annotation(gt).update(video_id=2),
    "duplicate annotation": lambda gt: annotation(gt, 1).update(id=7),
    "one frame too many": lambda gt: annotation(gt)["segmentations"].append(None),
    "areas one frame short": lambda gt: annotation(gt)["areas"].pop(),
    "empty RLE": lambda gt: annotation(gt)["segmentations"].__setitem__(1, {}),
    "empty polygon list": lambda gt: annotation(gt)["segmentations"].__setitem__(1, []),
    "RLE of another size": lambda gt: annotation(gt)["segmentations"][0].update(size=[H + 1, W]),
    "RLE counts short": lambda gt: annotation(gt)["segmentations"][0]["counts"].pop(),
    "segmentation a string": lambda gt: annotation(gt)["segmentations"].__setitem__(0, "x"),
    "video height missing": lambda gt: gt["videos"][0].pop("height"),
    "video length disagrees": lambda gt: gt["videos"][0].update(length=4),
    "duplicate category": lambda gt: gt["categories"][1].update(id=1),
    "occlusion label unknown": lambda gt: [
        a.update(occlusion=["heavy", None, None]) for a in gt["annotations"]
    ],
    "occlusion never labelled": lambda gt: [a.update(occlusion=[None] * FRAMES) for a in gt["annotations"]],
    "occlusion in one annotation only": lambda gt: annotation(gt).update(
        occlusion=["no_occlusion", None, "severe_occlusion"]
    ),
}
ACCEPTED = {
    "as written": lambda gt: None,
    "iscrowd True": lambda gt: annotation(gt).update(iscrowd=True),
    "annotations null (a test split)": lambda gt: gt.update(annotations=None),
    "no annotations": lambda gt: gt.pop("annotations"),
    "OVIS occlusion labels": lambda gt: [
        a.update(occlusion=["no_occlusion", "slight_occlusion", None]) for a in gt["annotations"]
    ],
    "compressed RLE": lambda gt: annotation(gt)["segmentations"].__setitem__(
        1, {"size": [H, W], "counts": "j0"}
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_both_refuse_with_the_same_words(tmp_path, case):
    gt = valid_gt()
    REFUSED[case](gt)
    problems, error = checker_problems(tmp_path, gt), evaluator_error(gt)
    assert problems and error is not None, (problems, error)
    # the evaluator names the first of them as the checker does, after the file's name
    first = problems[0].split(", ", 1)[1]
    assert first in error, (first, error)


@pytest.mark.parametrize("case", ACCEPTED)
def test_both_accept(tmp_path, case):
    gt = valid_gt()
    ACCEPTED[case](gt)
    assert checker_problems(tmp_path, gt) == []
    assert evaluator_error(gt) is None


def test_only_the_checker_needs_frame_files_and_category_names(tmp_path):
    """The evaluator reads no frames: a video given by ``length`` alone is its ground truth, not a dataset."""
    gt = valid_gt()
    del gt["videos"][0]["file_names"], gt["categories"][0]["name"]
    assert evaluator_error(gt) is None
    problems = checker_problems(tmp_path, gt)
    assert any("['file_names']" in p for p in problems) and any("['name']" in p for p in problems)
