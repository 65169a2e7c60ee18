"""Attention backends: which implementation computes the attention core of a layer.

Every attention type takes ``attn_backend``:

- ``eager``: explicit matmul, mask and softmax (scores in the input dtype, softmax in float32).
  The readable reference; materialises the score matrix.
- ``sdpa``: PyTorch's fused ``scaled_dot_product_attention`` kernels (CPU and GPU).
- ``triton``: our Triton kernel for the absorbed MLA/MTLA decode step (``triton_decode.py``),
  which reads the shared latent cache once for all heads. It needs a CUDA GPU, or
  ``TRITON_INTERPRET=1`` (Triton's CPU interpreter, for tests). MLA/MTLA's parallel passes
  (training, prompts) run the stride-aware attention (``stride_attention.py``), everything else
  it does not cover (MHA-family layers, decode steps under autograd) through ``sdpa``.
- ``auto`` (default): the fastest available, i.e. ``triton`` where it runs, else ``sdpa``; for
  MLA/MTLA's parallel passes the stride-aware attention, which keeps the latents for backward
  instead of per-head keys (less memory than MHA in training).

Asking for ``triton`` where it cannot run falls back to ``sdpa`` with a logged notice (once
per reason and process), never an error: the same config trains on a CPU and decodes on a GPU.
All backends compute the same function (see ``test/test_attention_backends.py``).
"""

import contextlib
import functools
import importlib.util
import logging
import os
from typing import Optional

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

ATTN_BACKENDS = ("auto", "eager", "sdpa", "triton")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

logger = logging.getLogger("espnet_mtla.attention")
_noticed = set()


def check_backend(name) -> str:
    if name not in ATTN_BACKENDS:
        raise ValueError(f"attn_backend must be one of {', '.join(ATTN_BACKENDS)}, got {name!r}")
    return name


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_unusable(tensor: torch.Tensor) -> Optional[str]:
    """Why the Triton decode kernel cannot take ``tensor``; None when it can."""
    if torch.is_grad_enabled() and tensor.requires_grad:
        return "the kernel has no backward pass (autograd is recording)"
    if tensor.dtype not in TRITON_DTYPES:
        return f"the kernel takes float32/float16/bfloat16, not {tensor.dtype}"
    if not triton_installed():
        return "the triton package is not installed"
    if tensor.device.type != "cuda" and not triton_interpreting():
        return f"tensors are on {tensor.device.type}; the kernel needs a CUDA GPU (or TRITON_INTERPRET=1)"
    return None


def resolve_backend(requested: str, tensor: torch.Tensor, computation: str, has_triton_kernel: bool = False) -> str:
    """The backend that computes one attention call: ``eager``, ``sdpa`` or ``triton``.

    ``computation`` names it for the fallback notice (e.g. "MLA/MTLA decode step");
    ``has_triton_kernel`` says whether Triton covers it. ``auto`` picks Triton only on a GPU
    (the interpreter is a correctness tool, far too slow to choose by default).
    """
    if requested in ("eager", "sdpa"):
        return requested
    reason = triton_unusable(tensor) if has_triton_kernel else f"no Triton kernel for the {computation}"
    if requested == "auto":
        return "triton" if reason is None and tensor.device.type == "cuda" else "sdpa"
    if reason is None:
        return "triton"
    notice_once(f"attn_backend triton: {reason}; using sdpa" + (f" for the {computation}" if has_triton_kernel else ""))
    return "sdpa"


def notice_once(message: str) -> None:
    """Log a fallback notice once per process (a training run would otherwise repeat it every step)."""
    if message not in _noticed:
        _noticed.add(message)
        logger.warning(message)


# cuDNN's fused attention builds an execution plan for every new shape (~40 ms per call on an
# H200, measured with bench_kernels), and a cache grows by one token per decode step: calls
# over a cache (masked, or fewer queries than keys) use the other fused GPU kernels.
_CACHED_ATTENTION_KERNELS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


def sdpa(q, k, v, **kwargs) -> torch.Tensor:
    """``scaled_dot_product_attention`` that accepts a value head size unlike the query's.

    PyTorch's fused CPU kernel needs equal head sizes and otherwise falls back to the O(T^2)
    math path, so narrower values are zero-padded and the padding is sliced off again.
    q: (B, H, T, d_qk); k: (B, H_kv, S, d_qk); v: (B, H_kv, S, d_v) -> (B, H, T, d_v).
    """
    d_qk, d_v = q.shape[-1], v.shape[-1]
    if d_v < d_qk:
        v = torch.nn.functional.pad(v, (0, d_qk - d_v))
    elif d_v > d_qk:
        q = torch.nn.functional.pad(q, (0, d_v - d_qk))
        k = torch.nn.functional.pad(k, (0, d_v - d_qk))
        kwargs.setdefault("scale", d_qk**-0.5)
    cached = q.is_cuda and (kwargs.get("attn_mask") is not None or q.shape[-2] != k.shape[-2])
    with sdpa_kernel(_CACHED_ATTENTION_KERNELS) if cached else contextlib.nullcontext():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)[..., :d_v]


def eager_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """The same function as ``sdpa`` with explicit ops (materialises (B, H, T, S) scores).

    q: (B, H, T, d_qk); k: (B, H_kv, S, d_qk); v: (B, H_kv, S, d_v); attn_mask: bool,
    broadcastable to (B, H, T, S), True = attend -> (B, H, T, d_v).
    """
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        group = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-2, -1)).float() * scale
    if is_causal:
        time, width = scores.shape[-2:]
        attn_mask = torch.ones(time, width, dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    probs = torch.nn.functional.dropout(probs, dropout_p, training=dropout_p > 0)
    return probs @ v


def attention_function(backend: str):
    """``sdpa`` or ``eager_sdpa`` for a resolved backend (``triton`` has no general form)."""
    return eager_sdpa if backend == "eager" else sdpa


def set_attention_backend(model: torch.nn.Module, attn_backend: str) -> int:
    """Switch every attention layer inside ``model`` to ``attn_backend``; returns how many.

    The backend changes how attention is computed, never what: a model trained with one
    decodes with any other (e.g. trained on CPUs with sdpa, decoded with triton on a GPU).
    """
    from espnet_mtla.attention.base import CachedAttention  # base imports this module

    check_backend(attn_backend)
    layers = [m for m in model.modules() if isinstance(m, CachedAttention)]
    for layer in layers:
        layer.attn_backend = attn_backend
    return len(layers)
