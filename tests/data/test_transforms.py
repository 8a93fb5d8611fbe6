"""Transforms: geometry shared by every frame and mask of a clip, colour drawn per frame, normalization."""

import pytest
import torch

from vistr_lit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform, build_train_transform


def ramp_clip(T=4, H=30, W=40):
    """Identical frames with a horizontal ramp (so a flip is visible) and one mask per frame on the left."""
    frame = torch.linspace(0, 255, W).to(torch.uint8).expand(3, H, W)
    frames = frame.unsqueeze(0).repeat(T, 1, 1, 1).contiguous()
    masks = torch.zeros((1, T, H, W), dtype=torch.bool)
    masks[0, :, 5:15, 2:12] = True
    return frames, masks


def test_geometry_is_drawn_once_per_clip():
    frames, masks = ramp_clip()
    transform = build_train_transform(
        scales=[20, 25, 30],
        max_size=60,
        crop_prescales=[32, 36],
        crop_size=(18, 28),
        hflip_prob=0.5,
        photometric_prob=0,
    )
    flipped = 0
    for seed in range(30):
        torch.manual_seed(seed)
        out, out_masks = transform(frames, masks)
        assert all(torch.equal(out[0], out[t]) for t in range(1, 4))
        assert all(torch.equal(out_masks[:, 0], out_masks[:, t]) for t in range(1, 4))
        assert out.shape[-2:] == out_masks.shape[-2:] and min(out.shape[-2:]) in (20, 25, 30)
        flipped += bool(out[0, 0, 0, 0] > out[0, 0, 0, -1])
    assert 0 < flipped < 30


@pytest.mark.parametrize("vflip_prob", [0.0, 0.5])
def test_vertical_flips_move_frames_and_masks_together(vflip_prob):
    frames, masks = ramp_clip()
    frames = frames.transpose(-1, -2).contiguous()  # a vertical ramp, the mask near the top
    masks = masks.transpose(-1, -2).contiguous()
    transform = build_train_transform(
        scales=[],
        crop_prescales=None,
        crop_size=None,
        hflip_prob=0,
        photometric_prob=0,
        vflip_prob=vflip_prob,
    )
    flipped = 0
    for seed in range(30):
        torch.manual_seed(seed)
        out, out_masks = transform(frames, masks)
        is_flipped = bool(out[0, 0, 0, 0] > out[0, 0, -1, 0])
        assert torch.equal(out_masks, masks.flip(-2) if is_flipped else masks)
        assert all(torch.equal(out[0], out[t]) for t in range(1, 4))
        flipped += is_flipped
    assert (0 < flipped < 30) if vflip_prob else flipped == 0


def test_photometric_is_drawn_per_frame():
    frames, masks = ramp_clip(T=6)
    transform = build_train_transform(
        scales=[], crop_prescales=None, crop_size=None, hflip_prob=0, photometric_prob=1.0
    )
    torch.manual_seed(0)
    out, out_masks = transform(frames, masks)
    assert not all(torch.allclose(out[0], out[t]) for t in range(1, 6))
    assert torch.equal(out_masks, masks)


def test_normalization_and_eval_resize():
    frames = torch.full((2, 3, 30, 60), 255, dtype=torch.uint8)
    out, out_masks = build_eval_transform(20, 30)(frames, torch.zeros((0, 2, 30, 60), dtype=torch.bool))
    assert out.shape == (2, 3, 15, 30)  # the max size binds: long side 30
    assert out_masks.shape == (0, 2, 15, 30)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[0, :, 0, 0], expected, atol=1e-5)
    out, _ = build_eval_transform(20)(frames, torch.zeros((0, 2, 30, 60), dtype=torch.bool))
    assert out.shape[-2:] == (20, 40)


def test_paper_scales_give_short_side_300_at_most_540():
    frames = torch.zeros((2, 3, 360, 640), dtype=torch.uint8)
    masks = torch.zeros((1, 2, 360, 640), dtype=torch.bool)
    transform = build_train_transform()
    for seed in range(5):
        torch.manual_seed(seed)
        out, _ = transform(frames, masks)
        assert min(out.shape[-2:]) == 300 and max(out.shape[-2:]) <= 540


def test_bad_inputs_are_rejected():
    transform = build_eval_transform(20)
    with pytest.raises(ValueError, match="uint8"):
        transform(torch.zeros(2, 3, 8, 8), torch.zeros(0, 2, 8, 8))
    with pytest.raises(ValueError, match="masks must be"):
        transform(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="crop_size"):
        build_train_transform(crop_size=(10,))


def test_crop_window_is_measured_on_the_prescaled_frame():
    """Prescale 400 on a 720-row frame: crop heights 384..400 there are 691..720 rows of the frame itself."""
    from torchvision import tv_tensors

    from vistr_lit.data.transforms import RandomSizeCrop

    frames = tv_tensors.Video(torch.zeros((1, 3, 720, 1280), dtype=torch.uint8))
    crop = RandomSizeCrop(384, 600, prescales=[400])
    heights, widths = set(), set()
    for seed in range(30):
        torch.manual_seed(seed)
        out = crop(frames)
        heights.add(out.shape[-2])
        widths.add(out.shape[-1])
    assert min(heights) >= 384 * 720 / 400 - 1 and max(heights) <= 720
    assert min(widths) >= 384 * 720 / 400 - 1 and max(widths) <= 600 * 720 / 400 + 1
    assert len(widths) > 10
    torch.manual_seed(0)
    plain = RandomSizeCrop(384, 600)(frames)  # no prescale: measured on the frame itself
    assert 384 <= plain.shape[-2] <= 600 and 384 <= plain.shape[-1] <= 600


def test_crop_without_final_resize_happens_at_the_prescaled_size():
    frames = torch.zeros((2, 3, 72, 128), dtype=torch.uint8)
    masks = torch.zeros((1, 2, 72, 128), dtype=torch.bool)
    transform = build_train_transform(
        scales=[], crop_prescales=[40], crop_size=(30, 50), hflip_prob=0, photometric_prob=0
    )
    out, out_masks = transform(frames, masks)
    assert 30 <= out.shape[-2] <= 40 and 30 <= out.shape[-1] <= 50 and out_masks.shape[-2:] == out.shape[-2:]


def test_output_size_caps_the_long_side_like_detr():
    from vistr_lit.data.transforms import output_size

    assert output_size(720, 1280, 300) == (300, 533)
    assert output_size(720, 1280, 300, 540) == (300, 533)
    assert output_size(720, 1280, 360, 540) == (304, 540)  # the cap binds: long side 540
    assert output_size(1280, 720, 800, 800) == (800, 450)  # max_size == size still caps (portrait)
    assert output_size(100, 100, 80, 128) == (80, 80)
