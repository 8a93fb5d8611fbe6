"""Import of the authors' checkpoints, on random state dicts with the released R50 keys and shapes."""

import argparse
from pathlib import Path

import pytest
import torch

from vistr_lit.models import (
    CheckpointError,
    build_vistr,
    convert_vistr_state_dict,
    init_from_detr,
    load_checkpoint_file,
    load_vistr_checkpoint,
)
from vistr_lit.models.checkpoint_import import (
    infer_build_kwargs,
    random_reference_state_dict,
    rename_author_keys,
)

KEY_LIST = Path(__file__).parent / "reference" / "vistr_r50_state_dict.txt"
R50_KWARGS = {
    "num_classes": 40,
    "num_frames": 36,
    "num_instances": 10,
    "backbone": "resnet50",
    "hidden_dim": 384,
    "nheads": 8,
    "enc_layers": 6,
    "dec_layers": 6,
    "dim_feedforward": 2048,
    "mask_fusion": "attention",
    "temporal_fusion": "conv3d",
}
# Same state-dict shapes as the released model (360 queries), 18 times fewer frames to run.
R50_FAST = {**R50_KWARGS, "num_frames": 2, "num_instances": 180}
NEW_IN_VISTR = ("mask_head.conv_offset.", "mask_head.dcn.", "insmask_head.")


@pytest.fixture(scope="module")
def reference_sd():
    return random_reference_state_dict(KEY_LIST, seed=0)


@pytest.fixture(scope="module")
def clip():
    return torch.randn(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_reference_key_list_is_complete(reference_sd):
    assert len(reference_sd) == 503
    assert reference_sd["vistr.class_embed.weight"].shape == (42, 384)


def test_conversion_infers_the_r50_architecture(reference_sd):
    ours, kwargs = convert_vistr_state_dict(reference_sd)
    assert kwargs == R50_KWARGS
    assert not any(k.startswith("vistr.") for k in ours)
    assert ours["class_embed.weight"].shape == (41, 384)


def test_load_forward_save_reload_identical(reference_sd, clip, tmp_path):
    path = tmp_path / "vistr_r50.pth"
    args = argparse.Namespace(backbone="resnet50", lr=1e-4, masks=True)
    torch.save({"model": reference_sd, "args": args, "epoch": 17}, path)
    model = build_vistr(**R50_FAST).eval()
    report = load_vistr_checkpoint(model, path)
    assert len(report.loaded) == 503
    with torch.no_grad():
        first = model(clip)
    torch.save(model.state_dict(), tmp_path / "ours.pth")
    reloaded = build_vistr(**R50_FAST).eval()
    load_vistr_checkpoint(reloaded, tmp_path / "ours.pth")
    with torch.no_grad():
        second = reloaded(clip)
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        assert torch.equal(first[key], second[key]), key


def _tiny_model_in_author_naming(kwargs: dict) -> tuple[torch.nn.Module, dict]:
    """A small model and its state dict in the authors' layout (prefixes, unused logit 0 in front)."""
    torch.manual_seed(0)
    model = build_vistr(**kwargs).eval()
    authors = {}
    for key, value in model.state_dict().items():
        if key.startswith(("class_embed.", "bbox_embed.", "query_embed.", "input_proj.", "transformer.")):
            key = "vistr." + key
        authors[key.replace("backbone.body.", "vistr.backbone.0.body.")] = value
    for suffix in ("weight", "bias"):
        head = authors[f"vistr.class_embed.{suffix}"]
        authors[f"vistr.class_embed.{suffix}"] = torch.cat([torch.full_like(head[:1], 7.0), head])
    return model, authors


TINY_KWARGS = dict(num_classes=3, num_frames=2, num_instances=2, backbone="resnet18", hidden_dim=48, nheads=4)
TINY_KWARGS |= dict(
    enc_layers=1, dec_layers=2, dim_feedforward=32, mask_fusion="attention", temporal_fusion="none"
)


def test_converted_classes_predict_the_same_categories():
    """Our logit k is the authors' logit for category id k + 1; our no-object is their last logit."""
    _, authors = _tiny_model_in_author_naming(TINY_KWARGS)
    authors_layout = build_vistr(**{**TINY_KWARGS, "num_classes": 4}).eval()  # 1 unused + 3 ids + no-object
    authors_layout.load_state_dict(rename_author_keys(authors))
    converted = build_vistr(**TINY_KWARGS).eval()
    load_vistr_checkpoint(converted, authors)
    subset = build_vistr(**{**TINY_KWARGS, "num_classes": 2}).eval()
    load_vistr_checkpoint(subset, authors, category_ids=[3, 1])
    frames = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        theirs = authors_layout(frames)["pred_logits"]
        torch.testing.assert_close(converted(frames)["pred_logits"], theirs[..., 1:])
        torch.testing.assert_close(subset(frames)["pred_logits"], theirs[..., [3, 1, 4]])


def test_class_count_mismatch_needs_explicit_ids(reference_sd):
    model = build_vistr(**{**R50_KWARGS, "num_classes": 3})
    with pytest.raises(CheckpointError, match="the file has 40 categories, the model 3"):
        load_vistr_checkpoint(model, reference_sd)
    with pytest.raises(CheckpointError, match="category ids must be distinct in 1..40"):
        convert_vistr_state_dict(reference_sd, category_ids=[0, 1])


def test_strict_errors_list_missing_unexpected_and_misshaped(reference_sd):
    broken = dict(reference_sd)
    del broken["vistr.transformer.decoder.norm.bias"]
    broken["vistr.extra_head.weight"] = torch.zeros(3)
    broken["mask_head.adapter1.bias"] = torch.zeros(7)
    model = build_vistr(**R50_KWARGS)
    with pytest.raises(CheckpointError) as err:
        load_vistr_checkpoint(model, broken)
    message = str(err.value)
    assert "1 missing: transformer.decoder.norm.bias" in message
    assert "1 unexpected: extra_head.weight" in message
    assert "mask_head.adapter1.bias: file [7] vs model [192]" in message


def test_tiny_model_roundtrip_through_author_naming():
    """Export a small model in the authors' layout, re-import it: same architecture and same outputs."""
    model, authors = _tiny_model_in_author_naming(TINY_KWARGS)
    _, inferred = convert_vistr_state_dict(authors, num_instances=2)
    assert inferred == TINY_KWARGS
    reloaded = build_vistr(**inferred).eval()
    load_vistr_checkpoint(reloaded, authors)
    frames = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(frames)["pred_logits"], model(frames)["pred_logits"])


