"""build_vistr: keywords reach their constructor by name, each default lives in that constructor, and the
configs that restate the paper's values (so that a checkpoint records them) agree with those defaults."""

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vistr_lit.models import Backbone, Transformer, VisTR, build_vistr
from vistr_lit.models.build import (
    ATTENTION_MAPS,
    BACKBONE_KEYWORDS,
    NETWORK_KEYWORDS,
    PAPER_MASK_KEYWORDS,
    TRANSFORMER_KEYWORDS,
)
from vistr_lit.models.extensions import DotProductMaskHead

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "src" / "vistr_lit" / "conf")
# num_frames: from clip.len, no constructor default; pretrained_backbone: the paper rows' start (train.py
# loads the weights before building), while a constructor never downloads by default
BOOKKEEPING_KEYS = {"num_frames", "pretrained_backbone"}


def defaults(cls) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def constructor_default(key: str, mask_head=VisTR):
    """The default of build_vistr's keyword ``key``, read from the constructor it reaches."""
    if key in BACKBONE_KEYWORDS:
        return defaults(Backbone)[BACKBONE_KEYWORDS[key]]
    if key in TRANSFORMER_KEYWORDS:
        return defaults(Transformer)[TRANSFORMER_KEYWORDS[key]]
    if key == "attention_map_scale" and mask_head is VisTR:  # the name of VisTR's default maps
        (name,) = [n for n, cls in ATTENTION_MAPS.items() if cls is defaults(VisTR)["attention_map"]]
        return name
    if key in (*NETWORK_KEYWORDS, "num_instances") or (mask_head is VisTR and key in PAPER_MASK_KEYWORDS):
        return defaults(VisTR)[key]
    return defaults(mask_head)[key]


def net_config(overrides=()) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return OmegaConf.to_container(cfg.model.net, resolve=True)


def as_plain(value):
    return list(value) if isinstance(value, tuple) else value


def test_the_paper_config_restates_the_constructor_defaults():
    net = net_config()
    assert set(net) - BOOKKEEPING_KEYS  # not vacuous
    for key, value in net.items():
        if key not in BOOKKEEPING_KEYS:
            assert value == as_plain(constructor_default(key)), key


def test_the_dot_product_options_in_the_config_are_the_heads_defaults():
    net = net_config(["model/mask_head=dot_product"])
    checked = [key for key in net if key in defaults(DotProductMaskHead)]
    assert "mask_coords" in checked and "aux_masks" in checked
    for key in checked:
        assert net[key] == constructor_default(key, DotProductMaskHead), key


def test_build_vistr_has_no_defaults_of_its_own():
    parameters = inspect.signature(build_vistr).parameters
    assert list(parameters) == ["num_classes", "num_frames", "num_instances", "options"]
    assert parameters["num_instances"].default == defaults(VisTR)["num_instances"]  # one constant
    model = build_vistr(num_classes=3, num_frames=2, backbone="resnet10", hidden_dim=48, nheads=4)
    assert model.num_instances == defaults(VisTR)["num_instances"]
    assert len(model.transformer.decoder.layers) == defaults(Transformer)["num_decoder_layers"]
    assert model.bbox_attention is not None  # the paper's head by default


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"hiden_dim": 48}, TypeError, "unexpected keyword argument 'hiden_dim'"),
        ({"mask_fusion": "dot_product", "mask_deformable": False}, ValueError, "options of the paper's"),
        ({"mask_fusion": "dot_product", "mask_coord": True}, TypeError, "mask_coord"),
    ],
)
def test_unknown_or_misplaced_keywords_fail(kwargs, error, message):
    with pytest.raises(error, match=message):
        build_vistr(3, 2, backbone="resnet10", hidden_dim=48, nheads=4, **kwargs)
