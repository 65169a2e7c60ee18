"""MLA/MTLA's one-token step with inference-time weights: one matmul in, one matmul out.

One new token per row after a cache (each step of a search; ``mla_paths``' path ``absorbed``)
computes, per layer and row,

    [q_nope ; q_rope] = W_q x          k_rope, c = W_dkv x        c = Norm(c) * w_hyper(c, j)
    q_latent_h = W_uk,h^T q_nope,h     o_h = attend([q_latent_h ; rope(q_rope_h)], slots)
    y = W_o [W_uv,h o_h]_h

which, written as the training code writes it, is about a hundred small tensor ops (the
profile in docs/benchmarks.md). ``AbsorbedWeights`` holds what inference can prepare once:

- ``w_in``: the query and KV-down projections stacked into one matrix, rows reordered so that
  the outputs come out as [query part (H, .) ; rope inputs (H + 1, d_r) ; latent (d_c)]: one
  matmul, one RoPE call for the queries' and the key's rope parts together.
- ``merged=True`` (the default on GPUs): the products W_uk,h^T W_q,h and W_o,h W_uv,h
  precomputed, so queries land straight in the latent space and the attention output goes
  straight to the model dimension. This
  saves two batched matmuls per layer step but multiplies the projections' weights by about
  2.3 (H * (d_c + d_r) = 2304 columns instead of H * d_nope = 512 at the paper's sizes), so on
  CPUs, where a step reads its weights from memory, the factored form is faster
  (``merged=False``: the per-head W_uk / W_uv as batched matmuls, weights read once).
- ``chunk_table``: MTLA's hyper-network chunk embeddings W_c e(j) for j < len, grown by
  doubling (a step looks up one row instead of computing a sinusoid and a linear).

The weights are rebuilt when any parameter they were made from changed: the key is each
source parameter's storage, version counter (bumped by every in-place update: optimizer steps,
``load_state_dict``), dtype and device, so ``.to()``, loading and training are all picked up.
"""

import contextlib
from typing import Optional, Tuple

import torch
from torch import nn

from espnet_mtla.attention.base import linear_weight_bias
from espnet_mtla.attention.hypernet import sinusoid
from espnet_mtla.attention.mla_paths import latent_slot_attention


