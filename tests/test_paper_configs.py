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
