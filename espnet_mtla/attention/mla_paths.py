"""How MLA/MTLA compute their attention: the paths, and ``ROUTES``, which picks one per call.

A call of ``MultiHeadLatentAttention`` is in one phase (``call_phase``):

    causal   no cached tokens yet (training, a first prompt): new tokens attend among themselves
    extend   several new tokens per row after cached ones (a prompt after a prefix)
    token    one new token per row after cached ones (each step of a search)

and runs one path:

    path      phases          computed by
    absorbed  token           ``absorbed.attend_token_absorbed``: inference weights, one matmul in
                              and one out, then the one-token core
    per_head  token           the training code's projections (W_uk, W_uv per head), then the
                              one-token core
    flex      causal, extend  stride-aware attention in FlexAttention's Triton kernels (stride_flex.py)
    stride    causal, extend  stride-aware attention in PyTorch ops, own backward (stride_attention.py)
    grouped   causal          per-head keys, the fused causal kernel in a grouped layout
    block     extend          explicit ops over the cached slots and each query's own state

The one-token core (``latent_slot_attention``) and ``grouped`` take their kernel from
``backends.resolve_backend`` (shared by every attention type): eager, sdpa, or for the core
the Triton kernel (triton_decode.py) where it can run, else sdpa with a notice.

``ROUTES`` columns: ``phase`` as above; ``backend`` the layer's ``attn_backend``; ``device``
``gpu`` for a CUDA device with Triton installed (what FlexAttention compiles to), else ``cpu``;
``grad`` ``dropout`` while attention dropout is active (training, dropout > 0; the
stride-aware kernels and the absorbed weights have none), ``off`` with autograd off and the
layer's ``absorbed_decode`` on (off, inference is routed as under autograd: the training
code's path), else ``on``. The first row that matches wins; ``*`` matches anything.
"""

import functools

import torch
from torch import nn

from espnet_mtla.attention.backends import attention_function, notice_once, resolve_backend, triton_installed
from espnet_mtla.attention.base import linear_weight_bias
from espnet_mtla.attention.stride_attention import stride_aware_attention
from espnet_mtla.attention.stride_flex import flex_stride_attention

ANY = "*"
ROUTES = (
    # phase    backend   device  grad       path
    ("token",  ANY,      ANY,    "off",     "absorbed"),
    ("token",  ANY,      ANY,    ANY,       "per_head"),
    ("causal", ANY,      ANY,    "dropout", "grouped"),
    ("extend", ANY,      ANY,    "dropout", "block"),
    (ANY,      "triton", "gpu",  ANY,       "flex"),
    (ANY,      "triton", ANY,    ANY,       "stride"),
    (ANY,      "auto",   ANY,    ANY,       "stride"),
    ("causal", ANY,      ANY,    ANY,       "grouped"),  # eager, sdpa
    ("extend", ANY,      ANY,    ANY,       "block"),  # eager, sdpa
)  # fmt: skip
# (backend, path) -> what is logged once when a call takes that path
NOTICES = {
    ("triton", "stride"): "attn_backend triton: the MLA/MTLA parallel pass has Triton kernels (FlexAttention) on "
    "GPUs only; using the stride-aware attention (PyTorch ops)",
}
STRIDE_KERNELS = {"stride": stride_aware_attention, "flex": flex_stride_attention}


def call_phase(time: int, cache) -> str:
    """``causal``, ``extend`` or ``token`` for ``time`` new tokens per row and ``cache`` (or None)."""
    if cache is None or cache.max_length == 0:
        return "causal"
    return "token" if time == 1 else "extend"


def route(layer, phase: str, tensor: torch.Tensor) -> str:
    """The path (a ``ROUTES`` entry) of one call of ``layer`` on ``tensor``'s device."""
    if layer.training and layer.dropout > 0:
        grad = "dropout"
    else:
        grad = "on" if torch.is_grad_enabled() or not layer.absorbed_decode else "off"
    device = "gpu" if tensor.is_cuda and triton_installed() else "cpu"
    path = _lookup(phase, layer.attn_backend, device, grad)
    if (layer.attn_backend, path) in NOTICES:
        notice_once(NOTICES[layer.attn_backend, path])
    return path


@functools.cache
def _lookup(*key: str) -> str:
    return next(row[-1] for row in ROUTES if all(want in (ANY, got) for want, got in zip(row, key)))


