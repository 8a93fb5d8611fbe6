"""Authors' checkpoint → Lightning checkpoint → load_from_checkpoint gives the authors' network exactly."""

import json
from pathlib import Path

import pytest
import torch
import torchvision

from vistr_lit.convert_checkpoint import initialize_from, main, save_lightning_checkpoint
from vistr_lit.lit_module import VisTRLitModule
from vistr_lit.models import build_vistr
from vistr_lit.models.checkpoint_import import (
    CheckpointError,
    load_vistr_checkpoint,
    random_reference_state_dict,
    use_authors_class_head,
)

KEY_LIST = Path(__file__).parent / "models" / "reference" / "vistr_r50_state_dict.txt"
YTVIS_CLASSES = 40  # the released models: 42 logits = index 0 unused + ids 1..40 + no-object


@pytest.fixture(scope="module")
def authors_file(tmp_path_factory) -> Path:
    """A reference-shaped R50 VisTR file as main.py saves it (random weights)."""
    path = tmp_path_factory.mktemp("authors") / "vistr_r50.pth"
    torch.save({"model": random_reference_state_dict(KEY_LIST, seed=0), "epoch": 17}, path)
    return path


def test_converted_checkpoint_reproduces_the_authors_network(authors_file, tmp_path, capsys):
    out = tmp_path / "vistr_r50.ckpt"
    assert main([str(authors_file), str(out)]) == 0
    assert "T=36, N=10, K=40" in capsys.readouterr().out

    module = VisTRLitModule.load_from_checkpoint(out, map_location="cpu").eval()
    assert module.hparams.category_ids == list(range(1, YTVIS_CLASSES + 1))
    reference = build_vistr(num_classes=YTVIS_CLASSES, num_frames=36, backbone="resnet50").eval()
    use_authors_class_head(reference, num_unused=1)  # the unused logit 0 kept (the original's softmax)
    load_vistr_checkpoint(reference, authors_file)

    frames = torch.randn(1, 36, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference(frames, None), module.model(frames, None)
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_convert_keeps_the_categories_of_an_annotation_file(authors_file, tmp_path, synthvis_root):
    out = tmp_path / "sub.ckpt"
    assert main([str(authors_file), str(out), "--ann", str(synthvis_root / "train.json")]) == 0
    categories = json.loads((synthvis_root / "train.json").read_text())["categories"]
    hparams = torch.load(out, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["category_ids"] == sorted(c["id"] for c in categories)
    assert hparams["category_names"] == [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    state = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    # every file row is kept: the kept categories first, the 36 others in the normalization only
    assert state["model.class_embed.weight"].shape[0] == 42
    assert hparams["net"]["unused_class_logits"] == 42 - len(categories) - 1
    authors = torch.load(authors_file, map_location="cpu", weights_only=True)["model"][
        "vistr.class_embed.weight"
    ]
    ids = hparams["category_ids"]
    assert torch.equal(state["model.class_embed.weight"][: len(ids)], authors[ids])


def test_convert_reports_a_broken_file(tmp_path, capsys):
    sd = random_reference_state_dict(KEY_LIST, seed=0)
    del sd["vistr.query_embed.weight"]
    bad = tmp_path / "bad.pth"
    torch.save({"model": sd}, bad)
    assert main([str(bad), str(tmp_path / "out.ckpt")]) == 1
    assert "query_embed" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()


def _tiny_module(backbone: str = "resnet18", categories: int = 2, **net_overrides) -> VisTRLitModule:
    from vistr_lit.convert_checkpoint import default_hparams

    net = dict(
        num_frames=2,
        num_instances=2,
        backbone=backbone,
        hidden_dim=48,
        nheads=4,
        enc_layers=1,
        dec_layers=1,
        dim_feedforward=32,
    )
    net.update(net_overrides)
    ids = list(range(1, categories + 1))
    names = [str(i) for i in ids]
    return VisTRLitModule(net=net, category_ids=ids, category_names=names, **default_hparams())


def test_init_from_torchvision_imagenet_resnet(tmp_path):
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    module = _tiny_module()
    report = initialize_from(module, path)
    assert report.ignored == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(
        module.model.backbone.body.layer3[0].conv1.weight, resnet.layer3[0].conv1.weight
    )
    torch.testing.assert_close(module.model.backbone.body.bn1.running_var, resnet.bn1.running_var)


def test_init_from_a_resnet_of_another_depth_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit backbone resnet18"):
        initialize_from(_tiny_module(), path)


def test_init_from_a_lightning_checkpoint(tmp_path):
    source = _tiny_module()
    path = tmp_path / "source.ckpt"
    save_lightning_checkpoint(source, path)
    target = _tiny_module()
    initialize_from(target, path)
    for (name, expected), got in zip(source.model.state_dict().items(), target.model.state_dict().values()):
        assert torch.equal(expected, got), name


def test_a_detector_start_takes_backbone_transformer_and_box_head_only(tmp_path):
    """paper_small's start: trained with the dot-product head, T = 2 and 3 classes; loaded into the paper's
    head at T = 4 with 2 classes (model.init_scope=detector), as main.py loads a DETR."""
    source = _tiny_module(categories=3, mask_fusion="dot_product")
    path = tmp_path / "start.ckpt"
    save_lightning_checkpoint(source, path)
    target = _tiny_module(num_frames=4)
    fresh = {k: v.clone() for k, v in target.model.state_dict().items()}
    report = initialize_from(target, path, scope="detector")

    loaded = target.model.state_dict()
    for key in report.loaded:
        assert torch.equal(loaded[key], source.model.state_dict()[key]), key
    parts = ("backbone.", "input_proj.", "transformer.", "bbox_embed.")
    detector = {k for k in loaded if k.startswith(parts)}
    assert set(report.loaded) == detector
    assert {"class_embed.weight", "query_embed.weight"} <= set(report.initialized)
    assert any(k.startswith("mask_head.") for k in report.initialized)
    assert any(k.startswith("mask_extension.") for k in report.ignored)  # the start's own head
    for key in report.initialized:
        assert torch.equal(loaded[key], fresh[key]), key
    summary = report.summary()  # what train.py logs
    loaded_parts = "(backbone, bbox_embed, input_proj, transformer); "
    assert summary.startswith(f"{len(report.loaded)} loaded {loaded_parts}")
    assert "class_embed" in summary and "mask_extension" in summary


def test_a_detector_start_into_fewer_encoder_layers_names_the_layers_left_out(tmp_path):
    """ablate_enc3 from a 6-layer start: the first layers load, the others are reported as ignored."""
    path = tmp_path / "start.ckpt"
    source = _tiny_module(enc_layers=2)
    save_lightning_checkpoint(source, path)
    target = _tiny_module(enc_layers=1)
    report = initialize_from(target, path, scope="detector")
    layer_1 = {k for k in source.model.state_dict() if k.startswith("transformer.encoder.layers.1.")}
    assert layer_1 and layer_1 <= set(report.ignored) and not layer_1 & set(report.loaded)
    assert set(report.loaded) <= set(target.model.state_dict())
    state = target.model.state_dict()
    for key in (k for k in report.loaded if k.startswith("transformer.encoder.layers.0.")):
        assert torch.equal(state[key], source.model.state_dict()[key]), key


def test_a_detector_start_of_another_width_names_the_mis_shaped_keys(tmp_path):
    path = tmp_path / "start.ckpt"
    save_lightning_checkpoint(_tiny_module(hidden_dim=96), path)
    with pytest.raises(CheckpointError, match="detector start.*transformer.encoder.layers.0.*\\[96"):
        initialize_from(_tiny_module(), path, scope="detector")


def test_a_detector_scope_needs_a_lightning_checkpoint(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="init_scope=detector takes a Lightning checkpoint"):
        initialize_from(_tiny_module(), path, scope="detector")
    with pytest.raises(ValueError, match="init_scope must be one of"):
        initialize_from(_tiny_module(), path, scope="heads")


def test_init_from_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.init_from"):
        initialize_from(_tiny_module(), tmp_path / "nope.pth")


def test_init_from_an_authors_file_reinitializes_class_head_and_queries(authors_file):
    from vistr_lit.convert_checkpoint import default_hparams

    module = VisTRLitModule(
        net=dict(num_frames=36, backbone="resnet50"),
        category_ids=[1, 2, 3],
        category_names=["a", "b", "c"],
        **default_hparams(),
    )
    before = module.model.class_embed.weight.clone()
    report = initialize_from(module, authors_file)
    assert {"class_embed.weight", "query_embed.weight"} <= set(report.initialized)
    assert torch.equal(module.model.class_embed.weight, before)
    sd = torch.load(authors_file, map_location="cpu", weights_only=True)["model"]
    key = "transformer.encoder.layers.0.linear1.weight"
    assert torch.equal(module.model.state_dict()[key], sd[f"vistr.{key}"])


def test_converted_scores_are_the_original_formula(tmp_path):
    """The authors' post-processing: softmax over all their logits (unused index 0 included), no-object
    dropped, a slot's score the mean over frames of its best probability, its label the most frequent
    per-frame argmax. A converted file's post-processed scores and labels are exactly those."""
    from vistr_lit.models.checkpoint_import import AuthorsClassHead

    torch.manual_seed(0)
    kwargs = dict(num_frames=2, num_instances=3, backbone="resnet18", hidden_dim=48, nheads=4, enc_layers=1)
    kwargs |= dict(dec_layers=1, dim_feedforward=32, temporal_fusion="none")
    theirs = build_vistr(num_classes=4, **kwargs).eval()  # the authors' layout: unused 0, ids 1..3, no-object
    with torch.no_grad():  # an unused logit that holds mass but never wins a frame, as in a trained file
        theirs.class_embed.weight[0].zero_()
        theirs.class_embed.bias[0] = -0.5
    authors = {}
    for key, value in theirs.state_dict().items():
        prefix = "" if key.startswith(("mask_head.", "bbox_attention.", "insmask_head.")) else "vistr."
        authors[prefix + key.replace("backbone.body.", "backbone.0.body.")] = value
    path = tmp_path / "authors.pth"
    torch.save({"model": authors}, path)
    out = tmp_path / "converted.ckpt"
    assert main([str(path), str(out), "--num-instances", "3"]) == 0
    module = VisTRLitModule.load_from_checkpoint(out, map_location="cpu").eval()
    assert isinstance(module.model.class_embed, AuthorsClassHead)
    assert module.hparams.category_ids == [1, 2, 3]

    frames = torch.randn(1, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = theirs(frames)["pred_logits"]  # 1 x Q x 5, q = t·N + i
        outputs = module.model(frames)
    probs = logits.softmax(-1)[0, :, :-1].view(2, 3, 4).transpose(0, 1)  # N x T x 4 (index 0 unused)
    assert (probs[..., 0] > 0.05).all() and (probs.argmax(-1) > 0).all()  # the test can tell the two apart
    size = torch.tensor([[64, 64]])
    outputs["pred_masks"] = torch.ones_like(outputs["pred_masks"])  # every slot kept
    (clip,) = module.postprocess(outputs, size, size, num_frames=2)
    expected_scores = probs.max(-1).values.mean(-1)  # N
    torch.testing.assert_close(clip.scores, expected_scores[clip.slots], rtol=0, atol=1e-6)
    expected_ids = torch.mode(probs.argmax(-1), dim=1).values  # category ids
    ids = torch.tensor(module.hparams.category_ids)[clip.labels]
    assert torch.equal(ids, expected_ids[clip.slots])
    # the plain import renormalizes over K + 1 logits: different scores
    plain = build_vistr(num_classes=3, **kwargs).eval()
    load_vistr_checkpoint(plain, path)
    with torch.no_grad():
        plain_probs = plain(frames)["pred_logits"].softmax(-1)[0, :, :-1]
    assert not torch.allclose(plain_probs.max(-1).values, logits.softmax(-1)[0, :, 1:-1].max(-1).values)
