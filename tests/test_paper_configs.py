"""The paper's options as configs: the authors' matching cost and the paper-shaped CPU ablation preset."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vistr_lit.models.matcher import HungarianMatcher

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "src" / "vistr_lit" / "conf")
MATCHER_FIELDS = ("mode", "cost_class", "cost_bbox", "cost_giou")
MATCHER_FIELDS += ("box_cost", "bbox_reduction", "absent_frames")


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def matcher_of(cfg) -> HungarianMatcher:
    return HungarianMatcher(**OmegaConf.to_container(cfg.model.matcher))


@pytest.mark.parametrize("mode", ["sequence", "per_frame"])
def test_matcher_original_is_the_authors_cost(mode):
    row = "ablate_perframe_match" if mode == "per_frame" else "vistr_r50"
    overrides = [f"+experiment={row}", "model/matcher=original"]
    ours, theirs = matcher_of(compose_train(overrides)), HungarianMatcher.original_vistr(mode=mode)
    assert [getattr(ours, f) for f in MATCHER_FIELDS] == [getattr(theirs, f) for f in MATCHER_FIELDS]
    paper = matcher_of(compose_train(["+experiment=vistr_r50"]))
    assert (paper.box_cost, paper.bbox_reduction, paper.absent_frames) == ("giou", "sum", "ignore")


# ablation -> (dotted key, the value it takes under preset=paper_small)
PAPER_SMALL_ABLATIONS = {
    "ablate_clip18": ("clip.len", 4),
    "ablate_enc3": ("model.net.enc_layers", 3),
    "ablate_mask_concat": ("model.net.mask_fusion", "concat"),
    "ablate_perframe_match": ("model.matcher.mode", "per_frame"),
}


def value(cfg, dotted: str):
    return OmegaConf.select(cfg, dotted)


def test_paper_small_keeps_every_ablated_choice_of_the_paper():
    cfg = compose_train(["+experiment=ablate_baseline", "preset=paper_small"])
    net = cfg.model.net
    assert (net.mask_fusion, net.temporal_fusion, cfg.model.matcher.mode) == (
        "attention",
        "conv3d",
        "sequence",
    )
    assert net.enc_layers == 6 and cfg.clip.len == net.num_frames == 8
    assert net.attention_map_scale == "cells"  # the paper's head, its fresh maps started at a usable scale
    assert net.backbone_norm == "batch" and net.pretrained_backbone is None  # from scratch, BN trained
    assert cfg.trainer.max_time is None and cfg.trainer.max_epochs > 0  # bounded by epochs, not the clock


@pytest.mark.parametrize("name", sorted(PAPER_SMALL_ABLATIONS))
def test_paper_small_composes_with_each_ablation(name):
    key, expected = PAPER_SMALL_ABLATIONS[name]
    base = compose_train(["+experiment=ablate_baseline", "preset=paper_small"])
    ablated = compose_train([f"+experiment={name}", "preset=paper_small"])
    assert value(ablated, key) == expected != value(base, key)
    assert ablated.model.net.num_frames == ablated.clip.len
    others = {k: v for k, v in PAPER_SMALL_ABLATIONS.items() if k != name}
    for other_key, _ in others.values():  # nothing else ablated
        assert value(ablated, other_key) == value(base, other_key)
    assert ablated.model.net.hidden_dim == base.model.net.hidden_dim == 96


def test_the_clip_ablation_is_18_at_paper_size():
    assert compose_train(["+experiment=ablate_clip18"]).model.net.num_frames == 18


def test_paper_small_starts_from_its_detector_start_which_fits_it():
    from vistr_lit.convert_checkpoint import DETECTOR_PARTS
    from vistr_lit.models import build_vistr

    small_cfg = compose_train(["+experiment=ablate_baseline", "preset=paper_small"])
    assert small_cfg.model.init_scope == "detector"
    init_from = OmegaConf.to_container(small_cfg.model)["init_from"]  # unresolved: paths need Hydra's runtime
    assert init_from == "${paths.log_dir}/starts/paper_small/checkpoints/last.ckpt"
    states = []
    for cfg in (compose_train(["+experiment=paper_small_start"]), small_cfg):
        net = OmegaConf.to_container(cfg.model.net, resolve=True)
        net.pop("pretrained_backbone", None)
        states.append(build_vistr(num_classes=3, **net).state_dict())
    start, small = states
    detector = [k for k in small if k.startswith(DETECTOR_PARTS)]
    assert any(k.startswith("transformer.encoder.layers.5.") for k in detector)
    assert [k for k in detector if k not in start or start[k].shape != small[k].shape] == []
