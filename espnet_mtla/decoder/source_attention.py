"""Source attention of an encoder-decoder: the encoder output, projected once per utterance and
layer, read by every hypothesis of that utterance at every step (torch only).

ESPnet's ``TransformerDecoder`` re-projects the whole encoder output for every hypothesis at
every step. Here ``memory(hs, hlens)`` projects it once into a ``SourceMemory`` (one entry per
utterance, never one per hypothesis) and ``forward(x, memory)`` reads it. Rows of ``x`` are
utterance-major: with N utterances in the memory and R = N x W rows, rows ``n*W .. n*W+W-1``
are utterance n's hypotheses (a search's beam, or the one row of teacher forcing), so the
queries of an utterance's hypotheses become the query rows of one attention over its memory.

    kind     what a frame keeps (per layer)           bytes per frame (fp32, D=512, 8 heads)
    mha      per-head keys and values (ESPnet's)      2 x D x 4           = 4096
    latent   one latent of kv_lora_rank numbers       kv_lora_rank x 4    = 1024 at rank 256
             (MLA-style: read through absorbed weights; ``down_rate`` s > 1 merges s adjacent
             frames into one latent, a softmax-weighted sum within the group: s times fewer)

``mha`` keeps ESPnet's parameter names (``linear_q``, ``linear_k``, ``linear_v``,
``linear_out``, with biases), so a trained ESPnet decoder's ``src_attn`` loads unchanged.
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from espnet_mtla.attention.base import check_positive
from espnet_mtla.attention.norms import build_norm

SOURCE_KINDS = ("mha", "latent")


@dataclass
class SourceMemory:
    """One layer's projected encoder output for N utterances.

    keys, values: (N, H, T, d) for ``mha``; keys: (N, T', d_c) latents for ``latent`` (values
    is None: the latent is both). mask: (N, 1, 1, T) True on real frames, None when every
    frame of every utterance is real.
    """

    keys: torch.Tensor
    values: Optional[torch.Tensor]
    mask: Optional[torch.Tensor]

    @property
    def num_utterances(self) -> int:
        return self.keys.shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values) if t is not None)

    def select(self, utterances: torch.Tensor) -> "SourceMemory":
        """The memory of ``utterances`` (N',) only."""
        pick = lambda t: None if t is None else t.index_select(0, utterances)  # noqa: E731
        return SourceMemory(pick(self.keys), pick(self.values), pick(self.mask))


class SourceAttention(nn.Module):
    """Cross-attention from decoder states to a ``SourceMemory``.

    Args:
        dim: decoder width (and, as in ESPnet's Transformer decoder, the encoder output's).
        num_heads: attention heads.
        dropout: attention dropout (ESPnet's ``src_attention_dropout_rate``).
        kind: ``mha`` (per-head keys and values) or ``latent`` (one latent per frame).
        kv_lora_rank: the latent's size (``latent``).
        down_rate: frames merged into one latent (``latent``; 1: none).
        latent_norm: ``layer_norm`` | ``rms_norm`` on the latent (``latent``).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, kind: str = "mha",
                 kv_lora_rank: int = 256, down_rate: int = 1, latent_norm: str = "layer_norm"):
        super().__init__()
        if kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source_attention {kind!r}; choose one of {', '.join(SOURCE_KINDS)}, auto")
        if dim % num_heads:
            raise ValueError(f"attention_heads ({num_heads}) must divide the decoder width ({dim})")
        for name, value in (("kv_lora_rank", kv_lora_rank), ("down_rate", down_rate)):
            check_positive(value, f"source_conf.{name}")
        self.kind, self.num_heads, self.head_dim = kind, num_heads, dim // num_heads
        self.dropout = dropout
        self.linear_q = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        if kind == "mha":
            self.linear_k = nn.Linear(dim, dim)
            self.linear_v = nn.Linear(dim, dim)
        else:
            self.down_rate = down_rate
            self.kv_down = nn.Linear(dim, kv_lora_rank)  # frame -> latent c (d_c)
            self.kv_norm = build_norm(latent_norm, kv_lora_rank)
            self.k_up = nn.Linear(kv_lora_rank, dim, bias=False)  # c -> per-head keys (absorbed into queries)
            self.v_up = nn.Linear(kv_lora_rank, dim, bias=False)  # c -> per-head values (absorbed into the output)
            self.merge_score = nn.Linear(kv_lora_rank, 1) if down_rate > 1 else None

    # -- once per utterance and layer --------------------------------------------------------
    def memory(self, hs: torch.Tensor, hlens: torch.Tensor) -> SourceMemory:
        """hs: (N, T, D) encoder output, hlens: (N,) -> this layer's memory of the N utterances."""
        batch, time, _ = hs.shape
        real = torch.arange(time, device=hs.device) < hlens.unsqueeze(1)  # (N, T)
        if self.kind == "mha":
            k = self.linear_k(hs).view(batch, time, self.num_heads, self.head_dim).transpose(1, 2)
            v = self.linear_v(hs).view(batch, time, self.num_heads, self.head_dim).transpose(1, 2)
            return SourceMemory(k, v, _frame_mask(real))
        latent = self.kv_norm(self.kv_down(hs))  # (N, T, d_c)
        if self.down_rate > 1:
            latent, real = self._merge(latent, real)
        return SourceMemory(latent, None, _frame_mask(real))

    def _merge(self, latent: torch.Tensor, real: torch.Tensor):
        """(N, T, d_c), (N, T) -> (N, ceil(T/s), d_c), (N, ceil(T/s)): a softmax-weighted sum of
        each group's real frames (a group without one is masked out)."""
        s = self.down_rate
        batch, time, rank = latent.shape
        pad = (-time) % s
        latent = nn.functional.pad(latent, (0, 0, 0, pad)).view(batch, -1, s, rank)
        real = nn.functional.pad(real, (0, pad)).view(batch, -1, s)
        score = self.merge_score(latent).squeeze(-1).masked_fill(~real, float("-inf"))
        weight = torch.softmax(score, dim=-1).nan_to_num(0.0)  # all-padding groups: NaN -> 0
        return (weight.unsqueeze(-1) * latent).sum(2), real.any(-1)

    # -- every step ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, memory: SourceMemory) -> torch.Tensor:
        """x: (R, L, D) decoder states, R = N x W utterance-major rows -> (R, L, D)."""
        rows, length, dim = x.shape
        utts = memory.num_utterances
        if rows % utts:
            raise ValueError(f"{rows} decoder rows cannot be grouped over {utts} utterances of source memory")
        width = rows // utts
        # (R, L, H, d) -> (N, H, W*L, d): an utterance's hypotheses are the query rows of one attention
        q = self.linear_q(x).view(utts, width * length, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if self.kind == "mha":
            out = nn.functional.scaled_dot_product_attention(  # padded frames get no weight
                q, memory.keys, memory.values, attn_mask=memory.mask, dropout_p=dropout)  # (N, H, W*L, d)
        else:
            # Absorbed: q_h . (W_uk,h c) = (W_uk,h^T q_h) . c, and the values are c itself,
            # so every head reads the one latent per frame; W_uv comes after the attention.
            heads, queries = self.num_heads, width * length
            w_uk = self.k_up.weight.view(heads, self.head_dim, -1)  # (H, d, d_c)
            q_latent = torch.einsum("nhqd,hdc->nhqc", q, w_uk)  # (N, H, W*L, d_c)
            # The heads become query rows of one single-head attention over the shared latents,
            # so the memory is read once for all heads (never expanded per head).
            c = memory.keys.unsqueeze(1)  # (N, 1, T', d_c)
            scale = 1.0 / math.sqrt(self.head_dim)  # the scale of the unabsorbed keys' width
            out_latent = nn.functional.scaled_dot_product_attention(
                q_latent.reshape(utts, 1, heads * queries, -1), c, c, attn_mask=memory.mask, dropout_p=dropout,
                scale=scale).view(utts, heads, queries, -1)  # (N, H, W*L, d_c)
            w_uv = self.v_up.weight.view(heads, self.head_dim, -1)  # (H, d, d_c)
            out = torch.einsum("nhqc,hdc->nhqd", out_latent, w_uv)
        out = out.transpose(1, 2).reshape(rows, length, dim)  # (N, W*L, H*d) -> (R, L, D)
        return self.linear_out(out)


def _frame_mask(real: torch.Tensor) -> Optional[torch.Tensor]:
    """(N, T) real frames -> (N, 1, 1, T) for the attention, or None when all are real.

    Reads one value on the host: called once per utterance batch and layer, never per step."""
    return None if bool(real.all()) else real[:, None, None, :]
