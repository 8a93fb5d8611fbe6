"""PostProcessVideo: the original's per-video scoring, labelling, mask upsampling, floor and slot dropping."""

import pytest
import torch
import torch.nn.functional as F

from vistr_lit.models.postprocess import MASK_STRIDE, ClipPredictions, PostProcessVideo, mode_per_row

T, N, K = 3, 2, 3
ON, OFF = 10.0, -10.0


def make_outputs(probs: torch.Tensor, masks: torch.Tensor) -> dict:
    """probs ``[B, T, N, K+1]`` (rows sum to 1) and mask logits ``[B, T, N, h, w]`` → the model's dict."""
    B = probs.shape[0]
    return {
        "pred_logits": probs.clamp(min=1e-12).log().reshape(B, -1, probs.shape[-1]),
        "pred_masks": masks.reshape(B, -1, *masks.shape[-2:]),
    }


def one_hot_probs(labels: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """labels/confidence ``[B, T, N]`` → probs ``[B, T, N, K+1]``, the rest of each row on no-object."""
    probs = torch.zeros(*labels.shape, K + 1)
    probs.scatter_(-1, labels[..., None], confidence[..., None])
    probs[..., K] += 1 - confidence
    return probs


def test_score_is_mean_best_probability_and_label_is_mode():
    # slot 0: frames labelled 1, 2, 1 (mode 1); slot 1: 0, 2, 2 (mode 2); q = t·N + i
    labels = torch.tensor([[[1, 0], [2, 2], [1, 2]]])
    confidence = torch.tensor([[[0.9, 0.6], [0.5, 0.7], [0.7, 0.5]]])
    masks = torch.full((1, T, N, 4, 5), ON)
    out = PostProcessVideo()(make_outputs(one_hot_probs(labels, confidence), masks), [[16, 20]], [[8, 10]], T)
    (pred,) = out
    assert isinstance(pred, ClipPredictions)
    assert pred.slots.tolist() == [0, 1]  # by decreasing score
    torch.testing.assert_close(pred.scores, torch.tensor([0.7, 0.6]))
    assert pred.labels.tolist() == [1, 2]
    assert pred.frame_labels.tolist() == [[1, 2, 1], [0, 2, 2]]
    torch.testing.assert_close(pred.frame_scores, torch.tensor([[0.9, 0.5, 0.7], [0.6, 0.7, 0.5]]))
    assert pred.masks.shape == (2, T, 8, 10) and pred.masks.dtype == torch.bool and pred.masks.all()


def test_mask_scoring_multiplies_the_scores_by_the_mean_mask_probability_and_reorders():
    """Slot 0 has the better class score but a hesitant mask (logit 0.5); slot 1 a confident one (logit 3)."""
    labels = torch.zeros(1, T, N, dtype=torch.long)
    confidence = torch.tensor([[[0.8, 0.7]] * T])
    masks = torch.full((1, T, N, 4, 5), OFF)
    masks[:, :, 0, 1:3, 1:3] = 0.5  # constant logits: the upsampled masks keep these values inside
    masks[:, :, 1, 1:3, 1:3] = 3.0
    outputs = make_outputs(one_hot_probs(labels, confidence), masks)
    plain = PostProcessVideo()(outputs, [[16, 20]], [[16, 20]], T)[0]
    assert plain.slots.tolist() == [0, 1]
    (scored,) = PostProcessVideo(mask_scoring=True)(outputs, [[16, 20]], [[16, 20]], T)
    assert scored.slots.tolist() == [1, 0]
    assert torch.equal(scored.masks, plain.masks.flip(0))  # the same masks, reordered
    # the mean sigmoid over the thresholded pixels: the interior at the plateau, the rims a little lower
    for k, slot in enumerate(scored.slots.tolist()):
        inside = scored.masks[k]
        plateau = torch.sigmoid(torch.tensor(0.5 if slot == 0 else 3.0))
        factor = scored.scores[k] / confidence[0, 0, slot]
        assert 0.5 < factor <= plateau + 1e-6 and inside.any()
        torch.testing.assert_close(scored.frame_scores[k], confidence[0, :, slot] * factor)
    top = PostProcessVideo(top_k=1, mask_scoring=True)(outputs, [[16, 20]], [[16, 20]], T)[0]
    assert top.slots.tolist() == [1]


def test_no_object_is_not_a_score():
    labels = torch.zeros(1, T, N, dtype=torch.long)
    confidence = torch.full((1, T, N), 0.2)  # 0.8 on no-object: the score is 0.2, not 0.8
    out = PostProcessVideo()(
        make_outputs(one_hot_probs(labels, confidence), torch.full((1, T, N, 2, 2), ON)),
        [[8, 8]],
        [[8, 8]],
        T,
    )
    torch.testing.assert_close(out[0].scores, torch.full((N,), 0.2))


def test_slot_empty_in_every_frame_is_dropped_and_one_frame_is_enough():
    probs = one_hot_probs(torch.zeros(1, T, N, dtype=torch.long), torch.full((1, T, N), 0.9))
    masks = torch.full((1, T, N, 4, 4), OFF)
    masks[0, 2, 1, 1, 1] = ON  # slot 1 visible in its last frame only
    (pred,) = PostProcessVideo()(make_outputs(probs, masks), [[16, 16]], [[16, 16]], T)
    assert pred.slots.tolist() == [1]
    assert pred.masks[0].flatten(1).any(1).tolist() == [False, False, True]


def test_frames_below_the_score_floor_are_absent():
    confidence = torch.tensor([[[0.9, 0.9], [0.0005, 0.9], [0.9, 0.9]]])
    probs = one_hot_probs(torch.zeros(1, T, N, dtype=torch.long), confidence)
    (pred,) = PostProcessVideo(score_floor=0.001)(
        make_outputs(probs, torch.full((1, T, N, 2, 2), ON)), [[8, 8]], [[8, 8]], T
    )
    present = dict(zip(pred.slots.tolist(), pred.present.tolist()))
    assert present == {0: [True, False, True], 1: [True, True, True]}


def test_top_k_keeps_the_best_scores():
    confidence = torch.tensor([[[0.3, 0.8], [0.3, 0.8], [0.3, 0.8]]])
    probs = one_hot_probs(torch.zeros(1, T, N, dtype=torch.long), confidence)
    outputs = make_outputs(probs, torch.full((1, T, N, 2, 2), ON))
    assert PostProcessVideo(top_k=1)(outputs, [[8, 8]], [[8, 8]], T)[0].slots.tolist() == [1]
    assert PostProcessVideo(top_k=None)(outputs, [[8, 8]], [[8, 8]], T)[0].slots.tolist() == [1, 0]


def test_padding_is_cropped_before_upsampling_to_each_clip_original_size():
    # clip 0 fills the 32x32 padded input; clip 1 is 16x32 (its bottom half is padding)
    hm = wm = 32 // MASK_STRIDE
    masks = torch.full((2, T, N, hm, wm), OFF)
    masks[:, :, 0, :, : wm // 2] = ON  # slot 0: left half of the padded input
    masks[1, :, 1, hm // 2 :, :] = ON  # clip 1, slot 1: only inside the padding
    probs = one_hot_probs(torch.zeros(2, T, N, dtype=torch.long), torch.full((2, T, N), 0.9))
    sizes, orig = torch.tensor([[32, 32], [16, 32]]), torch.tensor([[64, 48], [20, 40]])
    pred0, pred1 = PostProcessVideo()(make_outputs(probs, masks), sizes, orig, T)
    assert pred0.masks.shape[-2:] == (64, 48) and pred1.masks.shape[-2:] == (20, 40)
    assert pred1.slots.tolist() == [0]  # the slot seen only in the padding has no mask in the frame
    for pred, width in ((pred0, 48), (pred1, 40)):
        columns = pred.masks[0, 0].any(0)
        assert columns[: width // 2 - 1].all() and not columns[width // 2 + 1 :].any()
        assert pred.masks[0, 0].any(1).all()  # every row of the valid region


@pytest.mark.parametrize("stride", [4, 2])
def test_upsampling_matches_bilinear_interpolation_without_padding(stride):
    logits = torch.randn(T, 6, 7)
    ours = PostProcessVideo._upsample(logits, torch.tensor([6 * stride, 7 * stride]), (30, 50), stride)
    theirs = F.interpolate(logits[None], size=(30, 50), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_mask_threshold_applies_to_the_sigmoid():
    probs = one_hot_probs(torch.zeros(1, T, N, dtype=torch.long), torch.full((1, T, N), 0.9))
    masks = torch.full((1, T, N, 2, 2), torch.logit(torch.tensor(0.6)).item())
    outputs = make_outputs(probs, masks)
    assert len(PostProcessVideo(mask_threshold=0.5)(outputs, [[8, 8]], [[8, 8]], T)[0]) == N
    assert len(PostProcessVideo(mask_threshold=0.7)(outputs, [[8, 8]], [[8, 8]], T)[0]) == 0


def test_no_kept_slot_gives_empty_predictions_of_the_right_shape():
    probs = one_hot_probs(torch.zeros(1, T, N, dtype=torch.long), torch.full((1, T, N), 0.9))
    (pred,) = PostProcessVideo()(make_outputs(probs, torch.full((1, T, N, 2, 2), OFF)), [[8, 8]], [[5, 6]], T)
    assert len(pred) == 0 and pred.masks.shape == (0, T, 5, 6) and pred.frame_scores.shape == (0, T)


def test_bad_outputs_raise():
    probs = one_hot_probs(torch.zeros(1, T, N, dtype=torch.long), torch.full((1, T, N), 0.9))
    outputs = make_outputs(probs, torch.full((1, T, N, 2, 2), ON))
    with pytest.raises(ValueError, match="not a multiple"):
        PostProcessVideo()(outputs, [[8, 8]], [[8, 8]], 4)
    outputs["pred_logits"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        PostProcessVideo()(outputs, [[8, 8]], [[8, 8]], T)
    with pytest.raises(ValueError, match="top_k"):
        PostProcessVideo(top_k=0)
    with pytest.raises(ValueError, match="mask_threshold"):
        PostProcessVideo(mask_threshold=1.0)


def test_mode_ties_go_to_the_smallest_class_and_frames_restricts():
    assert mode_per_row(torch.tensor([[2, 1, 1, 2], [3, 3, 0, 0]])).tolist() == [1, 0]
    probs = one_hot_probs(
        torch.tensor([[[1, 1], [2, 1], [2, 1]]]), torch.tensor([[[0.9, 0.6], [0.3, 0.6], [0.3, 0.6]]])
    )
    (pred,) = PostProcessVideo()(make_outputs(probs, torch.full((1, T, N, 2, 2), ON)), [[8, 8]], [[8, 8]], T)
    first = pred.frames(0, 1)
    assert first.masks.shape[1] == 1 and first.labels.tolist() == [1, 1]
    assert pred.slots.tolist() == [1, 0]
    torch.testing.assert_close(first.scores, torch.tensor([0.6, 0.9]))
