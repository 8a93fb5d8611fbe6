"""Long-video AP: stitched windows score the whole video; the original's first window, its first T frames."""

import json

import pytest
from inference_fakes import NUM_OBJECTS, FakeVisTR, drifting_squares
from PIL import Image

from vistr_lit.data import YTVISVideoDataset, build_eval_transform, load_ytvis
from vistr_lit.inference.long_video import long_video_ap, long_video_ids
from vistr_lit.inference.track import encode_mask
from vistr_lit.models.postprocess import PostProcessVideo

T = 6
LENGTHS = {1: 3 * T + 1, 2: T - 1}  # video id → length; video 2 is not longer than T
CATEGORY_IDS = [11, 12, 13, 14]  # the fake model's 4 classes; object c has class c


@pytest.fixture
def squares_dataset(tmp_path):
    videos, annotations = [], []
    for video_id, length in LENGTHS.items():
        frames = drifting_squares(length)
        folder = tmp_path / "JPEGImages" / f"v{video_id}"
        folder.mkdir(parents=True)
        names = [f"v{video_id}/{v:03d}.png" for v in range(length)]
        for name, frame in zip(names, frames):
            Image.fromarray(frame.permute(1, 2, 0).numpy()).save(tmp_path / "JPEGImages" / name)
        height, width = frames.shape[-2:]
        videos.append(
            {"id": video_id, "width": width, "height": height, "length": length, "file_names": names}
        )
        for c in range(NUM_OBJECTS):
            rles = [encode_mask(frame[c] > 0) for frame in frames]
            annotations.append(
                {
                    "id": len(annotations) + 1, "video_id": video_id, "category_id": CATEGORY_IDS[c],
                    "iscrowd": 0,
                    "segmentations": rles, "areas": [float((f[c] > 0).sum()) for f in frames],
                    "bboxes": [[0, 0, 1, 1]] * length, "height": height, "width": width,
                }
            )  # fmt: skip
    categories = [{"id": i, "name": f"class{i}"} for i in CATEGORY_IDS]
    path = tmp_path / "valid.json"
    path.write_text(json.dumps({"videos": videos, "annotations": annotations, "categories": categories}))
    return load_ytvis(path), tmp_path / "JPEGImages"


def test_stitching_scores_the_whole_video_first_window_does_not(squares_dataset):
    data, frames_root = squares_dataset
    assert long_video_ids(data, T) == [1]
    videos = YTVISVideoDataset(data, frames_root, build_eval_transform(None, None))
    stats = long_video_ap(FakeVisTR(num_frames=T), data, videos, PostProcessVideo(), overlap=2)
    assert stats["videos"] == 1, stats
    assert stats["stitched"]["AP"] > 0.9
    assert stats["first_window"]["AP"] < 0.1  # 6 of 19 frames: video IoU ≈ 0.3 < 0.5


def test_no_long_video_is_an_error(squares_dataset):
    data, frames_root = squares_dataset
    videos = YTVISVideoDataset(data, frames_root, build_eval_transform(None, None))
    with pytest.raises(ValueError, match="no annotated video is longer than T = 40"):
        long_video_ap(FakeVisTR(num_frames=40), data, videos, PostProcessVideo())


def test_predictor_options_reach_both_modes(squares_dataset, monkeypatch):
    """A checkpoint's own predictor settings (track NMS, classes per track) are used by both modes."""
    import vistr_lit.inference.long_video as long_video

    seen = []

    class SpyPredictor(long_video.VideoPredictor):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(long_video, "VideoPredictor", SpyPredictor)
    data, frames_root = squares_dataset
    videos = YTVISVideoDataset(data, frames_root, build_eval_transform(None, None))
    options = {"track_nms_iou": 0.5, "track_nms_decay": 0.3, "classes_per_track": 2}
    stats = long_video_ap(FakeVisTR(num_frames=T), data, videos, PostProcessVideo(), overlap=2, **options)
    assert sorted(kwargs["first_window_only"] for kwargs in seen) == [False, True]
    assert all(kwargs.items() >= options.items() for kwargs in seen), seen
    assert stats["stitched"]["AP"] > 0.9  # a second, wrong class per track ranks below the right one
    with pytest.raises(ValueError, match="first_window_only is set per mode"):
        long_video_ap(FakeVisTR(num_frames=T), data, videos, PostProcessVideo(), first_window_only=True)
