"""Building blocks: SDPA attention vs torch's, the 3-D sine encoding, padding helpers, backbone, mask head."""

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from vistr_lit.models import build_vistr
from vistr_lit.models.backbone import Backbone
from vistr_lit.models.backbone import FrozenBatchNorm2d as FrozenBatchNorm2dOurs
from vistr_lit.models.extensions.cell_scaled_maps import CellScaledAttentionMap
from vistr_lit.models.extensions.pixel_decoder import PixelDecoder
from vistr_lit.models.mask_head import InstanceSequenceHead, MHAttentionMap, TimePaddedConv3d
from vistr_lit.models.padding import masked_group_norm, size_mask, valid_sizes
from vistr_lit.models.position_encoding import PositionEmbeddingSine3D
from vistr_lit.models.transformer import MultiheadAttention, Transformer


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours, reference = MultiheadAttention(24, 4), nn.MultiheadAttention(24, 4, batch_first=True)
    reference.load_state_dict(ours.state_dict())  # same parameter names
    q, k, v = torch.randn(2, 5, 24), torch.randn(2, 7, 24), torch.randn(2, 7, 24)
    key_padding_mask = torch.zeros(2, 7, dtype=torch.bool)
    key_padding_mask[1, 4:] = True
    expected, _ = reference(q, k, v, key_padding_mask=key_padding_mask, need_weights=False)
    torch.testing.assert_close(ours(q, k, v, key_padding_mask), expected)


def test_attention_under_cpu_autocast_runs_sdpa_in_float32(monkeypatch):
    """bf16 autocast on CPU: projections in bf16, SDPA itself in float32 (its bf16 backward is ~4x slower)."""
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(q, k, v, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    torch.manual_seed(0)
    attention = MultiheadAttention(24, 4)
    q, k = torch.randn(2, 5, 24), torch.randn(2, 7, 24)
    expected = attention(q, k, k)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, k)
    assert seen == [(torch.float32,) * 3 + (False,), (torch.float32,) * 3 + (False,)]
    assert out.dtype == torch.bfloat16  # out_proj is back under autocast
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)


def test_transformer_returns_every_decoder_layer_and_ignores_padded_tokens():
    torch.manual_seed(0)
    transformer = Transformer(24, 4, 2, 3, 32, dropout=0.0).eval()
    src, pos, queries = torch.randn(1, 6, 24), torch.randn(1, 6, 24), torch.randn(5, 24)
    hs, memory = transformer(src, pos, queries, None)
    assert hs.shape == (3, 1, 5, 24) and memory.shape == (1, 6, 24)
    padded_src = torch.cat([src, torch.randn(1, 4, 24)], dim=1)
    padded_pos = torch.cat([pos, torch.randn(1, 4, 24)], dim=1)
    mask = torch.tensor([[False] * 6 + [True] * 4])
    hs_padded, memory_padded = transformer(padded_src, padded_pos, queries, mask)
    torch.testing.assert_close(hs_padded, hs)
    torch.testing.assert_close(memory_padded[:, :6], memory)


def test_position_encoding_axes_and_normalization():
    encoding = PositionEmbeddingSine3D(num_pos_feats=8)
    pos = encoding(torch.zeros(1, 4, 3, 5, dtype=torch.bool))  # B T h w
    assert pos.shape == (1, 4, 3, 5, 24)
    t_block, y_block, x_block = pos[..., :8], pos[..., 8:16], pos[..., 16:]
    assert torch.equal(t_block, t_block[:, :, :1, :1].expand_as(t_block))  # varies with t only
    assert torch.equal(y_block, y_block[:, :1, :, :1].expand_as(y_block))
    assert torch.equal(x_block, x_block[:, :1, :1, :].expand_as(x_block))
    assert not torch.equal(t_block[:, 0], t_block[:, 1])
    # last frame: normalized coordinate 2π -> sin(2π / 1) ~ 0, cos ~ 1 for the first frequency
    torch.testing.assert_close(t_block[0, -1, 0, 0, :2], torch.tensor([0.0, 1.0]), atol=1e-4, rtol=0)
    # padding: the valid region's encoding equals the unpadded clip's
    mask = torch.zeros(1, 4, 6, 7, dtype=torch.bool)
    mask[..., 3:, :] = True
    mask[..., :, 5:] = True
    torch.testing.assert_close(encoding(mask)[:, :, :3, :5], pos)