# -- causal ----------------------------------------------------------------------------------
def attend_causal(layer, path, q_nope, q_rope, partial, k_rope):
    """The causal phase; never builds (T, T).

    MTLA's stride-aware causal pattern: the query at rank a = j*s + i (chunk j) sees the
    completed chunk summaries 0..j-1 (the partial sum at each chunk's last token) and its own
    partial state (chunk j up to a). ``stride``/``flex`` attend to the summaries directly;
    ``grouped`` see ``_grouped``.

    q_nope (B, T, H, d_n), q_rope (B, T, H, d_r), partial (B, U, d_c) running sums of
    ``MultiHeadLatentAttention._merge``, k_rope (B, T, d_r) -> (B, T, H, d_v).
    """
    if path == "grouped":
        return _grouped(layer, q_nope, q_rope, partial, k_rope)
    s, (batch, time) = layer.down_rate, q_nope.shape[:2]
    complete = slice(s - 1, time // s * s, s)  # last token of every complete chunk: its summary
    visible = torch.div(torch.arange(time, device=partial.device), s, rounding_mode="floor")
    return _stride_aware(layer, path, q_nope, q_rope, partial[:, :time], k_rope, partial[:, complete],
                         k_rope[:, complete], visible.expand(batch, time))


def _grouped(layer, q_nope, q_rope, partial, k_rope):
    """Keys expanded per head into the fused kernel (sdpa or eager), in a grouped layout.

    Queries are grouped by their offset i within a chunk, and each group is a
    (num_chunks x num_chunks) causal attention over keys [anchor, summary_0, ..., summary_{m-2}],
    where the anchor stands for the query's own partial state. Its score is made per-query by
    an extra query column holding q . k_own against an anchor key column of 1, and an extra
    value column (1 for the anchor) returns the anchor's softmax weight, by which v_own is added
    afterwards. Work is ~T^2/(2s) score entries instead of T^2/2. With s = 1 this is plain
    causal attention over expanded keys.
    """
    s, heads, time = layer.down_rate, layer.num_heads, q_nope.shape[1]
    batch, width = partial.shape[:2]
    num_chunks = width // s
    dropout = layer.dropout if layer.training else 0.0
    attend = attention_function(resolve_backend(layer.attn_backend, partial, "MLA/MTLA parallel pass"))
    own_kv = layer.kv_up(partial).view(batch, width, heads, -1)
    k_own, v_own = own_kv.split([layer.qk_nope_head_dim, layer.v_head_dim], dim=-1)  # (B, U, H, .)
    pad = (0, 0, 0, 0, 0, width - time)
    q_nope, q_rope = nn.functional.pad(q_nope, pad), nn.functional.pad(q_rope, pad)
    k_rope = nn.functional.pad(k_rope, pad[2:]).unsqueeze(2).expand(-1, -1, heads, -1)  # (B, U, H, d_r)
    if s == 1:
        q = torch.cat([q_nope, q_rope], dim=-1).transpose(1, 2)
        k = torch.cat([k_own, k_rope], dim=-1).transpose(1, 2)
        out = attend(q, k, v_own.transpose(1, 2), is_causal=True, scale=layer.scale, dropout_p=dropout)
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
        q, k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=layer.scale, dropout_p=dropout, enable_gqa=True
    )
    out = out.view(batch, heads, s, num_chunks, -1).permute(0, 3, 2, 1, 4).reshape(batch, width, heads, -1)
    out = out[..., :-1] + out[..., -1:] * v_own
    return out[:, :time]


# -- after a cache -----------------------------------------------------------------------------
def attend_cached(layer, path, q_nope, q_rope, own, k_rope, start, cache):
    """The extend and token phases: attention over the cache's slots plus each query's own state.

    q_nope (B, T, H, d_n), q_rope (B, T, H, d_r), own (B, T, d_c), k_rope (B, T, d_r)
    -> (B, T, H, d_v). The query at rank a sees completed slots k < a // s and ``own``.
    The cache already holds the new tokens' slots. ``block`` and ``per_head`` attend in the
    absorbed form: queries projected into the latent space (q W_uk) against the slots.
    """
    time = q_nope.shape[1]
    slots = cache.view("kv")  # (B, S, d_c + d_r)
    rank = start.unsqueeze(1) + torch.arange(time, device=start.device)
    completed = torch.div(rank, layer.down_rate, rounding_mode="floor")  # (B, T)
    if path in STRIDE_KERNELS:
        slot_latent, slot_rope = slots.to(own.dtype).split([layer.kv_lora_rank, layer.qk_rope_head_dim], dim=-1)
        return _stride_aware(layer, path, q_nope, q_rope, own, k_rope, slot_latent, slot_rope, completed)
    w_uk, w_uv = layer._up_weights()
    q_latent = torch.einsum("bthn,hnc->bthc", q_nope, w_uk)  # (B, T, H, d_c)
    if path == "per_head":
        out_latent = latent_slot_attention(layer, torch.cat([q_latent, q_rope], dim=-1), slots, completed,
                                           cache.view_is_visible())
    else:
        out_latent = _block(layer, q_latent, q_rope, own, k_rope, slots, completed)
    return torch.einsum("bthc,hvc->bthv", out_latent, w_uv)


