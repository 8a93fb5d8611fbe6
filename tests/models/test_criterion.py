"""SetCriterion: values on hand-checked cases, empty inputs, gradients, aux layers, normalizer, DDP."""

import pytest
import torch
import torch.nn.functional as F

from vistr_lit.models.criterion import PAPER_WEIGHTS, SetCriterion, default_weight_dict
from vistr_lit.models.matcher import HungarianMatcher
from vistr_lit.ops import dice_loss_per_mask, focal_loss_per_mask

NUM_CLASSES, FRAMES, SLOTS = 4, 3, 3
MASK_SIZE = (12, 16)  # padded target size; predictions at a quarter of it


def make_outputs(seed, batch=2, aux_layers=2, aux_masks=(False, True)):
    gen = torch.Generator().manual_seed(seed)
    queries = FRAMES * SLOTS

    def layer(with_masks):
        out = {
            "pred_logits": torch.randn(batch, queries, NUM_CLASSES + 1, generator=gen).requires_grad_(),
            "pred_boxes": (torch.rand(batch, queries, 4, generator=gen) * 0.5 + 0.2).requires_grad_(),
        }
        if with_masks:
            size = (batch, queries, MASK_SIZE[0] // 4, MASK_SIZE[1] // 4)
            out["pred_masks"] = torch.randn(*size, generator=gen).requires_grad_()
        return out

    outputs = layer(True)
    outputs["aux_outputs"] = [layer(aux_masks[i]) for i in range(aux_layers)]
    return outputs


def make_targets(seed, instances=(2, 3), absent=0.3):
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for num_inst in instances:
        valid = torch.rand(num_inst, FRAMES, generator=gen) > absent
        targets.append(
            {
                "labels": torch.randint(0, NUM_CLASSES, (num_inst,), generator=gen),
                "boxes": (torch.rand(num_inst, FRAMES, 4, generator=gen) * 0.5 + 0.2) * valid[..., None],
                "valid": valid,
                "masks": (torch.rand(num_inst, FRAMES, *MASK_SIZE, generator=gen) > 0.5)
                & valid[..., None, None],
            }
        )
    return targets


def leaves(outputs):
    layers = [outputs] + outputs.get("aux_outputs", [])
    return {f"{i}/{k}": v for i, layer in enumerate(layers) for k, v in layer.items() if k != "aux_outputs"}


def test_default_weights_are_the_papers():
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher())
    assert PAPER_WEIGHTS == {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2, "loss_mask": 1, "loss_dice": 1}
    assert criterion.weight_dict == default_weight_dict(5)
    assert criterion.weight_dict["loss_bbox_4"] == 5 and "loss_bbox_5" not in criterion.weight_dict
    assert criterion.empty_weight.tolist() == [1.0] * NUM_CLASSES + [pytest.approx(0.1)]


def test_loss_names_and_aux_masks_only_where_predicted():
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(), num_aux_layers=2)
    losses = criterion(make_outputs(0), make_targets(0))
    base = {"loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"}
    expected = base | {f"{k}_0" for k in ("loss_ce", "loss_bbox", "loss_giou")} | {f"{k}_1" for k in base}
    assert set(losses) == expected
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    total = criterion.weighted_total(losses)
    torch.testing.assert_close(total, sum(criterion.weight_dict[k] * v for k, v in losses.items()))


def test_query_groups_are_matched_apart_and_averaged():
    """Group DETR: each group's losses come from its own matching; the result is their mean."""
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(), num_aux_layers=2)
    targets = make_targets(2)
    main, extra = make_outputs(3), make_outputs(4)
    alone = [criterion(main, targets), criterion(extra, targets)]
    grouped = criterion({**main, "group_outputs": [extra]}, targets)
    assert set(grouped) == set(alone[0])
    for name, value in grouped.items():
        torch.testing.assert_close(value, (alone[0][name] + alone[1][name]) / 2)
    assert not torch.allclose(alone[0]["loss_ce"], alone[1]["loss_ce"])


