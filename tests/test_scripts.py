"""The benchmark scripts that time the training system run on the tiny synthvis (figures not asserted)."""

import importlib.util
import json
import sys
from pathlib import Path

from train_helpers import tiny_overrides

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_train_step_times_both_dtypes(synthvis_root, synthvis_params, capsys):
    bench = _load("bench_train_step")
    overrides = tiny_overrides(synthvis_root, synthvis_params)
    bench.main(["--batch-size", "2", "--batches", "1", "--steps", "2", "--warmup", "1", "--", *overrides])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("quickstart ") and "frames (2, 4, 3," in lines[0]
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["fp32", "bf16"]
    assert all("ms a step" in line for line in lines[1:])


def test_bench_train_step_mean_over_grouped_batches(synthvis_root, synthvis_params, capsys):
    """Grouped batches come in both of the tiny synthvis's sizes; ``--stat mean`` times all of them."""
    bench = _load("bench_train_step")
    overrides = [*tiny_overrides(synthvis_root, synthvis_params), "data.group_by_aspect_ratio=true"]
    argv = ["--batches", "3", "--steps", "3", "--warmup", "1", "--dtype", "fp32"]
    bench.main([*argv, "--stat", "mean", "--", *overrides])  # batch 2: 6 training videos in 3 batches
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].count("(2, 4, 3,") == 2, lines[0]  # 48x64 and 64x80 videos: 48x64 and 48x60 frames
    assert lines[1].startswith("  fp32:") and "ms a step" in lines[1]


def test_bench_infer_runs_the_quickstart_with_its_post_processing(capsys, monkeypatch):
    """Every slot predicts a mask in every frame (``--masks full``), so the preset's refinement, track NMS and
    classes per track all run; the figures themselves are not asserted."""
    bench = _load("bench_infer")
    for postprocess in ("default", "experiment"):
        argv = ["bench_infer", "--frames", "7", "--size", "48x64", "--threads", "1"]
        monkeypatch.setattr(sys, "argv", [*argv, "--postprocess", postprocess])
        bench.main()
        result = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert result["postprocess"] == postprocess and result["window"] == 2  # the preset's T (clip: len2)
        assert result["tracks"] == 5  # N = 5 slots, each a track over the whole video


def test_long_video_ap_uses_the_checkpoint_post_processing(tmp_path, monkeypatch, capsys):
    """By default both modes run with the checkpoint's own post-processing and predictor settings;
    ``--postprocess paper`` runs the defaults; ``--overlap`` / ``--match-iou`` override its stitching."""
    import torch

    from vistr_lit.convert_checkpoint import default_hparams, save_lightning_checkpoint
    from vistr_lit.lit_module import VisTRLitModule

    script = _load("long_video_ap")
    hparams = default_hparams()
    hparams["postprocess"]["mask_scoring"] = True
    hparams["predictor"].update(track_nms_iou=0.4, classes_per_track=3, match_iou=0.3)
    net = dict(
        num_frames=3, num_instances=2, backbone="resnet10", hidden_dim=48, nheads=4, enc_layers=1,
        dec_layers=1, dim_feedforward=32, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    module = VisTRLitModule(net=net, category_ids=[1], category_names=["a"], **hparams)
    save_lightning_checkpoint(module, tmp_path / "m.ckpt")
    ann = tmp_path / "valid.json"
    video = {"id": 1, "width": 8, "height": 8, "length": 5, "file_names": [f"v/{i}.jpg" for i in range(5)]}
    categories = [{"id": 1, "name": "a"}]
    ann.write_text(json.dumps({"videos": [video], "annotations": [], "categories": categories}))
    calls = []

    def fake_long_video_ap(model, data, videos, postprocess, **options):
        calls.append((postprocess, options))
        return {mode: {k: 0.0 for k in script.SHOWN} for mode in ("stitched", "first_window")} | {"videos": 0}

    monkeypatch.setattr(script, "long_video_ap", fake_long_video_ap)
    for extra in ([], ["--postprocess", "paper"], ["--overlap", "1", "--match-iou", "0.6"]):
        argv = ["long_video_ap", str(tmp_path / "m.ckpt"), "--ann", str(ann), *extra]
        monkeypatch.setattr(sys, "argv", argv)
        script.main()
    (checkpoint_pp, checkpoint_opts), (paper_pp, paper_opts), (_, overridden) = calls
    assert checkpoint_pp.mask_scoring and not paper_pp.mask_scoring
    assert checkpoint_opts["track_nms_iou"] == 0.4 and checkpoint_opts["classes_per_track"] == 3
    assert checkpoint_opts["match_iou"] == 0.3 and "first_window_only" not in checkpoint_opts
    assert paper_opts == {"category_ids": [1]}
    assert overridden["overlap"] == 1 and overridden["match_iou"] == 0.6
    assert overridden["track_nms_iou"] == 0.4
    assert "| stitched |" in capsys.readouterr().out


def test_bench_train_step_variant_times_a_lean_step_on_a_synthetic_clip(capsys):
    """One ``--variants`` row, run in this process as its subprocess would: the lean settings arrive."""
    bench = _load("bench_train_step")
    sizes = ["--frames", "2", "--height", "48", "--width", "64", "--num-classes", "3", "--steps", "1"]
    tiny = ["model/backbone=r10", "model/transformer=tiny", "model.net.backbone_width=16"]
    bench.main(["--experiment", "vistr_r50", *sizes, "--warmup", "0", "--variant", "lean", "--", *tiny])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["variant"] == "lean" and row["lean"]["mask_head_chunk"] == 1
    assert row["lean"]["checkpoint"] == ["backbone", "encoder", "mask_head"]
    assert row["lean"]["fold_frozen_bn"] is True
    assert row["peak_rss_mib"] >= row["rss_before_mib"] > 0 and row["forward_s"] > 0


def test_bench_train_step_has_every_lean_option_alone():
    """Each ``model.lean`` key has a row of its own, as the paper-size table shows them."""
    variants = _load("bench_train_step").LEAN_VARIANTS
    alone = {overrides[0].split("=")[0] for overrides, _ in variants.values() if len(overrides) == 1}
    assert {"model.lean.checkpoint", "model.lean.mask_head_chunk", "model.lean.fold_frozen_bn"} <= alone
    assert variants["fold"] == (["model.lean.fold_frozen_bn=true"], "fp32")


def test_bench_model_variant_runs_the_chunked_mask_head(capsys):
    bench = _load("bench_model")
    tiny = ["--backbone", "resnet10", "--hidden-dim", "48", "--nheads", "4", "--dim-feedforward", "32"]
    sizes = ["--frames", "2", "--instances", "3", "--height", "48", "--width", "64"]
    layers = ["--enc-layers", "1", "--dec-layers", "1", "--threads", "1"]
    bench.main([*tiny, *sizes, *layers, "--variant", "chunk-2", "--json"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["dtype"] == "chunk-2" and row["pred_masks"] == [1, 6, 12, 16]
    assert row["modules_s"]["mask_head"] > 0  # timed through frame_features and instance_features
