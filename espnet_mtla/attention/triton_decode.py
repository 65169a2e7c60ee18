"""Triton kernel for the absorbed MLA/MTLA decode step: flash-decoding over one shared latent cache.

Each row has one new query token whose H heads all attend to the same cache slots
``[latent c (d_c) ; rope key (d_r)]``; a slot's value is its latent c. So the heads are the
rows of one query tile: a program streams a block of slots from memory once, scores it
against all of its heads with one matrix product and keeps an online softmax (FlashAttention).

The slots of a row are cut into splits (flash-decoding), one program per (row, split, head
block), so that the GPU has enough programs in flight when batch x head blocks is small; a
second kernel merges the splits' normalised partial outputs by their log-sum-exp. The loop
over a split has a compile-time trip count (a power of two), so contexts of any length need
only a handful of compiled variants, and the same code runs under ``TRITON_INTERPRET=1``
(Triton 3.6's interpreter cannot loop to a runtime bound with NumPy 2.4). The interpreter
must be switched on before ``triton`` is first imported: Triton's own library functions are
wrapped then.
"""

import functools
import math

import torch
import triton
import triton.language as tl


@triton.jit
def _partial_kernel(
    q_ptr, kv_ptr, visible_ptr, out_ptr, lse_ptr,
    stride_qb, stride_qh, stride_kvb, stride_kvs, stride_ob, stride_os, stride_oh, stride_lb, stride_ls,
    num_heads, d_latent, d_rope, scale_log2e,
    BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCKS_PER_SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """One (row, split, head block): normalised partial output (BLOCK_H, d_c) and its log2-sum-exp."""
    # int64 row offsets: batch x cache capacity x width can pass 2**31 elements.
    row, split, head_block = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    heads = head_block * BLOCK_H + tl.arange(0, BLOCK_H)
    c, r = tl.arange(0, BLOCK_C), tl.arange(0, BLOCK_R)
    head_ok, c_ok, r_ok = heads < num_heads, c < d_latent, r < d_rope
    q_row = q_ptr + row * stride_qb + heads[:, None] * stride_qh
    q_c = tl.load(q_row + c[None, :], mask=head_ok[:, None] & c_ok[None, :], other=0.0)  # (BH, BC)
    q_r = tl.load(q_row + d_latent + r[None, :], mask=head_ok[:, None] & r_ok[None, :], other=0.0)  # (BH, BR)
    num_visible = tl.load(visible_ptr + row)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)  # running max of log2-scaled scores
    l_i = tl.zeros([BLOCK_H], tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_H, BLOCK_C], tl.float32)
    first = split * (BLOCKS_PER_SPLIT * BLOCK_S)
    for i in range(BLOCKS_PER_SPLIT):
        s = first + i * BLOCK_S + tl.arange(0, BLOCK_S)
        s_ok = s < num_visible
        slot = kv_ptr + row * stride_kvb + s[:, None] * stride_kvs
        k_c = tl.load(slot + c[None, :], mask=s_ok[:, None] & c_ok[None, :], other=0.0)  # (BS, BC): key and value
        k_r = tl.load(slot + d_latent + r[None, :], mask=s_ok[:, None] & r_ok[None, :], other=0.0)
        scores = tl.dot(q_c, tl.trans(k_c), input_precision=DOT_PRECISION)
        scores = tl.dot(q_r, tl.trans(k_r), scores, input_precision=DOT_PRECISION)
        scores = tl.where(s_ok[None, :], scores * scale_log2e, float("-inf"))  # (BH, BS)
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        # A block past this row's last visible slot leaves m at -inf: shift by 0 instead of NaN.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_shift)
        p = tl.exp2(scores - m_shift[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(k_c.dtype), k_c, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new

    empty = l_i == 0.0  # the split holds none of this row's visible slots
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
    o_row = out_ptr + row * stride_ob + split * stride_os + heads[:, None] * stride_oh
    tl.store(o_row + c[None, :], out, mask=head_ok[:, None] & c_ok[None, :])
    tl.store(lse_ptr + row * stride_lb + split * stride_ls + heads, lse, mask=head_ok)


@triton.jit
def _combine_kernel(
    part_ptr, lse_ptr, out_ptr,
    stride_pb, stride_ps, stride_ph, stride_lb, stride_ls, stride_ob, stride_oh,
    num_splits, d_latent,
    BLOCK_SPLITS: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """One (row, head): softmax-weighted mean of the splits' outputs by their log2-sum-exp."""
    row, head = tl.program_id(0).to(tl.int64), tl.program_id(1)
    sp, c = tl.arange(0, BLOCK_SPLITS), tl.arange(0, BLOCK_C)
    sp_ok, c_ok = sp < num_splits, c < d_latent
    lse = tl.load(lse_ptr + row * stride_lb + sp * stride_ls + head, mask=sp_ok, other=float("-inf"))
    weight = tl.exp2(lse - tl.max(lse, 0))  # split 0 always holds slot 0: the max is finite
    part = tl.load(
        part_ptr + row * stride_pb + sp[:, None] * stride_ps + head * stride_ph + c[None, :],
        mask=sp_ok[:, None] & c_ok[None, :],
        other=0.0,
    )
    out = tl.sum(weight[:, None] * part, 0) / tl.sum(weight, 0)
    tl.store(out_ptr + row * stride_ob + head * stride_oh + c, out.to(out_ptr.dtype.element_ty), mask=c_ok)


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def latent_decode(
    query: torch.Tensor,
    slots: torch.Tensor,
    num_visible: torch.Tensor,
    scale: float,
    d_latent: int,
    num_splits: int = None,
    block_s: int = None,
    num_warps: int = 4,
    num_stages: int = 2,
) -> torch.Tensor:
    """Absorbed latent attention of one query token per row over its visible cache slots.

    query (B, H, d_c + d_r); slots (B, S, d_c + d_r), last dim contiguous (a cache view);
    num_visible (B,) integer, 1 <= num_visible[b] <= S: row b sees slots 0..num_visible[b]-1.
    Returns softmax(scale * query . slots) @ slots[..., :d_c]: (B, H, d_c) in query's dtype.
    ``num_splits`` overrides the split count (tests); by default about two programs per SM.
    ``block_s`` (slots per loop step), ``num_warps`` and ``num_stages`` are tuning knobs
    (``espnet_mtla.bench.kernels --tune`` times them).
    """
    batch, heads, width = query.shape
    if slots.shape[0] != batch or slots.shape[-1] != width or slots.dtype != query.dtype:
        raise ValueError(f"query {tuple(query.shape)} {query.dtype} and slots {tuple(slots.shape)} {slots.dtype} differ")
    query = query.contiguous()
    if slots.stride(-1) != 1:
        slots = slots.contiguous()
    num_visible = num_visible.to(query.device).contiguous()  # any integer dtype: no conversion kernel
    d_rope = width - d_latent
    block_h = max(16, min(64, _pow2(heads)))  # tl.dot needs >= 16 rows
    head_blocks = triton.cdiv(heads, block_h)
    block_s = block_s or (64 if query.element_size() <= 2 else 32)
    num_blocks = triton.cdiv(slots.shape[1], block_s)
    if num_splits is None:
        # Enough programs for every SM; at most 32 splits, which the merge holds in registers.
        num_splits = min(32, triton.cdiv(2 * _num_sms(query.device), batch * head_blocks))
    blocks_per_split = _pow2(triton.cdiv(num_blocks, max(1, min(num_splits, num_blocks))))
    num_splits = triton.cdiv(num_blocks, blocks_per_split)

    part = torch.empty(batch, num_splits, heads, d_latent, device=query.device, dtype=torch.float32)
    lse = torch.empty(batch, num_splits, heads, device=query.device, dtype=torch.float32)
    out = torch.empty(batch, heads, d_latent, device=query.device, dtype=query.dtype)
    _partial_kernel[(batch, num_splits, head_blocks)](
        query, slots, num_visible, part, lse,
        query.stride(0), query.stride(1), slots.stride(0), slots.stride(1),
        part.stride(0), part.stride(1), part.stride(2), lse.stride(0), lse.stride(1),
        heads, d_latent, d_rope, scale * math.log2(math.e),
        BLOCK_H=block_h, BLOCK_C=max(16, _pow2(d_latent)), BLOCK_R=max(16, _pow2(d_rope)),
        BLOCK_S=block_s, BLOCKS_PER_SPLIT=blocks_per_split, num_warps=num_warps, num_stages=num_stages,
        # float32 stays exact (no TF32); for 16-bit inputs Triton ignores the setting.
        DOT_PRECISION="ieee" if query.dtype == torch.float32 else "tf32",
    )  # fmt: skip
    _combine_kernel[(batch, heads)](
        part, lse, out,
        part.stride(0), part.stride(1), part.stride(2), lse.stride(0), lse.stride(1), out.stride(0), out.stride(1),
        num_splits, d_latent,
        BLOCK_SPLITS=max(2, _pow2(num_splits)), BLOCK_C=max(16, _pow2(d_latent)),
    )  # fmt: skip
    return out
