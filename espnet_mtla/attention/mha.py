"""Multi-head attention with RoPE; MQA and GQA are the same class with fewer K/V heads."""

from typing import Optional

import torch
from torch import nn

from espnet_mtla.attention.backends import attention_function, check_backend, resolve_backend
from espnet_mtla.attention.base import CachedAttention, check_dropout, check_positive
from espnet_mtla.attention.rope import RotaryEmbedding


class MultiHeadAttention(CachedAttention):
    """MHA (num_kv_heads == num_heads), GQA (divides num_heads) or MQA (num_kv_heads == 1).

    The cache holds the rotated keys and the values of the ``num_kv_heads`` heads only:
    ``2 * num_kv_heads * head_dim`` numbers per token. ``rope=False``: no rotation (positions
    come from elsewhere, e.g. the absolute encoding of an ESPnet Transformer decoder's input).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_kv_heads: Optional[int] = None,
        head_dim: Optional[int] = None,
        dropout: float = 0.0,
        bias: bool = False,
        rope_base: float = 10000.0,
        attn_backend: str = "auto",
        rope: bool = True,
    ):
        super().__init__()
        check_positive(embed_dim, "embed_dim")
        check_positive(num_heads, "num_heads")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        check_positive(num_kv_heads, "num_kv_heads")
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads})")
        if head_dim is None:
            if embed_dim % num_heads != 0:
                raise ValueError(
                    f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}), or set head_dim"
                )
            head_dim = embed_dim // num_heads
        check_positive(head_dim, "head_dim")
        check_dropout(dropout)
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.dropout = dropout
        self.attn_backend = check_backend(attn_backend)
        self.q_proj = nn.Linear(embed_dim, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, num_kv_heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * head_dim, embed_dim, bias=bias)
        self.rope = RotaryEmbedding(head_dim, rope_base, option="head_dim") if rope else _no_rotation

    def cache_shapes(self):
        return {"k": (self.num_kv_heads, self.head_dim), "v": (self.num_kv_heads, self.head_dim)}

    def _keys_values(self, x, positions):
        """x: (B, T, D) -> k, v: (B, H_kv, T, head_dim), k rotated."""
        batch, time, _ = x.shape
        k = self.rope(self.k_proj(x).view(batch, time, self.num_kv_heads, self.head_dim), positions)
        v = self.v_proj(x).view(batch, time, self.num_kv_heads, self.head_dim)
        return k.transpose(1, 2), v.transpose(1, 2)

    def _write(self, cache, k, v, lengths, start):
        time = k.shape[2]
        cache.reserve(time)
        slots = start.unsqueeze(1) + torch.arange(time, device=k.device)  # (B, T)
        cache.write("k", slots, k)
        cache.write("v", slots, v)
        cache.advance(lengths, time)

    def _store(self, x, positions, lengths, start, cache):
        self._write(cache, *self._keys_values(x, positions), lengths, start)

    def _attend(self, x, positions, lengths, start, cache):
        batch, time, _ = x.shape
        q = self.rope(self.q_proj(x).view(batch, time, self.num_heads, self.head_dim), positions)
        q = q.transpose(1, 2)  # (B, H, T, d)
        k, v = self._keys_values(x, positions)
        gqa = self.num_kv_heads != self.num_heads
        dropout = self.dropout if self.training else 0.0
        # No Triton kernel here: SDPA's fused kernels already read each kv head once.
        attend = attention_function(resolve_backend(self.attn_backend, q, "MHA/MQA/GQA attention"))
        if cache is None or cache.max_length == 0:
            # Right-padded rows: a real query only ever sees real keys under the causal mask.
            out = attend(q, k, v, is_causal=True, enable_gqa=gqa, dropout_p=dropout)
            if cache is not None:
                self._write(cache, k, v, lengths, start)
        else:
            self._write(cache, k, v, lengths, start)
            keys, values = cache.view("k"), cache.view("v")  # (B, H_kv, S, d)
            if time == 1 and cache.view_is_visible():
                visible = None  # one new token per row, every row as long as the view: it sees all
            else:
                rank = start.unsqueeze(1) + torch.arange(time, device=x.device)  # (B, T)
                visible = (torch.arange(keys.shape[2], device=x.device) <= rank.unsqueeze(-1)).unsqueeze(1)  # (B, 1, T, S)
            out = attend(q, keys, values, attn_mask=visible, enable_gqa=gqa, dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).reshape(batch, time, -1))


def _no_rotation(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return x
