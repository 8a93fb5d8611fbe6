"""Soft NMS of whole tracks: video mask IoU from RLEs, greedy suppression, and the predictor's use of it."""

import numpy as np
import pytest
import torch
from inference_fakes import NUM_OBJECTS, FakeVisTR, drifting_squares

from vistr_lit.inference.predictor import VideoPredictor
from vistr_lit.inference.stitching import mask_iou
from vistr_lit.inference.track import Track, decode_mask, encode_mask
from vistr_lit.inference.track_nms import suppress_duplicate_tracks, track_mask_iou
from vistr_lit.models.postprocess import PostProcessVideo

V, H, W = 7, 12, 16


def make_track(track_id: int, masks: torch.Tensor, first_frame: int = 0, score: float = 0.9) -> Track:
    """A track over frames ``first_frame ..`` of bool ``masks [F, H, W]``; all-empty frames are absent."""
    track = Track(track_id, first_frame, video_length=V)
    for mask in masks:
        track.append(encode_mask(mask) if mask.any() else None, score, 0)
    return track


def dense(track: Track) -> torch.Tensor:
    """bool ``[V, H, W]`` of a track, empty where it is absent or not covering the frame."""
    frames = [track.segmentation(v) for v in range(V)]
    empty = torch.zeros(H, W, dtype=torch.bool)
    return torch.stack([empty if r is None else torch.from_numpy(decode_mask(r)) for r in frames])


def test_track_mask_iou_equals_the_dense_video_iou():
    generator = torch.Generator().manual_seed(0)
    tracks = [
        make_track(i, torch.rand(V - first, H, W, generator=generator) > 0.6, first)
        for i, first in enumerate([0, 2, 0, 5])
    ]
    tracks[2].segmentations[3] = None  # an absent frame inside the covered span
    masks = torch.stack([dense(t) for t in tracks])
    expected = mask_iou(masks, masks).double().numpy()
    np.testing.assert_allclose(track_mask_iou(tracks, V), expected, atol=1e-9)
    assert track_mask_iou([make_track(0, torch.zeros(V, H, W, dtype=torch.bool))], V).tolist() == [[0.0]]


def square(top: int, left: int, size: int = 6) -> torch.Tensor:
    mask = torch.zeros(V, H, W, dtype=torch.bool)
    mask[:, top : top + size, left : left + size] = True
    return mask


def test_a_duplicate_is_decayed_and_everything_else_kept_in_order():
    best = make_track(0, square(0, 0), score=0.9)
    duplicate = make_track(1, square(0, 1), score=0.8)  # IoU 30/42 = 0.71 with the best track
    other = make_track(2, square(6, 10), score=0.5)  # disjoint
    out = suppress_duplicate_tracks([duplicate, other, best], V, iou_threshold=0.5, decay=0.3)
    assert [t.track_id for t in out] == [1, 2, 0]  # input order
    assert best.score == pytest.approx(0.9) and other.score == pytest.approx(0.5)
    assert duplicate.score == pytest.approx(0.8 * 0.3) and duplicate.score_scale == pytest.approx(0.3)
    assert duplicate.to_result(1, [7])["score"] == pytest.approx(0.24)  # the results file sees it
    # above the threshold nothing is a duplicate
    fresh = [make_track(0, square(0, 0), score=0.9), make_track(1, square(0, 1), score=0.8)]
    assert [t.score for t in suppress_duplicate_tracks(fresh, V, 0.75, 0.3)] == pytest.approx([0.9, 0.8])


def test_a_suppressed_track_does_not_suppress_others():
    """a ≈ b and b ≈ c but a and c differ enough: only b is decayed (greedy NMS against kept tracks)."""
    a = make_track(0, square(0, 0), score=0.9)
    b = make_track(1, square(0, 2), score=0.8)  # IoU with a: 24/48 = 0.5
    c = make_track(2, square(0, 4), score=0.7)  # IoU with b: 0.5, with a: 12/60 = 0.2
    suppress_duplicate_tracks([a, b, c], V, iou_threshold=0.4, decay=0.0)
    assert [a.score, b.score, c.score] == pytest.approx([0.9, 0.0, 0.7])


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="iou_threshold"):
        suppress_duplicate_tracks([], V, 0.0, 0.3)
    with pytest.raises(ValueError, match="decay"):
        suppress_duplicate_tracks([], V, 0.5, 1.0)
    with pytest.raises(ValueError, match="iou_threshold"):
        VideoPredictor(FakeVisTR(num_frames=4), PostProcessVideo(), track_nms_iou=1.5)


class DuplicatingVisTR(FakeVisTR):
    """The fake model, plus a second slot on object 0 with a weaker class score (a duplicate)."""

    def forward(self, frames, pad_mask=None):
        out = super().forward(frames, pad_mask)
        B, T, N, K = frames.shape[0], self.num_frames, self.num_instances, self.num_classes
        logits = out["pred_logits"].view(B, T, N, K + 1)
        masks = out["pred_masks"].view(B, T, N, *out["pred_masks"].shape[-2:])
        for b in range(B):
            source = (0 + self.slot_shift(frames[b])) % N  # object 0's slot
            spare = (NUM_OBJECTS + self.slot_shift(frames[b])) % N  # a slot no object uses
            logits[b, :, spare] = logits[b, :, source] - torch.tensor([1.0] + [0.0] * K)  # object 0, weaker
            masks[b, :, spare] = masks[b, :, source]
        return out


@pytest.mark.parametrize("nms", [None, 0.5])
def test_the_predictor_decays_duplicate_tracks_when_asked(nms):
    video = drifting_squares(10).float() / 255
    model = DuplicatingVisTR(num_frames=4)
    predictor = VideoPredictor(model, PostProcessVideo(), overlap=2, track_nms_iou=nms)
    tracks = predictor.predict_video(video, (48, 64))
    on_object0 = sorted((t for t in tracks if t.label == 0), key=lambda t: -t.score)
    assert len(tracks) == NUM_OBJECTS + 1 and len(on_object0) == 2
    original, duplicate = on_object0
    unscaled = float(np.mean(duplicate.frame_scores))
    assert duplicate.score == pytest.approx(unscaled * (0.3 if nms else 1.0))
    assert original.score_scale == 1.0