def parameters_key(params) -> Tuple:
    """What identifies the current values of ``params``: storage, version, dtype, device."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)


def _weight_bias(linear: nn.Module, dtype) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    weight, bias = linear_weight_bias(linear)  # adapters (PEFT LoRA) included
    return weight.to(dtype), (None if bias is None else bias.to(dtype))


def _cat_bias(parts, rows, like):
    """Stack optional biases of stacked weights (zeros where a part has none); None if all are."""
    if all(b is None for b in parts):
        return None
    return torch.cat([like.new_zeros(n) if b is None else b for b, n in zip(parts, rows)])


class AbsorbedWeights:
    """Inference-time weights of one ``MultiHeadLatentAttention`` layer (see module docstring).

    Shapes (H heads, d_n/d_r/d_v head dims, d_c latent, D model dim, Q = q_lora_rank or D):
        w_in (N_in, D): [q rows | (q_lora: q_a rows) ; k_rope rows ; latent rows]
        w_qb (H * (d_q + d_r), Q) with q_lora, else folded into w_in; d_q = d_c merged, d_n factored
        w_uk (H, d_n, d_c)  factored only;  w_uv_t (H, d_c, d_v) factored only
        w_out (D, H * d_c) merged, else ``out_proj``'s (D, H * d_v)
    """

    def __init__(self, layer, merged: bool):
        self.merged = merged
        self.key = parameters_key(layer.parameters())
        self.chunk_table = None
        with torch.no_grad():
            self._build(layer)

    def _build(self, layer) -> None:
        heads, d_n, d_r, d_c = layer.num_heads, layer.qk_nope_head_dim, layer.qk_rope_head_dim, layer.kv_lora_rank
        dtype = layer.kv_down.weight.dtype
        acc = torch.promote_types(dtype, torch.float32)  # the merged products: float32 or better
        q_linear = layer.q_proj[2] if isinstance(layer.q_proj, nn.Sequential) else layer.q_proj
        w_q, b_q = _weight_bias(q_linear, dtype)
        w_q = w_q.view(heads, d_n + d_r, -1)
        b_q = None if b_q is None else b_q.view(heads, d_n + d_r)
        w_uk, w_uv = layer._up_weights()  # (H, d_n, d_c), (H, d_v, d_c)
        if self.merged:
            # q_latent_h = W_uk,h^T (W_qn,h x + b_qn,h)
            w_query = torch.einsum("hnc,hnd->hcd", w_uk.to(acc), w_q[:, :d_n].to(acc)).to(dtype)  # (H, d_c, Q)
            b_query = None if b_q is None else torch.einsum("hnc,hn->hc", w_uk.to(acc), b_q[:, :d_n].to(acc)).to(dtype)
        else:
            w_query, b_query = w_q[:, :d_n], None if b_q is None else b_q[:, :d_n]
            self.w_uk = w_uk.contiguous()
            self.w_uv_t = w_uv.transpose(1, 2).contiguous()
        w_query = w_query.reshape(-1, w_q.shape[-1])
        w_qrope = w_q[:, d_n:].reshape(-1, w_q.shape[-1])  # (H * d_r, Q)
        b_query = None if b_query is None else b_query.reshape(-1)
        b_qrope = None if b_q is None else b_q[:, d_n:].reshape(-1)
        w_kv, b_kv = _weight_bias(layer.kv_down, dtype)  # rows: [latent (d_c) ; k_rope (d_r)]
        w_latent, w_krope = w_kv.split([d_c, d_r])
        b_latent, b_krope = (None, None) if b_kv is None else b_kv.split([d_c, d_r])

        self.q_lora = isinstance(layer.q_proj, nn.Sequential)
        if self.q_lora:
            w_qa, b_qa = _weight_bias(layer.q_proj[0], dtype)
            self.q_norm = layer.q_proj[1]
            parts = [(w_qa, b_qa), (w_krope, b_krope), (w_latent, b_latent)]
            self.w_qb = torch.cat([w_query, w_qrope]).contiguous()
            self.b_qb = _cat_bias([b_query, b_qrope], [w_query.shape[0], w_qrope.shape[0]], self.w_qb)
            self.split_in = [w_qa.shape[0], d_r, d_c]
        else:
            parts = [(w_query, b_query), (w_qrope, b_qrope), (w_krope, b_krope), (w_latent, b_latent)]
            self.split_in = [w_query.shape[0], (heads + 1) * d_r, d_c]
        self.w_in = torch.cat([w for w, _ in parts]).contiguous()
        self.b_in = _cat_bias([b for _, b in parts], [w.shape[0] for w, _ in parts], self.w_in)

        w_o, b_o = _weight_bias(layer.out_proj, dtype)
        self.b_out = b_o
        if self.merged:
            # y = sum_h W_o,h W_uv,h o_h
            w_o = torch.einsum("dhv,hvc->dhc", w_o.view(-1, heads, w_uv.shape[1]).to(acc), w_uv.to(acc)).to(dtype)
            self.w_out = w_o.reshape(w_o.shape[0], -1).contiguous()
        else:
            self.w_out = w_o

    def chunk_embeddings(self, hypernet, num_chunks: int, dtype) -> torch.Tensor:
        """(>= num_chunks, d_c / ratio): the hyper-network's W_c e(j) + b for chunks j."""
        table = self.chunk_table
        if table is None or table.shape[0] < num_chunks or table.dtype != dtype:
            size = max(num_chunks, 64 if table is None else 2 * table.shape[0])
            index = torch.arange(size, device=hypernet.chunk_proj.weight.device)
            with torch.no_grad():
                table = hypernet.chunk_proj(sinusoid(index, hypernet.latent_dim).to(dtype))
            self.chunk_table = table
        return table


