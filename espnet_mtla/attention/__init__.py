"""Attention library: MHA, MQA, GQA, MLA and MTLA behind one switch, with real KV caches.

    attn = build_attention("mtla", embed_dim=512, num_heads=8, down_rate=2)
    y = attn(x, mask)                       # parallel (training), x: (B, T, 512)
    cache = attn.new_cache(batch_size=B)
    y_t = attn(x[:, t:t+1], cache=cache)    # incremental decoding, one token at a time

``attn_backend: auto | eager | sdpa | triton`` (every type) picks the kernels: see backends.py.
"""

import inspect

import torch

from espnet_mtla.attention.backends import ATTN_BACKENDS, check_backend
from espnet_mtla.attention.base import CachedAttention
from espnet_mtla.attention.cache import AttentionCache
from espnet_mtla.attention.mha import MultiHeadAttention
from espnet_mtla.attention.mla import MultiHeadLatentAttention
from espnet_mtla.attention.mtla import MultiHeadTemporalLatentAttention
from espnet_mtla.attention.reference_compat import MultiheadTemporalLatentAttention
from espnet_mtla.attention.rope import RotaryEmbedding

ATTENTION_TYPES = ("mha", "mqa", "gqa", "mla", "mtla")

_CLASSES = {
    "mha": MultiHeadAttention,
    "mqa": MultiHeadAttention,
    "gqa": MultiHeadAttention,
    "mla": MultiHeadLatentAttention,
    "mtla": MultiHeadTemporalLatentAttention,
}


def attention_options(attention_type: str) -> list:
    """The keyword options ``build_attention`` accepts for ``attention_type``."""
    cls = _class_of(attention_type)
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "mla_conf")]
    if cls is MultiHeadTemporalLatentAttention:
        names += attention_options("mla")
    if attention_type in ("mha", "mqa"):
        names.remove("num_kv_heads")
    return sorted(set(names))


def _class_of(attention_type: str):
    if attention_type not in _CLASSES:
        raise ValueError(f"unknown attention_type {attention_type!r}; choose one of {', '.join(ATTENTION_TYPES)}")
    return _CLASSES[attention_type]


def build_attention(attention_type: str, embed_dim: int, num_heads: int, **conf):
    """Build one attention layer; ``conf`` holds the type's options (see ``attention_options``).

    mha: num_kv_heads = num_heads; mqa: 1; gqa: ``num_kv_heads`` (default 2, must divide
    num_heads). mla/mtla: q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim,
    v_head_dim; mtla also down_rate and hypernet_rank_ratio. Unknown options raise ValueError.
    """
    cls = _class_of(attention_type)
    allowed = set(attention_options(attention_type)) - {"embed_dim", "num_heads"}
    unknown = sorted(set(conf) - allowed)
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for attention_type {attention_type!r}; "
            f"valid options: {', '.join(sorted(allowed))}"
        )
    if attention_type == "mha":
        conf["num_kv_heads"] = num_heads
    elif attention_type == "mqa":
        conf["num_kv_heads"] = 1
    elif attention_type == "gqa":
        conf.setdefault("num_kv_heads", 2)
    return cls(embed_dim, num_heads, **conf)


def set_attention_backend(model: torch.nn.Module, attn_backend: str) -> int:
    """Switch every attention layer inside ``model`` to ``attn_backend``; returns how many.

    The backend changes how attention is computed, never what: a model trained with one
    decodes with any other (e.g. trained on CPUs with sdpa, decoded with triton on a GPU).
    """
    check_backend(attn_backend)
    layers = [m for m in model.modules() if isinstance(m, CachedAttention)]
    for layer in layers:
        layer.attn_backend = attn_backend
    return len(layers)


__all__ = [
    "ATTN_BACKENDS",
    "ATTENTION_TYPES",
    "AttentionCache",
    "MultiHeadAttention",
    "MultiHeadLatentAttention",
    "MultiHeadTemporalLatentAttention",
    "MultiheadTemporalLatentAttention",
    "RotaryEmbedding",
    "attention_options",
    "build_attention",
    "set_attention_backend",
]
