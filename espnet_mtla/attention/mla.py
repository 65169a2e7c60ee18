"""Multi-head latent attention (DeepSeek-V2/V3 MLA), written so that MTLA can subclass it.

Keys and values of all heads are reconstructed from one low-rank latent per cache slot:
    c_t  = Norm(W_dkv x_t)                       (d_c = kv_lora_rank)       cached
    k^R_t = RoPE(W_kr x_t)                        (d_r = qk_rope_head_dim)   cached, shared by heads
    k_t,h = [W_uk,h c_t ; k^R_t],  v_t,h = W_uv,h c_t
MLA caches one slot (c_t, k^R_t) per token. MTLA (``down_rate`` s > 1) merges s consecutive
latents into one slot, weighted by a hyper-network; ``merge_weights`` is its hook.
``latent_norm`` picks Norm (and the q_lora latent's norm): ``rms_norm`` (DeepSeek's MLA; the
default, so every model saved before the option existed keeps its meaning) or ``layer_norm``
(LayerNorm with bias, as the MTLA paper and its reference implementation).

Two computations, equal up to float rounding:
- parallel, several tokens per row (training, prompts): with ``attn_backend`` auto (and
  triton), ``stride_attention.py``, which keeps the latents for backward and expands per-head
  keys block by block; with sdpa, keys expanded per head and fed to the fused causal
  ``scaled_dot_product_attention`` kernel (see ``_attend_causal``);
- with a cache (decode steps, prompt after a prefix): the absorbed form, where queries are
  projected into the latent space (q W_uk) and attend to the cached slots directly. The
  inference decode step (one token per row, autograd off) runs on prepared weights: one
  matmul in, one out (``absorbed.py``).
``attn_backend`` (see backends.py) picks explicit ops, the fused SDPA kernels, or, for the
decode step, our Triton kernel.
"""

from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from espnet_mtla.attention.absorbed import absorbed_weights
from espnet_mtla.attention.backends import (attention_function, check_backend, notice_once, resolve_backend,
                                           triton_installed)
from espnet_mtla.attention.base import CachedAttention, check_dropout, check_positive, linear_weight_bias
from espnet_mtla.attention.norms import NORM_TYPES, build_norm
from espnet_mtla.attention.rope import RotaryEmbedding, check_rope_dim
from espnet_mtla.attention.stride_attention import stride_aware_attention
from espnet_mtla.attention.stride_flex import flex_stride_attention


