"""Masked attention (``masked_attention=True``, Mask2Former's): the attention mask reaches SDPA, the decoder
masks every layer after the first from its predecessor, and VisTR's masks follow each instance slot's
previous-layer masks over the whole clip."""

import pytest
import torch
from torch import nn

from vistr_lit.models import build_vistr
from vistr_lit.models.transformer import MultiheadAttention, Transformer

TINY = dict(
    hidden_dim=48,
    nheads=4,
    enc_layers=1,
    dec_layers=3,
    dim_feedforward=64,
    mask_fusion="dot_product",
    dilation=True,  # memory at stride 16
)


def test_a_query_that_sees_one_key_returns_its_value():
    torch.manual_seed(0)
    attention = MultiheadAttention(24, 4)
    q, k = torch.randn(1, 3, 24), torch.randn(1, 5, 24)
    attn_mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    attn_mask[0, 0, 2] = attn_mask[0, 1, 4] = True
    attn_mask[0, 2, :3] = True
    padding = torch.tensor([[False, False, True, False, False]])  # hides key 2: query 2 keeps keys 0 and 1
    out = attention(q, k, k, padding, attn_mask)
    _, _, w_v = attention.in_proj_weight.chunk(3)
    _, _, b_v = attention.in_proj_bias.chunk(3)
    values = attention.out_proj(k @ w_v.T + b_v)  # 1 x 5 x C: what a query seeing only that key returns
    torch.testing.assert_close(out[0, 1], values[0, 4])
    torch.testing.assert_close(attention(q, k, k, None, attn_mask)[0, 0], values[0, 2])
    restricted = torch.zeros_like(attn_mask)
    restricted[0, 2, :2] = True
    torch.testing.assert_close(out[0, 2], attention(q, k, k, None, restricted)[0, 2])


def test_the_decoder_masks_each_layer_from_the_one_before():
    torch.manual_seed(0)
    transformer = Transformer(24, 4, 1, 3, 32, dropout=0.0).eval()
    src, pos, queries = torch.randn(1, 6, 24), torch.randn(1, 6, 24), torch.randn(4, 24)
    calls = []

    def everything(hs, memory):
        calls.append(hs)
        return torch.ones(1, 4, 6, dtype=torch.bool)

    plain, _ = transformer(src, pos, queries, None)
    hs, memory = transformer(src, pos, queries, None, cross_masks=everything)
    torch.testing.assert_close(hs, plain)  # a mask that hides nothing changes nothing
    assert len(calls) == 2  # before layers 2 and 3, with layers 1 and 2's normed outputs
    torch.testing.assert_close(calls[0], hs[0])
    torch.testing.assert_close(calls[1], hs[1])

    def first_token_only(hs, memory):
        mask = torch.zeros(1, 4, 6, dtype=torch.bool)
        mask[..., 0] = True
        return mask

    masked, _ = transformer(src, pos, queries, None, cross_masks=first_token_only)
    torch.testing.assert_close(masked[0], plain[0])  # the first layer sees every token
    assert (masked[1] - plain[1]).abs().max() > 1e-3


def tiny(**kwargs):
    torch.manual_seed(0)
    return build_vistr(3, 2, 2, backbone="resnet10", **{**TINY, **kwargs}).eval()


def test_a_slot_sees_the_cells_its_masks_cover_in_any_frame():
    """T = 2 frames, N = 2 slots, memory 2 x 3 cells a frame (stride 16 of 32 x 48 px; pixels at stride 4)."""
    model = tiny(masked_attention=True)
    model.mask_extension.mask_embed = nn.Identity()  # the queries themselves are the mask embeddings: D = C
    C = TINY["hidden_dim"]
    hs = torch.zeros(1, 4, C)  # queries (t, i) = (0, 0), (0, 1), (1, 0), (1, 1)
    hs[0, 0, 0] = hs[0, 2, 0] = 10.0  # slot 0 reads channel 0 in both frames
    hs[0, 1, 1] = hs[0, 3, 1] = 10.0  # slot 1 reads channel 1
    pixels = -torch.ones(2, C, 8, 12)  # frames x D x 8 x 12 (stride 4)
    pixels[0, 0, 1, 1] = 1.0  # slot 0: one pixel in frame 0, memory cell (0, 0)
    pixels[1, 0, 5, 10] = 1.0  # and one in frame 1, memory cell (1, 2)
    # slot 1 covers nothing: it sees every cell
    # 1 x 4 x S, S = 2 frames x 2 x 3 cells
    seen = model.mask_extension._attention_masks(hs, pixels, None, None)
    slot0 = torch.zeros(2, 2, 3, dtype=torch.bool)
    slot0[0, 0, 0] = slot0[1, 1, 2] = True
    assert torch.equal(seen[0, 0], slot0.flatten()) and torch.equal(seen[0, 2], slot0.flatten())
    assert seen[0, 1].all() and seen[0, 3].all()
    # the batch padding is never seen, not even by a slot that covers nothing
    sizes = torch.tensor([[32, 30]])  # 2 valid memory columns of 3, 8 valid pixel columns of 12
    token_mask = torch.zeros(2, 2, 3, dtype=torch.bool)
    token_mask[..., 2] = True
    pixels[:, :, :, 8:] = 0.0  # the pixel decoder's output is zero on padding
    seen = model.mask_extension._attention_masks(hs, pixels, sizes, token_mask.flatten()[None])
    slot0[1, 1, 2] = False  # its frame-1 cell is padding now
    assert torch.equal(seen[0, 0], slot0.flatten())
    assert torch.equal(seen[0, 1], ~token_mask.flatten())


def test_masked_attention_changes_the_predictions_and_ignores_the_padding():
    plain, masked = tiny(), tiny(masked_attention=True)
    # masks that cover some cells and not others
    nn.init.normal_(plain.mask_extension.pixel_decoder.out.weight, std=3.0)
    masked.load_state_dict(plain.state_dict())
    clip = torch.randn(2, 3, 50, 70)
    with torch.no_grad():
        assert (masked(clip[None])["pred_logits"] - plain(clip[None])["pred_logits"]).abs().max() > 1e-3
        frames, pad_mask = torch.zeros(2, 2, 3, 96, 96), torch.ones(2, 96, 96, dtype=torch.bool)
        frames[0, :, :, :50, :70], pad_mask[0, :50, :70] = clip, False
        frames[1], pad_mask[1] = torch.randn(2, 3, 96, 96), False
        batched = masked(frames, pad_mask)
        alone = masked(clip[None])
    torch.testing.assert_close(batched["pred_logits"][0], alone["pred_logits"][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        batched["pred_masks"][0, :, :13, :18], alone["pred_masks"][0], atol=1e-4, rtol=1e-4
    )


def test_masked_attention_needs_the_dot_product_head():
    with pytest.raises(ValueError, match="masked_attention needs mask_fusion 'dot_product'"):
        tiny(mask_fusion="attention", masked_attention=True)
