"""The assembled VisTR network: shapes, padding invariance, determinism, variants, parameter counts."""

import math

import pytest
import torch

from vistr_lit.models import build_vistr

TINY = dict(hidden_dim=48, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=64)
# The original R50 model with its 41 classes (ids 1..40 + an unused index 0), T = 36, N = 10.
ORIGINAL_R50_PARAMS = 57_116_129
ORIGINAL_R50_TRAINABLE = 56_893_729


def tiny_vistr(num_frames=3, num_instances=2, backbone="resnet10", num_classes=3, seed=0, **kwargs):
    torch.manual_seed(seed)
    args = {**TINY, **kwargs}
    return build_vistr(num_classes, num_frames, num_instances, backbone=backbone, **args).eval()


@pytest.mark.parametrize(
    ("batch", "frames", "instances", "backbone", "size", "dilation"),
    [
        (1, 1, 1, "resnet10", (32, 32), False),
        (2, 3, 2, "resnet18", (50, 70), False),
        (1, 2, 3, "resnet50", (40, 64), True),
        (2, 2, 2, "resnet10", (50, 70), True),
    ],
)
def test_output_shapes(batch, frames, instances, backbone, size, dilation):
    model = tiny_vistr(frames, instances, backbone, num_classes=5, dilation=dilation)
    with torch.no_grad():
        out = model(torch.randn(batch, frames, 3, *size))
    queries = frames * instances
    assert out["pred_logits"].shape == (batch, queries, 6)
    assert out["pred_boxes"].shape == (batch, queries, 4)
    assert out["pred_masks"].shape == (batch, queries, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    assert len(out["aux_outputs"]) == TINY["dec_layers"] - 1
    assert out["aux_outputs"][0]["pred_logits"].shape == (batch, queries, 6)
    assert (model.num_frames, model.num_instances, model.num_classes) == (frames, instances, 5)


def _pad_batch(clip_a, clip_b, size):
    """Two clips ``[T, 3, h, w]`` zero-padded into ``[2, T, 3, *size]`` with their padding mask."""
    frames = torch.zeros(2, clip_a.shape[0], 3, *size)
    pad_mask = torch.ones(2, *size, dtype=torch.bool)
    for b, clip in enumerate((clip_a, clip_b)):
        frames[b, :, :, : clip.shape[-2], : clip.shape[-1]] = clip
        pad_mask[b, : clip.shape[-2], : clip.shape[-1]] = False
    return frames, pad_mask


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"mask_fusion": "concat", "temporal_fusion": "none"},
        {"mask_fusion": "dot_product", "dilation": True},
        {"mask_fusion": "dot_product", "mask_stride": 2},
        {"mask_fusion": "dot_product", "mask_stride": 1},
    ],
)
def test_padded_clip_predicts_like_the_clip_alone(kwargs):
    model = tiny_vistr(**kwargs)
    batched, frames = _predict_padded_and_alone(model, check_all=True)
    # without its mask the padded input must predict differently: the check above is not vacuous
    with torch.no_grad():
        unmasked = model(frames)
    assert (unmasked["pred_logits"][0] - batched["pred_logits"][0]).abs().max() > 1e-3


def _predict_padded_and_alone(model, check_all):
    """Assert that two clips (sizes not multiples of 32) padded into one 96x96 batch predict the masks
    (and with ``check_all`` the logits and boxes) they predict alone. Returns (batched outputs, frames)."""
    clip_a, clip_b = torch.randn(3, 3, 50, 70), torch.randn(3, 3, 96, 64)
    frames, pad_mask = _pad_batch(clip_a, clip_b, (96, 96))
    with torch.no_grad():
        batched = model(frames, pad_mask)
        for b, clip in enumerate((clip_a, clip_b)):
            alone = model(clip[None])
            h, w = alone["pred_masks"].shape[-2:]
            if check_all:
                torch.testing.assert_close(
                    batched["pred_logits"][b], alone["pred_logits"][0], atol=1e-5, rtol=1e-4
                )
                torch.testing.assert_close(
                    batched["pred_boxes"][b], alone["pred_boxes"][0], atol=1e-5, rtol=1e-4
                )
            torch.testing.assert_close(
                batched["pred_masks"][b, :, :h, :w], alone["pred_masks"][0], atol=1e-4, rtol=1e-4
            )
    return batched, frames