def test_weighted_total_refuses_unweighted_losses():
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(), num_aux_layers=0)
    with pytest.raises(KeyError, match="loss_ce_0"):
        criterion.weighted_total(criterion(make_outputs(1, aux_layers=1), make_targets(1)))


def test_values_against_a_hand_computation():
    """One clip, matches known in advance (each slot sits exactly on one instance's boxes)."""
    outputs = make_outputs(2, batch=1, aux_layers=0)
    target = make_targets(2, instances=(2,))[0]
    target["valid"] = torch.tensor([[True, False, True], [True, True, True]])
    target["boxes"] = target["boxes"] * target["valid"][..., None]
    target["masks"] = target["masks"] & target["valid"][..., None, None]
    indices = [(torch.tensor([0, 1, 4, 6, 7]), torch.tensor([0, 3, 4, 2, 5]))]

    class FixedMatcher(HungarianMatcher):
        def forward(self, outputs, targets):
            return indices

    criterion = SetCriterion(NUM_CLASSES, FixedMatcher(), num_aux_layers=0)
    losses = criterion(outputs, [target])
    query, tgt = indices[0]
    labels = torch.full((FRAMES * SLOTS,), NUM_CLASSES)
    labels[query] = target["labels"][tgt // FRAMES]
    ce = F.cross_entropy(outputs["pred_logits"][0], labels, weight=criterion.empty_weight)
    num_boxes = 5.0  # visible instance-frames
    src_boxes, tgt_boxes = outputs["pred_boxes"][0, query], target["boxes"].flatten(0, 1)[tgt]
    src_masks = F.interpolate(outputs["pred_masks"][0, query][:, None], size=MASK_SIZE, mode="bilinear")[:, 0]
    tgt_masks = target["masks"].flatten(0, 1)[tgt].float()
    torch.testing.assert_close(losses["loss_ce"], ce)
    torch.testing.assert_close(losses["loss_bbox"], (src_boxes - tgt_boxes).abs().sum() / num_boxes)
    focal = focal_loss_per_mask(src_masks.flatten(1), tgt_masks.flatten(1)).sum() / num_boxes
    torch.testing.assert_close(losses["loss_mask"], focal)
    dice = dice_loss_per_mask(src_masks.flatten(1), tgt_masks.flatten(1)).sum() / num_boxes
    torch.testing.assert_close(losses["loss_dice"], dice)
    # the original normalizer counts absent frames too: M·T = 6
    original = SetCriterion(NUM_CLASSES, FixedMatcher(), num_aux_layers=0, normalizer="all_frames")
    torch.testing.assert_close(original(outputs, [target])["loss_giou"] * 6, losses["loss_giou"] * 5)


def test_perfect_boxes_give_zero_box_losses():
    outputs = make_outputs(3, batch=1, aux_layers=0)
    target = make_targets(3, instances=(2,), absent=0.0)[0]
    with torch.no_grad():  # slots 0 and 1 predict instances 0 and 1 exactly
        boxes = outputs["pred_boxes"].view(FRAMES, SLOTS, 4)
        boxes[:, :2] = target["boxes"].transpose(0, 1)
    losses = SetCriterion(NUM_CLASSES, HungarianMatcher(), num_aux_layers=0)(outputs, [target])
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-5)


POINTS = {"mask_loss_points": 64}  # the "points" resolution's settings in these tests


def _criterion(matcher, resolution, **kwargs):
    points = POINTS if resolution == "points" else {}
    return SetCriterion(NUM_CLASSES, matcher, mask_loss_resolution=resolution, **points, **kwargs)


@pytest.mark.parametrize("resolution", ["target", "prediction", "points"])
@pytest.mark.parametrize("instances", [(0, 0), (0, 2)], ids=["no-instances", "one-empty-clip"])
def test_finite_with_zero_instances_and_gradients_flow(resolution, instances):
    outputs = make_outputs(4, aux_masks=(True, True))
    targets = make_targets(4, instances=instances, absent=0.5)
    criterion = _criterion(HungarianMatcher(), resolution, num_aux_layers=2)
    losses = criterion(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    if sum(instances) == 0:
        assert losses["loss_bbox"].item() == losses["loss_mask"].item() == 0.0
        assert losses["loss_ce"].item() > 0
    criterion.weighted_total(losses).backward()
    for name, leaf in leaves(outputs).items():
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), name
        if sum(instances) or "logits" in name:
            assert leaf.grad.abs().sum() > 0, name


