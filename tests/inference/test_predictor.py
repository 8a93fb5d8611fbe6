"""VideoPredictor on the constructed case: windows, identity across windows, frame count and order."""

import numpy as np
import pytest
import torch
from inference_fakes import NUM_OBJECTS, FakeVisTR, drifting_squares

from vistr_lit.inference.predictor import VideoPredictor, window_starts
from vistr_lit.inference.track import decode_mask
from vistr_lit.models.postprocess import PostProcessVideo

T = 6
SIZE = (48, 64)


class RecordingModel(FakeVisTR):
    """FakeVisTR that records the first frame of each clip it is given (to recover the window starts)."""

    def __init__(self, video: torch.Tensor, **kwargs):
        super().__init__(num_frames=T, **kwargs)
        self.video = video
        self.clips: list[list[int]] = []  # video frame index of each frame of each clip

    def forward(self, frames, pad_mask=None):
        for clip in frames:
            self.clips.append([self._index(frame) for frame in clip])
        return super().forward(frames, pad_mask)

    def _index(self, frame: torch.Tensor) -> int:
        matches = (self.video == frame).flatten(1).all(1).nonzero().flatten().tolist()
        return matches[0]


def predict(video: torch.Tensor, mask_stride: int = 4, postprocess: PostProcessVideo | None = None, **kwargs):
    model = RecordingModel(video.float() / 255, mask_stride=mask_stride)
    postprocess = postprocess or PostProcessVideo()
    predictor = VideoPredictor(model, postprocess, **{"overlap": 2, "match_iou": 0.5, **kwargs})
    return predictor.predict_video(video.float() / 255, SIZE), model


def expected_mask(video: torch.Tensor, obj: int, frame: int) -> np.ndarray:
    return (video[frame, obj] > 0).numpy()


def assert_same_square(rle: dict, video: torch.Tensor, obj: int, frame: int) -> None:
    """The decoded mask is the square of ``frame`` (IoU > 0.9; bilinear upsampling rounds the corners off).

    Squares of neighbouring frames overlap by IoU 0.6, so a frame shifted in time fails.
    """
    predicted, expected = decode_mask(rle), expected_mask(video, obj, frame)
    iou = (predicted & expected).sum() / (predicted | expected).sum()
    assert iou > 0.9, f"object {obj}, frame {frame}: IoU {iou:.2f}"


def test_window_starts_cover_the_video():
    assert window_starts(19, 6, 2) == [0, 4, 8, 12, 13]
    assert window_starts(6, 6, 2) == [0]
    assert window_starts(3, 6, 0) == [0]
    assert window_starts(12, 6, 0) == [0, 6]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_video_three_times_longer_than_t_gives_one_track_per_object(batch_size):
    video = drifting_squares(3 * T + 1)
    tracks, model = predict(video, batch_size=batch_size)
    starts = [clip[0] for clip in model.clips]
    assert starts == window_starts(3 * T + 1, T, 2)
    assert all(
        clip == list(range(clip[0], clip[0] + T)) for clip in model.clips
    )  # frame order inside windows
    shifts = {model.slot_shift(clip) for clip in _clips(video, starts)}
    assert len(shifts) > 1, "the fake model must move objects between slots for this test to mean anything"
    assert len(tracks) == NUM_OBJECTS
    for track in tracks:
        obj = track.label  # the fake model gives object c class c
        assert track.video_length == 3 * T + 1 and track.first_frame == 0
        assert len(track.segmentations) == 3 * T + 1
        for frame, rle in enumerate(track.segmentations):
            # frame order and count preserved: frame v's mask is the square drawn in frame v
            assert_same_square(rle, video, obj, frame)
    assert sorted(t.label for t in tracks) == list(range(NUM_OBJECTS))


def test_masks_are_upsampled_from_the_models_own_stride():
    """A stride-2 model (``VisTR.mask_stride``) gets its masks resampled at stride 2, not the default 4."""
    video = drifting_squares(T + 2)
    tracks, _ = predict(video, mask_stride=2)
    assert len(tracks) == NUM_OBJECTS
    for track in tracks:
        for frame, rle in enumerate(track.segmentations):
            assert_same_square(rle, video, track.label, frame)


def test_guided_filter_refinement_gets_each_windows_frames():
    """With ``refine_radius`` the predictor hands every window's frames to the post-processing, which refines
    each window's masks with them (a missing or misaligned window would raise or shift the squares)."""
    video = drifting_squares(2 * T + 1)
    tracks, _ = predict(video, postprocess=PostProcessVideo(refine_radius=3, refine_eps=0.01))
    assert len(tracks) == NUM_OBJECTS
    for track in tracks:
        for frame, rle in enumerate(track.segmentations):
            assert_same_square(rle, video, track.label, frame)


