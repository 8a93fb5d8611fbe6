"""Clip sampling, the clip and video datasets, targets, validity after crops and padding in collate."""

import pytest
import torch
from ytvis_samples import HEIGHT, WIDTH, make_raw, write_dataset

from vistr_lit.data.clips import (
    ClipSampler,
    YTVISClipDataset,
    YTVISVideoDataset,
    clip_target,
    collate_clips,
    collate_videos,
)
from vistr_lit.data.transforms import build_eval_transform, build_train_transform
from vistr_lit.data.ytvis import load_ytvis


def no_aug():
    return build_train_transform(
        scales=[], crop_prescales=None, crop_size=None, hflip_prob=0.0, photometric_prob=0.0
    )


def test_long_video_clip_is_contiguous_with_random_start():
    sampler = ClipSampler(4)
    starts = set()
    for seed in range(50):
        idx = sampler(10, torch.Generator().manual_seed(seed))
        assert torch.equal(idx - idx[0], torch.arange(4)) and 0 <= idx[0] <= 6
        starts.add(int(idx[0]))
    assert starts == set(range(7))


def test_stride_random_fixed_and_shrunk_to_fit():
    fixed = ClipSampler(4, max_stride=3, fixed_stride=True)
    idx = fixed(20, torch.Generator().manual_seed(0))
    assert torch.equal(torch.diff(idx), torch.full((3,), 3))
    assert torch.equal(torch.diff(fixed(7)), torch.full((3,), 2))  # 3 does not fit in 7 frames, 2 does
    strides = {
        int(torch.diff(ClipSampler(4, max_stride=3)(30, torch.Generator().manual_seed(s)))[0])
        for s in range(40)
    }
    assert strides == {1, 2, 3}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("pingpong", [0, 1, 2, 1, 0, 1, 2, 1]),
        ("repeat_last", [0, 1, 2, 2, 2, 2, 2, 2]),
    ],
)
def test_short_video_policies(policy, expected):
    assert ClipSampler(8, short_video=policy)(3).tolist() == expected


def test_short_video_cycle_repeats_from_random_start():
    seen = set()
    for seed in range(30):
        idx = ClipSampler(7, short_video="cycle")(3, torch.Generator().manual_seed(seed)).tolist()
        assert idx == [(idx[0] + k) % 3 for k in range(7)]
        seen.add(idx[0])
    assert seen == {0, 1, 2}
    assert ClipSampler(5, short_video="pingpong")(1).tolist() == [0] * 5


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match="short_video"):
        ClipSampler(4, short_video="loop")
    with pytest.raises(ValueError, match=">= 1"):
        ClipSampler(0)


def test_clip_sample_contract(tiny_dataset):
    root, ann = tiny_dataset
    data = load_ytvis(ann)
    ds = YTVISClipDataset(data, root, ClipSampler(5), no_aug(), video_ids=[1])
    frames, target = ds[0]
    assert frames.shape == (5, 3, HEIGHT, WIDTH) and frames.dtype == torch.float32
    assert target["labels"].tolist() == [1, 0]  # category ids 9, 3 -> contiguous 1, 0
    assert target["instance_ids"].tolist() == [11, 12]
    assert target["masks"].shape == (2, 5, HEIGHT, WIDTH) and target["masks"].dtype == torch.bool
    assert target["frame_indices"].tolist() == [0, 1, 2, 3, 4]
    # instance 11 is null in frames 1 and 4: not valid, zero boxes; the others are valid
    assert target["valid"].tolist() == [[True, False, True, True, False], [True] * 5]
    assert torch.all(target["boxes"][0, 1] == 0) and torch.all(target["boxes"][0, 4] == 0)
    # box of instance 12 in frame 0: rows 12..21, cols 0..5 -> normalized cxcywh
    expected = torch.tensor([3 / WIDTH, 17 / HEIGHT, 6 / WIDTH, 10 / HEIGHT])
    assert torch.allclose(target["boxes"][1, 0], expected)
    assert target["size"].tolist() == [HEIGHT, WIDTH] and target["orig_size"].tolist() == [HEIGHT, WIDTH]
    assert target["video_id"] == 1


def test_short_video_clip_keeps_instances(tiny_dataset):
    root, ann = tiny_dataset
    ds = YTVISClipDataset(
        load_ytvis(ann), root, ClipSampler(4, short_video="repeat_last"), no_aug(), video_ids=[7]
    )
    frames, target = ds[0]
    assert frames.shape[0] == 4 and target["frame_indices"].tolist() == [0, 1, 1, 1]
    assert target["valid"].tolist() == [[True, False, False, False]]


def test_epoch_length_controls(tiny_dataset):
    root, ann = tiny_dataset
    data = load_ytvis(ann)
    assert len(YTVISClipDataset(data, root, ClipSampler(2), no_aug(), clips_per_video=3)) == 6
    assert len(YTVISClipDataset(data, root, ClipSampler(2), no_aug(), clips_per_video=None)) == 7  # frames
    with pytest.raises(KeyError, match="video ids"):
        YTVISClipDataset(data, root, ClipSampler(2), no_aug(), video_ids=[5])


