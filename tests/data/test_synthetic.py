"""synthvis: YouTube-VIS 2019 format, consistency of masks/boxes/areas, determinism, the task's properties."""

import hashlib
import itertools
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vistr_lit.data.check import check_dataset
from vistr_lit.data.layout import DataError
from vistr_lit.data.synthetic import main
from vistr_lit.data.synthvis import STAMP_FILE, SynthvisConfig, ensure_synthvis, generate_synthvis
from vistr_lit.data.synthvis_render import CATEGORIES, render_video
from vistr_lit.data.ytvis import load_ytvis

SMALL = {"train_videos": 4, "valid_videos": 2, "min_length": 3, "max_length": 8, "sizes": ((40, 48),)}


def tree_digest(root) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_format_and_consistency(synthvis_root):
    for split in ("train", "valid"):
        raw = json.loads((synthvis_root / f"{split}.json").read_text())
        assert set(raw) >= {"videos", "categories", "annotations"}
        report = check_dataset(synthvis_root / split / "JPEGImages", synthvis_root / f"{split}.json")
        assert report.ok, report.problems
        for video in raw["videos"]:
            assert video["file_names"][:2] == [
                f"{split}{video['id']:04d}/00000.jpg",
                f"{split}{video['id']:04d}/00005.jpg",
            ]
            assert video["length"] == len(video["file_names"])
        for ann in raw["annotations"]:
            assert ann["iscrowd"] == 0
            for seg, box, area in zip(ann["segmentations"], ann["bboxes"], ann["areas"]):
                assert (seg is None) == (box is None) == (area is None)
                if seg is None:
                    continue
                assert isinstance(seg["counts"], list)  # uncompressed RLE as in the 2019 files
                rle = mask_utils.frPyObjects(seg, *seg["size"])
                assert mask_utils.area(rle) == area > 0
                assert np.allclose(mask_utils.toBbox(rle), box)


def test_deterministic_for_a_seed(tmp_path):
    a = generate_synthvis(tmp_path / "a", SynthvisConfig(**SMALL, seed=3))
    b = generate_synthvis(tmp_path / "b", SynthvisConfig(**SMALL, seed=3))
    c = generate_synthvis(tmp_path / "c", SynthvisConfig(**SMALL, seed=4))
    assert tree_digest(a) == tree_digest(b) != tree_digest(c)


def test_parallel_generation_writes_the_same_files(tmp_path):
    """Videos rendered by two processes (the default for large splits) are the ones one process writes."""
    serial = generate_synthvis(tmp_path / "serial", SynthvisConfig(**SMALL), workers=1)
    parallel = generate_synthvis(tmp_path / "parallel", SynthvisConfig(**SMALL), workers=2)
    assert tree_digest(serial) == tree_digest(parallel)
    assert len(json.loads((parallel / "train.json").read_text())["annotations"]) > SMALL["train_videos"]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        generate_synthvis(tmp_path / "none", SynthvisConfig(**SMALL), workers=0)


def test_more_training_videos_leave_the_validation_split_unchanged(tmp_path):
    """Each video depends only on (seed, split, index): a larger training split (the quickstart's) adds
    training videos, keeps the first ones and scores against the very same validation split."""
    small = generate_synthvis(tmp_path / "small", SynthvisConfig(**SMALL))
    large = generate_synthvis(tmp_path / "large", SynthvisConfig(**(SMALL | {"train_videos": 7})))
    assert tree_digest(small / "valid") == tree_digest(large / "valid")
    assert (small / "valid.json").read_bytes() == (large / "valid.json").read_bytes()
    train_small, train_large = (json.loads((d / "train.json").read_text()) for d in (small, large))
    assert len(train_large["videos"]) == 7
    assert train_large["videos"][: len(train_small["videos"])] == train_small["videos"]