class MultiHeadLatentAttention(CachedAttention):
    """MLA. Cache: ``kv_lora_rank + qk_rope_head_dim`` numbers per token."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        q_lora_rank: int = 0,
        kv_lora_rank: int = 256,
        qk_nope_head_dim: int = 64,
        qk_rope_head_dim: int = 32,
        v_head_dim: int = 64,
        dropout: float = 0.0,
        bias: bool = False,
        rope_base: float = 10000.0,
        attn_backend: str = "auto",
        latent_norm: str = "rms_norm",
    ):
        super().__init__()
        if latent_norm not in NORM_TYPES:
            raise ValueError(f"latent_norm must be one of {', '.join(NORM_TYPES)}, got {latent_norm!r}")
        for name, value in [
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
            ("kv_lora_rank", kv_lora_rank),
            ("qk_nope_head_dim", qk_nope_head_dim),
            ("v_head_dim", v_head_dim),
        ]:
            check_positive(value, name)
        if not isinstance(q_lora_rank, int) or q_lora_rank < 0:
            raise ValueError(f"q_lora_rank must be an integer >= 0 (0: no query compression), got {q_lora_rank!r}")
        check_rope_dim(qk_rope_head_dim, "qk_rope_head_dim")
        check_dropout(dropout)
        self.num_heads = num_heads
        self.kv_lora_rank = kv_lora_rank
        self.qk_nope_head_dim = qk_nope_head_dim
        self.qk_rope_head_dim = qk_rope_head_dim
        self.v_head_dim = v_head_dim
        self.dropout = dropout
        self.latent_norm = latent_norm
        self.attn_backend = check_backend(attn_backend)
        qk_head_dim = qk_nope_head_dim + qk_rope_head_dim
        self.scale = qk_head_dim**-0.5

        if q_lora_rank > 0:
            self.q_proj = nn.Sequential(
                nn.Linear(embed_dim, q_lora_rank, bias=bias),
                build_norm(latent_norm, q_lora_rank),
                nn.Linear(q_lora_rank, num_heads * qk_head_dim, bias=False),
            )
        else:
            self.q_proj = nn.Linear(embed_dim, num_heads * qk_head_dim, bias=bias)
        self.kv_down = nn.Linear(embed_dim, kv_lora_rank + qk_rope_head_dim, bias=bias)
        self.kv_norm = build_norm(latent_norm, kv_lora_rank)
        # No bias: the absorbed form folds W_uk into the queries, which a bias would break.
        self.kv_up = nn.Linear(kv_lora_rank, num_heads * (qk_nope_head_dim + v_head_dim), bias=False)
        self.out_proj = nn.Linear(num_heads * v_head_dim, embed_dim, bias=bias)
        self.rope = RotaryEmbedding(qk_rope_head_dim, rope_base, option="qk_rope_head_dim")

    down_rate = 1
    # Decode-step weights: None = products precomputed on GPUs, factored on CPUs (absorbed.py).
    absorb_merged: Optional[bool] = None
    # False: inference decode steps run the training code's path too (for before/after benchmarks).
    absorbed_decode: bool = True

    def train(self, mode: bool = True):
        self.__dict__.pop("_absorbed", None)  # weights are about to change: free the inference copies
        return super().train(mode)

    @property
    def tokens_per_slot(self) -> int:
        return self.down_rate

    def prepare_decode(self, num_tokens: int) -> None:
        if self.absorbed_decode:
            absorbed_weights(self)

    def cache_shapes(self):
        # One buffer per slot: [latent c (d_c) ; rope key (d_r)], the absorbed key; its first
        # d_c columns are also the absorbed value.
        return {"kv": (self.kv_lora_rank + self.qk_rope_head_dim,)}

    def merge_weights(self, latent: torch.Tensor, chunk_index: torch.Tensor) -> Optional[torch.Tensor]:
        """Weight of each latent in its merged slot, (B, T, 1); None means 1 (MLA)."""
        return None

    def merge_weights_step(self, latent, chunk_index, num_chunks: int, absorbed) -> Optional[torch.Tensor]:
        """``merge_weights`` for the decode step: latent (B, d_c), chunk_index (B,) < num_chunks -> (B, 1)."""
        return None

    # -- projections ---------------------------------------------------------------------
    def _queries(self, x, positions):
        """x: (B, T, D) -> q_nope (B, T, H, d_nope), q_rope (B, T, H, d_r) rotated."""
        batch, time, _ = x.shape
        q = self.q_proj(x).view(batch, time, self.num_heads, -1)
        q_nope, q_rope = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        return q_nope, self.rope(q_rope, positions)

    def _latents(self, x, positions, start):
        """x: (B, T, D) -> weighted latents (B, T, d_c), rotated rope keys (B, T, d_r)."""
        rank = start.unsqueeze(1) + torch.arange(x.shape[1], device=x.device)
        chunk_index = torch.div(rank, self.down_rate, rounding_mode="floor")
        if torch.is_grad_enabled() and (x.requires_grad or self.kv_down.weight.requires_grad):
            # Backward recomputes the down-projection, the norm and the merge weights from x
            # (which the projections keep anyway): autograd would otherwise keep five (B, T, d_c)
            # intermediates of them, more than the attention itself keeps.
            latent, k_rope = checkpoint(self._weighted_latents, x, chunk_index, use_reentrant=False)
        else:
            latent, k_rope = self._weighted_latents(x, chunk_index)
        return latent, self.rope(k_rope, positions)

    def _weighted_latents(self, x, chunk_index):
        """x (B, T, D) -> latents normalised and weighted for their slot (B, T, d_c), rope keys (B, T, d_r)."""
        latent, k_rope = self.kv_down(x).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        latent = self.kv_norm(latent)
        weights = self.merge_weights(latent, chunk_index)
        return (latent if weights is None else latent * weights), k_rope

    def _up_weights(self):
        """W_uk (H, d_nope, d_c) and W_uv (H, d_v, d_c), views of ``kv_up``."""
        w = linear_weight_bias(self.kv_up)[0].view(self.num_heads, self.qk_nope_head_dim + self.v_head_dim,
                                                   self.kv_lora_rank)
        return w[:, : self.qk_nope_head_dim], w[:, self.qk_nope_head_dim :]

    # -- merging into slots --------------------------------------------------------------
    def _merge(self, latent, k_rope, lengths, start, cache):
        """Within-chunk weighted cumulative sums of the new tokens, continuing the cache.

        New token t of row b has rank a = start[b] + t and lies in chunk a // s. The rows are
        shifted right by r_b = start[b] % s so that chunk boundaries align across rows; the
        cache's partial last slot (its weighted sum so far) is carried in at column r_b - 1.

        Returns partial (B, U, d_c) running sums in the shifted frame, own (B, T, d_c) each
        token's own partial state, and the slots to write: index (B, m), latent (B, m, d_c),
        rope (B, m, d_r). U = m * s.
        """
        s = self.down_rate
        batch, time, _ = latent.shape
        device = latent.device
        has_carry = s > 1 and cache is not None and cache.max_length > 0
        shift = start % s if has_carry else torch.zeros_like(start)
        num_chunks = -(-(time + (s - 1 if has_carry else 0)) // s)
        width = num_chunks * s
        column = shift.unsqueeze(1) + torch.arange(time, device=device)  # (B, T)
        shifted = latent.new_zeros(batch, width, latent.shape[-1]).scatter(
            1, column.unsqueeze(-1).expand_as(latent), latent
        )
        shifted_rope = k_rope.new_zeros(batch, width, k_rope.shape[-1]).scatter(
            1, column.unsqueeze(-1).expand_as(k_rope), k_rope
        )
        if has_carry:
            # Rows at a chunk boundary (shift 0) carry nothing; clamp keeps their gather in range.
            base = torch.div(start, s, rounding_mode="floor").clamp(max=cache.capacity_slots - 1)
            buf = cache.buffers["kv"]
            carry = buf.gather(1, base.view(batch, 1, 1).expand(batch, 1, buf.shape[-1])).to(latent.dtype)
            carry_latent, carry_rope = carry.split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
            carry_at = (torch.arange(width, device=device) == (shift - 1).unsqueeze(1)).unsqueeze(-1)  # (B, U, 1)
            shifted = torch.where(carry_at, carry_latent, shifted)
            shifted_rope = torch.where(carry_at, carry_rope, shifted_rope)
        partial = shifted.view(batch, num_chunks, s, -1).cumsum(2).view(batch, width, -1)
        own = partial.gather(1, column.unsqueeze(-1).expand_as(latent))
        # A slot's content is the running sum at the last token of its chunk that exists.
        chunk_end = torch.arange(num_chunks, device=device) * s + (s - 1)
        last = torch.minimum(chunk_end.unsqueeze(0), (shift + lengths - 1).unsqueeze(1)).clamp(min=0)
        slot_latent = partial.gather(1, last.unsqueeze(-1).expand(batch, num_chunks, partial.shape[-1]))
        slot_rope = shifted_rope.gather(1, last.unsqueeze(-1).expand(batch, num_chunks, k_rope.shape[-1]))
        slot_index = torch.div(start, s, rounding_mode="floor").unsqueeze(1) + torch.arange(
            num_chunks, device=device
        )
        return partial, own, (slot_index, slot_latent, slot_rope)

    def _merge_step(self, latent, k_rope, lengths, start, cache):
        """``_merge`` for one new token per row after a non-empty cache (the decoding step).

        The token at rank a joins slot a // s: its own partial state is that slot's content
        (when a % s > 0) plus its weighted latent. Rows without a real token (lengths 0)
        rewrite the slot with what it holds. Returns (None, own (B, 1, d_c), slots).
        """
        batch = latent.shape[0]
        slot = torch.div(start, self.down_rate, rounding_mode="floor")  # (B,)
        buf = cache.buffers["kv"]
        held = buf.gather(1, slot.clamp(max=buf.shape[1] - 1).view(batch, 1, 1).expand(batch, 1, buf.shape[-1]))
        held_latent, held_rope = held.to(latent.dtype).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        continues_chunk = (start % self.down_rate != 0).view(batch, 1, 1)
        own = torch.where(continues_chunk, held_latent + latent, latent)
        real = (lengths > 0).view(batch, 1, 1)
        slots = (slot.unsqueeze(1), torch.where(real, own, held_latent), torch.where(real, k_rope, held_rope))
        return None, own, slots

    def _write(self, cache, slots, lengths, time):
        index, latent, rope = slots
        cache.reserve(index.shape[1])
        cache.write("kv", index, torch.cat([latent, rope], dim=-1))
        cache.advance(lengths, time)

    def _store(self, x, positions, lengths, start, cache):
        latent, k_rope = self._latents(x, positions, start)
        _, _, slots = self._merge(latent, k_rope, lengths, start, cache)
        self._write(cache, slots, lengths, x.shape[1])

    # -- attention -----------------------------------------------------------------------
    def _attend(self, x, positions, lengths, start, cache):
        batch, time, _ = x.shape
        if (self.absorbed_decode and time == 1 and cache is not None and cache.max_length > 0
                and not torch.is_grad_enabled() and not (self.training and self.dropout > 0)):
            return self._decode_token(x, positions, lengths, start, cache)
        q_nope, q_rope = self._queries(x, positions)
        latent, k_rope = self._latents(x, positions, start)
        empty = cache is None or cache.max_length == 0
        merge = self._merge_step if time == 1 and not empty else self._merge
        partial, own, slots = merge(latent, k_rope, lengths, start, cache)
        if empty:
            out = self._attend_causal(q_nope, q_rope, partial, k_rope, time)
        if cache is not None:
            self._write(cache, slots, lengths, time)
        if not empty:
            out = self._attend_cached(q_nope, q_rope, own, k_rope, start, cache)
        return self.out_proj(out.reshape(batch, time, -1))

    def _decode_token(self, x, positions, lengths, start, cache):
        """The inference decode step on ``absorbed_weights``: x (B, 1, D) -> (B, 1, D).

        Computes what ``_merge_step`` + ``_attend_cached`` compute, in about 35 kernels instead of 60.
        """
        w = absorbed_weights(self)
        batch, heads, d_c, d_r, s = x.shape[0], self.num_heads, self.kv_lora_rank, self.qk_rope_head_dim, self.down_rate
        projected = nn.functional.linear(x[:, 0], w.w_in, w.b_in)
        if w.q_lora:
            q_a, k_rope, latent = projected.split(w.split_in, dim=-1)
            query, q_rope = nn.functional.linear(w.q_norm(q_a), w.w_qb, w.b_qb).split(
                [w.w_qb.shape[0] - heads * d_r, heads * d_r], dim=-1
            )
            rope_in = torch.cat([q_rope, k_rope], dim=-1)
        else:
            query, rope_in, latent = projected.split(w.split_in, dim=-1)
        rope = self.rope(rope_in.view(batch, 1, heads + 1, d_r), positions)[:, 0]  # (B, H + 1, d_r): queries, key
        if not w.merged:
            query = torch.bmm(query.view(batch, heads, -1).transpose(0, 1), w.w_uk).transpose(0, 1)
        query = torch.cat([query.reshape(batch, heads, d_c), rope[:, :heads]], dim=-1)  # (B, H, d_c + d_r)

        latent = self.kv_norm(latent)
        slot = torch.div(start, s, rounding_mode="floor") if s > 1 else start  # (B,) the slot this token joins
        weights = self.merge_weights_step(latent, slot, cache.max_length // s + 1, w)
        if weights is not None:
            latent = latent * weights
        cache.reserve(1)
        if s > 1:
            buf = cache.buffers["kv"]
            held = buf.gather(1, slot.view(batch, 1, 1).expand(batch, 1, buf.shape[-1]))[:, 0].to(latent.dtype)
            # continuing a chunk adds to its partial sum (the rope key is the newest token's)
            latent = torch.where((start % s != 0).unsqueeze(1), latent + held[:, :d_c], latent)
            new = torch.cat([latent, rope[:, heads]], dim=-1)  # (B, d_c + d_r)
            new = torch.where((lengths > 0).unsqueeze(1), new, held)  # no real token: keep the slot
        else:
            new = torch.cat([latent, rope[:, heads]], dim=-1)
        cache.write("kv", slot.unsqueeze(1), new.unsqueeze(1))
        cache.advance(lengths, 1)

        out = self._decode_step(query.unsqueeze(1), cache.view("kv"), slot.unsqueeze(1),
                                cache.view_is_visible())[:, 0]  # (B, H, d_c)
        if not w.merged:
            out = torch.bmm(out.transpose(0, 1), w.w_uv_t).transpose(0, 1)  # (B, H, d_v)
        return nn.functional.linear(out.reshape(batch, -1), w.w_out, w.b_out).unsqueeze(1)

    def _stride_aware(self, tensor):
        """The stride-aware attention that parallel passes run, or None (the sdpa/eager paths;
        attention dropout): ``flex_stride_attention`` for ``triton`` on a GPU, else
        ``stride_aware_attention`` (PyTorch ops)."""
        if self.attn_backend not in ("auto", "triton") or (self.training and self.dropout > 0):
            return None
        if self.attn_backend == "triton":
            if tensor.is_cuda and triton_installed():
                return flex_stride_attention
            notice_once("attn_backend triton: the MLA/MTLA parallel pass has Triton kernels (FlexAttention) on "
                        "GPUs only; using the stride-aware attention (PyTorch ops)")
        return stride_aware_attention

    @staticmethod
    def _head_major_queries(q_nope, q_rope):
        """(B, T, H, d_n) and (B, T, H, d_r) -> (B, H, T, d_n + d_r), contiguous: one copy, tiles are views."""
        return torch.cat([q_nope.transpose(1, 2), q_rope.transpose(1, 2)], dim=-1)

    def _attend_causal(self, q_nope, q_rope, partial, k_rope, time):
        """Parallel attention from scratch; never builds (T, T).

        MTLA's stride-aware causal pattern: the query at rank a = j*s + i (chunk j) sees the
        completed chunk summaries 0..j-1 (the partial sum at each chunk's last token) and its
        own partial state (chunk j up to a). With ``_stride_aware`` that is
        ``stride_aware_attention`` over the summaries; otherwise (sdpa, eager) the fused kernel
        in a grouped layout: queries are grouped by i, and each group is a
        (num_chunks x num_chunks) causal attention over
        keys [anchor, summary_0, ..., summary_{m-2}], where the anchor stands for the query's
        own partial state. Its score is made per-query by an extra query column holding
        q . k_own against an anchor key column of 1, and an extra value column (1 for the
        anchor) returns the anchor's softmax weight, by which v_own is added afterwards.
        Work is ~T^2/(2s) score entries instead of T^2/2. With s = 1 this is plain causal
        attention over expanded keys.

        q_nope (B, T, H, d_n), q_rope (B, T, H, d_r), partial (B, U, d_c), k_rope (B, T, d_r)
        -> (B, T, H, d_v).
        """
        s, heads = self.down_rate, self.num_heads
        batch, width = partial.shape[:2]
        stride_aware = self._stride_aware(partial)
        if stride_aware is not None:
            complete = slice(s - 1, time // s * s, s)  # last token of every complete chunk: its summary
            visible = torch.div(torch.arange(time, device=partial.device), s, rounding_mode="floor")
            return stride_aware(self._head_major_queries(q_nope, q_rope), partial[:, :time], k_rope,
                                partial[:, complete], k_rope[:, complete], visible.expand(batch, time),
                                linear_weight_bias(self.kv_up)[0], self.scale)
        num_chunks = width // s
        dropout = self.dropout if self.training else 0.0
        attend = attention_function(resolve_backend(self.attn_backend, partial, "MLA/MTLA parallel pass"))
        own_kv = self.kv_up(partial).view(batch, width, heads, -1)
        k_own, v_own = own_kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)  # (B, U, H, .)
        pad = (0, 0, 0, 0, 0, width - time)
        q_nope, q_rope = nn.functional.pad(q_nope, pad), nn.functional.pad(q_rope, pad)
        k_rope = nn.functional.pad(k_rope, pad[2:]).unsqueeze(2).expand(-1, -1, heads, -1)  # (B, U, H, d_r)
        if s == 1:
            q = torch.cat([q_nope, q_rope], dim=-1).transpose(1, 2)
            k = torch.cat([k_own, k_rope], dim=-1).transpose(1, 2)
            out = attend(q, k, v_own.transpose(1, 2), is_causal=True, scale=self.scale, dropout_p=dropout)
            return out.transpose(1, 2)[:, :time]

        own_score = (q_nope * k_own).sum(-1, keepdim=True) + (q_rope * k_rope).sum(-1, keepdim=True)
        q = torch.cat([q_nope, q_rope, own_score], dim=-1)  # (B, U, H, d_qk + 1)
        last = slice(s - 1, None, s)  # chunk ends: summaries
        k_sum = torch.cat([k_own[:, last], k_rope[:, last], torch.zeros_like(own_score[:, last])], dim=-1)
        v_sum = nn.functional.pad(v_own[:, last], (0, 1))  # value column d_v: anchor weight
        anchor_k = torch.zeros_like(k_sum[:, :1])
        anchor_k[..., -1] = 1.0
        anchor_v = torch.zeros_like(v_sum[:, :1])
        anchor_v[..., -1] = 1.0
        k = torch.cat([anchor_k, k_sum[:, :-1]], dim=1)  # (B, m, H, d_qk + 1)
        v = torch.cat([anchor_v, v_sum[:, :-1]], dim=1)  # (B, m, H, d_v + 1)

        # Groups become query heads sharing their head's keys: GQA layout, so the fused kernel
        # reads the keys once per head instead of materialising s copies.
        q = q.view(batch, num_chunks, s, heads, -1).permute(0, 3, 2, 1, 4).reshape(batch, heads * s, num_chunks, -1)
        out = attend(
            q, k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=self.scale, dropout_p=dropout, enable_gqa=True
        )
        out = out.view(batch, heads, s, num_chunks, -1).permute(0, 3, 2, 1, 4).reshape(batch, width, heads, -1)
        out = out[..., :-1] + out[..., -1:] * v_own
        return out[:, :time]

    def _attend_cached(self, q_nope, q_rope, own, k_rope, start, cache):
        """Absorbed attention over the cache's slots plus each query's own partial state.

        q_nope (B, T, H, d_n), q_rope (B, T, H, d_r), own (B, T, d_c), k_rope (B, T, d_r)
        -> (B, T, H, d_v). The query at rank a sees completed slots k < a // s and ``own``.
        The cache already holds the new tokens' slots.
        """
        time = q_nope.shape[1]
        slots = cache.view("kv")  # (B, S, d_c + d_r)
        rank = start.unsqueeze(1) + torch.arange(time, device=start.device)
        completed = torch.div(rank, self.down_rate, rounding_mode="floor")  # (B, T)
        stride_aware = self._stride_aware(own) if time > 1 else None
        if stride_aware is not None:
            slot_latent, slot_rope = slots.to(own.dtype).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
            return stride_aware(self._head_major_queries(q_nope, q_rope), own, k_rope, slot_latent, slot_rope,
                                completed, linear_weight_bias(self.kv_up)[0], self.scale)
        w_uk, w_uv = self._up_weights()
        q_latent = torch.einsum("bthn,hnc->bthc", q_nope, w_uk)  # (B, T, H, d_c)
        if time == 1:
            out_latent = self._decode_step(torch.cat([q_latent, q_rope], dim=-1), slots, completed,
                                           cache.view_is_visible())
        else:
            out_latent = self._attend_block(q_latent, q_rope, own, k_rope, slots, completed)
        return torch.einsum("bthc,hvc->bthv", out_latent, w_uv)

    def _decode_step(self, query, slots, completed, all_visible: bool = False):
        """One new token per row: its own partial state is exactly the slot just written.

        query (B, 1, H, d_c + d_r) absorbed; slots (B, S, d_c + d_r); completed (B, 1);
        ``all_visible``: every row sees all S slots (no mask needed).
        The heads act as the query rows of a single-head attention over the shared slots,
        so a fused kernel reads the cache once for all heads; the value is the slot itself
        (its rope columns give outputs that are dropped). -> (B, 1, H, d_c).
        """
        dtype, query = query.dtype, query.to(slots.dtype)
        dropout = self.dropout if self.training else 0.0
        if dropout > 0:
            backend = resolve_backend(self.attn_backend, query, "MLA/MTLA decode step with dropout")
        else:
            backend = resolve_backend(self.attn_backend, query, "MLA/MTLA decode step", has_triton_kernel=True)
        if backend == "triton":
            from espnet_mtla.attention.triton_decode import latent_decode

            out = latent_decode(query[:, 0], slots, completed[:, 0] + 1, self.scale, self.kv_lora_rank)
            return out.unsqueeze(1).to(dtype)
        visible = None if all_visible else (
            torch.arange(slots.shape[1], device=slots.device) <= completed.unsqueeze(-1)).unsqueeze(1)  # (B, 1, 1, S)
        attend = attention_function(backend)
        out = attend(query, slots.unsqueeze(1), slots.unsqueeze(1), attn_mask=visible, dropout_p=dropout,
                     scale=self.scale)
        return out[..., : self.kv_lora_rank].to(dtype)

    def _attend_block(self, q_latent, q_rope, own, k_rope, slots, completed):
        """Several new tokens per row: completed slots from the cache, own states apart.

        q_latent (B, T, H, d_c), q_rope (B, T, H, d_r), own (B, T, d_c), k_rope (B, T, d_r),
        slots (B, S, d_c + d_r), completed (B, T) -> (B, T, H, d_c).
        """
        slot_latent, slot_rope = slots.split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        scores = torch.einsum("bthc,bsc->bhts", q_latent, slot_latent) + torch.einsum(
            "bthr,bsr->bhts", q_rope, slot_rope
        )
        visible = torch.arange(slots.shape[1], device=slots.device) < completed.unsqueeze(-1)  # (B, T, S)
        scores = scores.masked_fill(~visible.unsqueeze(1), float("-inf"))
        own_score = torch.einsum("bthc,btc->bht", q_latent, own) + torch.einsum("bthr,btr->bht", q_rope, k_rope)
        scores = torch.cat([scores, own_score.unsqueeze(-1)], dim=-1) * self.scale
        probs = torch.softmax(scores.float(), dim=-1).to(q_latent.dtype)
        probs = nn.functional.dropout(probs, self.dropout, self.training)
        out_latent = torch.einsum("bhts,bsc->bthc", probs[..., :-1], slot_latent.to(probs.dtype))
        return out_latent + probs[..., -1].transpose(1, 2).unsqueeze(-1) * own.unsqueeze(2)