def latent_slot_attention(layer, query, slots, completed, all_visible: bool = False):
    """The attention of one new token per row over the latent slots: the one-token core.

    query (B, 1, H, d_c + d_r) absorbed; slots (B, S, d_c + d_r); completed (B, 1): the
    token's own slot (just written: its partial state); ``all_visible``: every row sees all S
    slots (no mask needed). The heads act as the query rows of a single-head attention over
    the shared slots, so a fused kernel reads the cache once for all heads; the value is the
    slot itself (its rope columns give outputs that are dropped). -> (B, 1, H, d_c).
    """
    dtype, query = query.dtype, query.to(slots.dtype)
    dropout = layer.dropout if layer.training else 0.0
    if dropout > 0:
        backend = resolve_backend(layer.attn_backend, query, "MLA/MTLA decode step with dropout")
    else:
        backend = resolve_backend(layer.attn_backend, query, "MLA/MTLA decode step", has_triton_kernel=True)
    if backend == "triton":
        from espnet_mtla.attention.triton_decode import latent_decode

        out = latent_decode(query[:, 0], slots, completed[:, 0] + 1, layer.scale, layer.kv_lora_rank)
        return out.unsqueeze(1).to(dtype)
    visible = None if all_visible else (
        torch.arange(slots.shape[1], device=slots.device) <= completed.unsqueeze(-1)).unsqueeze(1)  # (B, 1, 1, S)
    attend = attention_function(backend)
    out = attend(query, slots.unsqueeze(1), slots.unsqueeze(1), attn_mask=visible, dropout_p=dropout,
                 scale=layer.scale)
    return out[..., : layer.kv_lora_rank].to(dtype)


def _block(layer, q_latent, q_rope, own, k_rope, slots, completed):
    """Several new tokens per row: completed slots from the cache, own states apart.

    q_latent (B, T, H, d_c), q_rope (B, T, H, d_r), own (B, T, d_c), k_rope (B, T, d_r),
    slots (B, S, d_c + d_r), completed (B, T) -> (B, T, H, d_c).
    """
    slot_latent, slot_rope = slots.split([layer.kv_lora_rank, layer.qk_rope_head_dim], dim=-1)
    scores = torch.einsum("bthc,bsc->bhts", q_latent, slot_latent) + torch.einsum(
        "bthr,bsr->bhts", q_rope, slot_rope
    )
    visible = torch.arange(slots.shape[1], device=slots.device) < completed.unsqueeze(-1)  # (B, T, S)
    scores = scores.masked_fill(~visible.unsqueeze(1), float("-inf"))
    own_score = torch.einsum("bthc,btc->bht", q_latent, own) + torch.einsum("bthr,btr->bht", q_rope, k_rope)
    scores = torch.cat([scores, own_score.unsqueeze(-1)], dim=-1) * layer.scale
    probs = torch.softmax(scores.float(), dim=-1).to(q_latent.dtype)
    probs = nn.functional.dropout(probs, layer.dropout, layer.training)
    out_latent = torch.einsum("bhts,bsc->bthc", probs[..., :-1], slot_latent.to(probs.dtype))
    return out_latent + probs[..., -1].transpose(1, 2).unsqueeze(-1) * own.unsqueeze(2)


# -- both ----------------------------------------------------------------------------------------
def _stride_aware(layer, path, q_nope, q_rope, own, own_rope, slot_latent, slot_rope, visible):
    """``stride_aware_attention`` or ``flex_stride_attention``: query t sees its first
    ``visible[t]`` slots and its own state; keys are expanded from the latents block by block."""
    queries = torch.cat([q_nope.transpose(1, 2), q_rope.transpose(1, 2)], dim=-1)  # (B, H, T, d_qk): tiles are views
    return STRIDE_KERNELS[path](queries, own, own_rope, slot_latent, slot_rope, visible,
                                linear_weight_bias(layer.kv_up)[0], layer.scale)
