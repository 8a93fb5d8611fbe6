"""HungarianMatcher against brute force, its invariances, and the original's validity bug."""

import itertools
import warnings

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou, generalized_box_iou

from vistr_lit.models.matcher import HungarianMatcher
from vistr_lit.ops import box_cxcywh_to_xyxy, dice_loss_per_mask, resize_mask_targets

NUM_CLASSES = 5


def make_problem(seed, batch=2, frames=3, slots=4, instances=(3, 2), mask_size=(8, 12), absent=0.3):
    """Random outputs and targets; boxes are zero where an instance is absent (the data contract)."""
    gen = torch.Generator().manual_seed(seed)
    queries = frames * slots
    outputs = {
        "pred_logits": torch.randn(batch, queries, NUM_CLASSES + 1, generator=gen) * 2,
        "pred_boxes": torch.rand(batch, queries, 4, generator=gen) * 0.5 + 0.2,
        "pred_masks": torch.randn(batch, queries, mask_size[0] // 2, mask_size[1] // 2, generator=gen) * 2,
    }
    targets = []
    for num_inst in instances:
        valid = torch.rand(num_inst, frames, generator=gen) > absent
        boxes = (torch.rand(num_inst, frames, 4, generator=gen) * 0.5 + 0.2) * valid[..., None]
        masks = (torch.rand(num_inst, frames, *mask_size, generator=gen) > 0.5) & valid[..., None, None]
        labels = torch.randint(0, NUM_CLASSES, (num_inst,), generator=gen)
        targets.append({"labels": labels, "boxes": boxes, "valid": valid, "masks": masks})
    return outputs, targets


def reference_pair_cost(matcher, outputs, target, b, slot, inst, frames):
    """Cost of (slot, instance), frame by frame with torchvision's 2-D ops: an independent reference."""
    all_frames = target["valid"].shape[1]
    slots, costs = outputs["pred_logits"].shape[1] // all_frames, []
    for t in frames:
        q = t * slots + slot
        visible = bool(target["valid"][inst, t])
        if matcher.absent_frames == "ignore" and not visible:
            continue
        prob = outputs["pred_logits"][b, q].softmax(-1)[target["labels"][inst]]
        pred, tgt = outputs["pred_boxes"][b, q], target["boxes"][inst, t]
        l1 = (pred - tgt).abs().sum() / (4 if matcher.bbox_reduction == "mean" else 1)
        pxy, txy = box_cxcywh_to_xyxy(pred[None]), box_cxcywh_to_xyxy(tgt[None])
        if matcher.box_cost == "giou":
            overlap = generalized_box_iou(pxy, txy)[0, 0]
        else:
            # the original's smoothed IoU (inter + 1e-6) / (union + 1e-6); plain IoU checked by torchvision
            lt, rb = torch.maximum(pxy[0, :2], txy[0, :2]), torch.minimum(pxy[0, 2:], txy[0, 2:])
            inter = (rb - lt).clamp(min=0).prod()
            union = (pxy[0, 2:] - pxy[0, :2]).prod() + (txy[0, 2:] - txy[0, :2]).clamp(min=0).prod() - inter
            if visible:
                torch.testing.assert_close(inter / union, box_iou(pxy, txy)[0, 0])
            overlap = (inter + 1e-6) / (union + 1e-6)
        cost = -matcher.cost_class * prob * visible + matcher.cost_bbox * l1 - matcher.cost_giou * overlap
        if matcher.cost_dice:
            size = outputs["pred_masks"].shape[-2:]
            small = resize_mask_targets(target["masks"][inst, t], tuple(size)).flatten()[None]
            cost = (
                cost
                + matcher.cost_dice
                * dice_loss_per_mask(outputs["pred_masks"][b, q].flatten()[None], small)[0]
            )
        costs.append(cost)
    if matcher.absent_frames == "count":
        return sum(costs) / all_frames
    return sum(costs) / max(len(costs), 1)


def brute_force(cost_fn, slots, candidates):
    """Minimum-cost injective assignment of candidates to slots (or of slots to candidates when fewer)."""
    table = {(s, m): cost_fn(s, m) for s in range(slots) for m in candidates}
    best, best_pairs = float("inf"), None
    size = min(slots, len(candidates))
    for chosen in itertools.permutations(candidates, size) if size else [()]:
        for slot_set in itertools.permutations(range(slots), size) if size else [()]:
            total = sum(table[s, m] for s, m in zip(slot_set, chosen))
            if total < best - 1e-9:
                best, best_pairs = total, set(zip(slot_set, chosen))
    return best_pairs or set()


def expand(pairs, valid, frames_of, slots, num_frames):
    """(slot, inst) pairs -> sorted supervised (query, target) over visible frames."""
    out = sorted(
        (t * slots + s, m * num_frames + t) for s, m in pairs for t in frames_of if bool(valid[m, t])
    )
    return out


def as_pairs(indices):
    q, j = indices
    return sorted(zip(q.tolist(), j.tolist()))


MATCHERS = {
    "paper": dict(),
    "original": dict(box_cost="iou", bbox_reduction="mean", absent_frames="count"),
    "dice": dict(cost_dice=1.0, cost_bbox=1.0),
}


@pytest.mark.parametrize("name", list(MATCHERS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequence_equals_brute_force(name, seed):
    matcher = HungarianMatcher("sequence", **MATCHERS[name])
    outputs, targets = make_problem(seed, instances=(3, 4))
    frames, slots = 3, 4
    result = matcher(outputs, targets)
    for b, target in enumerate(targets):
        valid = target["valid"]
        candidates = [m for m in range(len(valid)) if matcher.absent_frames == "count" or valid[m].any()]
        cost = lambda s, m: float(reference_pair_cost(matcher, outputs, target, b, s, m, range(frames)))  # noqa: E731,B023
        pairs = brute_force(cost, slots, candidates)
        assert as_pairs(result[b]) == expand(pairs, valid, range(frames), slots, frames)


@pytest.mark.parametrize("name", list(MATCHERS))
@pytest.mark.parametrize("seed", [3, 4])
def test_per_frame_equals_brute_force(name, seed):
    matcher = HungarianMatcher("per_frame", **MATCHERS[name])
    outputs, targets = make_problem(seed, instances=(3, 4))
    frames, slots = 3, 4
    result = matcher(outputs, targets)
    for b, target in enumerate(targets):
        valid, expected = target["valid"], []
        for t in range(frames):
            candidates = [m for m in range(len(valid)) if matcher.absent_frames == "count" or valid[m, t]]
            cost = lambda s, m: float(reference_pair_cost(matcher, outputs, target, b, s, m, [t]))  # noqa: E731,B023
            expected += expand(brute_force(cost, slots, candidates), valid, [t], slots, frames)
        assert as_pairs(result[b]) == sorted(expected)


@pytest.mark.parametrize("name", list(MATCHERS))
def test_modes_agree_with_one_frame(name):
    outputs, targets = make_problem(5, frames=1, slots=5, instances=(4, 5, 0), batch=3, absent=0.2)
    sequence = HungarianMatcher("sequence", **MATCHERS[name])(outputs, targets)
    per_frame = HungarianMatcher("per_frame", **MATCHERS[name])(outputs, targets)
    assert [as_pairs(x) for x in sequence] == [as_pairs(x) for x in per_frame]
    assert sum(len(q) for q, _ in sequence) > 0


@pytest.mark.parametrize("mode", ["sequence", "per_frame"])
def test_permuting_ground_truth_permutes_assignment(mode):
    outputs, targets = make_problem(6, instances=(4, 3))
    frames = 3
    matcher = HungarianMatcher(mode)
    before = matcher(outputs, targets)
    perm = torch.tensor([2, 0, 3, 1])  # new instance i is old instance perm[i]
    permuted = dict(targets[0])
    for key in ("labels", "boxes", "valid", "masks"):
        permuted[key] = targets[0][key][perm]
    after = matcher(outputs, [permuted, targets[1]])
    old_of_new = lambda j: int(perm[j // frames]) * frames + j % frames  # noqa: E731
    assert sorted((q, old_of_new(j)) for q, j in as_pairs(after[0])) == as_pairs(before[0])
    assert as_pairs(after[1]) == as_pairs(before[1])


@pytest.mark.parametrize("options", list(MATCHERS.values()))
@pytest.mark.parametrize("mode", ["sequence", "per_frame"])
def test_absent_frames_are_never_supervised(mode, options):
    outputs, targets = make_problem(7, frames=4, instances=(4, 3), absent=0.5)
    targets[1]["valid"][0] = False  # an instance absent from the whole clip
    targets[1]["boxes"][0] = 0
    frames = 4
    for b, (query, target) in enumerate(HungarianMatcher(mode, **options)(outputs, targets)):
        valid = targets[b]["valid"]
        assert valid[target // frames, target % frames].all()
        assert torch.equal(query // 4, target % frames)  # a pair always lies in one frame
        assert len(set(query.tolist())) == len(query)  # each query supervised at most once
        assert len(query) <= int(valid.sum())


def test_sequence_keeps_identity_per_slot_while_per_frame_may_swap():
    frames, slots = 2, 2
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])
    target = {
        "labels": torch.tensor([0, 1]),
        "boxes": boxes[:, None].expand(2, frames, 4).clone(),
        "valid": torch.ones(2, frames, dtype=torch.bool),
    }
    # slot 0 sits on instance 0 in frame 0 and on instance 1 in frame 1; slot 1 does the opposite.
    pred_boxes = torch.stack([boxes[0], boxes[1], boxes[1], boxes[0]])[None]  # [1, T·N, 4]
    outputs = {"pred_logits": torch.zeros(1, frames * slots, NUM_CLASSES + 1), "pred_boxes": pred_boxes}
    per_frame = as_pairs(HungarianMatcher("per_frame")(outputs, [target])[0])
    assert per_frame == [(0, 0), (1, 2), (2, 3), (3, 1)]  # slot 0 follows instance 0 then instance 1
    sequence = as_pairs(HungarianMatcher("sequence")(outputs, [target])[0])
    slot_to_inst = {(q % slots, j // frames) for q, j in sequence}
    assert len(slot_to_inst) == 2 and len({s for s, _ in slot_to_inst}) == 2


def test_original_validity_bug_is_not_repeated():
    """The reference's case: slot 0 <- instance 1 (visible in 4 frames), slot 1 <- instance 0 (frames 0-1)."""
    frames, slots = 4, 2
    valid = torch.tensor([[True, True, False, False], [True, True, True, True]])
    inst_boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])
    target = {
        "labels": torch.tensor([0, 1]),
        "boxes": inst_boxes[:, None].expand(2, frames, 4) * valid[..., None],
        "valid": valid,
    }
    pred_boxes = inst_boxes[[1, 0]].repeat(frames, 1)[None]  # slot 0 looks like instance 1 in every frame
    outputs = {"pred_logits": torch.zeros(1, frames * slots, NUM_CLASSES + 1), "pred_boxes": pred_boxes}
    for matcher in (HungarianMatcher(), HungarianMatcher.original_vistr()):
        got = as_pairs(matcher(outputs, [target])[0])
        expected = sorted(
            [(t * slots + 0, 1 * frames + t) for t in range(4)] + [(t * slots + 1, t) for t in range(2)]
        )
        assert got == expected
        # The original emitted frames by the j-th instance's validity instead of the matched instance's.
        rows, cols = linear_sum_assignment(
            matcher.frame_costs(outputs, [target], frames, slots, False)[0].mean(0)
        )
        buggy = sorted(
            (t * slots + s, c * frames + t)
            for j, (s, c) in enumerate(zip(rows, cols))
            for t in range(4)
            if valid[j, t]
        )
        assert buggy != got


def test_more_instances_than_slots_warns_once_and_keeps_best():
    frames, slots, num_inst = 2, 2, 4
    gen = torch.Generator().manual_seed(8)
    boxes = torch.rand(num_inst, 4, generator=gen) * 0.4 + 0.3
    target = {
        "labels": torch.zeros(num_inst, dtype=torch.int64),
        "boxes": boxes[:, None].expand(num_inst, frames, 4).clone(),
        "valid": torch.ones(num_inst, frames, dtype=torch.bool),
    }
    pred_boxes = boxes[[3, 1]].repeat(frames, 1)[None]  # the slots sit exactly on instances 3 and 1
    outputs = {"pred_logits": torch.zeros(1, frames * slots, NUM_CLASSES + 1), "pred_boxes": pred_boxes}
    for mode in ("sequence", "per_frame"):
        matcher = HungarianMatcher(mode)
        with pytest.warns(UserWarning, match="only 2 slots"):
            got = as_pairs(matcher(outputs, [target])[0])
        assert {j // frames for _, j in got} == {3, 1}
        assert {(q % slots, j // frames) for q, j in got} == {(0, 3), (1, 1)}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            matcher(outputs, [target])  # warned once per matcher


def test_zero_instances():
    outputs, targets = make_problem(9, instances=(0, 0))
    for mode in ("sequence", "per_frame"):
        for query, target in HungarianMatcher(mode, cost_dice=1.0)(outputs, targets):
            assert query.numel() == target.numel() == 0 and query.dtype == torch.int64


def test_bad_inputs_raise_clear_errors():
    outputs, targets = make_problem(10)
    matcher = HungarianMatcher()
    nan_outputs = dict(outputs, pred_boxes=outputs["pred_boxes"].clone())
    nan_outputs["pred_boxes"][1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"clip\(s\) \[1\]"):
        matcher(nan_outputs, targets)
    bad = [dict(targets[0]), targets[1]]
    bad[0]["boxes"] = bad[0]["boxes"][:, :2]
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]"):
        matcher(outputs, bad)
    bad = [targets[0], dict(targets[1], labels=torch.tensor([0, NUM_CLASSES]))]
    with pytest.raises(ValueError, match=r"targets\[1\]\['labels'\]"):
        matcher(outputs, bad)
    with pytest.raises(ValueError, match="multiple of T"):
        matcher({k: v[:, :-1] for k, v in outputs.items()}, targets)
    with pytest.raises(ValueError, match="mode"):
        HungarianMatcher("frame")


def test_defaults_are_the_papers_and_original_options():
    paper = HungarianMatcher(mode="per_frame")
    assert (paper.cost_class, paper.cost_bbox, paper.cost_giou, paper.cost_mask, paper.cost_dice) == (
        1,
        5,
        2,
        0,
        0,
    )
    assert (paper.box_cost, paper.bbox_reduction, paper.absent_frames) == ("giou", "sum", "ignore")
    original = HungarianMatcher.original_vistr()
    assert (original.mode, original.box_cost, original.bbox_reduction, original.absent_frames) == (
        "sequence",
        "iou",
        "mean",
        "count",
    )


def test_mask_costs_ignore_the_batch_padding():
    """Clips padded to the 8x12 canvas (valid 8x6 and 6x12): predictions on the padding change no cost."""
    outputs, targets = make_problem(5, mask_size=(8, 12))
    for target, size in zip(targets, ([8, 6], [6, 12])):
        target["size"] = torch.tensor(size)
        target["masks"][..., size[0] :, :] = False
        target["masks"][..., :, size[1] :] = False
    matcher = HungarianMatcher(cost_mask=2.0, cost_dice=1.0)
    frames, slots = 3, 4
    costs = matcher.frame_costs(outputs, targets, frames, slots, True)
    changed = dict(outputs, pred_masks=outputs["pred_masks"].clone())
    changed["pred_masks"][0, :, :, 3:] = 25.0  # clip 0: grid columns 3-5 cover the padded pixels 6-11
    changed["pred_masks"][1, :, 3:, :] = -25.0  # clip 1: grid row 3 covers the padded rows 6-7
    torch.testing.assert_close(matcher.frame_costs(changed, targets, frames, slots, True), costs)
    changed["pred_masks"][0, :, :, 2] = 25.0  # a valid column does count
    assert not torch.allclose(matcher.frame_costs(changed, targets, frames, slots, True), costs)