def test_extra_query_groups_stay_fresh_and_other_heads_are_refused():
    """A published file loads into a Group DETR model (its extra groups keep their initialization); into a
    dot-product model it is refused with the mask-head keys named."""
    model, authors = _tiny_model_in_author_naming(TINY_KWARGS)
    grouped = build_vistr(**TINY_KWARGS, query_groups=3).eval()
    fresh = grouped.group_query_embed.weight.detach().clone()
    report = load_vistr_checkpoint(grouped, authors)
    assert report.initialized == ["group_query_embed.weight"]
    assert torch.equal(grouped.group_query_embed.weight, fresh)
    frames = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grouped(frames)["pred_logits"], model(frames)["pred_logits"])
    dot = build_vistr(**{**TINY_KWARGS, "mask_fusion": "dot_product"})
    with pytest.raises(CheckpointError, match=r"unexpected: .*bbox_attention.*missing|missing: .*mask_embed"):
        load_vistr_checkpoint(dot, authors)


def test_init_from_detr_loads_all_but_the_new_and_reset_parts(reference_sd):
    detr = {
        k.replace("vistr.", "detr."): v for k, v in reference_sd.items() if not k.startswith(NEW_IN_VISTR)
    }
    detr["detr.class_embed.weight"], detr["detr.class_embed.bias"] = torch.randn(92, 384), torch.randn(92)
    detr["detr.query_embed.weight"] = torch.randn(100, 384)
    detr["mask_head.lay5.weight"], detr["mask_head.out_lay.weight"] = (
        torch.randn(24, 48, 3, 3),
        torch.randn(1, 24, 3, 3),
    )
    model = build_vistr(**{**R50_KWARGS, "num_frames": 4})
    query_before = model.query_embed.weight.detach().clone()
    report = init_from_detr(model, {"model": detr})
    assert torch.equal(model.query_embed.weight, query_before)
    assert torch.equal(model.input_proj.weight, detr["detr.input_proj.weight"])
    assert torch.equal(model.mask_head.gn5.weight, detr["mask_head.gn5.weight"])
    assert all(k.startswith(NEW_IN_VISTR + ("class_embed.", "query_embed.")) for k in report.initialized)
    assert "mask_head.dcn.weight" in report.initialized and "insmask_head.0.weight" in report.initialized
    assert set(report.ignored) >= {"mask_head.lay5.weight", "class_embed.weight", "query_embed.weight"}
    del detr["detr.transformer.encoder.layers.0.linear1.bias"]
    with pytest.raises(CheckpointError, match="missing: transformer.encoder.layers.0.linear1.bias"):
        init_from_detr(model, detr)


def test_unsafe_or_malformed_files_are_refused(tmp_path):
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Path("/tmp")}, unsafe)  # a non-allow-listed global
    with pytest.raises(CheckpointError, match=r"unsafe\.pth: cannot be loaded safely"):
        load_checkpoint_file(unsafe)
    not_weights = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(CheckpointError, match=r"list\.pth: expected a state dict"):
        load_checkpoint_file(not_weights)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint_file(tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="not an authors' VisTR/DETR file"):
        convert_vistr_state_dict({"backbone.body.conv1.weight": torch.zeros(1)})


def test_inferred_options_beyond_the_original_appear_only_when_needed(reference_sd):
    ours, kwargs = convert_vistr_state_dict(reference_sd)
    assert "mask_deformable" not in kwargs and "backbone_norm" not in kwargs
    plain = {k: v for k, v in ours.items() if not k.startswith("mask_head.conv_offset.")}
    plain["backbone.body.bn1.num_batches_tracked"] = torch.tensor(0)
    inferred = infer_build_kwargs(plain)
    assert inferred["mask_deformable"] is False and inferred["backbone_norm"] == "batch"
