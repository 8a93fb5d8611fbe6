"""Results writer: RLE round trip, absent frames, the CodaLab zip, and scoring what was written."""

import json
import zipfile

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from test_ytvis_eval import make_gt

from vistr_lit.evaluation import (
    encode_track,
    evaluate_ytvis,
    make_result,
    write_codalab_zip,
    write_results_json,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


def _masks(seed: int, num_frames=4, h=7, w=9) -> np.ndarray:
    return np.random.default_rng(seed).random((num_frames, h, w)) > 0.5


def test_encode_track_round_trip_and_absent_frames():
    masks = _masks(0)
    present = np.array([True, False, True, True])
    rles = encode_track(torch.from_numpy(masks), torch.from_numpy(present))
    assert rles[1] is None and len(rles) == 4
    for f in (0, 2, 3):
        assert isinstance(rles[f]["counts"], str) and rles[f]["size"] == [7, 9]
        assert (mask_utils.decode(rles[f]).astype(bool) == masks[f]).all()
    assert all(r is not None for r in encode_track(masks))  # present=None writes every frame
    assert encode_track(masks, np.zeros(4, dtype=bool)) == [None] * 4


def test_encode_track_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[V, h, w\]"):
        encode_track(np.zeros((7, 9), dtype=bool))
    with pytest.raises(ValueError, match="present"):
        encode_track(np.zeros((4, 7, 9), dtype=bool), np.ones(3, dtype=bool))


def test_make_result_rejects_nan_score():
    with pytest.raises(ValueError, match="video 3"):
        make_result(3, 1, float("nan"), _masks(0))


def test_written_files_score_like_the_entries(tmp_path):
    masks = _masks(1)
    gt = make_gt(7, 9, [{"masks": list(masks), "category_id": 4}], 4, category_ids=(4,), video_id=2)
    entry = make_result(2, 4, np.float32(0.7), masks, np.array([1, 1, 0, 1], dtype=bool))
    assert set(entry) == {"video_id", "category_id", "score", "segmentations"}
    assert isinstance(entry["score"], float) and entry["segmentations"][2] is None
    results = [entry, make_result(2, 4, 0.2, ~masks)]
    json_path = write_results_json(results, tmp_path / "out" / "results.json")
    zip_path = write_codalab_zip(results, tmp_path / "submission.zip")
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["results.json"]  # at the top level, as the server expects
        zipped = json.loads(archive.read("results.json"))
    assert zipped == json.loads(json_path.read_text())
    expected = evaluate_ytvis(gt, results)
    assert evaluate_ytvis(gt, json_path) == expected == evaluate_ytvis(gt, zipped)
    assert 0 < expected["AP"] < 1  # the absent frame costs IoU


def test_bytes_counts_are_written_as_strings(tmp_path):
    rle = mask_utils.encode(np.asfortranarray(np.ones((2, 2), dtype=np.uint8)))  # counts: bytes
    path = write_results_json(
        [{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [rle]}], tmp_path / "r.json"
    )
    assert isinstance(json.loads(path.read_text())[0]["segmentations"][0]["counts"], str)
    with pytest.raises(ValueError, match="missing"):
        write_results_json([{"video_id": 1}], tmp_path / "r.json")