def test_empty_frames_and_all_absent_instance():
    outputs = make_outputs(5)
    targets = make_targets(5, absent=0.6)
    targets[0]["valid"][1] = False  # absent from the whole clip
    targets[0]["boxes"][1] = 0
    targets[0]["masks"][1] = False
    for matcher in (HungarianMatcher(), HungarianMatcher.original_vistr(), HungarianMatcher("per_frame")):
        criterion = SetCriterion(NUM_CLASSES, matcher, num_aux_layers=2)
        losses = criterion(outputs, targets)
        assert all(torch.isfinite(v) for v in losses.values())


def test_mask_losses_at_both_resolutions_on_predictions_that_fit_the_grid():
    """Targets constant on the prediction's 4x4 cells, predictions confident on exactly those cells."""
    outputs = make_outputs(6, batch=1, aux_layers=0)
    target = make_targets(6, instances=(2,), absent=0.0)[0]
    gen = torch.Generator().manual_seed(0)
    small = torch.rand(2, FRAMES, MASK_SIZE[0] // 4, MASK_SIZE[1] // 4, generator=gen) > 0.5  # [M, T, h, w]
    target["masks"] = F.interpolate(small.float(), scale_factor=4, mode="nearest") > 0.5
    query = torch.tensor([t * SLOTS + m for m in range(2) for t in range(FRAMES)])  # slot m <- instance m
    indices = [(query, torch.arange(2 * FRAMES))]

    class FixedMatcher(HungarianMatcher):
        def forward(self, outputs, targets):
            return indices

    with torch.no_grad():
        outputs["pred_masks"][0, query] = (small.flatten(0, 1).float() * 2 - 1) * 20  # logits ±20
    losses = {
        res: SetCriterion(NUM_CLASSES, FixedMatcher(), num_aux_layers=0, mask_loss_resolution=res)(
            outputs, [target]
        )
        for res in ("target", "prediction")
    }
    assert losses["prediction"]["loss_dice"].item() < 1e-6  # exact fit on the prediction grid
    assert losses["prediction"]["loss_mask"].item() < 1e-6
    assert 0 < losses["target"]["loss_dice"].item() < 0.15  # bilinear upsampling blurs the cell borders
    flipped = dict(target, masks=target["masks"].flip(-1))  # a misaligned target is far off
    wrong = SetCriterion(NUM_CLASSES, FixedMatcher(), num_aux_layers=0, mask_loss_resolution="prediction")
    assert wrong(outputs, [flipped])["loss_dice"].item() > 0.3


def test_point_losses_estimate_the_full_resolution_losses():
    """Uniform points (importance 0) are an unbiased sample of the "target" losses' pixels: with many points
    both agree closely; Mask2Former's importance sampling weighs the uncertain pixels more, so it differs."""
    outputs = make_outputs(9, aux_layers=0)
    targets = make_targets(9, absent=0.0)
    full = _criterion(HungarianMatcher(), "target", num_aux_layers=0)(outputs, targets)
    torch.manual_seed(0)
    uniform = SetCriterion(
        NUM_CLASSES,
        HungarianMatcher(),
        num_aux_layers=0,
        mask_loss_resolution="points",
        mask_loss_points=20_000,
        point_importance_ratio=0.0,
    )(outputs, targets)
    for name in ("loss_mask", "loss_dice"):
        torch.testing.assert_close(uniform[name], full[name], rtol=0.02, atol=0)
    important = _criterion(HungarianMatcher(), "points", num_aux_layers=0)(outputs, targets)
    assert abs(important["loss_mask"] - full["loss_mask"]) > 0.05 * full["loss_mask"]
    important["loss_mask"].backward()
    assert outputs["pred_masks"].grad.abs().sum() > 0


def test_bad_inputs_raise():
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher())
    outputs = make_outputs(7)
    with pytest.raises(ValueError, match="pred_masks"):
        criterion({k: v for k, v in outputs.items() if k != "pred_masks"}, make_targets(7))
    with pytest.raises(ValueError, match="K\\+1"):
        SetCriterion(NUM_CLASSES + 1, HungarianMatcher())(outputs, make_targets(7))
    with pytest.raises(ValueError, match="losses"):
        SetCriterion(NUM_CLASSES, HungarianMatcher(), losses=("labels", "cardinality"))
    with pytest.raises(ValueError, match="'points' needs mask_loss_points > 0, got None"):
        SetCriterion(NUM_CLASSES, HungarianMatcher(), mask_loss_resolution="points")
    with pytest.raises(ValueError, match="point_importance_ratio in"):
        SetCriterion(NUM_CLASSES, HungarianMatcher(), point_importance_ratio=1.5)


