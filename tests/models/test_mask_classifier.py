"""MaskPooledClassifier: a new head starts as the plain classifier, reads shape and texture under its own
mask, ignores the batch padding, and does not train the masks or boxes it reads."""

import pytest
import torch

from vistr_lit.models import build_vistr
from vistr_lit.models.extensions.mask_classifier import MaskPooledClassifier

TINY = dict(
    hidden_dim=48, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=64, mask_fusion="dot_product"
)


def tiny(seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_vistr(3, 3, 2, backbone="resnet10", **{**TINY, **kwargs}).eval()


def randomize_output(model):
    torch.manual_seed(1)
    torch.nn.init.normal_(model.mask_extension.mask_classifier.out.weight, std=0.5)


def test_a_new_head_predicts_like_the_plain_classifier():
    plain, with_head = tiny(), tiny(mask_classifier=True)
    missing, unexpected = with_head.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing
    assert all(k.startswith("mask_extension.mask_classifier.") for k in missing)
    frames = torch.randn(2, 3, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(with_head(frames)["pred_logits"], plain(frames)["pred_logits"])
        randomize_output(with_head)
        assert (with_head(frames)["pred_logits"] - plain(frames)["pred_logits"]).abs().max() > 1e-2
        # only the last layer's logits are corrected; the auxiliary layers keep their own
        torch.testing.assert_close(
            with_head(frames)["aux_outputs"][0]["pred_logits"], plain(frames)["aux_outputs"][0]["pred_logits"]
        )


@pytest.mark.parametrize(("mode", "mask_stride"), [("frame", 4), ("frame", 2), ("clip", 4), ("clip", 1)])
def test_padded_clip_is_classified_like_the_clip_alone(mode, mask_stride):
    model = tiny(mask_classifier=mode, mask_stride=mask_stride)
    randomize_output(model)
    clip_a, clip_b = torch.randn(3, 3, 50, 70), torch.randn(3, 3, 96, 64)
    frames, pad_mask = torch.zeros(2, 3, 3, 96, 96), torch.ones(2, 96, 96, dtype=torch.bool)
    for b, clip in enumerate((clip_a, clip_b)):
        frames[b, :, :, : clip.shape[-2], : clip.shape[-1]] = clip
        pad_mask[b, : clip.shape[-2], : clip.shape[-1]] = False
    with torch.no_grad():
        batched = model(frames, pad_mask)["pred_logits"]
        for b, clip in enumerate((clip_a, clip_b)):
            torch.testing.assert_close(batched[b], model(clip[None])["pred_logits"][0], atol=1e-4, rtol=1e-4)


def _disc_and_cross(size=32, radius=10.0, centre=(16.0, 16.0)):
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dy, dx = ys - centre[0], xs - centre[1]
    disc = (dx**2 + dy**2) <= radius**2
    cross = (
        ((dx.abs() <= radius / 3) | (dy.abs() <= radius / 3)) & (dx.abs() <= radius) & (dy.abs() <= radius)
    )
    return torch.stack([disc, cross]).float() * 20 - 10  # [2, size, size] logits


def test_shape_is_read_over_the_box_and_features_under_the_mask():
    torch.manual_seed(0)
    head = MaskPooledClassifier(feature_dim=4, hidden_dim=16, num_logits=5).eval()
    torch.nn.init.normal_(head.out.weight)
    queries, features = torch.zeros(1, 2, 16), torch.zeros(1, 4, 32, 32)
    valid = torch.tensor([[32, 32]])
    box = torch.tensor([16 / 32, 16 / 32, 20 / 32, 20 / 32])  # cxcywh, normalized
    with torch.no_grad():
        masks = _disc_and_cross()[None]  # [1, 2, 32, 32]
        logits = head(queries, masks, box.expand(1, 2, 4), features, valid)
        assert (logits[0, 0] - logits[0, 1]).abs().max() > 1e-3  # disc and cross differ
        # the same shapes moved by 4 pixels, with their boxes: the same logits (features are zero)
        moved = _disc_and_cross(centre=(16.0, 12.0))[None]
        shifted = box + torch.tensor([-4 / 32, 0, 0, 0])
        torch.testing.assert_close(head(queries, moved, shifted.expand(1, 2, 4), features, valid), logits)
        # texture: features under the disc change its logits, features elsewhere do not
        outside = features.clone()
        outside[..., :2, :] = 1.0  # rows 0-1: outside both shapes (sigmoid(-10) leaks 5e-5)
        torch.testing.assert_close(
            head(queries, masks, box.expand(1, 2, 4), outside, valid), logits, atol=1e-4, rtol=0
        )
        inside = features.clone()
        inside[..., 14:18, 14:18] = 1.0
        assert (head(queries, masks, box.expand(1, 2, 4), inside, valid) - logits).abs().max() > 1e-3


def test_masks_and_boxes_get_no_gradient_from_the_classification():
    head = MaskPooledClassifier(feature_dim=4, hidden_dim=16, num_logits=5)
    torch.nn.init.normal_(head.out.weight)
    queries = torch.randn(2, 3, 16, requires_grad=True)
    masks = torch.randn(2, 3, 8, 8, requires_grad=True)
    boxes = torch.rand(2, 3, 4).mul(0.5).add(0.25).requires_grad_()
    features = torch.randn(2, 4, 8, 8, requires_grad=True)
    head(queries, masks, boxes, features, torch.tensor([[8, 8], [8, 6]])).sum().backward()
    assert masks.grad is None and boxes.grad is None
    assert queries.grad.abs().sum() > 0 and features.grad.abs().sum() > 0


def test_clip_pooling_shares_the_class_evidence_of_a_slot_across_its_frames():
    model = tiny(mask_classifier="clip")
    randomize_output(model)
    frames = torch.randn(2, 3, 3, 48, 64)
    with torch.no_grad():  # the same seed: the same weights but the head's
        logits = model(frames)["pred_logits"].unflatten(1, (3, 2))  # B x T x N x K+1
        plain = tiny()(frames)["pred_logits"].unflatten(1, (3, 2))
    correction = logits - plain
    torch.testing.assert_close(
        correction[..., :-1], correction[:, :1, :, :-1].expand_as(correction[..., :-1])
    )
    assert (correction[:, 0, :, -1] - correction[:, 1, :, -1]).abs().max() > 1e-4  # no-object stays per frame


def test_clip_pooling_weighs_frames_by_mask_mass():
    torch.manual_seed(0)
    frame_head = MaskPooledClassifier(feature_dim=4, hidden_dim=16, num_logits=5).eval()
    clip_head = MaskPooledClassifier(feature_dim=4, hidden_dim=16, num_logits=5, clip_pooling=True).eval()
    torch.nn.init.normal_(frame_head.out.weight)
    clip_head.load_state_dict(frame_head.state_dict())
    masks = torch.full((2, 1, 32, 32), -20.0)  # frame 1: nothing
    masks[0, 0] = _disc_and_cross()[0]  # frame 0: a disc of ~314 cells
    args = (torch.randn(2, 1, 16), masks, torch.tensor([0.5, 0.5, 0.6, 0.6]).expand(2, 1, 4))
    rest = (torch.randn(2, 4, 32, 32), torch.tensor([[32, 32], [32, 32]]))
    with torch.no_grad():
        per_frame = frame_head(*args, *rest)
        pooled = clip_head(*args, *rest, num_frames=2)
    torch.testing.assert_close(
        pooled[:, :, :-1], per_frame[:1, :, :-1].expand(2, -1, -1), atol=0.02, rtol=0.01
    )
    torch.testing.assert_close(pooled[:, :, -1], per_frame[:, :, -1])


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="mask_classifier must be one of"):
        tiny(mask_classifier="video")
    with pytest.raises(ValueError, match="mask_classifier needs mask_fusion 'dot_product'"):
        tiny(mask_classifier=True, mask_fusion="attention")
    with pytest.raises(ValueError, match="multiple of 4"):
        MaskPooledClassifier(4, 16, 5, shape_size=6)


def test_runs_under_bf16_autocast():
    model = tiny(mask_classifier=True).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 3, 48, 64))
    out["pred_logits"].float().sum().backward()
    assert model.mask_extension.mask_classifier.out.weight.grad is not None
