"""Multi-head latent attention (DeepSeek-V2/V3 MLA), written so that MTLA can subclass it.

Keys and values of all heads are reconstructed from one low-rank latent per cache slot:
    c_t  = Norm(W_dkv x_t)                       (d_c = kv_lora_rank)       cached
    k^R_t = RoPE(W_kr x_t)                        (d_r = qk_rope_head_dim)   cached, shared by heads
    k_t,h = [W_uk,h c_t ; k^R_t],  v_t,h = W_uv,h c_t
MLA caches one slot (c_t, k^R_t) per token. MTLA (``down_rate`` s > 1) merges s consecutive
latents into one slot, weighted by a hyper-network (``merge_weights``; the merge: ``_merge``).
``latent_norm`` picks Norm (and the q_lora latent's norm): ``rms_norm`` (DeepSeek's MLA; the
default, so every model saved before the option existed keeps its meaning) or ``layer_norm``
(LayerNorm with bias, as the MTLA paper and its reference implementation).

This module is the layer: its projections and its cache layout. The attention itself has
several paths, equal up to float rounding (``mla_paths.py``, whose table ``ROUTES`` picks one
per call from the phase, ``attn_backend``, the device and autograd): the stride-aware attention
for parallel passes (training, prompts), which keeps the latents for backward and expands
per-head keys block by block; the absorbed form after a cache, where queries are projected
into the latent space (q W_uk) and attend to the cached slots directly; and, for one token per
row without autograd, the same on prepared weights (``absorbed.py``).

Inference options, attributes of the instance (not model options: they change how a step is
computed, not what, and neither configs nor state dicts hold them):
- ``absorbed_decode`` (True): one token per row after a cache, without autograd, runs on the
  prepared weights; False: on the training code's path (for before/after benchmarks).
- ``absorb_merged`` (None): the prepared weights with the products W_uk^T W_q and W_o W_uv
  precomputed (True) or factored (False); None: precomputed on GPUs, factored on CPUs.
"""

from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from espnet_mtla.attention.absorbed import absorbed_weights, attend_token_absorbed
from espnet_mtla.attention.backends import check_backend
from espnet_mtla.attention.base import CachedAttention, check_dropout, check_positive, linear_weight_bias
from espnet_mtla.attention.mla_paths import attend_cached, attend_causal, call_phase, route
from espnet_mtla.attention.norms import NORM_TYPES, build_norm
from espnet_mtla.attention.rope import RotaryEmbedding, check_rope_dim


