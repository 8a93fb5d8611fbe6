"""YTVISDataModule: loaders with worker processes, splits, DDP sharding, synthvis on first use."""

import json
from types import SimpleNamespace

import pytest
import torch

from vistr_lit.data.datamodule import (
    AspectGroupedBatchSampler,
    EpochShuffle,
    ShardSampler,
    YTVISDataModule,
)
from vistr_lit.data.ytvis import load_ytvis

SMALL_SCALES = {
    "train_scales": [40, 48],
    "train_max_size": 80,
    "crop_prescales": None,
    "crop_size": [32, 64],
    "crop_prob": 0.5,
    "eval_short_side": 48,
    "eval_max_size": 80,
}


def make_dm(root, params, **kwargs):
    args = {"num_frames": 4, "batch_size": 2, "num_workers": 0, **SMALL_SCALES, **kwargs}
    return YTVISDataModule(root=str(root), synthvis=params, **args)


def test_two_workers_stream_padded_batches(synthvis_root, synthvis_params):
    dm = make_dm(synthvis_root, synthvis_params, num_workers=2, clips_per_video=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers and not loader.pin_memory
    seen = []
    for _ in range(2):  # two epochs through the same persistent workers
        for batch in loader:
            B, T, C, Hp, Wp = batch["frames"].shape
            assert T == 4 and C == 3 and batch["pad_mask"].shape == (B, Hp, Wp)
            for b, target in enumerate(batch["targets"]):
                H, W = target["size"].tolist()
                assert target["masks"].shape[1:] == (T, Hp, Wp)
                assert not batch["pad_mask"][b, :H, :W].any() and batch["pad_mask"][b, H:].all()
                assert torch.equal(target["valid"], target["masks"].flatten(2).any(-1))
                seen.append(target["video_id"])
    assert sorted(seen) == sorted(list(range(1, 7)) * 4)


def test_validation_loader_gives_whole_videos(synthvis_root, synthvis_params):
    dm = make_dm(synthvis_root, synthvis_params, num_workers=1)
    batches = list(dm.val_dataloader())
    gt = load_ytvis(synthvis_root / "valid.json")
    assert [b[0]["video_id"] for b in batches] == [v.id for v in gt.videos]
    for batch, video in zip(batches, gt.videos):
        assert batch[0]["frames"].shape[0] == video.length and min(batch[0]["size"]) == 48
    assert dm.val_gt["videos"] == gt.raw["videos"] and dm.val_ann_path == synthvis_root / "valid.json"
    assert dm.category_map == gt.category_map and dm.num_classes == 6


def test_shards_cover_every_video_once():
    for n in (0, 1, 5, 7):
        for world in (1, 2, 3):
            shards = [list(ShardSampler(n, world, rank)) for rank in range(world)]
            assert sorted(sum(shards, [])) == list(range(n))
            assert [len(ShardSampler(n, world, r)) for r in range(world)] == [len(s) for s in shards]
    with pytest.raises(ValueError, match="rank"):
        ShardSampler(3, 2, 2)


def test_ddp_ranks_split_validation_and_training(synthvis_root, synthvis_params):
    val_ids, train_ids = [], []
    for rank in range(2):
        dm = make_dm(synthvis_root, synthvis_params, batch_size=1)
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        val_ids.append([b[0]["video_id"] for b in dm.val_dataloader()])
        train_ids.append([b["targets"][0]["video_id"] for b in dm.train_dataloader()])
    assert sorted(val_ids[0] + val_ids[1]) == [1, 2, 3] and not set(val_ids[0]) & set(val_ids[1])
    assert sorted(train_ids[0] + train_ids[1]) == [1, 2, 3, 4, 5, 6]


def test_hash_split_and_video_limit(synthvis_root, synthvis_params):
    dm = make_dm(synthvis_root, synthvis_params, val_split="hash", val_fraction=0.5)
    dm.setup("fit")
    val = [v["id"] for v in dm.val_gt["videos"]]
    train = [v.id for v in dm.train_dataset.videos]
    assert val and train and sorted(val + train) == list(range(1, 7))
    assert {a["video_id"] for a in dm.val_gt["annotations"]} <= set(val)
    assert dm.val_ann_path is None
    assert [s["video_id"] for s in dm.val_dataset] == val
    limited = make_dm(synthvis_root, synthvis_params, val_max_videos=2)
    assert [v["id"] for v in limited.val_gt["videos"]] == [1, 2] and len(limited.val_dataset) == 2
    assert make_dm(synthvis_root, synthvis_params, val_split="none").val_dataloader() == []
    with pytest.raises(ValueError, match="val_split"):
        make_dm(synthvis_root, synthvis_params, val_split="valid")


def test_synthvis_is_generated_on_first_use(tmp_path):
    params = {"train_videos": 2, "valid_videos": 1, "max_length": 4, "sizes": [[32, 40]]}
    dm = make_dm(tmp_path / "fresh", params)
    assert not (tmp_path / "fresh").exists()
    assert dm.category_map.num_classes == 6
    assert (tmp_path / "fresh" / "train.json").is_file() and len(dm.train_dataset) == 2


def test_mismatched_categories_are_an_error(synthvis_root, tmp_path):
    raw = load_ytvis(synthvis_root / "valid.json").raw
    raw = {**raw, "categories": raw["categories"][:-1], "annotations": []}
    (tmp_path / "valid.json").write_text(json.dumps(raw))
    dm = YTVISDataModule(root=str(synthvis_root), val_ann=str(tmp_path / "valid.json"), num_frames=2)
    with pytest.raises(ValueError, match="categories"):
        dm.setup("fit")


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_aspect_grouped_batches_share_a_group_across_ranks(world, batch_size):
    group_ids = [i % 3 for i in range(23)]  # groups of 8, 8 and 7
    order = EpochShuffle(len(group_ids), seed=5)
    samplers = [AspectGroupedBatchSampler(order, group_ids, batch_size, world, r) for r in range(world)]
    per_rank = [list(s) for s in samplers]
    assert all(len(batches) == len(samplers[0]) for batches in per_rank)
    used = [i for batches in per_rank for batch in batches for i in batch]
    assert set(used) == set(range(23)) and len(used) - 23 < world  # only the last batch's wrap-around
    full = sum(c // (batch_size * world) for c in (8, 8, 7))
    for step, batches in enumerate(zip(*per_rank)):
        assert len({len(b) for b in batches}) == 1
        if step < full:  # a full bucket: one group on every rank, batch_size clips each
            assert len({group_ids[i] for b in batches for i in b}) == 1
            assert all(len(b) == batch_size for b in batches)


def test_aspect_grouped_order_follows_the_epoch():
    order = EpochShuffle(12, seed=0)
    sampler = AspectGroupedBatchSampler(order, [0] * 6 + [1] * 6, batch_size=3)
    first = list(sampler)
    assert list(sampler) == first
    order.set_epoch(1)
    assert list(sampler) != first and sorted(sum(list(sampler), [])) == list(range(12))
    with pytest.raises(ValueError, match="group ids"):
        AspectGroupedBatchSampler(order, [0] * 5, batch_size=3)


def test_grouped_loader_has_no_padding(synthvis_root, synthvis_params):
    dm = make_dm(
        synthvis_root,
        synthvis_params,
        group_by_aspect_ratio=True,
        clips_per_video=4,
        train_scales=[48],
        crop_size=None,
    )
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    loader = dm.train_dataloader()
    assert loader.batch_sampler.sampler is not None  # Lightning calls its set_epoch
    groups = dm.train_dataset.aspect_ratio_groups()
    assert len(set(groups)) == 2  # the fixture's 48x64 and 64x80 videos
    full = sum(groups.count(g) // 4 for g in set(groups))  # 2 clips a rank, 2 ranks
    batches = list(loader)
    assert len(batches) == len(loader) and full >= 1
    for batch in batches[:full]:
        assert not batch["pad_mask"].any() and batch["frames"].shape[0] == 2
