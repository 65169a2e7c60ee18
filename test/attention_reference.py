"""Slow, literal implementations of the attention definitions, to check the fast ones against.

They reuse the layers' projection modules but compute the attention itself one query at a
time, straight from the definitions (no caches, no grouping, no absorption).
"""

import torch


def reference_mha(attn, x):
    """Causal MHA/GQA/MQA over unpadded x (B, T, D), positions 0..T-1."""
    batch, time, _ = x.shape
    pos = torch.arange(time).expand(batch, time)
    heads, kv_heads, dim = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q = attn.rope(attn.q_proj(x).view(batch, time, heads, dim), pos)
    k = attn.rope(attn.k_proj(x).view(batch, time, kv_heads, dim), pos)
    v = attn.v_proj(x).view(batch, time, kv_heads, dim)
    k = k.repeat_interleave(heads // kv_heads, dim=2)
    v = v.repeat_interleave(heads // kv_heads, dim=2)
    out = torch.zeros(batch, time, heads, dim)
    for i in range(time):
        scores = torch.einsum("bhd,bjhd->bhj", q[:, i], k[:, : i + 1]) / dim**0.5
        out[:, i] = torch.einsum("bhj,bjhd->bhd", scores.softmax(-1), v[:, : i + 1])
    return attn.out_proj(out.reshape(batch, time, -1))


def reference_latent(attn, x):
    """MLA / MTLA by definition: query i sees completed chunk sums and its own partial sum."""
    batch, time, _ = x.shape
    s, heads = attn.down_rate, attn.num_heads
    d_n, d_v = attn.qk_nope_head_dim, attn.v_head_dim
    pos = torch.arange(time).expand(batch, time)
    q = attn.q_proj(x).view(batch, time, heads, -1)
    q_n, q_r = q.split([d_n, attn.qk_rope_head_dim], dim=-1)
    q_r = attn.rope(q_r, pos)
    c, k_r = attn.kv_down(x).split([attn.kv_lora_rank, attn.qk_rope_head_dim], dim=-1)
    c = attn.kv_norm(c)
    k_r = attn.rope(k_r, pos)
    w = attn.merge_weights(c, pos // s)
    if w is not None:
        c = c * w
    up = attn.kv_up.weight.view(heads, d_n + d_v, attn.kv_lora_rank)
    out = torch.zeros(batch, time, heads, d_v)
    for i in range(time):
        j = i // s
        lat = [c[:, k * s : (k + 1) * s].sum(1) for k in range(j)] + [c[:, j * s : i + 1].sum(1)]
        rope = [k_r[:, k * s + s - 1] for k in range(j)] + [k_r[:, i]]
        lat, rope = torch.stack(lat, 1), torch.stack(rope, 1)
        k_n = torch.einsum("bnc,hdc->bnhd", lat, up[:, :d_n])
        v = torch.einsum("bnc,hdc->bnhd", lat, up[:, d_n:])
        scores = torch.einsum("bhd,bnhd->bhn", q_n[:, i], k_n) + torch.einsum("bhr,bnr->bhn", q_r[:, i], rope)
        out[:, i] = torch.einsum("bhn,bnhd->bhd", (scores * attn.scale).softmax(-1), v)
    return attn.out_proj(out.reshape(batch, time, -1))