class MultiHeadLatentAttention(CachedAttention):
    """MLA. Cache: ``kv_lora_rank + qk_rope_head_dim`` numbers per token."""

    down_rate = 1  # tokens per cache slot (MTLA sets its own)

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
        # inference options (see the module docstring)
        self.absorbed_decode = True
        self.absorb_merged: Optional[bool] = None

        if q_lora_rank > 0:  # x (B, T, D) -> q (B, T, H * (d_n + d_r))
            self.q_proj = nn.Sequential(
                nn.Linear(embed_dim, q_lora_rank, bias=bias),
                build_norm(latent_norm, q_lora_rank),
                nn.Linear(q_lora_rank, num_heads * qk_head_dim, bias=False),
            )
        else:
            self.q_proj = nn.Linear(embed_dim, num_heads * qk_head_dim, bias=bias)
        self.kv_down = nn.Linear(embed_dim, kv_lora_rank + qk_rope_head_dim, bias=bias)  # -> [c (d_c) ; k^R (d_r)]
        self.kv_norm = build_norm(latent_norm, kv_lora_rank)
        # c -> [W_uk,h c (d_n) ; W_uv,h c (d_v)] per head. No bias: the absorbed form folds W_uk
        # into the queries, which a bias would break.
        self.kv_up = nn.Linear(kv_lora_rank, num_heads * (qk_nope_head_dim + v_head_dim), bias=False)
        self.out_proj = nn.Linear(num_heads * v_head_dim, embed_dim, bias=bias)
        self.rope = RotaryEmbedding(qk_rope_head_dim, rope_base, option="qk_rope_head_dim")

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

    def merge_weights(self, latent, chunk_index, absorbed=None, num_chunks: int = 0) -> Optional[torch.Tensor]:
        """Weight of each latent (..., d_c) in its merged slot, chunk_index (...) -> (..., 1); None
        means 1 (MLA). ``absorbed``: the prepared inference weights, whose tables (for chunks
        < ``num_chunks``, a bound known without a device sync) replace computing per call."""
        return None

    # -- projections -------------------------------------------------------------------------
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

    # -- the cache layout: merging into slots ------------------------------------------------
    def _merge(self, latent, k_rope, lengths, start, cache, slot=None):
        """The slots of the new tokens: slot j holds sum_t w_t c_t over the tokens of chunk j so
        far (the weighted latents ``latent``) and the rope key of the newest one. MLA: s = 1.

        New token t of row b has rank a = start[b] + t and joins slot a // s. Where the new
        tokens meet the cache, one rule: a token that continues the chunk whose partial sum the
        cache holds (start % s > 0) adds that sum, and a row without a real token (lengths 0)
        keeps the slot as it is. One token per row after a cache is that rule alone; several
        are summed within their chunks (``_sum_chunks``).

        latent (B, T, d_c), k_rope (B, T, d_r); ``slot`` start // s where the caller has it.
        Returns partial (B, U, d_c) running sums in ``_sum_chunks``' frame (None for one token
        after a cache), own (B, T, d_c) each token's running sum, and the slots to write:
        index (B, m), content (B, m, d_c + d_r).
        """
        s = self.down_rate
        batch, time, _ = latent.shape
        cached = cache is not None and cache.max_length > 0
        one_token = time == 1 and cached
        carried = s > 1 and cached  # the first new token may continue a chunk of the cache
        num_chunks = 1 if one_token else -(-(time + (s - 1 if carried else 0)) // s)
        if slot is None:
            slot = start if s == 1 else torch.div(start, s, rounding_mode="floor")  # (B,)
        if carried:
            cache.reserve(num_chunks)  # (as ``_write`` will) so that the held slot can be read
            buf = cache.buffers["kv"]
            held = buf.gather(1, slot.view(batch, 1, 1).expand(batch, 1, buf.shape[-1])).to(latent.dtype)
            first = latent[:, :1]
            first = torch.where((start % s != 0).view(batch, 1, 1), held[..., : self.kv_lora_rank] + first, first)
            latent = first if time == 1 else torch.cat([first, latent[:, 1:]], dim=1)
        if one_token:
            partial, own, index, content = None, latent, slot.unsqueeze(1), torch.cat([latent, k_rope], dim=-1)
        else:
            partial, own, index, content = self._sum_chunks(latent, k_rope, lengths, start, slot, num_chunks)
        if carried:
            content = torch.where((lengths > 0).view(batch, 1, 1), content, held)
        return partial, own, (index, content)

    def _sum_chunks(self, latent, k_rope, lengths, start, slot, num_chunks: int):
        """Within-chunk cumulative sums of several new tokens per row (``_merge``).

        The rows are shifted right by start % s so that chunk boundaries align across rows; the
        frame spans ``num_chunks`` chunks. Returns partial (B, U, d_c) the running sums in that
        frame, own (B, T, d_c), slot index (B, m) and content (B, m, d_c + d_r); U = m * s.
        """
        s = self.down_rate
        batch, time, _ = latent.shape
        device = latent.device
        shift = start % s  # (B,); 0 where the cache is empty
        width = num_chunks * s
        column = shift.unsqueeze(1) + torch.arange(time, device=device)  # (B, T)
        shifted = latent.new_zeros(batch, width, latent.shape[-1]).scatter(
            1, column.unsqueeze(-1).expand_as(latent), latent
        )
        shifted_rope = k_rope.new_zeros(batch, width, k_rope.shape[-1]).scatter(
            1, column.unsqueeze(-1).expand_as(k_rope), k_rope
        )
        partial = shifted.view(batch, num_chunks, s, -1).cumsum(2).view(batch, width, -1)
        own = partial.gather(1, column.unsqueeze(-1).expand_as(latent))
        # A slot's content is the running sum at the last token of its chunk that exists.
        chunk_end = torch.arange(num_chunks, device=device) * s + (s - 1)
        last = torch.minimum(chunk_end.unsqueeze(0), (shift + lengths - 1).unsqueeze(1)).clamp(min=0)
        slot_latent = partial.gather(1, last.unsqueeze(-1).expand(batch, num_chunks, partial.shape[-1]))
        slot_rope = shifted_rope.gather(1, last.unsqueeze(-1).expand(batch, num_chunks, k_rope.shape[-1]))
        index = slot.unsqueeze(1) + torch.arange(num_chunks, device=device)
        return partial, own, index, torch.cat([slot_latent, slot_rope], dim=-1)

    def _write(self, cache, slots, lengths, time):
        index, content = slots
        cache.reserve(index.shape[1])
        cache.write("kv", index, content)
        cache.advance(lengths, time)

    def _store(self, x, positions, lengths, start, cache):
        latent, k_rope = self._latents(x, positions, start)
        _, _, slots = self._merge(latent, k_rope, lengths, start, cache)
        self._write(cache, slots, lengths, x.shape[1])

    # -- attention: the path ``mla_paths.ROUTES`` picks ---------------------------------------
    def _attend(self, x, positions, lengths, start, cache):
        batch, time, _ = x.shape
        phase = call_phase(time, cache)
        path = route(self, phase, x)
        if path == "absorbed":
            return attend_token_absorbed(self, x, positions, lengths, start, cache)
        q_nope, q_rope = self._queries(x, positions)  # (B, T, H, d_n), (B, T, H, d_r)
        latent, k_rope = self._latents(x, positions, start)  # (B, T, d_c), (B, T, d_r)
        partial, own, slots = self._merge(latent, k_rope, lengths, start, cache)
        if cache is not None:
            self._write(cache, slots, lengths, time)
        if phase == "causal":
            out = attend_causal(self, path, q_nope, q_rope, partial, k_rope)
        else:
            out = attend_cached(self, path, q_nope, q_rope, own, k_rope, start, cache)
        return self.out_proj(out.reshape(batch, time, -1))  # (B, T, H, d_v) -> (B, T, D)