def test_valid_sizes_and_size_mask_roundtrip():
    sizes = torch.tensor([[5, 7], [3, 2]])
    mask = size_mask(sizes, 6, 8)
    assert mask.shape == (2, 6, 8) and (~mask[0]).sum() == 35 and (~mask[1]).sum() == 6
    assert torch.equal(valid_sizes(mask), sizes)
    with pytest.raises(ValueError, match=r"element\(s\) \[0\]"):
        valid_sizes(torch.ones(1, 4, 4, dtype=torch.bool))


def test_masked_group_norm_uses_the_valid_region_only():
    torch.manual_seed(0)
    norm = nn.GroupNorm(2, 4)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(1, 4, 6, 8)
    torch.testing.assert_close(masked_group_norm(x, norm, torch.ones(1, 1, 6, 8)), norm(x))
    keep = (~size_mask(torch.tensor([[4, 5]]), 6, 8)).float()[:, None]
    torch.testing.assert_close(masked_group_norm(x, norm, keep)[..., :4, :5], norm(x[..., :4, :5]))


@pytest.mark.parametrize(
    ("name", "channels", "dilation"),
    [
        ("resnet10", [64, 128, 256, 512], False),
        ("resnet10", [64, 128, 256, 512], True),
        ("resnet50", [256, 512, 1024, 2048], True),
    ],
)
def test_backbone_levels(name, channels, dilation):
    backbone = Backbone(name, dilation=dilation)
    features = backbone(torch.randn(2, 3, 50, 70))
    assert [f.shape[1] for f in features] == channels == backbone.num_channels
    assert [f.shape[-2:] for f in features] == [
        (math.ceil(50 / s), math.ceil(70 / s)) for s in backbone.strides
    ]
    assert backbone.strides == ([4, 8, 16, 16] if dilation else [4, 8, 16, 32])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())


def test_channels_last_backbone_computes_the_same_features():
    torch.manual_seed(0)
    fast = Backbone("resnet18", dilation=True)
    plain = Backbone("resnet18", dilation=True, channels_last=False)
    plain.load_state_dict(fast.state_dict())
    assert fast.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.body.conv1.weight.is_contiguous()
    frames = torch.randn(2, 3, 50, 70)
    sizes = torch.tensor([[50, 70], [40, 52]])
    for ours, reference in zip(fast(frames, sizes), plain(frames, sizes)):
        assert ours.is_contiguous()  # the heads get the default layout
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_padding_does_not_promote_the_backbone_out_of_bf16_autocast():
    """A padded batch runs like an unpadded one under bf16 autocast: the float32 valid masks must not turn the
    residual stream into float32."""
    torch.manual_seed(0)
    backbone = Backbone("resnet10", dilation=True, norm="batch", width=8).eval()  # the quickstart's
    frames = torch.randn(2, 3, 50, 70)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        padded, stem = backbone(frames, torch.tensor([[50, 70], [40, 52]]), return_stem=True)
        plain = backbone(frames)
    assert [f.dtype for f in padded] == [f.dtype for f in plain] == [torch.bfloat16] * 4
    assert stem.dtype == torch.bfloat16
    for ours, reference in zip(padded, plain):  # the first clip is not padded: the same features
        torch.testing.assert_close(ours[0], reference[0], atol=0, rtol=0)