def test_task_properties_over_the_default_generator():
    """Across 40 default videos: all categories, null frames inside and at ends, occlusion, motion, scale."""
    cfg = SynthvisConfig()
    categories, lengths, sizes = set(), set(), set()
    null_frames = moving = scaling = overlapping = touching = same_class_pairs = 0
    for index in range(40):
        rng = np.random.default_rng([cfg.seed, 0, index])
        height, width = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
        length = int(rng.integers(cfg.min_length, cfg.max_length + 1))
        frames, tracks = render_video(rng, height, width, length, int(rng.integers(1, 5)))
        assert frames.shape == (length, height, width, 3)
        lengths.add(length)
        sizes.add((height, width))
        cats = [tr.category for tr in tracks]
        same_class_pairs += len(cats) != len(set(cats))
        categories.update(cats)
        for tr in tracks:
            present = tr.masks.any((1, 2))
            null_frames += int((~present).sum())
            shown = np.flatnonzero(present)
            first, last = tr.masks[shown[0]], tr.masks[shown[-1]]
            ys0, xs0 = np.nonzero(first)
            ys1, xs1 = np.nonzero(last)
            moving += np.hypot(xs1.mean() - xs0.mean(), ys1.mean() - ys0.mean()) > 3
            scaling += abs(np.log((last.sum() + 1) / (first.sum() + 1))) > 0.3
        union = sum(tr.masks.sum() for tr in tracks)
        overlapping += union > np.any([tr.masks for tr in tracks], axis=0).sum() if tracks else 0
        for i, j in itertools.combinations(range(len(tracks)), 2):  # an occluder touches what it hides
            grown = tracks[i].masks.copy()
            grown[:, 1:] |= tracks[i].masks[:, :-1]
            grown[:, :-1] |= tracks[i].masks[:, 1:]
            touching += bool((grown & tracks[j].masks).any())
    assert categories == set(range(len(CATEGORIES)))
    assert min(lengths) < 6 < 18 < max(lengths) and len(sizes) > 1
    assert null_frames > 0 and moving > 20 and scaling > 5 and same_class_pairs > 3
    # occlusion happens, resolved by z-order into disjoint visible parts
    assert touching > 3 and overlapping == 0


def test_cli_and_ensure(tmp_path, capsys):
    main(
        [
            "--out",
            str(tmp_path / "cli"),
            "--videos",
            "2",
            "--valid-videos",
            "1",
            "--sizes",
            "32x40",
            "--max-length",
            "4",
        ]
    )
    assert "2 train / 1 valid" in capsys.readouterr().out
    assert len(load_ytvis(tmp_path / "cli" / "train.json").videos) == 2
    assert load_ytvis(tmp_path / "cli" / "valid.json").has_annotations
    cli_args = ["--out", str(tmp_path / "cli"), "--videos", "2", "--valid-videos", "1", "--sizes", "32x40"]
    main([*cli_args, "--max-length", "4"])  # same dataset: nothing to do
    assert "already present" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="other parameters"):
        main(cli_args)
    (tmp_path / "junk" / "x").mkdir(parents=True)
    with pytest.raises(SystemExit, match="not empty"):
        main(["--out", str(tmp_path / "junk")])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bad"), "--min-length", "9", "--max-length", "3"])
    root = ensure_synthvis(tmp_path / "ens", **SMALL)
    assert root.stat().st_mode & 0o777 == 0o755
    stamp = (root / STAMP_FILE).stat().st_mtime_ns
    assert ensure_synthvis(tmp_path / "ens", **SMALL) == root  # present: not regenerated
    assert (root / STAMP_FILE).stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ens.tmp")]
    with pytest.raises(ValueError, match="other parameters"):
        ensure_synthvis(tmp_path / "ens", **{**SMALL, "seed": 9})
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    with pytest.raises(DataError, match="not a generated synthvis") as error:
        ensure_synthvis(tmp_path / "other", **SMALL)
    assert "delete" not in str(error.value)  # never advice to delete a folder that may hold the user's data
    assert (tmp_path / "other" / "stuff").is_dir()


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="min_length"):
        SynthvisConfig(min_length=5, max_length=2)
    with pytest.raises(ValueError, match="sizes"):
        SynthvisConfig(sizes=((4, 4),))
