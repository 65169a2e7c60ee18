"""The attention types: one registry that every other part of the toolkit iterates.

    name   class                              reads decoder_conf sections
    mha    mha.MultiHeadAttention             attention_conf, mha_conf
    mqa    mha.MultiHeadAttention             attention_conf, mha_conf            (1 kv head)
    gqa    mha.MultiHeadAttention             attention_conf, mha_conf, gqa_conf  (num_kv_heads, default 2)
    mla    mla.MultiHeadLatentAttention       attention_conf, mla_conf
    mtla   mtla.MultiHeadTemporalLatentAttention  attention_conf, mla_conf, mtla_conf

``build_attention``, the decoder's YAML sections (``decoder/attention_config.py``), the HF
config (``LlamaMTLAConfig``), the pipeline's ``--attention`` choices, ``make_confs`` and the
tests all read this table. This module imports no torch: classes are named by import path and
loaded when a layer is built, so the recipe driver can list the names without loading torch.

Adding a sixth type:
1. write ``espnet_mtla/attention/<name>.py``: a ``CachedAttention`` subclass whose ``__init__``
   takes ``embed_dim, num_heads``, the ``COMMON_OPTIONS`` and its own options as keywords, and
   which implements ``cache_shapes``, ``_attend`` and ``_store`` (see base.py);
2. add its line to ``BUILT_IN`` below (or, from your own code, call ``register_attention``
   before building a model), e.g.
   ``AttentionType("foo", "espnet_mtla.attention.foo:FooAttention", section="foo_conf")``.
Its options are read off the class signature: they appear in ``decoder_conf.foo_conf``, in
``LlamaMTLAConfig`` (a config field of the same name), and the pipeline accepts
``--attention foo``. ``test/test_attention_registry.py`` registers a toy type and follows it
through all of these.
"""

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

COMMON_SECTION = "attention_conf"
# Options every type takes; their section is read whatever the type.
COMMON_OPTIONS = ("attn_backend", "bias", "dropout", "rope_base")
LAYER_ARGS = ("embed_dim", "num_heads")


@dataclass(frozen=True)
class AttentionType:
    """One attention type.

    Args:
        name: the ``attention_type`` word of configs.
        target: the class, or its import path ``"package.module:Class"`` (loaded on first use).
        section: the decoder_conf section holding the options this type adds to ``extends``'s
            (None when it adds none).
        extends: a registered type whose options and sections this type reads too.
        fixed: options the type sets itself; configs cannot set them (mqa: one kv head).
        defaults: defaults that differ from the class's (gqa: two kv heads).
        summary: one line for listings.
    """

    name: str
    target: Union[str, type]
    section: Optional[str] = None
    extends: Optional[str] = None
    fixed: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""

    def load(self) -> type:
        if not isinstance(self.target, str):
            return self.target
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def options(self) -> List[str]:
        """The keyword options a config may set for this type (sorted)."""
        params = inspect.signature(self.load().__init__).parameters.values()
        names = {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        names -= {"self", *LAYER_ARGS, *self.fixed}
        if self.extends:
            names |= set(get_attention_type(self.extends).options())
        return sorted(names)

    def own_options(self) -> List[str]:
        """The options of this type's own ``section``: those ``extends`` and the common section lack."""
        inherited = set(get_attention_type(self.extends).options()) if self.extends else set()
        return sorted(set(self.options()) - inherited - set(COMMON_OPTIONS))

    def sections(self) -> Tuple[str, ...]:
        """The decoder_conf sections this type reads, the common one first."""
        chain = get_attention_type(self.extends).sections() if self.extends else (COMMON_SECTION,)
        return chain + ((self.section,) if self.section else ())


BUILT_IN = (
    AttentionType("mha", "espnet_mtla.attention.mha:MultiHeadAttention", section="mha_conf",
                  fixed={"num_kv_heads": None}, summary="multi-head attention (one kv head per query head)"),
    AttentionType("mqa", "espnet_mtla.attention.mha:MultiHeadAttention", extends="mha",
                  fixed={"num_kv_heads": 1}, summary="multi-query attention (one kv head)"),
    AttentionType("gqa", "espnet_mtla.attention.mha:MultiHeadAttention", section="gqa_conf", extends="mha",
                  defaults={"num_kv_heads": 2}, summary="grouped-query attention (num_kv_heads kv heads)"),
    AttentionType("mla", "espnet_mtla.attention.mla:MultiHeadLatentAttention", section="mla_conf",
                  summary="multi-head latent attention (DeepSeek): one low-rank latent per token"),
    AttentionType("mtla", "espnet_mtla.attention.mtla:MultiHeadTemporalLatentAttention", section="mtla_conf",
                  extends="mla", summary="multi-head temporal latent attention: one latent per down_rate tokens"),
)

_REGISTRY: Dict[str, AttentionType] = {}


def register_attention(entry: AttentionType) -> AttentionType:
    """Add a type; its name and section must be new, and what it extends registered."""
    if entry.name in _REGISTRY:
        raise ValueError(f"attention type {entry.name!r} is already registered")
    if entry.extends is not None and entry.extends not in _REGISTRY:
        raise ValueError(f"attention type {entry.name!r} extends {entry.extends!r}, which is not registered")
    taken = {COMMON_SECTION} | {e.section for e in _REGISTRY.values()}
    if entry.section in taken:
        raise ValueError(f"attention type {entry.name!r}: section {entry.section!r} is already used")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_attention(name: str) -> None:
    """Remove a type registered with ``register_attention`` (and nothing extends)."""
    users = [e.name for e in _REGISTRY.values() if e.extends == name]
    if users:
        raise ValueError(f"attention type {name!r} is extended by {', '.join(users)}")
    del _REGISTRY[name]


for _entry in BUILT_IN:
    register_attention(_entry)


def attention_types() -> Tuple[str, ...]:
    """The registered type names, in registration order (torch is not imported)."""
    return tuple(_REGISTRY)


def get_attention_type(name: str) -> AttentionType:
    if name not in _REGISTRY:
        raise ValueError(f"unknown attention_type {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def attention_options(attention_type: str) -> List[str]:
    """The keyword options ``build_attention`` accepts for ``attention_type``."""
    return get_attention_type(attention_type).options()


def config_sections() -> Dict[str, Tuple[List[str], Tuple[str, ...]]]:
    """decoder_conf section -> (the options it holds, the types that read it)."""
    sections = {COMMON_SECTION: (sorted(COMMON_OPTIONS), attention_types())}
    for entry in _REGISTRY.values():
        if entry.section:
            readers = tuple(name for name, e in _REGISTRY.items() if entry.section in e.sections())
            sections[entry.section] = (entry.own_options(), readers)
    return sections


def build_attention(attention_type: str, embed_dim: int, num_heads: int, **conf):
    """Build one attention layer; ``conf`` holds the type's options (see ``attention_options``).

    mha: num_kv_heads = num_heads; mqa: 1; gqa: ``num_kv_heads`` (default 2, must divide
    num_heads). mla/mtla: q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim,
    v_head_dim, latent_norm; mtla also down_rate, hypernet_rank_ratio and hypernet_init. Unknown options
    raise ValueError.
    """
    entry = get_attention_type(attention_type)
    allowed = entry.options()
    unknown = sorted(set(conf) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for attention_type {attention_type!r}; valid options: {', '.join(allowed)}"
        )
    return entry.load()(embed_dim, num_heads, **{**entry.defaults, **conf, **entry.fixed})