def test_frozen_batch_norm_keeps_bf16_and_equals_torchvision_in_float32():
    """The paper's frozen-BN ResNet stays in bf16 under autocast (torchvision's FrozenBatchNorm2d promoted
    every activation to float32); float32 is torchvision's bit for bit."""
    torch.manual_seed(0)
    ours, theirs = FrozenBatchNorm2dOurs(6), FrozenBatchNorm2d(6)
    for buffer in ("weight", "bias", "running_mean", "running_var"):
        value = torch.rand(6) + 0.5
        getattr(ours, buffer).copy_(value)
        getattr(theirs, buffer).copy_(value)
    x = torch.randn(2, 6, 5, 7)
    assert torch.equal(ours(x), theirs(x))
    assert ours(x.bfloat16()).dtype == torch.bfloat16
    backbone = Backbone("resnet18", dilation=True).eval()  # frozen norm, as the paper's
    assert isinstance(backbone.body.layer2[0].bn1, FrozenBatchNorm2dOurs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = backbone(torch.randn(2, 3, 50, 70))
    assert [f.dtype for f in features] == [torch.bfloat16] * 4


def test_dilated_basic_block_stage_keeps_the_weights_and_dilates_like_torchvision():
    """DC5 on a BasicBlock ResNet: same parameters as the strided one; layer4 at stride 1, the first
    block's first conv undilated and every later 3×3 conv dilated by 2 (torchvision's Bottleneck rule)."""
    plain, dilated = Backbone("resnet18"), Backbone("resnet18", dilation=True)
    shapes = {name: tuple(t.shape) for name, t in plain.state_dict().items()}
    assert {name: tuple(t.shape) for name, t in dilated.state_dict().items()} == shapes
    stage = dilated.body.layer4
    assert stage[0].conv1.stride == (1, 1) and stage[0].conv1.dilation == (1, 1)
    assert stage[0].downsample[0].stride == (1, 1)
    assert [c.dilation for c in (stage[0].conv2, stage[1].conv1, stage[1].conv2)] == [(2, 2)] * 3
    assert all(c.padding == c.dilation for c in (stage[0].conv2, stage[1].conv1, stage[1].conv2))


def test_narrow_backbone_scales_every_stage_and_trains_from_scratch():
    torch.manual_seed(0)
    backbone = Backbone("resnet10", trainable_stages=("conv1", "layer1"), norm="batch", width=16)
    features = backbone(torch.randn(2, 3, 50, 70))
    assert [f.shape[1] for f in features] == [16, 32, 64, 128] == backbone.num_channels
    assert backbone.body.conv1.out_channels == 16 and backbone.body.layer4[0].downsample[0].in_channels == 64
    assert backbone.body.layer1[0].conv1.weight.requires_grad
    layer2_conv = backbone.body.layer2[0].conv1
    assert not layer2_conv.weight.requires_grad  # trainable_stages applies to the new stages
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d | FrozenBatchNorm2d)]
    assert norms and all(isinstance(m, nn.BatchNorm2d) for m in norms)
    with pytest.raises(ValueError, match="width 16 differs from the published 64"):
        Backbone("resnet18", pretrained="IMAGENET1K_V1", width=16)


def test_attention_maps_normalize_over_heads_and_valid_pixels():
    torch.manual_seed(0)
    attention = MHAttentionMap(16, 16, 4)
    mask = size_mask(torch.tensor([[2, 3]]), 4, 5)
    maps = attention(torch.randn(1, 3, 16), torch.randn(1, 16, 4, 5), mask)
    assert maps.shape == (1, 3, 4, 4, 5)
    torch.testing.assert_close(maps.sum(dim=(2, 3, 4)), torch.ones(1, 3))
    assert (maps[..., 2:, :] == 0).all() and (maps[..., 3:] == 0).all()


