"""The assembled VisTR network: shapes, padding invariance, determinism, variants, parameter counts."""

import math

import pytest
import torch
from vistr_cases import TINY, pad_batch, predict_padded_and_alone, tiny_vistr

from vistr_lit.models import build_vistr
from vistr_lit.models.extensions.cell_scaled_maps import CellScaledAttentionMap
from vistr_lit.models.mask_head import MHAttentionMap

# The original R50 model with its 41 classes (ids 1..40 + an unused index 0), T = 36, N = 10.
ORIGINAL_R50_PARAMS = 57_116_129
ORIGINAL_R50_TRAINABLE = 56_893_729


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
    batched, frames = predict_padded_and_alone(model, check_all=True)
    # without its mask the padded input must predict differently: the check above is not vacuous
    with torch.no_grad():
        unmasked = model(frames)
    assert (unmasked["pred_logits"][0] - batched["pred_logits"][0]).abs().max() > 1e-3


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


def test_frozen_stages_and_backbone_names():
    model = tiny_vistr()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("backbone.body.conv1", "backbone.body.layer1.")) for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone."))
    assert any(n.startswith("backbone.body.layer4.") for n, p in model.named_parameters() if p.requires_grad)


def test_bf16_autocast_forward():
    model = tiny_vistr()
    frames, pad_mask = pad_batch(torch.randn(3, 3, 32, 32), torch.randn(3, 3, 20, 28), (32, 32))
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

    def frame_features(self, memory, fpns, sizes):
        return fpns[-1]

    def instance_features(self, frames, instance, sizes, num_instances):
        rows = torch.arange(instance.shape[0])
        t = (rows // self.num_instances) % self.num_frames
        value = (100 * t + rows % self.num_instances).float()
        return value[:, None, None, None].expand(-1, 2, *frames.shape[-2:])


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
    assert type(original.bbox_attention) is MHAttentionMap
    assert type(scaled.bbox_attention) is CellScaledAttentionMap
    scaled.load_state_dict(original.state_dict())  # no new parameters
    frames = torch.randn(1, 3, 3, 48, 64)
    with torch.no_grad():
        a, b = original(frames), scaled(frames)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"])
    assert not torch.allclose(a["pred_masks"], b["pred_masks"])


def test_cells_scale_is_the_paper_head_with_its_map_weights_times_the_cells():
    """On unpadded frames of one size, ``attention_map_scale="cells"`` is the paper's head whose ``lay1``
    weights on the attention-map channels are h·w times larger: a start of the same network, not a new one."""
    original, scaled = tiny_vistr(), tiny_vistr(attention_map_scale="cells")
    scaled.load_state_dict(original.state_dict())
    frames = torch.randn(1, 3, 3, 64, 96)
    cells = (64 // 32) * (96 // 32)  # the memory's h·w at layer4's stride
    with torch.no_grad():
        out, paper = scaled(frames), original(frames)
        original.mask_head.lay1.weight[:, TINY["hidden_dim"] :] *= cells
        reference = original(frames)
    torch.testing.assert_close(out["pred_masks"], reference["pred_masks"], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out["pred_masks"], paper["pred_masks"], atol=1e-3)
