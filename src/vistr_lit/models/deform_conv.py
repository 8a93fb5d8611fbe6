"""Deformable convolution (v1, Dai et al. 2017) as bilinear sampling plus one matrix product.

The same function as ``torchvision.ops.deform_conv2d`` without a mask (the original VisTR's DCN): every
output pixel ``p`` and kernel tap ``k`` read the input at ``p·stride - padding + k·dilation + offset_k(p)``
by bilinear interpolation with zeros outside the frame, and the taps are summed with the kernel's weights.
Here the sampling is ``F.grid_sample`` (vectorized CPU and CUDA kernels, autograd to the input and to the
sampling grid) and the sum is one matrix product; torchvision's CPU kernel loops over pixels in scalar code.

The sampled columns ``[R, C, K, h, w]`` are K times the input (K taps); they are made and consumed a chunk
of rows at a time and, when autograd records, recomputed in backward instead of kept (``_RecomputedColumns``),
as torchvision's kernel recomputes its im2col columns. A chunk is small enough for its columns to stay in the
CPU's caches between being sampled and being summed (one (frame, instance) pair of the paper's size).
Tensor shapes follow torchvision's ``deform_conv2d``.
"""

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

_WEIGHT = 2  # the weight's place in (x, offset, weight), the inputs _RecomputedColumns differentiates
DEFAULT_CHUNK_ELEMENTS = 2**21  # sampled values a chunk holds: 8 MiB of float32, within a CPU core's caches


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _sampling_grid(
    offset: Tensor,
    in_size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """``grid_sample`` grid ``[R, K·h, w, 2]`` (x, y in [-1, 1], ``align_corners=False``) of every tap.

    Args:
        offset: ``[R, 2·K, h, w]`` (dy, dx) per tap, taps in row-major kernel order (torchvision's layout).
    """
    rows, _, out_h, out_w = offset.shape
    (in_h, in_w), (k_h, k_w) = in_size, kernel
    # positions in at least float32: bf16 offsets (autocast) would place taps to within a pixel only
    offset = offset.to(torch.promote_types(offset.dtype, torch.float32))
    device, dtype = offset.device, offset.dtype
    tap_y = torch.arange(k_h, device=device, dtype=dtype).repeat_interleave(k_w) * dilation[0]  # K
    tap_x = torch.arange(k_w, device=device, dtype=dtype).repeat(k_h) * dilation[1]
    out_y = torch.arange(out_h, device=device, dtype=dtype) * stride[0] - padding[0]  # h
    out_x = torch.arange(out_w, device=device, dtype=dtype) * stride[1] - padding[1]
    offset = offset.view(rows, -1, 2, out_h, out_w)  # R x K x (dy, dx) x h x w
    y = tap_y[:, None, None] + out_y[:, None] + offset[:, :, 0]  # R x K x h x w, input pixel rows
    x = tap_x[:, None, None] + out_x + offset[:, :, 1]
    # pixel i's centre is at (2i + 1) / size - 1 with align_corners=False (well defined for size 1 too)
    grid = torch.stack(((2 * x + 1) / in_w - 1, (2 * y + 1) / in_h - 1), dim=-1)  # R x K x h x w x 2
    return grid.flatten(1, 2)


def _deform_rows(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """One chunk: ``x`` ``[R, C_in, H, W]``, ``offset`` ``[R, 2K, h, w]`` -> ``[R, C_out, h, w]``.

    Sampling is linear, so the weights may be applied before it: with fewer output than input channels
    (the mask head's 48 -> 24), each tap's 1×1 convolution ``[C_out, C_in]`` runs first on the input and
    only C_out channels are sampled per tap, not C_in; otherwise the C_in channels are sampled per tap and
    contracted by one matrix product on the columns as laid out.
    """
    rows, c_in, in_h, in_w = x.shape
    c_out, _, k_h, k_w = weight.shape
    taps = k_h * k_w
    out_h, out_w = offset.shape[-2:]
    grid = _sampling_grid(offset, (in_h, in_w), (k_h, k_w), stride, padding, dilation)  # R x K·h x w x 2
    if c_out < c_in:
        per_tap = weight.flatten(2).permute(2, 0, 1).reshape(taps * c_out, c_in, 1, 1)  # tap-major
        y = F.conv2d(x.contiguous(), per_tap).view(rows * taps, c_out, in_h, in_w)  # R·K x C_out x H x W
        grid = grid.view(rows * taps, out_h, out_w, 2)
        sampled = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return sampled.view(rows, taps, c_out, out_h, out_w).sum(dim=1)
    columns = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    columns = columns.view(rows, c_in * taps, out_h * out_w)  # C_in-major, as weight.flatten(1)
    return torch.matmul(weight.flatten(1), columns).unflatten(-1, (out_h, out_w))


def _chunked(x: Tensor, offset: Tensor, weight: Tensor, geometry: tuple) -> Tensor:
    """``_deform_rows`` a chunk of ``rows`` at a time: ``x`` ``[R, C_in, H, W]``, ``offset`` ``[R, 2K, h, w]``
    -> ``[R, C_out, h, w]``; ``geometry``: (rows, stride, padding, dilation)."""
    rows, *conv = geometry
    outputs = [
        _deform_rows(x_rows, off, weight, *conv) for x_rows, off in zip(x.split(rows), offset.split(rows))
    ]
    return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


class _RecomputedColumns(torch.autograd.Function):
    """``_chunked`` keeping only its inputs: backward recomputes one chunk's columns at a time and writes that
    chunk's input gradients into one gradient of the whole input (autograd's slices or splits would hold a
    zero tensor of the whole input per chunk, or every chunk's gradient before one concatenation).
    Backward runs under the forward's autocast state, so the recomputed columns equal the forward's."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x: Tensor, offset: Tensor, weight: Tensor, geometry: tuple) -> Tensor:
        ctx.save_for_backward(x, offset, weight)
        ctx.geometry = geometry
        return _chunked(x, offset, weight, geometry)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, offset, weight = ctx.saved_tensors
        rows, *conv = ctx.geometry
        needs = ctx.needs_input_grad[:3]
        wanted = [i for i, need in enumerate(needs) if need]  # places in (x, offset, weight)
        # every row of x's and offset's gradients is written by its chunk; the weight's sums over the chunks
        grads: list[Tensor | None] = [None, None, None]
        for i in wanted:
            grads[i] = torch.zeros_like(weight) if i == _WEIGHT else torch.empty_like((x, offset)[i])
        for start in range(0, x.shape[0], rows):
            chunk = slice(start, start + rows)
            with torch.enable_grad():
                inputs = [
                    t.detach().requires_grad_(need)
                    for t, need in zip((x[chunk], offset[chunk], weight), needs)
                ]
                out = _deform_rows(*inputs, *conv)
            for i, grad in zip(
                wanted, torch.autograd.grad(out, [inputs[i] for i in wanted], grad_out[chunk])
            ):
                if i == _WEIGHT:
                    grads[i] += grad
                else:
                    grads[i][chunk] = grad
        return *grads, None


def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """``torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation)`` (no mask).

    On CUDA tensors torchvision's kernel runs (in float32); elsewhere the sampled form, where each op follows
    autocast (the 1×1 convolutions in bf16, the sampling and its positions in float32); docs/paper-scale.md.

    Args:
        x: ``[R, C_in, H, W]``.
        offset: ``[R, 2·k_h·k_w, h, w]`` (dy, dx) per tap; one offset group.
        weight: ``[C_out, C_in, k_h, k_w]``; bias: ``[C_out]`` or None.
        chunk_elements: sampled values a chunk may hold (sets how many rows run at a time).
    Returns:
        ``[R, C_out, h, w]``.
    """
    if x.is_cuda:
        out = torchvision.ops.deform_conv2d(
            x.float(), offset.float(), weight.float(), None if bias is None else bias.float(),
            stride, padding, dilation,
        )  # fmt: skip
        return out.to(x.dtype)
    k_h, k_w = weight.shape[-2:]
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"deform_conv2d: weight takes {weight.shape[1]} channels, input has {x.shape[1]}")
    if offset.shape[1] != 2 * k_h * k_w:
        raise ValueError(
            f"deform_conv2d: offset has {offset.shape[1]} channels; one offset group of a {k_h}x{k_w} "
            f"kernel needs {2 * k_h * k_w}"
        )
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    sampled_channels = min(weight.shape[0], x.shape[1])  # see _deform_rows
    per_row = sampled_channels * k_h * k_w * offset.shape[-2] * offset.shape[-1]
    rows = max(1, chunk_elements // max(per_row, 1))
    geometry = (rows, stride, padding, dilation)
    if torch.is_grad_enabled() and (x.requires_grad or offset.requires_grad or weight.requires_grad):
        out = _RecomputedColumns.apply(x, offset, weight, geometry)
    else:
        out = _chunked(x, offset, weight, geometry)
    return out if bias is None else out + bias[:, None, None]
