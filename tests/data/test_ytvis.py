"""The YouTube-VIS reader: every segmentation encoding, null frames, category mapping, validation, splits."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from ytvis_samples import HEIGHT, WIDTH, box_mask, make_raw

from vistr_lit.data.synthvis import encode_uncompressed_rle
from vistr_lit.data.ytvis import (
    AnnotationError,
    CategoryMap,
    decode_segmentation,
    hash_split,
    load_ytvis,
    parse_ytvis,
)
from vistr_lit.ytvis_format import validate_ytvis


def test_uncompressed_rle_round_trip_matches_pycocotools():
    rng = np.random.default_rng(1)
    for _ in range(20):
        mask = rng.random((HEIGHT, WIDTH)) < rng.random()
        rle = encode_uncompressed_rle(mask)
        assert sum(rle["counts"]) == HEIGHT * WIDTH
        assert np.array_equal(decode_segmentation(rle, HEIGHT, WIDTH), mask)
        # the published files are read through pycocotools frPyObjects: same mask
        coco = mask_utils.decode(mask_utils.frPyObjects(rle, HEIGHT, WIDTH))
        assert np.array_equal(coco, mask)


def test_rle_starting_with_foreground_has_leading_zero_count():
    mask = np.ones((4, 5), dtype=bool)
    assert encode_uncompressed_rle(mask)["counts"] == [0, 20]


def test_each_encoding_decodes(tiny_raw):
    segs = tiny_raw["annotations"][0]["segmentations"]
    assert isinstance(segs[0]["counts"], list)  # uncompressed RLE
    assert np.array_equal(decode_segmentation(segs[0], HEIGHT, WIDTH), box_mask(2, 10, 3, 11))
    assert isinstance(segs[3]["counts"], str)  # compressed RLE
    assert np.array_equal(decode_segmentation(segs[3], HEIGHT, WIDTH), box_mask(10, 20, 16, 30))
    poly = decode_segmentation(segs[2], HEIGHT, WIDTH).astype(bool)  # polygon
    assert poly[5:11, 7:13].all() and not poly[:3].any() and not poly[:, 16:].any()
    empty = decode_segmentation(None, HEIGHT, WIDTH)  # null frame
    assert empty.shape == (HEIGHT, WIDTH) and not empty.any()


def test_load_keeps_skipping_names_null_frames_and_maps_categories(tiny_dataset):
    _, ann = tiny_dataset
    data = load_ytvis(ann)
    video = data.video(1)
    assert video.file_names[:3] == ("vid_a/00000.jpg", "vid_a/00005.jpg", "vid_a/00010.jpg")
    assert [a.id for a in data.annotations[1]] == [11, 12]
    assert data.annotations[1][0].segmentations[1] is None
    cmap = data.category_map
    assert cmap.ids == [3, 9] and cmap.names == ["three", "nine"]
    assert cmap.to_index(9) == 1 and cmap.to_category_id(0) == 3
    with pytest.raises(KeyError, match="category_id 4"):
        cmap.to_index(4)
    assert CategoryMap(**cmap.to_dict()) == cmap


def test_test_split_without_annotations(tmp_path):
    raw = make_raw()
    del raw["annotations"]
    path = tmp_path / "test.json"
    path.write_text(json.dumps(raw))
    data = load_ytvis(path)
    assert not data.has_annotations and len(data.videos) == 2 and data.annotations[1] == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda r: r["annotations"][0]["segmentations"].pop(),
            "video 1, annotation 11: field 'segmentations' has length 4",
        ),
        (lambda r: r["annotations"][1]["bboxes"].pop(), "annotation 12: field 'bboxes' has length 4"),
        (lambda r: r["annotations"][1]["areas"].append(1.0), "annotation 12: field 'areas' has length 6"),
        (
            lambda r: r["annotations"][0]["segmentations"][0].update(size=[HEIGHT + 1, WIDTH]),
            "segmentations[0]': RLE size",
        ),
        (lambda r: r["annotations"][0]["segmentations"][0]["counts"].append(3), "counts sum to"),
        (
            lambda r: r["annotations"][0]["segmentations"].__setitem__(1, 5),
            "segmentations[1]': segmentation of type int",
        ),
        (
            lambda r: r["annotations"][0].update(video_id=99),
            "video 99, annotation 11: field 'video_id' refers to a video",
        ),
        (lambda r: r["annotations"][0].update(category_id=4), "annotation 11: field 'category_id' = 4"),
        (lambda r: r["annotations"][1].update(id=11), "annotation 11: duplicate annotation id"),
        (lambda r: r["videos"][1].update(id=1), "video 1: duplicate video id"),
        (lambda r: r["categories"][1].update(id=9), "category 9: duplicate category id"),
        (lambda r: r["videos"][0].update(length=6), "video 1: field 'length' = 6 != len(file_names) = 5"),
        (lambda r: r["videos"][0].pop("height"), "videos[0]: missing field(s) ['height']"),
        (
            lambda r: r["annotations"][1].pop("segmentations"),
            "annotations[1]: missing field(s) ['segmentations']",
        ),
        (lambda r: r["annotations"][1]["bboxes"].__setitem__(0, [1, 2]), "field 'bboxes[0]' = [1, 2]"),
        (lambda r: r.pop("videos"), "field 'videos' missing"),
        (lambda r: r["annotations"][1]["areas"].__setitem__(2, "big"), "field 'areas[2]' = 'big'"),
    ],
)
def test_validation_names_file_video_annotation_and_field(tmp_path, edit, expected):
    raw = make_raw()
    edit(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(AnnotationError) as info:
        load_ytvis(path)
    assert str(path) in str(info.value)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_validation_reports_every_problem_not_only_the_first(tiny_raw):
    tiny_raw["annotations"][0]["category_id"] = 4
    tiny_raw["annotations"][2]["segmentations"].pop()
    problems = validate_ytvis(tiny_raw, "x.json")
    assert len(problems) == 2
    assert validate_ytvis(make_raw(), "x.json") == []


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match="broken.json"):
        load_ytvis(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_ytvis(tmp_path / "missing.json")


def test_hash_split_is_deterministic_disjoint_and_sized():
    ids = list(range(1, 2001))
    train, val = hash_split(ids, 0.1, salt="s")
    assert sorted(train + val) == ids and not set(train) & set(val)
    assert 150 < len(val) < 250  # ~10 %
    assert hash_split(ids, 0.1, salt="s") == (train, val)
    # a video's side does not depend on the other videos in the file
    sub_train, sub_val = hash_split(ids[::3], 0.1, salt="s")
    assert set(sub_val) == set(val) & set(ids[::3])
    assert hash_split(ids, 0.1, salt="other")[1] != val
    with pytest.raises(ValueError, match="val_fraction"):
        hash_split(ids, 1.5)


def test_subset_restricts_videos_and_raw_json(tiny_raw):
    data = parse_ytvis(tiny_raw, "x.json").subset([7])
    assert [v.id for v in data.videos] == [7]
    assert [a["id"] for a in data.raw["annotations"]] == [13]
    assert [v["id"] for v in data.raw["videos"]] == [7]