@pytest.mark.parametrize("classes", [1, 2])
def test_results_give_each_track_its_best_classes(classes):
    video = drifting_squares(T + 2)
    model = RecordingModel(video.float() / 255)
    predictor = VideoPredictor(model, PostProcessVideo(), overlap=2, classes_per_track=classes)
    tracks = predictor.predict_video(video.float() / 255, SIZE)
    results = predictor.results(tracks, 3, [5, 6, 7, 8])
    assert len(results) == classes * NUM_OBJECTS
    for k, track in enumerate(tracks):
        entries = results[classes * k : classes * (k + 1)]
        assert entries[0]["category_id"] == [5, 6, 7, 8][track.label]  # the fake's class: the object's colour
        assert all(e["video_id"] == 3 and e["segmentations"] == entries[0]["segmentations"] for e in entries)
        assert [e["score"] for e in entries] == sorted((e["score"] for e in entries), reverse=True)
    with pytest.raises(ValueError, match="classes_per_track"):
        VideoPredictor(model, PostProcessVideo(), classes_per_track=0)


def _clips(video, starts):
    return [(video[s : s + T].float() / 255) for s in starts]


def test_abutting_windows_keep_identity():
    video = drifting_squares(2 * T + 3)
    tracks, model = predict(video, overlap=0)
    assert [clip[0] for clip in model.clips] == [0, T, T + 3]
    assert len(tracks) == NUM_OBJECTS and all(len(t.segmentations) == 2 * T + 3 for t in tracks)


def test_a_short_video_is_repeated_cyclically_and_cut_back():
    video = drifting_squares(T - 2)
    tracks, model = predict(video)
    assert model.clips == [[0, 1, 2, 3, 0, 1]]
    assert len(tracks) == NUM_OBJECTS
    for track in tracks:
        assert track.video_length == T - 2 and len(track.segmentations) == T - 2
        assert_same_square(track.segmentations[-1], video, track.label, T - 3)


def test_first_window_only_reproduces_the_original():
    video = drifting_squares(2 * T + 1)
    tracks, model = predict(video, first_window_only=True)
    assert model.clips == [list(range(T))]
    assert len(tracks) == NUM_OBJECTS
    for track in tracks:
        result = track.to_result(1, [5, 6, 7])
        assert len(result["segmentations"]) == 2 * T + 1
        assert all(s is not None for s in result["segmentations"][:T])
        assert all(s is None for s in result["segmentations"][T:])


def test_frames_are_consumed_as_a_stream():
    video = drifting_squares(5 * T)
    read = []

    def frames():
        for index, frame in enumerate(video.float() / 255):
            read.append(index)
            yield frame

    model = RecordingModel(video.float() / 255)
    seen_at_call = []
    original_forward = model.forward

    def forward(clips, pad_mask=None):
        seen_at_call.append(len(read))
        return original_forward(clips, pad_mask)

    model.forward = forward
    tracks = VideoPredictor(model, PostProcessVideo(), overlap=2).predict_stream(frames(), SIZE)
    assert seen_at_call[0] == T  # the first window runs after T frames, not after the whole video
    assert len(tracks) == NUM_OBJECTS


def test_bad_arguments_and_input_raise():
    model = FakeVisTR(num_frames=T)
    with pytest.raises(ValueError, match="overlap"):
        VideoPredictor(model, PostProcessVideo(), overlap=T)
    with pytest.raises(ValueError, match="match_iou"):
        VideoPredictor(model, PostProcessVideo(), match_iou=1.5)
    predictor = VideoPredictor(model, PostProcessVideo())
    with pytest.raises(ValueError, match="V ≥ 1"):
        predictor.predict_video(torch.zeros(0, 3, 8, 8), (8, 8))
    with pytest.raises(ValueError, match="no frames"):
        predictor.predict_stream(iter([]), (8, 8))
    with pytest.raises(ValueError, match="shape"):
        predictor.predict_stream(iter([torch.zeros(3, 8, 8), torch.zeros(3, 8, 9)]), (8, 8))


def test_the_model_is_put_in_eval_mode_and_restored():
    model = FakeVisTR(num_frames=T)
    modes = []
    original_forward = model.forward
    model.forward = lambda clips, pad_mask=None: (
        modes.append(model.training) or original_forward(clips, pad_mask)
    )
    model.train()
    VideoPredictor(model, PostProcessVideo()).predict_video(drifting_squares(T).float() / 255, SIZE)
    assert modes == [False] and model.training
