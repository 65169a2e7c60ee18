"""Decoder configs: one ``attention_type`` switch over per-family option sections.

A decoder config carries every family's section at once, so switching the attention type
is a one-word edit and a misspelled key fails whichever type is selected:

    attention_type: mtla        # mha | mqa | gqa | mla | mtla
    attention_conf: {dropout: 0.1}                  # all types: dropout, bias, rope_base
    mha_conf: {head_dim: 64}                        # mha, mqa, gqa
    gqa_conf: {num_kv_heads: 2}                     # gqa
    mla_conf: {kv_lora_rank: 256, qk_rope_head_dim: 32, ...}   # mla, mtla
    mtla_conf: {down_rate: 2}                       # mtla
"""

from typing import Dict, Optional

from espnet_mtla.attention import ATTENTION_TYPES, attention_options, build_attention
from espnet_mtla.errors import ConfigError, check_known_keys

_LAYER_ARGS = {"embed_dim", "num_heads"}
_COMMON = set(attention_options("mha")) & set(attention_options("mla")) - _LAYER_ARGS

# section name -> (the options it holds, the attention types that read it)
SECTIONS = {
    "attention_conf": (_COMMON, ATTENTION_TYPES),
    "mha_conf": (set(attention_options("mqa")) - _COMMON - _LAYER_ARGS, ("mha", "mqa", "gqa")),
    "gqa_conf": (set(attention_options("gqa")) - set(attention_options("mqa")), ("gqa",)),
    "mla_conf": (set(attention_options("mla")) - _COMMON - _LAYER_ARGS, ("mla", "mtla")),
    "mtla_conf": (set(attention_options("mtla")) - set(attention_options("mla")), ("mtla",)),
}


def attention_kwargs(attention_type: str, sections: Dict[str, Optional[dict]]) -> dict:
    """Validate every section and merge the ones ``attention_type`` reads."""
    if attention_type not in ATTENTION_TYPES:
        raise ConfigError(
            f"decoder_conf: unknown attention_type {attention_type!r}; choose one of {', '.join(ATTENTION_TYPES)}"
        )
    kwargs = {}
    for name, (valid, readers) in SECTIONS.items():
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
