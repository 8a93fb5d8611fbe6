"""Tiny VisTR networks and padded batches shared by the network's tests."""

import torch

from vistr_lit.models import build_vistr

TINY = dict(hidden_dim=48, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=64)
# model.net of `+experiment=quickstart` (and num_classes=3, synthvis's)
QUICKSTART = dict(
    num_frames=2,
    num_instances=5,
    backbone="resnet10",
    dilation=True,
    trainable_stages=["conv1", "layer1", "layer2", "layer3", "layer4"],
    pretrained_backbone=None,
    backbone_norm="batch",
    backbone_width=32,
    hidden_dim=96,
    nheads=4,
    enc_layers=2,
    dec_layers=2,
    dim_feedforward=384,
    dropout=0.0,
    attention_dropout=0.0,
    mask_fusion="dot_product",
    temporal_fusion="conv3d",
    mask_dim=32,
    aux_masks=False,
    mask_stride=4,
    mask_classifier="clip",
    masked_attention=False,
    mask_coords=True,
    aux_loss=True,
    query_groups=1,
)


def tiny_vistr(num_frames=3, num_instances=2, backbone="resnet10", num_classes=3, seed=0, **kwargs):
    torch.manual_seed(seed)
    args = {**TINY, **kwargs}
    return build_vistr(num_classes, num_frames, num_instances, backbone=backbone, **args).eval()


def pad_batch(clip_a, clip_b, size):
    """Two clips ``[T, 3, h, w]`` zero-padded into ``[2, T, 3, *size]`` with their padding mask."""
    frames = torch.zeros(2, clip_a.shape[0], 3, *size)
    pad_mask = torch.ones(2, *size, dtype=torch.bool)
    for b, clip in enumerate((clip_a, clip_b)):
        frames[b, :, :, : clip.shape[-2], : clip.shape[-1]] = clip
        pad_mask[b, : clip.shape[-2], : clip.shape[-1]] = False
    return frames, pad_mask


def predict_padded_and_alone(model, check_all):
    """Assert that two clips (sizes not multiples of 32) padded into one 96x96 batch predict the masks
    (and with ``check_all`` the logits and boxes) they predict alone. Returns (batched outputs, frames)."""
    clip_a, clip_b = torch.randn(3, 3, 50, 70), torch.randn(3, 3, 96, 64)
    frames, pad_mask = pad_batch(clip_a, clip_b, (96, 96))
    with torch.no_grad():
        batched = model(frames, pad_mask)
        for b, clip in enumerate((clip_a, clip_b)):
            alone = model(clip[None])
            h, w = alone["pred_masks"].shape[-2:]
            if check_all:
                torch.testing.assert_close(
                    batched["pred_logits"][b], alone["pred_logits"][0], atol=1e-5, rtol=1e-4
                )
                torch.testing.assert_close(
                    batched["pred_boxes"][b], alone["pred_boxes"][0], atol=1e-5, rtol=1e-4
                )
            torch.testing.assert_close(
                batched["pred_masks"][b, :, :h, :w], alone["pred_masks"][0], atol=1e-4, rtol=1e-4
            )
    return batched, frames