def test_eval_is_deterministic_and_train_uses_dropout():
    model = tiny_vistr(dropout=0.5)
    frames = torch.randn(1, 3, 3, 32, 48)
    with torch.no_grad():
        first, second = model(frames), model(frames)
        for key in ("pred_logits", "pred_boxes", "pred_masks"):
            assert torch.equal(first[key], second[key])
        model.train()
        assert not torch.equal(model(frames)["pred_logits"], model(frames)["pred_logits"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"enc_layers": 0},
        {"enc_layers": 2, "dec_layers": 1},
        {"mask_fusion": "concat"},
        {"temporal_fusion": "none"},
        {"aux_loss": False},
        {"attention_dropout": 0.1},
        {"trainable_stages": ()},
        {"backbone_norm": "batch", "trainable_stages": ("conv1", "layer1", "layer2", "layer3", "layer4")},
        {"mask_deformable": False},
        {"mask_fusion": "dot_product"},
        {"mask_fusion": "dot_product", "temporal_fusion": "none", "mask_dim": 16},
        {"mask_fusion": "dot_product", "aux_masks": True, "mask_stride": 2},
        {"mask_fusion": "dot_product", "aux_masks": True, "mask_stride": 1, "query_groups": 2},
        {"mask_fusion": "dot_product", "masked_attention": True, "query_groups": 2, "dec_layers": 3},
        {"query_groups": 3},
        {"mask_fusion": "dot_product", "query_groups": 2},
        {"mask_fusion": "dot_product", "mask_coords": True, "aux_masks": True, "mask_stride": 1},
    ],
)
def test_every_variant_builds_trains_and_runs(kwargs):
    model = tiny_vistr(**kwargs).train()
    out = model(torch.randn(2, 3, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.bool))
    side = 32 // model.mask_stride
    assert out["pred_masks"].shape == (2, 6, side, side)
    assert ("aux_outputs" in out) == kwargs.get("aux_loss", True)
    loss = out["pred_logits"].sum() + out["pred_boxes"].sum() + out["pred_masks"].sum()
    loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_plain_mask_conv_equals_the_dcn_at_zero_offsets():
    """``mask_deformable=False`` is the DCN's starting point: same outputs while the offsets are zero."""
    deformable = tiny_vistr(seed=3)
    plain = tiny_vistr(seed=4, mask_deformable=False)
    assert plain.mask_head.conv_offset is None
    state = {k: v for k, v in deformable.state_dict().items() if "conv_offset" not in k}
    plain.load_state_dict(state)
    frames = torch.randn(1, 3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(frames)["pred_masks"], deformable(frames)["pred_masks"])


def test_backbone_norm_choices():
    from torch import nn
    from torchvision.ops import FrozenBatchNorm2d

    assert isinstance(tiny_vistr(backbone_norm="batch").backbone.body.bn1, nn.BatchNorm2d)
    assert isinstance(tiny_vistr().backbone.body.bn1, FrozenBatchNorm2d)
    with pytest.raises(ValueError, match="unknown backbone norm 'group'"):
        tiny_vistr(backbone_norm="group")


