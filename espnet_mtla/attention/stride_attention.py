"""MLA/MTLA's parallel attention with its own backward: saves latents, never per-head keys.

Every query t attends to the first ``visible[t]`` completed slots (chunk summaries: a latent and
a rope key each, shared by the heads) and to its own partial state (the running merge of its
chunk up to t). Keys and values of head h are expansions of a latent c:
    k_h = [W_uk,h c ; k_rope],  v_h = W_uv,h c        (W_up = kv_up.weight stacks [W_uk,h ; W_uv,h])
Autograd through the expanded form keeps per-head keys and values for every position (what
MHA keeps, on top of the latents). This function keeps only its inputs (queries, latents,
rope keys), the output and one log-sum-exp per query and head, and expands keys block by block
in the forward pass (online softmax, as FlashAttention) and again in the backward pass, where
each block's key/value gradients are contracted back onto its latents before the next block.
No (T, T) matrix and no per-head key tensor for all positions ever exists; the gradients are
exact. Tiles hold at most ``TILE_ELEMENTS`` scores (a few MiB).
"""

import torch
from torch.nn import functional as F

# Scores per tile: small enough that tiles stay in cache-sized pieces next to the saved tensors.
TILE_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 23}
KEY_BLOCK = {"cpu": 128, "cuda": 512}
MIN_ROWS = 16


