"""``YTVISDataModule``: training clips and whole validation videos for YouTube-VIS, OVIS or synthvis.

The datamodule owns its samplers (run the Trainer with ``use_distributed_sampler=False``): training shuffles
with a ``DistributedSampler`` (Lightning calls its ``set_epoch``); validation splits the videos across ranks
with :class:`ShardSampler`, so every video is evaluated exactly once, with no padding duplicates.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from vistr_lit.data.clips import (
    ClipSampler,
    YTVISClipDataset,
    YTVISVideoDataset,
    collate_clips,
    collate_videos,
)
from vistr_lit.data.layout import DataError, annotation_file, find_frames, resolve
from vistr_lit.data.synthvis import ensure_synthvis
from vistr_lit.data.transforms import build_eval_transform, build_train_transform
from vistr_lit.data.ytvis import CategoryMap, YTVISData, hash_split, load_ytvis

log = logging.getLogger(__name__)
VAL_SPLITS = ("file", "hash", "none")
MIN_EPOCH_STEPS = 10  # fewer training steps an epoch get a warning naming data.clips_per_video


class EmptySplitError(DataError):
    """A split that a run needs (training, or validation for an evaluation) holds no videos."""


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + R, ...`` of ``num_samples``: the R shards are disjoint and cover everything."""

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1}")
        self.num_samples, self.num_replicas, self.rank = num_samples, num_replicas, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.num_replicas))