def test_temporal_fusion_modes_agree_on_one_frame():
    """With T = 1 the dilated 3-D convs only use their centre frame tap: equal to per-frame convs."""
    fused = tiny_vistr(num_frames=1, temporal_fusion="conv3d", seed=1)
    per_frame = tiny_vistr(num_frames=1, temporal_fusion="none", seed=2)
    state = fused.state_dict()
    for key, value in per_frame.state_dict().items():
        if value.shape != state[key].shape:  # Conv3d kernels [o, i, 3, 3, 3] -> centre frame [o, i, 1, 3, 3]
            state[key] = state[key][:, :, 1:2]
    per_frame.load_state_dict(state)
    frames = torch.randn(1, 1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(per_frame(frames)["pred_masks"], fused(frames)["pred_masks"])


def test_dot_product_masks_are_query_embeddings_times_pixel_embeddings():
    model = tiny_vistr(num_frames=2, num_instances=3, mask_fusion="dot_product", mask_dim=16)
    assert model.bbox_attention is None and model.insmask_head is None
    assert model.mask_head.out_channels == 16  # mask_dim is the embedding width
    assert tiny_vistr(mask_fusion="dot_product").mask_head.out_channels == TINY["hidden_dim"] // 8
    captured = {}
    model.mask_head.register_forward_hook(lambda module, args, out: captured.update(pixels=out))
    model.mask_embed.register_forward_hook(lambda module, args, out: captured.update(embed=out))
    with torch.no_grad():
        masks = model(torch.randn(1, 2, 3, 32, 48))["pred_masks"]  # 1 x T·N x 8 x 12
    pixels, embed = captured["pixels"], captured["embed"]  # T x D x 8 x 12, T x N x D
    for t in range(2):
        for i in range(3):
            expected = (embed[t, i][:, None, None] * pixels[t]).sum(0)
            torch.testing.assert_close(masks[0, t * 3 + i], expected, atol=1e-5, rtol=1e-4)


def test_mask_stride_2_adds_the_stem_level():
    model = tiny_vistr(mask_fusion="dot_product", mask_stride=2)
    assert model.mask_head.out_stride == 2 and tiny_vistr(mask_fusion="dot_product").mask_head.out_stride == 4
    with torch.no_grad():
        masks = model(torch.randn(1, 3, 3, 40, 52))["pred_masks"]
    assert masks.shape == (1, 6, 20, 26)
    # the stem reaches the masks: without its adapter's contribution they change
    frames = torch.randn(1, 3, 3, 40, 52)
    with torch.no_grad():
        base = model(frames)["pred_masks"]
        model.mask_head.stem_adapter.weight.zero_()
        model.mask_head.stem_adapter.bias.zero_()
        without = model(frames)["pred_masks"]
    assert (without - base).abs().max() > 1e-3


def test_aux_masks_supervise_every_decoder_layer():
    model = tiny_vistr(mask_fusion="dot_product", dec_layers=3, aux_masks=True).train()
    out = model(torch.randn(1, 3, 3, 32, 32))
    assert [aux["pred_masks"].shape for aux in out["aux_outputs"]] == [out["pred_masks"].shape] * 2
    assert (
        "pred_masks"
        not in tiny_vistr(mask_fusion="dot_product").train()(torch.randn(1, 3, 3, 32, 32))["aux_outputs"][0]
    )


def test_query_groups_train_extra_decoders_and_vanish_in_eval():
    """Group DETR: each extra group matches its own queries; eval runs the main group alone, as G = 1."""
    grouped = tiny_vistr(query_groups=3, seed=5, dropout=0.0)
    single = tiny_vistr(seed=6, dropout=0.0)
    single.load_state_dict({k: v for k, v in grouped.state_dict().items() if not k.startswith("group_query")})
    frames = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        out = grouped(frames)
        assert "group_outputs" not in out
        torch.testing.assert_close(out["pred_masks"], single(frames)["pred_masks"])
        grouped.train()
        single.train()
        train_out = grouped(frames)
        # groups attend only to themselves: the main group decodes exactly as the single model does
        torch.testing.assert_close(train_out["pred_logits"], single(frames)["pred_logits"])
    groups = train_out["group_outputs"]
    assert len(groups) == 2 and all(g["pred_masks"].shape == train_out["pred_masks"].shape for g in groups)
    assert not torch.allclose(groups[0]["pred_logits"], train_out["pred_logits"])
    assert len(groups[1]["aux_outputs"]) == TINY["dec_layers"] - 1
    train_out = grouped(frames)  # with gradients: the extra queries learn from their own outputs only
    train_out["pred_logits"].sum().backward(retain_graph=True)
    assert grouped.group_query_embed.weight.grad.abs().max() == 0
    train_out["group_outputs"][1]["pred_logits"].sum().backward()
    grad = grouped.group_query_embed.weight.grad.unflatten(0, (2, -1))  # group 1, group 2
    assert grad[0].abs().max() == 0 and grad[1].abs().max() > 0


def test_dot_product_temporal_fusion_mixes_frames():
    """conv3d: a frame's masks depend on its neighbours' pixels; none: they do not."""
    frames = torch.randn(1, 3, 3, 32, 32)
    changed = frames.clone()
    changed[0, 1] = torch.randn(3, 32, 32)  # only frame 1 differs, the neighbour of frame 0
    for temporal, mixes in (("conv3d", True), ("none", False)):
        model = tiny_vistr(mask_fusion="dot_product", temporal_fusion=temporal, enc_layers=0)
        with torch.no_grad():
            first = model(frames)["pred_masks"][0, 0]  # frame 0, instance 0
            other = model(changed)["pred_masks"][0, 0]
        assert (first - other).abs().max() > 1e-4  # the decoder reads every frame: queries change too
        model.mask_embed.register_forward_hook(lambda m, a, out: out.detach().zero_().add_(1.0))
        with torch.no_grad():  # equal mask embeddings: only the pixel embeddings differ
            first, other = model(frames)["pred_masks"][0, 0], model(changed)["pred_masks"][0, 0]
        assert ((first - other).abs().max() > 1e-4) == mixes, temporal


def test_frozen_stages_and_backbone_names():
    model = tiny_vistr()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("backbone.body.conv1", "backbone.body.layer1.")) for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone."))
    assert any(n.startswith("backbone.body.layer4.") for n, p in model.named_parameters() if p.requires_grad)