def _tiles(device, batch, heads, time):
    kind = "cuda" if device.type == "cuda" else "cpu"
    key_block = KEY_BLOCK[kind]
    rows = max(MIN_ROWS, TILE_ELEMENTS[kind] // (batch * heads * key_block))
    return key_block, min(rows, max(time, 1))


class _Expansion:
    """Per-head keys/values of latents, and the way back: W_up (H * (d_n + d_v), d_c)."""

    def __init__(self, w_up, heads, d_nope, d_rope):
        self.w_up, self.heads, self.d_nope, self.d_rope = w_up, heads, d_nope, d_rope

    def keys_values(self, latent, rope):
        """latent (B, n, d_c), rope (B, n, d_r) -> k (B, H, n, d_n + d_r), v (B, H, n, d_v)."""
        batch, n, _ = latent.shape
        kv = F.linear(latent, self.w_up).view(batch, n, self.heads, -1)
        k = torch.cat([kv[..., : self.d_nope], rope.unsqueeze(2).expand(batch, n, self.heads, self.d_rope)], dim=-1)
        # contiguous once per block: every tile's matmul would otherwise copy them
        return k.transpose(1, 2).contiguous(), kv[..., self.d_nope :].transpose(1, 2).contiguous()

    def contract(self, d_k, d_v, latent, d_w):
        """Gradients of ``keys_values``: d_k (B, H, n, d_qk), d_v (B, H, n, d_v) -> d_latent, d_rope.

        Adds W_up's gradient into ``d_w``.
        """
        batch, _, n, _ = d_k.shape
        grad = torch.cat([d_k[..., : self.d_nope], d_v], dim=-1).transpose(1, 2).reshape(batch, n, -1).to(latent.dtype)
        d_w.addmm_(grad.reshape(batch * n, -1).t().to(d_w.dtype), latent.reshape(batch * n, -1).to(d_w.dtype))
        return grad @ self.w_up, d_k[..., self.d_nope :].sum(1)


def _block_bounds(visible, key_block, num_slots):
    """Per key block [k0, k1): the first query (over all rows) that sees any of its slots, and
    the first from which every row sees all of them (no mask needed); ``visible`` rises along t."""
    starts = torch.arange(0, num_slots, key_block, device=visible.device)
    ends = (starts + key_block).clamp(max=num_slots)
    rows = visible.contiguous()
    first = torch.searchsorted(rows, starts.expand(rows.shape[0], -1).contiguous(), right=True).min(0).values
    unmasked = torch.searchsorted(rows, (ends - 1).expand(rows.shape[0], -1).contiguous(), right=True).max(0).values
    return list(zip(starts.tolist(), ends.tolist(), first.tolist(), unmasked.tolist()))


def _scores(q_tile, k, scale, visible_tile, slot_index, masked: bool, dtype):
    """Scaled scores (B, H, R, n) in ``dtype``; slots a query does not see get -inf."""
    scores = (q_tile @ k.transpose(-1, -2)).to(dtype).mul_(scale)
    if masked:
        scores.masked_fill_((slot_index >= visible_tile[..., None]).unsqueeze(1), float("-inf"))
    return scores


class StrideAwareAttention(torch.autograd.Function):
    """See ``stride_aware_attention``. Tiles: R queries x n slots of one key block."""

    @staticmethod
    def forward(ctx, q, own, own_rope, slot_latent, slot_rope, visible, w_up, scale):
        batch, heads, time, d_qk = q.shape
        stat = torch.promote_types(q.dtype, torch.float32)  # softmax statistics and sums: at least float32
        d_r = own_rope.shape[-1]
        expansion = _Expansion(w_up, heads, d_qk - d_r, d_r)
        key_block, rows = _tiles(q.device, batch, heads, time)
        bounds = _block_bounds(visible, key_block, slot_latent.shape[1])
        d_v = w_up.shape[0] // heads - (d_qk - d_r)
        acc = q.new_empty(batch, heads, time, d_v, dtype=stat)  # running sum of probability x value
        row_max = q.new_empty(batch, heads, time, dtype=stat)
        row_sum = torch.ones_like(row_max)
        for a in range(0, time, rows):  # each query's own state opens its softmax
            b = min(time, a + rows)
            k_own, v_own = expansion.keys_values(own[:, a:b], own_rope[:, a:b])
            row_max[..., a:b] = (q[:, :, a:b] * k_own).sum(-1).to(stat) * scale
            acc[:, :, a:b] = v_own
        for k0, k1, first, unmasked in bounds:
            if first >= time:
                continue
            k, v = expansion.keys_values(slot_latent[:, k0:k1], slot_rope[:, k0:k1])
            slot_index = torch.arange(k0, k1, device=q.device)
            for a in range(first, time, rows):
                b = min(time, a + rows)
                scores = _scores(q[:, :, a:b], k, scale, visible[:, a:b], slot_index, a < unmasked, stat)
                old_max = row_max[..., a:b]
                new_max = torch.maximum(old_max, scores.amax(-1))
                probs = scores.sub_(new_max.unsqueeze(-1)).exp_()
                rescale = (old_max - new_max).exp_()
                row_sum[..., a:b] = row_sum[..., a:b] * rescale + probs.sum(-1)
                acc[:, :, a:b] = acc[:, :, a:b] * rescale.unsqueeze(-1) + (probs.to(v.dtype) @ v).to(stat)
                row_max[..., a:b] = new_max
        out = acc.div_(row_sum.unsqueeze(-1)).transpose(1, 2).to(q.dtype).contiguous()  # (B, T, H, d_v)
        del acc
        log_sum_exp = row_max.add_(row_sum.log_())
        ctx.save_for_backward(q, own, own_rope, slot_latent, slot_rope, visible, w_up, out, log_sum_exp)
        ctx.scale, ctx.rows, ctx.bounds = scale, rows, bounds  # the backward walks the same tiles
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, own, own_rope, slot_latent, slot_rope, visible, w_up, out, log_sum_exp = ctx.saved_tensors
        scale, rows = ctx.scale, ctx.rows
        _, heads, time, d_qk = q.shape
        stat = torch.promote_types(q.dtype, torch.float32)
        d_r = own_rope.shape[-1]
        expansion = _Expansion(w_up, heads, d_qk - d_r, d_r)
        # D_t = <dO_t, O_t>: the softmax gradient's per-row term (FlashAttention's backward).
        delta = torch.einsum("bthv,bthv->bht", d_out.to(stat), out.to(stat))
        d_q = torch.zeros(q.shape, dtype=stat, device=q.device)
        d_w = torch.zeros(w_up.shape, dtype=stat, device=w_up.device)
        d_slot_latent, d_slot_rope = torch.empty_like(slot_latent), torch.empty_like(slot_rope)
        for k0, k1, first, unmasked in ctx.bounds:
            if first >= time:  # no query sees these slots
                d_slot_latent[:, k0:k1], d_slot_rope[:, k0:k1] = 0, 0
                continue
            k, v = expansion.keys_values(slot_latent[:, k0:k1], slot_rope[:, k0:k1])
            d_k = torch.zeros(k.shape, dtype=stat, device=k.device)
            d_v = torch.zeros(v.shape, dtype=stat, device=v.device)
            slot_index = torch.arange(k0, k1, device=q.device)
            for a in range(first, time, rows):
                b = min(time, a + rows)
                q_t, d_o = q[:, :, a:b], d_out[:, a:b].transpose(1, 2)  # (B, H, R, .)
                scores = _scores(q_t, k, scale, visible[:, a:b], slot_index, a < unmasked, stat)
                probs = scores.sub_(log_sum_exp[..., a:b, None]).exp_()  # (B, H, R, n)
                d_v += probs.transpose(-1, -2) @ d_o.to(stat)
                d_scores = (d_o @ v.transpose(-1, -2)).to(stat).sub_(delta[..., a:b, None]).mul_(probs).mul_(scale)
                d_q[:, :, a:b] += (d_scores.to(k.dtype) @ k).to(stat)
                d_k += d_scores.transpose(-1, -2) @ q_t.to(stat)
            d_slot_latent[:, k0:k1], d_slot_rope[:, k0:k1] = expansion.contract(d_k, d_v, slot_latent[:, k0:k1], d_w)
        # Own states last: their gradient buffers do not coexist with the slot tiles.
        d_own, d_own_rope = torch.empty_like(own), torch.empty_like(own_rope)
        for a in range(0, time, rows):
            b = min(time, a + rows)
            k_own, v_own = expansion.keys_values(own[:, a:b], own_rope[:, a:b])
            q_t, d_o = q[:, :, a:b], d_out[:, a:b].transpose(1, 2)
            prob = ((q_t * k_own).sum(-1).to(stat) * scale - log_sum_exp[..., a:b]).exp_()  # (B, H, R)
            d_score = prob * ((d_o * v_own).sum(-1).to(stat) - delta[..., a:b]) * scale
            d_q[:, :, a:b] += d_score.unsqueeze(-1) * k_own.to(stat)
            d_k = d_score.unsqueeze(-1) * q_t.to(stat)
            d_v = prob.unsqueeze(-1) * d_o.to(stat)
            d_own[:, a:b], d_own_rope[:, a:b] = expansion.contract(d_k, d_v, own[:, a:b], d_w)
        return d_q.to(q.dtype), d_own, d_own_rope, d_slot_latent, d_slot_rope, None, d_w.to(w_up.dtype), None


def stride_aware_attention(q, own, own_rope, slot_latent, slot_rope, visible, w_up, scale: float) -> torch.Tensor:
    """Attention of each query over its visible slots and its own partial state.

    q (B, H, T, d_n + d_r) rotated queries; own (B, T, d_c) and own_rope (B, T, d_r) each query's
    own partial state; slot_latent (B, S, d_c) and slot_rope (B, S, d_r) the completed slots (views
    are fine: in a pass from scratch they are every s-th row of ``own``); visible (B, T)
    integer, the number of leading slots query t sees, non-decreasing along t; w_up
    (H * (d_n + d_v), d_c) = ``kv_up.weight`` -> (B, T, H, d_v).
    """
    return StrideAwareAttention.apply(q, own, own_rope, slot_latent, slot_rope, visible, w_up, scale)
