"""Data: the YouTube-VIS reader, clip datasets and transforms, the DataModule and the synthvis generator."""

from vistr_lit.data.clips import (
    ClipSampler,
    YTVISClipDataset,
    YTVISVideoDataset,
    clip_target,
    collate_clips,
    collate_videos,
)
from vistr_lit.data.datamodule import ShardSampler, YTVISDataModule
from vistr_lit.data.synthvis import SynthvisConfig, ensure_synthvis, generate_synthvis
from vistr_lit.data.transforms import build_eval_transform, build_train_transform
from vistr_lit.data.ytvis import (
    AnnotationError,
    CategoryMap,
    YTVISData,
    decode_segmentation,
    hash_split,
    load_ytvis,
)

__all__ = [
    "AnnotationError",
    "CategoryMap",
    "ClipSampler",
    "ShardSampler",
    "SynthvisConfig",
    "YTVISClipDataset",
    "YTVISData",
    "YTVISDataModule",
    "YTVISVideoDataset",
    "build_eval_transform",
    "build_train_transform",
    "clip_target",
    "collate_clips",
    "collate_videos",
    "decode_segmentation",
    "ensure_synthvis",
    "generate_synthvis",
    "hash_split",
    "load_ytvis",
]