def test_bf16_autocast_forward():
    model = tiny_vistr()
    frames, pad_mask = _pad_batch(torch.randn(3, 3, 32, 32), torch.randn(3, 3, 20, 28), (32, 32))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(frames, pad_mask)
    assert all(torch.isfinite(out[k].float()).all() for k in ("pred_logits", "pred_boxes", "pred_masks"))


def test_r50_has_the_original_parameter_count():
    model = build_vistr(num_classes=41, num_frames=36, num_instances=10, backbone="resnet50")
    params = list(model.named_parameters())
    assert sum(p.numel() for _, p in params) == ORIGINAL_R50_PARAMS
    assert sum(p.numel() for _, p in params if p.requires_grad) == ORIGINAL_R50_TRAINABLE
    assert len(model.state_dict()) == 503


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "resnet7"}, "unknown backbone"),
        ({"hidden_dim": 64, "nheads": 4}, "divisible by 6"),
        ({"mask_fusion": "sum"}, "mask_fusion"),
        ({"temporal_fusion": "lstm"}, "temporal_fusion"),
        ({"trainable_stages": ("layer5",)}, "trainable_stages"),
        ({"backbone": "resnet10", "pretrained_backbone": "IMAGENET1K_V1"}, "no published weights"),
        ({"aux_masks": True}, "aux_masks needs mask_fusion 'dot_product'"),
        ({"query_groups": 0}, "query_groups must be >= 1"),
        ({"mask_stride": 2}, "mask_stride must be one of"),
        ({"mask_stride": 1}, "mask_stride must be one of"),
        ({"mask_fusion": "dot_product", "mask_stride": 8}, "mask_stride must be one of"),
        ({"mask_coords": True}, "mask_coords needs mask_fusion 'dot_product'"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_vistr(**kwargs)


def test_bad_inputs_raise_clear_errors():
    model = tiny_vistr()
    with pytest.raises(ValueError, match=r"frames must be \[B, 3, 3, H, W\]"):
        model(torch.randn(1, 2, 3, 32, 32))
    with pytest.raises(ValueError, match="pad_mask must be"):
        model(torch.randn(1, 3, 3, 32, 32), torch.zeros(1, 16, 32, dtype=torch.bool))
    holes = torch.zeros(1, 32, 32, dtype=torch.bool)
    holes[0, 5, 5] = True
    with pytest.raises(ValueError, match="not a bottom/right padding band"):
        model(torch.randn(1, 3, 3, 32, 32), holes)


class _IndexMaskHead(torch.nn.Module):
    """Stands in for the mask head: row (b·T + t)·N + i of its output holds 100·t + i."""

    def __init__(self, num_frames: int, num_instances: int) -> None:
        super().__init__()
        self.num_frames, self.num_instances = num_frames, num_instances

    def forward(self, memory, instance, fpns, sizes, num_instances):
        rows = torch.arange(instance.shape[0])
        t = (rows // self.num_instances) % self.num_frames
        value = (100 * t + rows % self.num_instances).float()
        return value[:, None, None, None].expand(-1, 2, *fpns[-1].shape[-2:])


class _FirstChannel(torch.nn.Module):
    def forward(self, x, keep=None):
        return x[:, :1]


def test_mask_queries_are_frame_major():
    """pred_masks[:, t·N + i] comes from slot i of frame t (reshapes between B·T·N and B·N x T)."""
    model = tiny_vistr(num_frames=3, num_instances=2)
    model.mask_head = _IndexMaskHead(3, 2)
    model.insmask_head = _FirstChannel()
    with torch.no_grad():
        masks = model(torch.randn(2, 3, 3, 32, 32))["pred_masks"]
    expected = torch.tensor([100 * (q // 2) + q % 2 for q in range(6)], dtype=torch.float)
    assert torch.equal(masks[:, :, 0, 0], expected.expand(2, -1))
    assert torch.equal(masks, masks[..., :1, :1].expand_as(masks))


def test_attention_map_scale_reaches_the_mask_branch_and_changes_the_masks():
    original, scaled = tiny_vistr(), tiny_vistr(attention_map_scale="cells")
    assert (original.bbox_attention.scale, scaled.bbox_attention.scale) == ("none", "cells")
    scaled.load_state_dict(original.state_dict())  # no new parameters
    frames = torch.randn(1, 3, 3, 48, 64)
    with torch.no_grad():
        a, b = original(frames), scaled(frames)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"])
    assert not torch.allclose(a["pred_masks"], b["pred_masks"])


def _randomize_coord_mlp(model, seed=1):
    """Give the relative-coordinate MLP's generator random last-layer rows (they start at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = model.mask_coord_mlp.generator.weight
        weight.copy_(torch.randn(weight.shape, generator=gen) * 0.5)
        model.mask_coord_mlp.generator.bias.copy_(torch.randn(weight.shape[0], generator=gen))


def test_mask_coords_start_as_the_plain_dot_product_and_then_move_the_masks():
    plain = tiny_vistr(num_frames=2, num_instances=3, mask_fusion="dot_product")
    coords = tiny_vistr(num_frames=2, num_instances=3, mask_fusion="dot_product", mask_coords=True)
    missing = coords.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("mask_coord_mlp.") for key in missing)
    frames = torch.randn(1, 2, 3, 40, 56)
    with torch.no_grad():
        base = plain(frames)["pred_masks"]
        torch.testing.assert_close(coords(frames)["pred_masks"], base)  # zero last layer: nothing added
        _randomize_coord_mlp(coords)
        moved = coords(frames)["pred_masks"]
    assert (moved - base).abs().max() > 1e-2


def test_mask_coords_read_each_query_box():
    """The added logits depend on the query's own box: move the box and the masks change with it."""
    model = tiny_vistr(num_frames=1, num_instances=2, mask_fusion="dot_product", mask_coords=True)
    _randomize_coord_mlp(model)
    frames = torch.randn(1, 1, 3, 48, 48)
    with torch.no_grad():
        base = model(frames)["pred_masks"]
        model.bbox_embed.layers[-1].bias.add_(torch.tensor([2.0, -2.0, 0.0, 0.0]))  # move every centre
        shifted = model(frames)
    assert (shifted["pred_masks"] - base).abs().max() > 1e-2


def test_axis_offsets_are_from_the_box_centre_in_frame_fractions_and_box_sizes():
    from vistr_lit.models.mask_head import REL_BOX_CLAMP, REL_MIN_BOX, RelativeCoordMaskMLP

    centre, size = torch.tensor([[0.5, 0.1]]), torch.tensor([[0.2, 0.0]])  # F=1, N=2 (the 2nd degenerate)
    grid = torch.tensor([[0.1, 0.5, 0.9]])
    offset, in_boxes = RelativeCoordMaskMLP.axis_offsets(centre, size, grid)  # 1 x 2 x 3 each
    torch.testing.assert_close(offset[0, 0], torch.tensor([-0.4, 0.0, 0.4]))
    torch.testing.assert_close(in_boxes[0, 0], torch.tensor([-2.0, 0.0, 2.0]))
    torch.testing.assert_close(
        in_boxes[0, 1], torch.tensor([0.0, 0.4 / REL_MIN_BOX, 0.8 / REL_MIN_BOX]).clamp(max=REL_BOX_CLAMP)
    )
    assert in_boxes[0, 1, 2] == REL_BOX_CLAMP


def test_mask_coord_mlp_is_the_mlp_over_stacked_pixels_and_coordinates():
    """The separable first layer equals the plain MLP over [pixel embedding; dx, dy, dx/w, dy/h] per pixel."""
    from vistr_lit.models.mask_head import RelativeCoordMaskMLP

    torch.manual_seed(0)
    mlp = RelativeCoordMaskMLP(12, 6, hidden_dim=5)
    torch.nn.init.normal_(mlp.generator.weight, std=0.5)
    queries, pixels = torch.randn(2, 3, 12), torch.randn(2, 6, 4, 5)
    boxes = torch.rand(2, 3, 4) * 0.5 + 0.1
    rows, cols = torch.rand(2, 4), torch.rand(2, 5)
    with torch.no_grad():
        out = mlp(queries, pixels, boxes, rows, cols)
        w1, b1, w2, b2, w3, b3 = (
            p.view(2, 3, *s) / fan**0.5
            for p, s, fan in zip(mlp.generator(queries).split(mlp.sizes, -1), mlp.shapes, mlp.fan_ins)
        )
        for f in range(2):
            for n in range(3):
                dx, dxb = mlp.axis_offsets(boxes[f, n, 0:1][None], boxes[f, n, 2:3][None], cols[f][None])
                dy, dyb = mlp.axis_offsets(boxes[f, n, 1:2][None], boxes[f, n, 3:4][None], rows[f][None])
                along_x, along_y = (
                    (lambda c: c[0, 0][None, :].expand(4, 5)),
                    (lambda c: c[0, 0][:, None].expand(4, 5)),
                )
                coords = torch.stack([along_x(dx), along_y(dy), along_x(dxb), along_y(dyb)])  # 4 x h x w
                x = torch.cat([pixels[f], coords]).flatten(1)  # (D + 4) x P
                x = torch.relu(w1[f, n] @ x + b1[f, n][:, None])
                x = torch.relu(w2[f, n] @ x + b2[f, n][:, None])
                expected = (w3[f, n] @ x + b3[f, n][:, None]).view(4, 5)
                torch.testing.assert_close(out[f, n], expected, atol=1e-5, rtol=1e-4)


def test_mask_coords_on_a_padded_clip_predict_like_the_clip_alone():
    """Pixel coordinates are fractions of each clip's valid size, as its boxes: padding changes nothing."""
    model = tiny_vistr(mask_fusion="dot_product", mask_coords=True, dilation=True)
    _randomize_coord_mlp(model)
    batched, _ = _predict_padded_and_alone(model, check_all=False)
    masks = batched["pred_masks"]  # clip 0 is 50x70 -> 13x18 at stride 4, clip 1 is 96x64 -> 24x16
    assert (
        (masks[0, :, 13:] == 0).all()
        and (masks[0, :, :, 18:] == 0).all()
        and (masks[1, :, :, 16:] == 0).all()
    )