def test_cell_scaled_attention_maps_are_the_original_times_the_valid_cells():
    torch.manual_seed(0)
    original = MHAttentionMap(16, 16, 4)
    scaled = CellScaledAttentionMap(16, 16, 4)
    scaled.load_state_dict(original.state_dict())
    mask = size_mask(torch.tensor([[2, 3], [4, 5]]), 4, 5)  # 6 and 20 valid cells
    q, k = torch.randn(2, 3, 16), torch.randn(2, 16, 4, 5)
    cells = torch.tensor([6.0, 20.0])[:, None, None, None, None]
    torch.testing.assert_close(scaled(q, k, mask), original(q, k, mask) * cells)
    torch.testing.assert_close(scaled(q, k).sum(dim=(2, 3, 4)), torch.full((2, 3), 20.0))
    with pytest.raises(ValueError, match="attention_map_scale must be one of"):
        build_vistr(3, 2, 2, backbone="resnet10", hidden_dim=48, nheads=4, attention_map_scale="sqrt")


def test_pretrained_backbone_loads_torchvision_weights_from_the_hub_cache(tmp_path, monkeypatch):
    """ImageNet weights go through torchvision's weights API; a cached file means no download."""
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18()  # BatchNorm2d with num_batches_tracked, as the released file
    for module in imagenet.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.running_var, 0.5, 2.0)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(imagenet.state_dict(), cache / url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone = Backbone("resnet18", pretrained="IMAGENET1K_V1")
    assert torch.equal(backbone.body.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)
    assert torch.equal(backbone.body.layer2[0].bn1.running_var, imagenet.layer2[0].bn1.running_var)
    assert isinstance(backbone.body.layer2[0].bn1, FrozenBatchNorm2d)


@pytest.mark.parametrize("frames", [1, 2, 3, 5])
@pytest.mark.parametrize(
    ("kernel", "padding", "dilation"),
    [((3, 1, 1), (1, 0, 0), 1), ((3, 3, 3), (2, 2, 2), 2), ((3, 3, 3), 1, 1)],
)
def test_time_padded_conv3d_is_nn_conv3d(frames, kernel, padding, dilation):
    torch.manual_seed(0)
    ours = TimePaddedConv3d(6, 4, kernel, padding=padding, dilation=dilation)
    reference = nn.Conv3d(6, 4, kernel, padding=padding, dilation=dilation)
    reference.load_state_dict(ours.state_dict())  # same parameter names and shapes
    x = torch.randn(2, 6, frames, 9, 11)
    torch.testing.assert_close(ours(x), reference(x))


def _conv3d_weight_grads(conv: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight gradient of a squared-output loss in float32 and under CPU bf16 autocast."""
    grads = []
    for bf16 in (False, True):
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = conv(x)
        y.float().square().mean().backward()
        grads.append(conv.weight.grad.clone())
    return grads[0], grads[1]


@pytest.mark.parametrize(("kernel", "padding"), [((3, 1, 1), (1, 0, 0)), ((3, 3, 3), (1, 1, 1))])
def test_two_frame_conv3d_weight_gradients_under_bf16_autocast(kernel, padding):
    """oneDNN's bf16 Conv3d padding time itself gets these wrong for T = 2 (inf and 79 % off on an AVX512-BF16
    CPU); padded explicitly they are float32's up to bf16 rounding."""
    torch.manual_seed(0)
    conv = TimePaddedConv3d(32, 32, kernel, padding=padding)
    nn.init.normal_(conv.weight, std=0.05)
    fp32, bf16 = _conv3d_weight_grads(conv, torch.randn(4, 32, 2, 28, 40))
    assert torch.isfinite(bf16).all()
    assert (bf16 - fp32).norm() / fp32.norm() < 0.02


def test_temporal_convs_of_both_mask_heads_pad_time_explicitly():
    decoder = PixelDecoder(16, (16, 8, 8), 8, (16, 16, 8, 4), temporal=True)
    head = InstanceSequenceHead(8, temporal=True)
    convs = [decoder.temporal, *(m for m in head if isinstance(m, nn.Conv3d) and m.kernel_size[0] > 1)]
    assert len(convs) == 4 and all(isinstance(conv, TimePaddedConv3d) for conv in convs)
    assert decoder.temporal.padding[0] == 0 and decoder.temporal.time_padding == 1
