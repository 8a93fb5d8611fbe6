"""The sampled deformable convolution is torchvision's ``deform_conv2d``: outputs and all four gradients."""

import pytest
import torch
import torchvision

from vistr_lit.models.deform_conv import _chunked, deform_conv2d

# (rows, channels in, height, width, channels out, stride, padding, dilation); fewer output than input
# channels take the contract-then-sample path
SHAPES = [
    (3, 5, 7, 9, 4, 1, 1, 1),  # the mask head's 3x3, padding 1
    (2, 4, 1, 6, 3, 1, 1, 1),  # a one-pixel-high input
    (2, 6, 8, 8, 5, 2, 2, 2),  # stride and dilation
    (4, 3, 5, 5, 2, 1, 0, 1),  # no padding
    (2, 3, 6, 7, 5, 1, 1, 1),  # more output than input channels: sampled first, then contracted
]


def inputs(rows, c_in, height, width, c_out, stride, padding, dilation, offset_scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    out_h = (height + 2 * padding - 2 * dilation - 1) // stride + 1
    out_w = (width + 2 * padding - 2 * dilation - 1) // stride + 1
    x = torch.randn(rows, c_in, height, width, dtype=torch.float64, generator=g)
    # offsets up to a few pixels: many taps land outside the frame, partly or wholly
    offset = torch.randn(rows, 18, out_h, out_w, dtype=torch.float64, generator=g) * offset_scale
    weight = torch.randn(c_out, c_in, 3, 3, dtype=torch.float64, generator=g)
    bias = torch.randn(c_out, dtype=torch.float64, generator=g)
    return [t.requires_grad_() for t in (x, offset, weight, bias)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk_elements", [50, 2**25])  # many chunks (each recomputed in backward), one
def test_sampled_equals_torchvision_with_gradients(shape, chunk_elements):
    tensors = inputs(*shape)
    stride, padding, dilation = shape[5:]
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    expected = torchvision.ops.deform_conv2d(*tensors, **kwargs)
    out = deform_conv2d(*tensors, **kwargs, chunk_elements=chunk_elements)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    grad = torch.randn_like(expected)
    for ours, theirs, name in zip(
        torch.autograd.grad(out, tensors, grad),
        torch.autograd.grad(expected, tensors, grad),
        ("input", "offset", "weight", "bias"),
    ):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10, msg=name)


def test_float32_within_rounding_and_no_graph_without_grad():
    x, offset, weight, _ = (t.detach().float() for t in inputs(6, 8, 12, 16, 4, 1, 1, 1, offset_scale=0.7))
    expected = torchvision.ops.deform_conv2d(x, offset, weight, padding=1)
    with torch.no_grad():
        out = deform_conv2d(x, offset, weight, padding=1)
    assert not out.requires_grad
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, False)])
def test_recomputed_backward_equals_keeping_the_columns_under_bf16_autocast(needs):
    """Backward recomputes each chunk under the forward's autocast: the gradients are those of autograd
    keeping every column (a float32 recompute would differ by bf16 rounding, ~1e-2)."""
    tensors = [t.detach().float() for t in inputs(5, 8, 9, 11, 4, 1, 1, 1, offset_scale=0.7)[:3]]
    for t, need in zip(tensors, needs):
        t.requires_grad_(need)
    geometry = (2, (1, 1), (1, 1), (1, 1))  # chunks of 2, 2 and 1 rows
    wanted = [t for t in tensors if t.requires_grad]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recomputed = deform_conv2d(*tensors, padding=1, chunk_elements=2 * 4 * 9 * 9 * 11)
        kept = _chunked(*tensors, geometry)
    torch.testing.assert_close(recomputed, kept, rtol=0, atol=0)
    grad = torch.randn_like(kept)
    for ours, theirs in zip(
        torch.autograd.grad(recomputed, wanted, grad), torch.autograd.grad(kept, wanted, grad)
    ):
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_zero_offsets_are_a_plain_convolution():
    x, offset, weight, bias = (t.detach() for t in inputs(2, 4, 6, 7, 3, 1, 1, 1))
    out = deform_conv2d(x, torch.zeros_like(offset), weight, bias, padding=1)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, weight, bias, padding=1))


def test_mismatched_shapes_are_named():
    x, offset, weight, _ = (t.detach() for t in inputs(1, 4, 6, 6, 3, 1, 1, 1))
    with pytest.raises(ValueError, match="weight takes 4 channels, input has 5"):
        deform_conv2d(torch.zeros(1, 5, 6, 6, dtype=x.dtype), offset, weight, padding=1)
    with pytest.raises(ValueError, match="offset has 9 channels"):
        deform_conv2d(x, offset[:, :9], weight, padding=1)
