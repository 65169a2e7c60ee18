"""``LlamaMTLAConfig``: a Llama config plus the attention switch and the MLA/MTLA dimensions."""

from typing import Optional

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig

from espnet_mtla.attention.backends import check_backend
from espnet_mtla.attention.norms import NORM_TYPES
from espnet_mtla.attention.registry import attention_options, attention_types


@strict
class LlamaMTLAConfig(LlamaConfig):
    r"""A Llama configuration whose attention is any registered type (MHA, MQA, GQA, MLA, MTLA, ...).

    attention_type: ``mtla`` (default) | ``mla`` | ``mha`` | ``mqa`` | ``gqa`` (GQA uses
    ``num_key_value_heads``), or a type registered with ``espnet_mtla.attention.register_attention``
    (its options are read from config fields of the same names). The MLA/MTLA fields default from the Llama head size, so any
    ``head_dim`` works: ``qk_nope_head_dim`` = ``v_head_dim`` = ``head_dim``,
    ``qk_rope_head_dim`` = ``head_dim // 2`` (even), ``kv_lora_rank`` = 4 x ``head_dim``,
    ``q_lora_rank`` None (full-rank queries); ``qk_rope_theta``: the RoPE base of the MLA/MTLA
    rope dims (default ``rope_theta``; ``from_llama`` sets it so that they turn at the Llama's
    highest frequencies); ``down_rate``: tokens merged per MTLA cache slot;
    ``latent_norm``: ``rms_norm`` (default) | ``layer_norm`` (the paper's), the MLA/MTLA latents' norm.
    ``attn_backend``: ``auto`` | ``eager`` | ``sdpa`` | ``triton``, how attention is computed
    (``espnet_mtla.attention.backends``); it never changes the outputs.
    """

    model_type = "llama_mtla"

    attention_type: str = "mtla"
    kv_lora_rank: Optional[int] = None
    q_lora_rank: Optional[int] = None
    qk_nope_head_dim: Optional[int] = None
    qk_rope_head_dim: Optional[int] = None
    qk_rope_theta: Optional[float] = None
    v_head_dim: Optional[int] = None
    down_rate: int = 2
    latent_norm: str = "rms_norm"
    attn_backend: str = "auto"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.attention_type not in attention_types():
            raise ValueError(f"attention_type {self.attention_type!r}: choose one of {', '.join(attention_types())}")
        check_backend(self.attn_backend)
        if self.latent_norm not in NORM_TYPES:
            raise ValueError(f"latent_norm {self.latent_norm!r}: choose one of {', '.join(NORM_TYPES)}")
        self.qk_nope_head_dim = self.qk_nope_head_dim or self.head_dim
        self.v_head_dim = self.v_head_dim or self.head_dim
        self.qk_rope_head_dim = self.qk_rope_head_dim or max(2, self.head_dim // 2 // 2 * 2)
        self.kv_lora_rank = self.kv_lora_rank or 4 * self.head_dim

    @classmethod
    def from_llama_config(cls, llama_config: LlamaConfig, **mtla_fields) -> "LlamaMTLAConfig":
        """The same model shape as ``llama_config`` with MTLA (or ``attention_type=...``) attention."""
        fields = llama_config.to_dict()
        for key in ("model_type", "architectures", "transformers_version"):
            fields.pop(key, None)
        return cls(**{**fields, **mtla_fields})

    def attention_options(self) -> dict:
        """Keyword options of ``espnet_mtla.attention.build_attention`` for this config: each option
        the type takes, from the Llama field that holds it, else from a field of its own name."""
        llama_fields = {
            "bias": self.attention_bias,
            "dropout": float(self.attention_dropout or 0.0),
            "rope_base": float((self.rope_parameters or {}).get("rope_theta", 10000.0)),
            "head_dim": self.head_dim,
            "num_kv_heads": self.num_key_value_heads,
            "q_lora_rank": self.q_lora_rank or 0,
        }
        options = attention_options(self.attention_type)
        if self.qk_rope_theta is not None and "qk_rope_head_dim" in options:  # the base of those rope dims
            llama_fields["rope_base"] = float(self.qk_rope_theta)
        found = {}
        for name in options:
            if name in llama_fields:
                found[name] = llama_fields[name]
            elif getattr(self, name, None) is not None:
                found[name] = getattr(self, name)
        return found
