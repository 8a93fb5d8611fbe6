"""ConvexMaskUpsampler: starts as bilinear upsampling, stays a convex combination of each fine pixel's 3×3
coarse neighbourhood, reads the frame's own pixels locally, ignores the batch padding; and VisTR's
``mask_stride=1`` built on it."""

import pytest
import torch
import torch.nn.functional as F

import vistr_lit.models.extensions.mask_upsampler as mask_upsampler
from vistr_lit.models import build_vistr
from vistr_lit.models.extensions.mask_upsampler import ConvexMaskUpsampler

TINY = dict(
    hidden_dim=48, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=64, mask_fusion="dot_product"
)


def randomized(upsampler, seed=1):
    torch.manual_seed(seed)
    torch.nn.init.normal_(upsampler.weight_net[-1].weight, std=0.5)
    return upsampler


def test_initial_weights_are_bilinear_upsampling():
    offsets = torch.tensor([-0.25, 0.25])  # factor 2: the fine pixels' offsets from their cell's centre
    weights = mask_upsampler._bilinear_convex_weights(2)  # 9 x 2 x 2, rows -1/0/+1 x columns -1/0/+1
    torch.testing.assert_close(weights.sum(0), torch.ones(2, 2))
    # the top-left fine pixel: 0.75 of its own cell along each axis, 0.25 of the cell above / to the left
    expected = torch.tensor([[0.25 * 0.25, 0.25 * 0.75, 0], [0.75 * 0.25, 0.75 * 0.75, 0], [0, 0, 0]])
    torch.testing.assert_close(weights[:, 0, 0].view(3, 3), expected)
    assert offsets.abs().max() < 0.5


@pytest.mark.parametrize("factor", [2, 4])
def test_a_new_upsampler_is_bilinear_away_from_the_border(monkeypatch, factor):
    monkeypatch.setattr(mask_upsampler, "BILINEAR_FLOOR", 1e-30)
    torch.manual_seed(0)
    upsampler = ConvexMaskUpsampler(8, factor)
    pixels, frames = torch.randn(2, 8, 6, 7), torch.randn(2, 3, 6 * factor, 7 * factor)
    logits = torch.randn(2, 3, 6, 7)
    with torch.no_grad():
        fine = upsampler(logits, upsampler.weights(pixels, frames), (6 * factor, 7 * factor))
    bilinear = F.interpolate(logits, scale_factor=factor, mode="bilinear", align_corners=False)
    inner = slice(factor, -factor)  # bilinear clamps at the border, the upsampler sees zero padding
    torch.testing.assert_close(fine[..., inner, inner], bilinear[..., inner, inner], atol=1e-5, rtol=1e-5)


def test_fine_logits_are_convex_combinations_of_the_neighbourhood():
    upsampler = randomized(ConvexMaskUpsampler(8, 4))
    pixels, frames, logits = torch.randn(1, 8, 5, 6), torch.randn(1, 3, 20, 24), torch.randn(1, 2, 5, 6)
    with torch.no_grad():
        weights = upsampler.weights(pixels, frames)
        fine = upsampler(logits, weights, (20, 24))
    assert weights.shape == (1, 9, 4, 4, 5, 6) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(1, 4, 4, 5, 6))
    assert (weights - mask_upsampler._bilinear_convex_weights(4)[None, :, :, :, None, None]).abs().max() > 0.1
    padded = F.pad(logits, (1, 1, 1, 1))
    low = -F.max_pool2d(-padded, 3, stride=1)  # each cell's neighbourhood minimum and maximum
    high = F.max_pool2d(padded, 3, stride=1)
    cells = fine.unflatten(2, (5, 4)).unflatten(4, (6, 4))  # 1 x 2 x 5 x 4 x 6 x 4
    assert (cells >= low[:, :, :, None, :, None] - 1e-5).all()
    assert (cells <= high[:, :, :, None, :, None] + 1e-5).all()


def test_the_frame_steers_the_weights_of_nearby_cells_only():
    upsampler = randomized(ConvexMaskUpsampler(8, 4))
    pixels, frames = torch.randn(1, 8, 8, 8), torch.randn(1, 3, 32, 32)
    edited = frames.clone()
    edited[..., 4 * 4 + 1, 4 * 4 + 2] += 3.0  # one pixel of cell (4, 4)
    with torch.no_grad():
        change = upsampler.weights(pixels, edited) - upsampler.weights(pixels, frames)
    change = change.abs().amax(dim=(1, 2, 3))  # 1 x h x w: the largest change of each cell's weights
    assert change[0, 4, 4] > 1e-3
    # the 3x3 layer spreads it to the neighbouring cells, no further
    assert change[0, 3:6, 3:6].min() > 0
    far = change[0].clone()
    far[3:6, 3:6] = 0
    assert far.max() == 0


def test_padded_frames_get_the_weights_of_the_frames_alone():
    upsampler = randomized(ConvexMaskUpsampler(8, 4))
    frame = torch.randn(1, 3, 18, 26)  # 5 x 7 cells, the last row and column partly outside
    pixels = torch.randn(1, 8, 5, 7)
    batch_frames, batch_pixels = torch.zeros(2, 3, 32, 40), torch.zeros(2, 8, 8, 10)
    batch_frames[0, :, :18, :26], batch_pixels[0, :, :5, :7] = frame[0], pixels[0]
    batch_frames[1], batch_pixels[1] = torch.randn(3, 32, 40), torch.randn(8, 8, 10)
    keep = torch.zeros(2, 1, 8, 10)
    keep[0, :, :5, :7], keep[1] = 1, 1
    with torch.no_grad():
        alone = upsampler.weights(pixels, frame)
        batched = upsampler.weights(batch_pixels, batch_frames, keep)
        unmasked = upsampler.weights(batch_pixels, batch_frames)
    torch.testing.assert_close(batched[:1, ..., :5, :7], alone)
    assert (unmasked[:1, ..., :5, :7] - alone).abs().max() > 1e-3  # the keep mask is what makes it equal


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="factor must be >= 2"):
        ConvexMaskUpsampler(8, 1)
    upsampler = ConvexMaskUpsampler(8, 4)
    with pytest.raises(ValueError, match=r"frames \[25, 24\] are not the 4x of pixel embeddings \[6, 6\]"):
        upsampler.weights(torch.randn(1, 8, 6, 6), torch.randn(1, 3, 25, 24))
    with pytest.raises(ValueError, match=r"frames \[20, 24\] are not the 4x"):
        upsampler.weights(torch.randn(1, 8, 6, 6), torch.randn(1, 3, 20, 24))


def test_vistr_mask_stride_1_upsamples_the_stride_4_masks():
    torch.manual_seed(0)
    model = build_vistr(3, 3, 2, backbone="resnet10", mask_stride=1, **TINY).eval()
    randomized(model.mask_extension.mask_upsampler)
    captured = {}
    model.mask_extension.mask_upsampler.register_forward_hook(
        lambda module, args, kwargs, out: captured.update(args=args, kwargs=kwargs, out=out), with_kwargs=True
    )
    frames = torch.randn(1, 3, 3, 42, 54)
    with torch.no_grad():
        masks = model(frames)["pred_masks"]
    assert masks.shape == (1, 6, 42, 54)
    (coarse,), kwargs = captured["args"], captured["kwargs"]
    assert coarse.shape == (3, 2, 11, 14) and kwargs["size"] == (42, 54)
    assert kwargs["weights"].shape == (3, 9, 4, 4, 11, 14)
    torch.testing.assert_close(masks, captured["out"].unflatten(0, (1, 3)).flatten(1, 2))
