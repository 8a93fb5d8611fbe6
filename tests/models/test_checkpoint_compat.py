"""Checkpoints saved before the network's split (the dot-product head's parts on the network itself) still
load: through ``load_from_checkpoint`` (eval, infer) and ``model.init_from`` (fine-tuning)."""

import pickle
from pathlib import Path

import pytest
import torch
from vistr_cases import QUICKSTART

from vistr_lit.convert_checkpoint import default_hparams, initialize_from, save_lightning_checkpoint
from vistr_lit.lit_module import VisTRLitModule
from vistr_lit.models import build_vistr

# keys and shapes of the quickstart network's state dict at commit 7f0e06c, in order
LEGACY_KEYS = Path(__file__).parent / "reference" / "quickstart_state_dict_7f0e06c.txt"


def legacy_keys() -> list[tuple[str, list[int]]]:
    rows = [line.split(" ") for line in LEGACY_KEYS.read_text().splitlines()]
    return [(key, [int(d) for d in shape.strip("[]").split(",") if d]) for key, shape in rows]


def legacy_state_dict(model) -> dict:
    """``model``'s weights under the pre-split keys (same order and shapes, checked)."""
    keys, values = legacy_keys(), list(model.state_dict().values())
    assert len(keys) == len(values)
    assert [shape for _, shape in keys] == [list(v.shape) for v in values]
    return {key: value for (key, _), value in zip(keys, values)}


def test_the_legacy_layout_is_the_current_one_renamed():
    model = build_vistr(num_classes=3, **QUICKSTART)
    current = list(model.state_dict())
    renamed = [key for key, _ in legacy_keys() if key not in current]
    assert renamed and all(
        key.startswith(("mask_head.", "mask_embed.", "mask_coord_mlp.", "mask_classifier."))
        for key in renamed
    )
    assert all(key.startswith("mask_extension.") for key in set(current) - {k for k, _ in legacy_keys()})


@pytest.fixture
def legacy_checkpoint(tmp_path):
    """A quickstart Lightning checkpoint as the pre-split code wrote it (random weights), and its module."""
    torch.manual_seed(0)
    module = VisTRLitModule(
        net=dict(QUICKSTART), category_ids=[1, 2, 3], category_names=["a", "b", "c"], **default_hparams()
    )
    path = tmp_path / "quickstart.ckpt"
    save_lightning_checkpoint(module, path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"] = {
        **{k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("model.")},
        **{f"model.{k}": v for k, v in legacy_state_dict(module.model).items()},
    }
    torch.save(checkpoint, path)
    return path, module


def assert_same_weights(model, reference):
    expected = reference.state_dict()
    got = model.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_pre_split_checkpoint_loads_with_load_from_checkpoint(legacy_checkpoint):
    path, module = legacy_checkpoint
    loaded = VisTRLitModule.load_from_checkpoint(path, map_location="cpu")
    assert_same_weights(loaded.model, module.model)


def test_a_pre_split_checkpoint_initializes_a_model(legacy_checkpoint):
    path, module = legacy_checkpoint
    torch.manual_seed(1)
    fresh = VisTRLitModule(
        net=dict(QUICKSTART), category_ids=[1, 2, 3], category_names=["a", "b", "c"], **default_hparams()
    )
    initialize_from(fresh, path)
    assert_same_weights(fresh.model, module.model)


def test_a_pre_split_state_dict_that_does_not_fit_fails_clearly():
    model = build_vistr(num_classes=3, **QUICKSTART)
    legacy = legacy_state_dict(model)
    legacy["mask_embed.layers.0.bias"] = torch.zeros(7)
    with pytest.raises(RuntimeError, match=r"mask_extension\.mask_embed\.layers\.0\.bias.*\[7\]"):
        build_vistr(num_classes=3, **QUICKSTART).load_state_dict(legacy)


def test_a_network_with_the_upgrade_hook_pickles():
    """Spawned DDP ranks receive the network pickled."""
    model = build_vistr(num_classes=3, **QUICKSTART)
    copy = pickle.loads(pickle.dumps(model))
    copy.load_state_dict(legacy_state_dict(model))
