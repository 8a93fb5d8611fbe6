"""The dataset checker: a summary for a valid dataset, each problem named, non-zero exit."""

import json

import pytest
from PIL import Image
from ytvis_samples import make_raw, write_dataset

from vistr_lit.data.check import check_dataset, main


def test_valid_dataset_summary(tiny_dataset, capsys):
    root, ann = tiny_dataset
    assert main(["--root", str(root), "--ann", str(ann)]) == 0
    out = capsys.readouterr().out
    assert "videos 2, frames 7, instances 3, instance-frames 9, categories 2" in out


FRAME_A2 = "vid_a/00010.jpg"


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (
            lambda root, raw: (root / FRAME_A2).unlink(),
            f"{FRAME_A2} (video 1, field 'file_names[2]'): frame file does not exist",
        ),
        (
            lambda root, raw: (root / FRAME_A2).write_bytes(b"not a jpeg"),
            "(video 1, field 'file_names[2]'): frame does not decode",
        ),
        (
            lambda root, raw: (root / FRAME_A2).write_bytes((root / FRAME_A2).read_bytes()[:200]),
            "frame does not decode",
        ),
        (
            lambda root, raw: Image.new("RGB", (10, 10)).save(root / FRAME_A2),
            "(video 1, field 'file_names[2]'): frame is 10x10 (width x height), the video says 32x24",
        ),
        (
            lambda root, raw: raw["annotations"][0]["segmentations"].pop(),
            "video 1, annotation 11: field 'segmentations' has length 4",
        ),
        (
            lambda root, raw: raw["annotations"][2]["bboxes"].pop(),
            "video 7, annotation 13: field 'bboxes' has length 1",
        ),
        (
            lambda root, raw: raw["annotations"][1]["segmentations"][0].update(size=[24, 33]),
            "annotation 12: field 'segmentations[0]': RLE size [24, 33] != video size [24, 32]",
        ),
        (
            lambda root, raw: raw["annotations"][2].update(video_id=8),
            "video 8, annotation 13: field 'video_id' refers",
        ),
        (
            lambda root, raw: raw["annotations"][2].update(category_id=5),
            "annotation 13: field 'category_id' = 5",
        ),
        (lambda root, raw: raw["annotations"][2].update(id=12), "annotation 12: duplicate annotation id"),
        (lambda root, raw: raw["videos"][1].update(id=1), "video 1: duplicate video id"),
        (
            lambda root, raw: raw["categories"].append({"id": 3, "name": "again"}),
            "category 3: duplicate category id",
        ),
    ],
)
def test_each_problem_is_reported(tmp_path, capsys, break_it, expected):
    raw = make_raw()
    ann = write_dataset(tmp_path, raw)
    root = tmp_path / "JPEGImages"
    break_it(root, raw)
    ann.write_text(json.dumps(raw))
    assert main(["--root", str(root), "--ann", str(ann)]) == 1
    err = capsys.readouterr().err
    assert expected in err, err
    assert str(ann) in err


def test_all_problems_are_listed_and_missing_inputs(tmp_path, tiny_dataset):
    root, ann = tiny_dataset
    (root / "vid_b" / "00000.jpg").unlink()
    (root / "vid_b" / "00005.jpg").unlink()
    raw = json.loads(ann.read_text())
    raw["annotations"][0]["category_id"] = 77
    ann.write_text(json.dumps(raw))
    report = check_dataset(root, ann)
    assert len(report.problems) == 3 and not report.ok
    assert check_dataset(root, tmp_path / "none.json").problems == [
        f"{tmp_path / 'none.json'}: annotation file does not exist"
    ]
    assert "frames folder does not exist" in check_dataset(tmp_path / "nowhere", ann).problems[-1]
    assert len(check_dataset(root, ann, check_frames=False).problems) == 1
