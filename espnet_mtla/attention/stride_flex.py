"""MLA/MTLA's parallel attention on GPUs: FlexAttention's fused Triton kernels, forward and backward.

The same computation as ``stride_attention.stride_aware_attention`` (query t sees its first
``visible[t]`` completed slots and its own partial state), written as one attention over the
keys [slots (S, padded to a block multiple) ; own states (T)] of each head:

    key j is visible to query t  iff  j < visible[t]  or  j == S_pad + t

FlexAttention (``torch.nn.attention.flex_attention``, compiled by ``torch.compile`` into Triton
kernels for forward and backward) skips key blocks that no query of a block sees. The block
lists are built here from the pattern's structure (``visible`` rises along t): for query block
i, the slot blocks every row sees in full, the slot blocks some row sees in part, and the one
diagonal block of own states; no (T, T) mask is ever evaluated.

Memory: the per-head keys and values are expanded from the latents for the call and dropped;
``torch.utils.checkpoint`` keeps only the inputs (queries, latents, rope keys, ``kv_up``'s
weight) and recomputes the expansion and the forward kernel in the backward pass, so that
training keeps what the PyTorch-op version keeps. FlexAttention has no CPU backward: CPUs use
``stride_attention.py``.
"""

import math

import torch
from torch.utils.checkpoint import checkpoint

from espnet_mtla.attention.stride_attention import _Expansion

BLOCK = 128  # FlexAttention's default block size on GPUs

_compiled = None


def _flex_attention():
    """FlexAttention compiled once per process (uncompiled it materialises every score)."""
    global _compiled
    if _compiled is None:
        from torch.nn.attention.flex_attention import flex_attention

        _compiled = torch.compile(flex_attention)
    return _compiled


def kv_blocks(visible: torch.Tensor, slot_blocks: int, block: int):
    """FlexAttention's block lists for ``visible`` (B, T), non-decreasing along t.

    Keys: ``slot_blocks`` blocks of slots, then the own states (key ``slot_blocks * block + t``
    for query t). Returns (partial count (B, Q), partial indices (B, Q, K), full count (B, Q),
    full indices (B, Q, K)), int32, for Q = ceil(T / block) query blocks and K = slot_blocks + Q
    key blocks. Partial blocks go through the mask, full ones do not.
    """
    batch, time = visible.shape
    device = visible.device
    q_blocks = math.ceil(time / block)
    starts = torch.arange(q_blocks, device=device) * block
    last = (starts + block).clamp(max=time) - 1
    fewest, most = visible[:, starts].long(), visible[:, last].long()  # (B, Q): first and last row of each block
    full = torch.div(fewest, block, rounding_mode="floor")  # slot blocks every row sees whole
    partial = torch.div(most + block - 1, block, rounding_mode="floor") - full  # then some rows see part
    column = torch.arange(slot_blocks + q_blocks, device=device)  # (K,)
    diagonal = (slot_blocks + torch.arange(q_blocks, device=device)).view(1, q_blocks, 1)
    indices = torch.where(column < partial.unsqueeze(-1), full.unsqueeze(-1) + column,
                          torch.where(column == partial.unsqueeze(-1), diagonal, 0))
    full_indices = column.expand(batch, q_blocks, -1)
    return ((partial + 1).int(), indices.int(), full.int(), full_indices.int())


def block_mask(visible: torch.Tensor, num_slots: int, block: int = BLOCK):
    """The BlockMask of the pattern above for ``num_slots`` slots padded to a block multiple."""
    from torch.nn.attention.flex_attention import BlockMask

    slot_blocks = math.ceil(num_slots / block)
    padded = slot_blocks * block
    time = visible.shape[1]

    def mask_mod(b, h, q, kv):
        return (kv < visible[b, q]) | (kv == padded + q)

    partial, indices, full, full_indices = kv_blocks(visible, slot_blocks, block)
    return BlockMask.from_kv_blocks(partial.unsqueeze(1), indices.unsqueeze(1), full.unsqueeze(1),
                                    full_indices.unsqueeze(1), BLOCK_SIZE=block, mask_mod=mask_mod,
                                    seq_lengths=(time, padded + time))


def keys_values(own, own_rope, slot_latent, slot_rope, w_up, heads: int, d_nope: int, block: int = BLOCK):
    """Per-head keys (B, H, S_pad + T, d_n + d_r) and values (B, H, S_pad + T, d_v) of
    [slots, zero-padded to a block multiple ; own states]."""
    pad = (0, 0, 0, -slot_latent.shape[1] % block)
    latent = torch.cat([torch.nn.functional.pad(slot_latent, pad), own], dim=1)
    rope = torch.cat([torch.nn.functional.pad(slot_rope, pad), own_rope], dim=1)
    return _Expansion(w_up, heads, d_nope, own_rope.shape[-1]).keys_values(latent, rope)


def _attend(q, own, own_rope, slot_latent, slot_rope, w_up, mask, scale, flex):
    heads, d_rope = q.shape[1], own_rope.shape[-1]
    k, v = keys_values(own, own_rope, slot_latent, slot_rope, w_up, heads, q.shape[-1] - d_rope,
                       mask.BLOCK_SIZE[1])
    return flex(q, k, v, block_mask=mask, scale=scale)  # (B, H, T, d_v)


def flex_stride_attention(q, own, own_rope, slot_latent, slot_rope, visible, w_up, scale: float,
                          block: int = BLOCK, flex=None) -> torch.Tensor:
    """``stride_aware_attention`` (same arguments, (B, T, H, d_v) out) on FlexAttention.

    ``flex``: the attention function (default: FlexAttention compiled); tests pass the
    uncompiled one, which runs on CPUs without autograd.
    """
    mask = block_mask(visible, slot_latent.shape[1], block)
    flex = flex or _flex_attention()
    args = (q, own, own_rope, slot_latent, slot_rope, w_up, mask, scale, flex)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, own, own_rope, slot_latent, slot_rope, w_up)):
        out = checkpoint(_attend, *args, use_reentrant=False)
    else:
        out = _attend(*args)
    return out.transpose(1, 2)
