"""Attention library: MHA, MQA, GQA, MLA and MTLA behind one switch, with real KV caches.

    attn = build_attention("mtla", embed_dim=512, num_heads=8, down_rate=2)
    y = attn(x, mask)                       # parallel (training), x: (B, T, 512)
    cache = attn.new_cache(batch_size=B)
    y_t = attn(x[:, t:t+1], cache=cache)    # incremental decoding, one token at a time

The types are registered in ``registry.py`` (how to add one is written there).
``attn_backend: auto | eager | sdpa | triton`` (every type) picks the kernels: see backends.py.

The names below load on first use, so that ``espnet_mtla.attention.registry`` (the type
names) is importable without torch.
"""

import importlib

_EXPORTS = {
    "ATTN_BACKENDS": "backends",
    "set_attention_backend": "backends",
    "AttentionCache": "cache",
    "LayerCaches": "cache",
    "CachedAttention": "base",
    "MultiHeadAttention": "mha",
    "MultiHeadLatentAttention": "mla",
    "MultiHeadTemporalLatentAttention": "mtla",
    # the reference implementation's layer, a drop-in (it lives with the rest of the interop)
    "MultiheadTemporalLatentAttention": "espnet_mtla.interop.reference_layer",
    "RotaryEmbedding": "rope",
    "AttentionType": "registry",
    "attention_options": "registry",
    "attention_types": "registry",
    "build_attention": "registry",
    "register_attention": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _EXPORTS[name]
    return getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