def absorbed_weights(layer, merged: Optional[bool] = None) -> AbsorbedWeights:
    """``layer``'s current inference weights, rebuilt if its parameters changed (checked at every
    call, but within ``weights_fixed``).

    ``merged`` None: the layer's ``absorb_merged`` option if set, else True on GPUs, False on CPUs.
    """
    if merged is None:
        merged = layer.absorb_merged
    if merged is None:
        merged = layer.kv_down.weight.is_cuda
    cached = layer.__dict__.get("_absorbed")
    if cached is not None and cached.merged == merged and layer.__dict__.get("_weights_fixed"):
        return cached
    if cached is None or cached.merged != merged or cached.key != parameters_key(layer.parameters()):
        cached = AbsorbedWeights(layer, merged)
        layer.__dict__["_absorbed"] = cached
    return cached


@contextlib.contextmanager
def weights_fixed(*modules):
    """Within it, the MLA/MTLA layers of ``modules`` (anything with ``modules()``; None skipped) check
    their inference weights against their parameters once, not at every step: a search changes
    no weight, and walking every parameter of every layer per step costs as much as a small
    layer's step."""
    layers = [m for module in modules if callable(getattr(module, "modules", None)) for m in module.modules()
              if hasattr(m, "absorb_merged")]
    before = [m.__dict__.get("_weights_fixed", False) for m in layers]
    for layer in layers:
        cached = layer.__dict__.get("_absorbed")
        if cached is not None and cached.key != parameters_key(layer.parameters()):
            del layer.__dict__["_absorbed"]  # stale: rebuilt at the first step
        layer.__dict__["_weights_fixed"] = True
    try:
        yield
    finally:
        for layer, fixed in zip(layers, before):
            layer.__dict__["_weights_fixed"] = fixed


def attend_token_absorbed(layer, x, positions, lengths, start, cache):
    """One new token per row after a cache, on ``absorbed_weights``: x (B, 1, D) -> (B, 1, D).

    Computes what the ``per_head`` path computes (``mla_paths.attend_cached``), in about 35
    kernels instead of 60.
    """
    w = absorbed_weights(layer)
    batch, heads, d_c, d_r, s = x.shape[0], layer.num_heads, layer.kv_lora_rank, layer.qk_rope_head_dim, layer.down_rate
    projected = nn.functional.linear(x[:, 0], w.w_in, w.b_in)
    if w.q_lora:
        q_a, k_rope, latent = projected.split(w.split_in, dim=-1)
        query, q_rope = nn.functional.linear(w.q_norm(q_a), w.w_qb, w.b_qb).split(
            [w.w_qb.shape[0] - heads * d_r, heads * d_r], dim=-1
        )
        rope_in = torch.cat([q_rope, k_rope], dim=-1)
    else:
        query, rope_in, latent = projected.split(w.split_in, dim=-1)
    rope = layer.rope(rope_in.view(batch, 1, heads + 1, d_r), positions)[:, 0]  # (B, H + 1, d_r): queries, key
    if not w.merged:
        query = torch.bmm(query.view(batch, heads, -1).transpose(0, 1), w.w_uk).transpose(0, 1)
    query = torch.cat([query.reshape(batch, heads, d_c), rope[:, :heads]], dim=-1)  # (B, H, d_c + d_r)

    latent = layer.kv_norm(latent)
    slot = torch.div(start, s, rounding_mode="floor") if s > 1 else start  # (B,) the slot this token joins
    weights = layer.merge_weights(latent, slot, absorbed=w, num_chunks=cache.max_length // s + 1)
    if weights is not None:
        latent = latent * weights
    _, _, slots = layer._merge(latent.unsqueeze(1), rope[:, heads:], lengths, start, cache, slot)
    layer._write(cache, slots, lengths, 1)

    out = latent_slot_attention(layer, query.unsqueeze(1), cache.view("kv"), slots[0],
                                cache.view_is_visible())[:, 0]  # (B, H, d_c)
    if not w.merged:
        out = torch.bmm(out.transpose(0, 1), w.w_uv_t).transpose(0, 1)  # (B, H, d_v)
    return nn.functional.linear(out.reshape(batch, -1), w.w_out, w.b_out).unsqueeze(1)