def test_instance_absent_from_whole_clip_is_kept_invalid(tiny_dataset):
    root, ann = tiny_dataset
    data = load_ytvis(ann)
    ds = YTVISClipDataset(data, root, ClipSampler(1), no_aug(), video_ids=[1])
    gen_draws = [ds[0][1] for _ in range(40)]
    absent = [t for t in gen_draws if t["frame_indices"].tolist() in ([1], [4])]
    assert absent, "frames 1 and 4 should be drawn in 40 tries"
    assert all(t["valid"][0].tolist() == [False] and t["labels"].numel() == 2 for t in absent)


def test_crop_that_removes_an_instance_makes_it_invalid():
    masks = torch.zeros((2, 3, 40, 40), dtype=torch.bool)
    masks[0, :, 0:5, 0:5] = True  # top-left corner
    masks[1, :, 10:30, 10:30] = True
    frames = torch.zeros((3, 3, 40, 40), dtype=torch.uint8)
    crop = build_train_transform(
        scales=[], crop_prescales=None, crop_size=(20, 20), hflip_prob=0, photometric_prob=0
    )
    for _ in range(20):
        out_frames, out_masks = crop(frames, masks)
        target = clip_target(out_masks)
        assert out_frames.shape[-2:] == (20, 20)
        assert torch.equal(target["valid"], out_masks.flatten(2).any(-1))
        assert torch.all(target["boxes"][~target["valid"]] == 0)
        if not out_masks[0].any():
            assert not target["valid"][0].any()
    # a crop window of rows/cols 20..39 never sees the corner instance: it must be invalid there
    _, cropped = crop(frames[:, :, 20:, 20:].contiguous(), masks[:, :, 20:, 20:].contiguous())
    assert clip_target(cropped)["valid"][0].tolist() == [False] * 3


def test_collate_pads_frames_and_masks():
    small = (torch.ones(2, 3, 4, 6), clip_target(torch.ones(1, 2, 4, 6, dtype=torch.bool)))
    large = (torch.ones(2, 3, 5, 3), clip_target(torch.ones(3, 2, 5, 3, dtype=torch.bool)))
    batch = collate_clips([small, large])
    assert batch["frames"].shape == (2, 2, 3, 5, 6)
    assert batch["pad_mask"].shape == (2, 5, 6)
    assert batch["pad_mask"][0, :4, :6].sum() == 0 and batch["pad_mask"][0, 4].all()
    assert batch["pad_mask"][1, :, 3:].all() and not batch["pad_mask"][1, :, :3].any()
    assert torch.all(batch["frames"][0, :, :, 4] == 0) and torch.all(batch["frames"][1, :, :, :, 3:] == 0)
    assert batch["targets"][0]["masks"].shape == (1, 2, 5, 6) and batch["targets"][1]["masks"].shape == (
        3,
        2,
        5,
        6,
    )
    assert batch["targets"][0]["masks"].sum() == 1 * 2 * 4 * 6
    with pytest.raises(ValueError, match="same T"):
        collate_clips([small, (torch.ones(3, 3, 4, 6), small[1])])


def test_video_dataset_returns_whole_videos(tiny_dataset):
    root, ann = tiny_dataset
    ds = YTVISVideoDataset(load_ytvis(ann), root, build_eval_transform(48, 80))
    sample = ds[0]
    assert sample["frames"].shape == (5, 3, 48, 64)
    assert sample["video_id"] == 1 and sample["orig_size"] == (HEIGHT, WIDTH) and sample["size"] == (48, 64)
    assert sample["file_names"][1] == "vid_a/00005.jpg"
    assert collate_videos([sample, ds[1]])[1]["frames"].shape[0] == 2


def test_missing_or_wrong_size_frame_names_file_and_video(tiny_dataset):
    root, ann = tiny_dataset
    data = load_ytvis(ann)
    (root / "vid_b" / "00005.jpg").unlink()
    ds = YTVISVideoDataset(data, root, build_eval_transform(None))
    with pytest.raises(OSError, match=r"vid_b/00005.jpg \(video 7, frame 1\)"):
        ds[1]
    (root / "vid_a" / "00010.jpg").write_bytes((root / "vid_a" / "00000.jpg").read_bytes()[:50])
    with pytest.raises(OSError, match=r"vid_a/00010.jpg \(video 1, frame 2\)"):
        ds[0]


def test_video_without_instances_gives_empty_targets(tmp_path):
    raw = make_raw()
    raw["annotations"] = [a for a in raw["annotations"] if a["video_id"] != 7]
    ann = write_dataset(tmp_path, raw)
    ds = YTVISClipDataset(load_ytvis(ann), tmp_path / "JPEGImages", ClipSampler(3), no_aug(), video_ids=[7])
    frames, target = ds[0]
    assert frames.shape == (3, 3, HEIGHT, WIDTH)
    assert target["labels"].shape == (0,) and target["boxes"].shape == (0, 3, 4)
    assert target["masks"].shape == (0, 3, HEIGHT, WIDTH) and target["valid"].shape == (0, 3)
    batch = collate_clips([(frames, target), ds[0]])
    assert batch["targets"][1]["masks"].shape == (0, 3, HEIGHT, WIDTH)