class EpochShuffle(Sampler[int]):
    """``0..num_samples-1`` in a random order drawn from ``seed + epoch``: the same order on every rank."""

    def __init__(self, num_samples: int, seed: int = 0):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class AspectGroupedBatchSampler(Sampler[list[int]]):
    """Training batches whose clips share an aspect-ratio group, the same group on every rank at each step.

    Clips of one aspect ratio resized to one scale have one size, so such a batch needs no padding (a
    mixed batch is padded to its largest clip: on synthvis at 112 px, 13 % of the pixels). ``sampler``
    gives the epoch's order, identical on all ranks (:class:`EpochShuffle`; Lightning calls its
    ``set_epoch``). Indices fill one bucket per group; a full bucket (``batch_size x num_replicas`` clips)
    is a global batch, and rank ``r`` takes its clips ``r, r + R, ...``. What is left in the buckets at the
    end of the epoch forms mixed global batches, wrapped around to a multiple of ``num_replicas`` as
    ``DistributedSampler`` does, so every clip is used once an epoch and every rank takes the same number
    of batches.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        group_ids: Sequence,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1}")
        if len(group_ids) != len(sampler):
            raise ValueError(f"{len(group_ids)} group ids for a sampler of {len(sampler)} indices")
        self.sampler, self.group_ids = sampler, list(group_ids)
        self.batch_size, self.num_replicas, self.rank = batch_size, num_replicas, rank

    def _global_batches(self) -> list[list[int]]:
        per_step = self.batch_size * self.num_replicas
        buckets: dict = {}
        batches = []
        for i in self.sampler:
            bucket = buckets.setdefault(self.group_ids[i], [])
            bucket.append(i)
            if len(bucket) == per_step:
                batches.append(bucket)
                buckets[self.group_ids[i]] = []
        rest = [i for bucket in buckets.values() for i in bucket]
        if rest:
            rest += [rest[k % len(rest)] for k in range(-len(rest) % self.num_replicas)]
            batches += [rest[k : k + per_step] for k in range(0, len(rest), per_step)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._global_batches():
            yield batch[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        per_step = self.batch_size * self.num_replicas
        counts = Counter(self.group_ids).values()
        full = sum(c // per_step for c in counts)
        rest = sum(c % per_step for c in counts)
        return full + -(-rest // per_step)


class YTVISDataModule(L.LightningDataModule):
    """Paths are relative to ``root`` unless absolute; ``train_frames``/``val_frames`` None: found under
    ``root`` (``data/layout.py``: ``JPEGImages``, ``train/JPEGImages``, ...).

    ``val_split``: ``file`` (``val_ann`` + ``val_frames``, e.g. synthvis ``valid.json``), ``hash`` (a
    stable-hash fraction ``val_fraction`` of ``train_ann``'s videos, for YouTube-VIS whose validation labels
    are private) or ``none``. ``seed`` seeds the training shuffle (per epoch through ``set_epoch``).
    ``synthvis``: generator parameters (``{}`` for the defaults) to create synthvis in ``root`` on first use;
    ``None`` for a real dataset. ``val_max_videos`` keeps only the first N validation videos.
    ``group_by_aspect_ratio``: training batches of one aspect ratio (:class:`AspectGroupedBatchSampler`).
    Transform keys are those of :func:`build_train_transform` / :func:`build_eval_transform`.
    """

    def __init__(
        self,
        root: str | None = "data/synthvis",
        train_ann: str = "train.json",
        train_frames: str | None = "train/JPEGImages",
        val_ann: str = "valid.json",
        val_frames: str | None = "valid/JPEGImages",
        val_split: str = "file",
        val_fraction: float = 0.1,
        split_salt: str = "vistr-lit",
        val_max_videos: int | None = None,
        num_frames: int = 36,
        max_stride: int = 1,
        fixed_stride: bool = False,
        short_video: str = "cycle",
        clips_per_video: int | None = 1,
        batch_size: int = 1,
        group_by_aspect_ratio: bool = False,
        val_batch_size: int = 1,
        num_workers: int = 2,
        train_scales: Sequence[int] = (300,),
        train_max_size: int | None = 540,
        crop_prescales: Sequence[int] | None = (400, 500, 600),
        crop_size: Sequence[int] | None = (384, 600),
        crop_prob: float = 1.0,
        hflip_prob: float = 0.5,
        photometric_prob: float = 0.5,
        vflip_prob: float = 0.0,
        eval_short_side: int | None = 300,
        eval_max_size: int | None = None,
        synthvis: dict | None = None,
        seed: int = 42,
    ):
        super().__init__()
        if val_split not in VAL_SPLITS:
            raise ValueError(f"val_split must be one of {VAL_SPLITS}, got {val_split!r}")
        if root is None:
            raise DataError("data.root is not set: name the dataset folder with data.root=DIR")
        self.save_hyperparameters()
        self.root = Path(root)
        self.val_split = val_split
        self.synthvis = dict(synthvis) if synthvis is not None else None
        self.sampler = ClipSampler(num_frames, max_stride, fixed_stride, short_video)
        self.train_transform = build_train_transform(
            scales=list(train_scales) if train_scales else [],
            max_size=train_max_size,
            crop_prescales=list(crop_prescales) if crop_prescales else None,
            crop_size=list(crop_size) if crop_size else None,
            crop_prob=crop_prob,
            hflip_prob=hflip_prob,
            photometric_prob=photometric_prob,
            vflip_prob=vflip_prob,
        )
        self.eval_transform = build_eval_transform(eval_short_side, eval_max_size)
        self._train_data: YTVISData | None = None
        self._val_data: YTVISData | None = None
        self._train_frames: Path | None = None
        self._val_frames: Path | None = None

    def _path(self, p: str) -> Path:
        return resolve(self.root, p)

    def prepare_data(self) -> None:
        if self.synthvis is not None:
            ensure_synthvis(self.root, **self.synthvis)

    def _load(self) -> None:
        if self._train_data is not None:
            return
        self.prepare_data()  # idempotent and atomic; covers use without a Trainer
        hp = self.hparams
        train = load_ytvis(annotation_file(self.root, hp.train_ann, "train_ann"))
        train_frames = find_frames(self.root, train, hp.train_frames, "train_frames")
        val, val_frames = None, None
        if self.val_split == "file":
            val = load_ytvis(annotation_file(self.root, hp.val_ann, "val_ann"))
            val_frames = find_frames(self.root, val, hp.val_frames, "val_frames")
            if val.category_map != train.category_map:
                raise ValueError(
                    f"{val.path}: categories {val.category_map} differ from "
                    f"{train.path}'s {train.category_map}"
                )
        elif self.val_split == "hash":
            train_ids, val_ids = hash_split([v.id for v in train.videos], hp.val_fraction, hp.split_salt)
            train, val, val_frames = train.subset(train_ids), train.subset(val_ids), train_frames
        if val is not None and hp.val_max_videos is not None:
            val = val.subset([v.id for v in val.videos[: hp.val_max_videos]])
        self._train_data, self._val_data = train, val
        self._train_frames, self._val_frames = train_frames, val_frames

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def check_train(self) -> None:
        """Raises :class:`EmptySplitError` when the training split holds no videos."""
        self._load()
        if not self._train_data.videos:
            raise EmptySplitError(
                f"the training split is empty: {self._split_text()} leaves no training video; lower "
                "data.val_fraction or give the validation videos their own file (data.val_split=file)"
            )

    def check_validation(self) -> None:
        """Raises :class:`EmptySplitError` when there is no validation video to evaluate."""
        self._load()
        if self._val_data is not None and self._val_data.videos:
            return
        how = (
            "choose validation videos with data.val_fraction=F (a stable-hash fraction of the training "
            "videos, data.val_split=hash) or data.val_split=file data.val_ann=FILE (docs/custom-data.md)"
        )
        if self.val_split == "none":
            raise EmptySplitError(
                f"nothing to evaluate: data.val_split=none; {how}, or run with final_eval=false"
            )
        raise EmptySplitError(f"the validation split is empty: {self._split_text()}; {how}")

    def _split_text(self) -> str:
        hp = self.hparams
        if self.val_split == "hash":
            val = len(self._val_data.videos)
            total = len(self._train_data.videos) + val
            return (
                f"data.val_split=hash with data.val_fraction={hp.val_fraction} puts {val} of the {total} "
                f"videos of {self._train_data.path} in validation"
            )
        if self.val_split == "file":
            return f"data.val_split=file: {self._path(hp.val_ann)} holds no videos"
        return f"data.val_split=none: {self._train_data.path} holds {len(self._train_data.videos)} videos"

    @property
    def category_map(self) -> CategoryMap:
        """Category ids and names <-> contiguous class indices (loads the annotations if needed)."""
        self._load()
        return self._train_data.category_map

    @property
    def num_classes(self) -> int:
        return self.category_map.num_classes

    @property
    def val_gt(self) -> dict | None:
        """Ground-truth json of exactly the validation videos (for the evaluator); None if no validation."""
        self._load()
        return self._val_data.raw if self._val_data is not None else None

    @property
    def val_ann_path(self) -> Path | None:
        """The validation json file if it holds exactly the validation videos, else None (use ``val_gt``)."""
        self._load()
        whole_file = self.val_split == "file" and self.hparams.val_max_videos is None
        return self._path(self.hparams.val_ann) if whole_file else None

    @property
    def train_dataset(self) -> YTVISClipDataset:
        self._load()
        return YTVISClipDataset(
            self._train_data,
            self._train_frames,
            self.sampler,
            self.train_transform,
            clips_per_video=self.hparams.clips_per_video,
        )

    @property
    def val_dataset(self) -> YTVISVideoDataset | None:
        self._load()
        if self._val_data is None:
            return None
        return YTVISVideoDataset(self._val_data, self._val_frames, self.eval_transform)

    def _world(self) -> tuple[int, int]:
        """(world size, global rank) of the attached Trainer, (1, 0) without one."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _loader(self, dataset, collate_fn, **batching) -> DataLoader:
        """``batching``: ``batch_size`` and ``sampler``, or ``batch_sampler``."""
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            num_workers=workers,
            collate_fn=collate_fn,
            persistent_workers=workers > 0,
            pin_memory=False,
            **batching,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
        world, rank = self._world()
        if self.hparams.group_by_aspect_ratio:
            batch_sampler = AspectGroupedBatchSampler(
                EpochShuffle(len(dataset), self.hparams.seed),
                dataset.aspect_ratio_groups(),
                self.hparams.batch_size,
                num_replicas=world,
                rank=rank,
            )
            loader = self._loader(dataset, collate_clips, batch_sampler=batch_sampler)
        else:
            sampler = DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.hparams.seed
            )
            loader = self._loader(dataset, collate_clips, batch_size=self.hparams.batch_size, sampler=sampler)
        if len(loader) < MIN_EPOCH_STEPS:
            hp = self.hparams
            log.warning(
                "an epoch is %d training step(s): %d videos x data.clips_per_video=%s in batches of "
                "data.batch_size=%d on %d process(es); raise data.clips_per_video (clips drawn per video and "
                "epoch) for more steps an epoch (docs/custom-data.md)",
                len(loader),
                len(dataset.videos),
                hp.clips_per_video,
                hp.batch_size,
                world,
            )
        return loader

    def val_dataloader(self) -> DataLoader | list:
        dataset = self.val_dataset
        if dataset is None:
            return []
        world, rank = self._world()
        return self._loader(
            dataset,
            collate_videos,
            batch_size=self.hparams.val_batch_size,
            sampler=ShardSampler(len(dataset), world, rank),
        )
