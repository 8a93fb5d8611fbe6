"""DETR's post-norm transformer, batch-first, with attention through ``scaled_dot_product_attention``.

Parameter names follow DETR/VisTR (``self_attn.in_proj_weight``, ``multihead_attn.out_proj.weight``,
``linear1``, ``norm1``...) so the authors' checkpoints map onto it key for key.
"""

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameters, computed by SDPA.

    Args:
        embed_dim: C, divisible by ``num_heads``.
        num_heads: heads.
        dropout: attention-probability dropout (training only). On CPU a non-zero value makes SDPA fall
            back to its math kernel, which stores every attention map: keep it 0 for long sequences.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from queries to keys.

        Args:
            query: ``[B, S_q, C]``; key, value: ``[B, S_k, C]``.
            key_padding_mask: bool ``[B, S_k]``, True for keys to ignore, or None.
            attn_mask: bool ``[B, S_q, S_k]``, True where a query may see a key, or None (every key). Each
                query must see at least one key.
        Returns:
            ``[B, S_q, C]``.
        """
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        batch, heads = query.shape[0], self.num_heads
        # B x S x C -> B x heads x S x C/heads
        q, k, v = (x.unflatten(-1, (heads, -1)).transpose(1, 2) for x in (q, k, v))
        if attn_mask is not None:
            attn_mask = attn_mask[:, None]  # B x 1 x S_q x S_k, shared by the heads
        if key_padding_mask is not None:
            keys = ~key_padding_mask[:, None, None, :]
            attn_mask = keys if attn_mask is None else attn_mask & keys
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):  # bf16 SDPA's backward is ~4x slower on CPU
                out = self._attend(q.float(), k.float(), v.float(), attn_mask)
        else:
            out = self._attend(q, k, v, attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, -1, heads * out.shape[-1]))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None) -> Tensor:
        """SDPA over ``[B, heads, S, C/heads]`` projections; ``attn_mask`` True where a key may be seen."""
        dropout = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class TransformerEncoderLayer(nn.Module):
    """Post-norm: self-attention (pos added to q, k) -> add & norm -> FFN -> add & norm."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, attention_dropout: float
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, attention_dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """src, pos: ``[B, S, C]``; key_padding_mask: bool ``[B, S]`` or None. Returns ``[B, S, C]``."""
        q = k = _with_pos(src, pos)
        src = self.norm1(src + self.dropout(self.self_attn(q, k, src, key_padding_mask)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class TransformerDecoderLayer(nn.Module):
    """Post-norm: self-attention -> cross-attention to the memory -> FFN, each followed by add & norm."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, attention_dropout: float
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, attention_dropout)
        self.multihead_attn = MultiheadAttention(d_model, nhead, attention_dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Tensor,
        query_pos: Tensor,
        memory_mask: Tensor | None,
        groups: int = 1,
        cross_mask: Tensor | None = None,
    ) -> Tensor:
        """tgt, query_pos: ``[B, G·Q, C]``; memory, pos: ``[B, S, C]``; memory_mask ``[B, S]``;
        cross_mask: bool ``[B, G·Q, S]``, True where a query may see a memory token, or None (all).

        The G query groups attend to themselves only (each group is a decoder of its own over the same
        memory). Returns ``[B, G·Q, C]``."""
        q = k = _with_pos(tgt, query_pos)
        q, k, v = (x.unflatten(1, (groups, -1)).flatten(0, 1) for x in (q, k, tgt))  # B·G x Q x C (views)
        attn = self.self_attn(q, k, v).reshape(tgt.shape)  # -> B x G·Q x C
        tgt = self.norm1(tgt + self.dropout(attn))
        attn = self.multihead_attn(
            _with_pos(tgt, query_pos), _with_pos(memory, pos), memory, memory_mask, cross_mask
        )
        tgt = self.norm2(tgt + self.dropout(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, layer: TransformerEncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        for layer in self.layers:
            src = layer(src, pos, key_padding_mask)
        return src


class TransformerDecoder(nn.Module):
    """Decoder layers with a shared final norm applied to every layer's output (for auxiliary losses)."""

    def __init__(self, layer: TransformerDecoderLayer, num_layers: int, d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Tensor,
        query_pos: Tensor,
        memory_mask: Tensor | None,
        groups: int = 1,
        cross_masks: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Returns ``[L, B, Q, C]``: the normed output of every layer. ``cross_masks`` maps a layer's normed
        output to the next layer's ``cross_mask`` (masked attention); the first layer sees every token."""
        outputs = []
        for layer in self.layers:
            cross = None if cross_masks is None or not outputs else cross_masks(outputs[-1])
            tgt = layer(tgt, memory, pos, query_pos, memory_mask, groups, cross)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class Transformer(nn.Module):
    """Encoder over the clip's T·h·w tokens, decoder over the Q = T·N instance queries.

    Args:
        d_model: C.
        nhead: attention heads.
        num_encoder_layers, num_decoder_layers: depths (encoder may be 0: the memory is then the input).
        dim_feedforward: FFN width.
        dropout: residual/FFN dropout.
        attention_dropout: dropout on attention probabilities.
    """

    def __init__(
        self,
        d_model: int = 384,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_decoder_layers < 1:
            raise ValueError(f"num_decoder_layers must be >= 1, got {num_decoder_layers}")
        enc = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, attention_dropout)
        dec = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, attention_dropout)
        self.encoder = TransformerEncoder(enc, num_encoder_layers)
        self.decoder = TransformerDecoder(dec, num_decoder_layers, d_model)
        self.d_model = d_model
        self.nhead = nhead
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        query_embed: Tensor,
        mask: Tensor | None,
        query_groups: int = 1,
        cross_masks: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Encode the clip and decode the queries.

        Args:
            src: ``[B, S, C]`` projected features, S = T·h·w frame-major (t·h·w + y·w + x).
            pos: ``[B, S, C]`` position encoding.
            query_embed: ``[G·Q, C]`` learned query positions, G groups of Q.
            mask: bool ``[B, S]``, True on padded tokens, or None.
            query_groups: G; the decoder's self-attention stays within a group.
            cross_masks: (a decoder layer's normed output ``[B, G·Q, C]``, memory) -> bool ``[B, G·Q, S]``,
                the memory tokens each query of the next layer may see (masked attention), or None.
        Returns:
            hs ``[L, B, G·Q, C]`` decoder outputs of every layer, memory ``[B, S, C]``.
        """
        memory = self.encode(src, pos, mask)
        layer_masks = None if cross_masks is None else (lambda hs: cross_masks(hs, memory))
        return self.decode(memory, pos, query_embed, mask, query_groups, layer_masks), memory

    def encode(self, src: Tensor, pos: Tensor, mask: Tensor | None) -> Tensor:
        """The encoder alone: ``[B, S, C]`` tokens -> memory ``[B, S, C]`` (see ``forward``)."""
        return self.encoder(src, pos, mask)

    def decode(
        self,
        memory: Tensor,
        pos: Tensor,
        query_embed: Tensor,
        mask: Tensor | None,
        query_groups: int = 1,
        cross_masks: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """The decoder alone: memory ``[B, S, C]`` -> hs ``[L, B, G·Q, C]`` (see ``forward``; here
        ``cross_masks`` takes a layer's normed output only)."""
        if query_embed.shape[0] % query_groups:
            raise ValueError(f"{query_embed.shape[0]} queries do not split into {query_groups} groups")
        query_pos = query_embed[None].expand(memory.shape[0], -1, -1)
        tgt = torch.zeros_like(query_pos)
        return self.decoder(tgt, memory, pos, query_pos, mask, query_groups, cross_masks)
