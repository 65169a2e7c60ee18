"""Decoder configs: one ``attention_type`` switch over per-family option sections.

A decoder config carries every family's section at once, so switching the attention type
is a one-word edit and a misspelled key fails whichever type is selected:

    attention_type: mtla        # any registered type: mha | mqa | gqa | mla | mtla
    attention_conf: {dropout: 0.1}                  # all types: dropout, bias, rope_base, attn_backend
    mha_conf: {head_dim: 64}                        # mha, mqa, gqa
    gqa_conf: {num_kv_heads: 2}                     # gqa
    mla_conf: {kv_lora_rank: 256, qk_rope_head_dim: 32, ...}   # mla, mtla
    mtla_conf: {down_rate: 2}                       # mtla

The sections and what each holds come from the attention registry
(``espnet_mtla.attention.registry.config_sections``).
"""

from typing import Dict, Optional

from espnet_mtla.attention.registry import attention_types, build_attention, config_sections
from espnet_mtla.storage.errors import ConfigError, check_known_keys


def attention_kwargs(attention_type: str, sections: Dict[str, Optional[dict]]) -> dict:
    """Validate every section and merge the ones ``attention_type`` reads."""
    if attention_type not in attention_types():
        raise ConfigError(
            f"decoder_conf: unknown attention_type {attention_type!r}; choose one of {', '.join(attention_types())}"
        )
    known = config_sections()
    check_known_keys("decoder_conf", [name for name in sections if name.endswith("_conf")], known)
    kwargs = {}
    for name, (valid, readers) in known.items():
        section = sections.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"decoder_conf: {name} must be a mapping, got {section!r}")
        check_known_keys(f"decoder_conf.{name}", section, valid)
        if attention_type in readers:
            kwargs.update(section)
    return kwargs


def build_layer_attention(attention_type: str, embed_dim: int, num_heads: int, sections: Dict[str, Optional[dict]]):
    """One attention layer from a decoder config; bad values raise ConfigError."""
    kwargs = attention_kwargs(attention_type, sections)
    try:
        return build_attention(attention_type, embed_dim, num_heads, **kwargs)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"decoder_conf ({attention_type}): {err}") from None
