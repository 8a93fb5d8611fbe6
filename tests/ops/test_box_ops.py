"""Pairwise box overlaps against torchvision, batched over frames."""

import pytest
import torch
from torchvision.ops import box_iou, generalized_box_iou

from vistr_lit.ops import (
    box_cxcywh_to_xyxy,
    box_xyxy_to_cxcywh,
    pairwise_box_iou,
    pairwise_generalized_box_iou,
)
from vistr_lit.ops.box_ops import ORIGINAL_IOU_SMOOTHING


def random_xyxy(*shape: int, generator: torch.Generator) -> torch.Tensor:
    cxcywh = torch.rand(*shape, 4, generator=generator) * 0.6 + 0.2
    return box_cxcywh_to_xyxy(cxcywh)


def test_conversion_round_trip_and_values():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    xyxy = box_cxcywh_to_xyxy(boxes)
    torch.testing.assert_close(xyxy, torch.tensor([[0.4, 0.3, 0.6, 0.7]]))
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), boxes)


@pytest.mark.parametrize("seed", [0, 1])
def test_pairwise_matches_torchvision_per_frame(seed):
    gen = torch.Generator().manual_seed(seed)
    frames, num_pred, num_tgt = 3, 5, 4
    pred = random_xyxy(frames, num_pred, generator=gen)
    tgt = random_xyxy(frames, num_tgt, generator=gen)
    iou = pairwise_box_iou(pred, tgt)
    giou = pairwise_generalized_box_iou(pred, tgt)
    assert iou.shape == giou.shape == (frames, num_pred, num_tgt)
    for t in range(frames):
        torch.testing.assert_close(iou[t], box_iou(pred[t], tgt[t]))
        torch.testing.assert_close(giou[t], generalized_box_iou(pred[t], tgt[t]), atol=1e-6, rtol=1e-5)


def test_original_smoothing_and_degenerate_boxes():
    unit = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    far = torch.tensor([[2.0, 2.0, 3.0, 4.0]])
    smoothed = pairwise_box_iou(unit, far, smoothing=ORIGINAL_IOU_SMOOTHING)
    expected = ORIGINAL_IOU_SMOOTHING / (3.0 + ORIGINAL_IOU_SMOOTHING)  # union = 1 + 2
    torch.testing.assert_close(smoothed, torch.tensor([[expected]]))
    assert pairwise_box_iou(unit, far).item() == 0.0
    zero = torch.zeros(1, 4)  # the dummy box of an absent frame
    assert torch.isfinite(pairwise_generalized_box_iou(zero, zero)).all()
    # disjoint boxes: GIoU = -(enclosure - union) / enclosure, enclosure [0, 0, 3, 4]
    torch.testing.assert_close(
        pairwise_generalized_box_iou(unit, far), torch.tensor([[-(12.0 - 3.0) / 12.0]])
    )
