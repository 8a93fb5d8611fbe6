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


def square_clip(size: int = 32, lo: int = 10, hi: int = 22) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``[1, T, 3, size, size]`` of a bright square on a dark ground (normalized-like values ±1), and
    its ground-truth mask ``[size, size]``."""
    truth = torch.zeros(size, size, dtype=torch.bool)
    truth[lo:hi, lo:hi] = True
    frames = torch.where(truth, 1.0, -1.0).expand(1, T, 3, size, size).clone()
    return frames, truth


def blurred_square_outputs(truth: torch.Tensor) -> dict:
    """Slot 0 predicts the square as stride-4 logits smoothed over 3x3 cells: a blob with rounded edges."""
    size = truth.shape[-1]
    cells = F.avg_pool2d(truth[None, None].float(), MASK_STRIDE)  # area fraction per cell
    cells = F.avg_pool2d(cells, 3, stride=1, padding=1, count_include_pad=False)[0, 0]
    masks = torch.full((1, T, N, size // MASK_STRIDE, size // MASK_STRIDE), OFF)
    masks[0, :, 0] = (cells - 0.35) * 12  # > 0 where the smoothed area fraction is above 0.35
    probs = one_hot_probs(torch.zeros(1, T, N, dtype=torch.long), torch.full((1, T, N), 0.9))
    return make_outputs(probs, masks)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_guided_filter_refinement_snaps_a_coarse_mask_to_the_frame_edges():
    frames, truth = square_clip()
    outputs = blurred_square_outputs(truth)
    size = [[32, 32]]
    plain = PostProcessVideo()(outputs, size, size, T)[0]
    refined = PostProcessVideo(refine_radius=3, refine_eps=0.01)(outputs, size, size, T, frames=frames)[0]
    assert plain.slots.tolist() == refined.slots.tolist() == [0]
    before, after = mask_iou(plain.masks[0, 0], truth), mask_iou(refined.masks[0, 0], truth)
    assert before < 0.9 and after > 0.97, (before, after)
    # the refinement runs at the input resolution: upsampling to another original size keeps the gain
    big = PostProcessVideo(refine_radius=3, refine_eps=0.01)(outputs, size, [[64, 64]], T, frames=frames)[0]
    big_truth = F.interpolate(truth[None, None].float(), size=(64, 64))[0, 0].bool()
    assert mask_iou(big.masks[0, 0], big_truth) > 0.95


def test_guided_filter_refinement_with_a_flat_frame_only_smooths():
    """No colour edge to follow: the guided filter degenerates to a box blur of the probabilities, twice (the
    local means b, then their window average)."""
    frames, truth = square_clip()
    frames = torch.zeros_like(frames)
    outputs = blurred_square_outputs(truth)
    postprocess = PostProcessVideo(refine_radius=2, refine_eps=0.01)
    slot_major = outputs["pred_masks"].view(T, N, 8, 8).transpose(0, 1)  # q = t·N + i -> N x T
    logits = postprocess.refine(slot_major, frames[0], torch.tensor([32, 32]), MASK_STRIDE)
    size = torch.tensor([32, 32])
    probs = PostProcessVideo._upsample(outputs["pred_masks"][0], size, (32, 32), MASK_STRIDE).sigmoid()
    blurred = probs[None]
    for _ in range(2):
        blurred = F.avg_pool2d(F.pad(blurred, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    blurred = blurred[0]
    assert logits.shape == (N, T, 32, 32)
    torch.testing.assert_close(logits.sigmoid().transpose(0, 1).flatten(0, 1), blurred, atol=1e-4, rtol=0)


def test_guided_filter_refinement_crops_padding_and_caps_the_radius():
    frames, truth = square_clip()
    outputs = blurred_square_outputs(truth)
    # a clip of 6 x 7 valid pixels: the radius (20) is capped at 5; its masks have that valid size
    (pred,) = PostProcessVideo(refine_radius=20)(outputs, [[6, 7]], [[12, 14]], T, frames=frames)
    assert pred.masks.shape[-2:] == (12, 14)


def test_guided_filter_refinement_needs_the_frames_and_valid_settings():
    frames, truth = square_clip()
    outputs = blurred_square_outputs(truth)
    with pytest.raises(ValueError, match="needs the input frames"):
        PostProcessVideo(refine_radius=2)(outputs, [[32, 32]], [[32, 32]], T)
    with pytest.raises(ValueError, match="needs the input frames"):
        PostProcessVideo(refine_radius=2)(outputs, [[32, 32]], [[32, 32]], T, frames=frames[:, :2])
    with pytest.raises(ValueError, match="refine_radius"):
        PostProcessVideo(refine_radius=-1)
    with pytest.raises(ValueError, match="refine_eps"):
        PostProcessVideo(refine_eps=0)


def test_frame_probs_hold_every_class_and_their_maximum_is_the_frame_score():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, T * N, K + 1, generator=generator)
    masks = torch.full((1, T * N, 2, 2), ON)
    masks[0, :, 1] = 0.5  # a less confident mask: mask scoring scales by < 1
    for mask_scoring in (False, True):
        outputs = {"pred_logits": logits, "pred_masks": masks}
        (pred,) = PostProcessVideo(mask_scoring=mask_scoring)(outputs, [[8, 8]], [[8, 8]], T)
        assert pred.frame_probs.shape == (N, T, K)
        torch.testing.assert_close(pred.frame_probs.max(-1).values, pred.frame_scores)
        assert pred.frame_probs.argmax(-1).tolist() == pred.frame_labels.tolist()
        expected = logits.softmax(-1)[0, :, :K].view(T, N, K).transpose(0, 1)[pred.slots]
        if mask_scoring:
            assert (pred.frame_probs < expected - 1e-6).any()
        else:
            torch.testing.assert_close(pred.frame_probs, expected)
    assert pred.select(torch.tensor([1])).frame_probs.shape == (1, T, K)
    assert pred.frames(0, 2).frame_probs.shape == (N, 2, K)
