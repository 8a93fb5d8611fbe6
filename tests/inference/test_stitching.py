"""TrackStitcher: Hungarian association on mask IoU over shared frames, new tracks below the threshold."""

import numpy as np
import pytest
import torch

from vistr_lit.inference.stitching import TrackStitcher, mask_iou
from vistr_lit.inference.track import Track, decode_mask
from vistr_lit.models.postprocess import ClipPredictions

SIZE = (8, 8)


def box_mask(x: int, width: int = 3) -> torch.Tensor:
    mask = torch.zeros(SIZE, dtype=torch.bool)
    mask[2:5, x : x + width] = True
    return mask


def window(xs: list[list[int]], labels: list[int], scores: list[float] | None = None, present=None):
    """Predictions: prediction k has a box at column ``xs[k][t]`` in frame t."""
    k, t = len(xs), len(xs[0])
    masks = torch.stack([torch.stack([box_mask(x) for x in row]) for row in xs])
    frame_scores = torch.tensor(scores or [0.9] * k)[:, None].expand(k, t).clone()
    frame_labels = torch.tensor(labels)[:, None].expand(k, t).clone()
    return ClipPredictions(
        scores=frame_scores.mean(1),
        labels=torch.tensor(labels),
        frame_scores=frame_scores,
        frame_labels=frame_labels,
        masks=masks,
        present=torch.ones(k, t, dtype=torch.bool) if present is None else torch.tensor(present),
        slots=torch.arange(k),
    )


def test_mask_iou_sums_over_frames():
    a = torch.stack([box_mask(0), box_mask(0)])[None]  # 1 x 2 frames
    b = torch.stack([box_mask(0), box_mask(5)])[None]
    assert mask_iou(a, b).item() == pytest.approx(9 / 27)
    assert mask_iou(
        torch.zeros(1, 2, *SIZE, dtype=torch.bool), torch.zeros(2, 2, *SIZE, dtype=torch.bool)
    ).tolist() == [[0, 0]]


def test_identity_follows_the_masks_not_the_order():
    stitcher = TrackStitcher(match_iou=0.5)
    first = stitcher.add_window(0, window([[0, 0, 0, 0], [5, 5, 5, 5]], labels=[1, 2]))
    second = stitcher.add_window(2, window([[5, 5, 5, 5], [0, 0, 0, 0]], labels=[2, 1]))  # swapped order
    assert second == [first[1], first[0]]
    tracks = stitcher.close(6)
    assert len(tracks) == 2
    for track, x in zip(tracks, (0, 5)):
        assert track.first_frame == 0 and len(track.segmentations) == 6
        assert all(np.array_equal(decode_mask(rle), box_mask(x).numpy()) for rle in track.segmentations)


def test_below_the_threshold_a_new_track_starts():
    stitcher = TrackStitcher(match_iou=0.5)
    stitcher.add_window(0, window([[0, 0, 0]], labels=[1]))
    ids = stitcher.add_window(2, window([[2, 2, 2]], labels=[1]))  # IoU over frame 2: 1/5 < 0.5
    tracks = stitcher.close(5)
    assert ids == [1] and len(tracks) == 2
    # the old track keeps the shared frame, the new one starts there
    assert (tracks[0].first_frame, tracks[0].last_frame) == (0, 2)
    assert (tracks[1].first_frame, tracks[1].last_frame) == (2, 4)


def test_shared_frames_split_between_the_windows():
    stitcher = TrackStitcher(match_iou=0.3)
    stitcher.add_window(0, window([[0, 0, 0, 0]], labels=[1], scores=[0.2]))
    stitcher.add_window(2, window([[1, 1, 1, 1]], labels=[3], scores=[0.8]))  # shares frames 2, 3 (IoU 0.5)
    (track,) = stitcher.close(6)
    columns = [int(np.flatnonzero(decode_mask(rle).any(0))[0]) for rle in track.segmentations]
    assert columns == [0, 0, 0, 1, 1, 1]  # frame 2 from the first window, frame 3 from the second
    assert track.frame_scores == pytest.approx([0.2, 0.2, 0.2, 0.8, 0.8, 0.8])
    assert track.score == pytest.approx(0.5) and track.label == 1  # 3 frames each: the smaller class