def _ddp_worker(rank, world_size, tmp_path):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'init'}", rank=rank, world_size=world_size
    )
    try:
        criterion = SetCriterion(NUM_CLASSES, HungarianMatcher())
        targets = make_targets(rank, instances=(2 + rank,), absent=0.0)  # 6 and 9 visible instance-frames
        (tmp_path / f"{rank}.txt").write_text(str(criterion.num_boxes(targets, torch.device("cpu")).item()))
    finally:
        torch.distributed.destroy_process_group()


def test_normalizer_averaging_with_a_simulated_second_rank(monkeypatch):
    """The all-reduce path without processes: the other rank is simulated holding 9 instance-frames."""
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.add_(9.0))
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher())
    targets = make_targets(0, instances=(2,), absent=0.0)  # 6 visible instance-frames
    assert criterion.num_boxes(targets, torch.device("cpu")).item() == 7.5


@pytest.mark.slow
def test_normalizer_is_averaged_over_ranks(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, tmp_path), nprocs=2, join=True)
    assert [float((tmp_path / f"{rank}.txt").read_text()) for rank in range(2)] == [7.5, 7.5]


@pytest.mark.parametrize("resolution", ["target", "prediction", "points"])
def test_mask_losses_ignore_the_batch_padding(resolution):
    """A clip padded from 12x8 to the 12x16 canvas: whatever is predicted on the padding (beyond the grid
    cell next to the border, which bilinear upsampling mixes in) leaves the mask losses unchanged, and they
    equal the same predictions' losses without padding."""
    outputs = make_outputs(8, batch=1, aux_layers=0)
    target = make_targets(8, instances=(2,), absent=0.0)[0]
    target["masks"][..., 8:] = False  # the collate's padding is background
    target["size"] = torch.tensor([12, 8])
    criterion = _criterion(HungarianMatcher(), resolution, num_aux_layers=0)
    torch.manual_seed(0)
    losses = criterion(outputs, [target])
    first_ignored = 2 if resolution == "prediction" else 3  # grid column 2 covers pixels 8-11
    changed = {k: v.detach().clone() for k, v in outputs.items() if k != "aux_outputs"}
    changed["pred_masks"][..., first_ignored:] = 30.0  # confident foreground on the padding
    changed["aux_outputs"] = []
    torch.manual_seed(0)  # the same points
    again = criterion(changed, [target])
    for name in ("loss_mask", "loss_dice"):
        assert torch.allclose(losses[name], again[name]), name
    if resolution == "prediction":  # on the 3x2 valid cells both grids agree exactly
        alone = {k: v.detach().clone() for k, v in outputs.items() if k != "aux_outputs"}
        alone["pred_masks"] = alone["pred_masks"][..., :2].contiguous()
        alone["aux_outputs"] = []
        cropped = dict(target, masks=target["masks"][..., :8].clone())
        single = criterion(alone, [cropped])
        for name in ("loss_mask", "loss_dice"):
            assert torch.allclose(losses[name], single[name]), name