def test_abutting_windows_match_through_their_boundary_frames():
    stitcher = TrackStitcher(match_iou=0.5)
    stitcher.add_window(0, window([[0, 0, 1], [5, 5, 5]], labels=[0, 1]))
    ids = stitcher.add_window(3, window([[5, 5, 5], [1, 1, 2]], labels=[1, 0]))
    assert ids == [1, 0]
    assert [len(t.segmentations) for t in stitcher.close(6)] == [6, 6]


def test_absent_frames_are_none_and_frames_are_freed():
    stitcher = TrackStitcher(match_iou=0.5)
    stitcher.add_window(0, window([[0, 0, 0]], labels=[1], present=[[True, False, True]]))
    assert sorted(stitcher._pending) == [0, 1, 2]
    stitcher.add_window(2, window([[0, 0, 0]], labels=[1]))
    assert sorted(stitcher._pending) == [2, 3, 4]  # frames 0 and 1 were encoded and dropped
    (track,) = stitcher.close(5)
    assert [rle is None for rle in track.segmentations] == [False, True, False, False, False]


def test_pending_frames_stay_bounded_on_a_long_stream():
    stitcher, T, stride = TrackStitcher(match_iou=0.5), 4, 2
    most = 0
    for start in range(0, 200, stride):
        stitcher.add_window(start, window([[0] * T], labels=[1]))
        most = max(most, len(stitcher._pending))
    (track,) = stitcher.close(200 - stride + T)
    assert most <= T and len(track.segmentations) == 200 - stride + T


def test_windows_out_of_order_and_bad_threshold_raise():
    stitcher = TrackStitcher()
    stitcher.add_window(4, window([[0, 0]], labels=[1]))
    with pytest.raises(ValueError, match="arrives after"):
        stitcher.add_window(2, window([[0, 0]], labels=[1]))
    with pytest.raises(ValueError, match="match_iou"):
        TrackStitcher(match_iou=0.0)


def test_track_results_entry():
    track = Track(track_id=0, first_frame=1)
    rle = {"size": [2, 2], "counts": "04"}
    track.append(rle, 0.5, 2)
    track.append(None, 0.1, 2)
    track.append(rle, 0.6, 0)
    entry = track.to_result(7, [10, 20, 30], video_length=5)
    assert entry == {
        "video_id": 7,
        "category_id": 30,
        "score": pytest.approx(0.4),
        "segmentations": [None, rle, None, rle, None],
    }
    with pytest.raises(ValueError, match="video length"):
        track.to_result(7, [10, 20, 30])
    with pytest.raises(ValueError, match="no category id"):
        track.to_result(7, [10, 20], video_length=5)
    with pytest.raises(ValueError, match="covers frame 3"):
        track.to_result(7, [10, 20, 30], video_length=3)


def test_track_results_with_several_classes_rank_its_classes_by_mean_probability():
    track = Track(track_id=0, first_frame=0)
    rle = {"size": [2, 2], "counts": "04"}
    track.append(rle, 0.5, 2, torch.tensor([0.1, 0.4, 0.5]))
    track.append(rle, 0.7, 1, torch.tensor([0.0, 0.7, 0.3]))
    track.append(rle, 0.6, 2, torch.tensor([0.3, 0.1, 0.6]))
    # the original's single entry: the most frequent frame class (2), the mean best probability
    assert track.to_results(7, [10, 20, 30], video_length=3) == [track.to_result(7, [10, 20, 30], 3)]
    assert track.to_result(7, [10, 20, 30], 3)["category_id"] == 30
    # mean probabilities: class 0 0.133, class 1 0.4, class 2 0.467
    first, second = track.to_results(7, [10, 20, 30], classes=2, video_length=3)
    assert (first["category_id"], second["category_id"]) == (30, 20)
    assert first["score"] == pytest.approx(1.4 / 3) and second["score"] == pytest.approx(0.4)
    assert first["segmentations"] == second["segmentations"] == [rle] * 3
    track.score_scale = 0.5  # a suppressed track's entries are all scaled
    assert [e["score"] for e in track.to_results(7, [10, 20, 30], 3, 3)] == pytest.approx(
        [0.7 / 3, 0.2, 0.2 / 3]
    )
    with pytest.raises(ValueError, match="classes"):
        track.to_results(7, [10, 20, 30], classes=0, video_length=3)
    with pytest.raises(ValueError, match="some frames but not all"):
        track.append(rle, 0.5, 0)
    bare = Track(track_id=1, first_frame=0)
    bare.append(rle, 0.5, 0)
    with pytest.raises(ValueError, match="no class probabilities"):
        bare.to_results(7, [10, 20, 30], classes=2, video_length=1)
