"""``LlamaMTLAForCausalLM``: a Llama-shaped causal LM on espnet_mtla's attention library.

    embed -> N x [RMSNorm -> attention (MTLA | MLA | MHA | MQA | GQA) -> RMSNorm -> SwiGLU MLP] -> RMSNorm -> lm_head

Everything but the attention has Llama's shapes and names (``input_layernorm``, ``mlp.gate_proj``,
``mlp.up_proj``, ``mlp.down_proj``, ``post_attention_layernorm``), so a Llama checkpoint's
other weights load as they are (``from_llama``). Each layer's attention
(``self_attn``) is ``espnet_mtla.attention.build_attention`` and keeps its own compressed KV
cache (``CompressedKVCache``, one ``AttentionCache`` per layer): MTLA stores one [latent ;
rope key] slot per ``down_rate`` tokens. Padding never enters a cache: every row holds only
its real tokens, so a left-padded batch gives each row exactly what the row alone gives (RoPE
positions count real tokens; MTLA's chunks start at a row's first real token). ``generate()``
works with greedy, sampling and beam search; 0/1 integer and boolean attention masks mean the same.

Training as HF users do: gradient checkpointing (``gradient_checkpointing_enable()``; the
decoder layer is a ``GradientCheckpointingLayer``), ``Trainer``, PEFT adapters. Attention
kernels: ``attn_implementation`` ``eager`` | ``sdpa`` | ``mtla_triton`` (our Triton decode
kernel) | ``mtla_auto`` (the default: sdpa, Triton for the decode step where it runs) maps onto
``config.attn_backend`` (see ``attention_backend``).
"""

from typing import List, Optional

import torch
from torch import nn
from transformers import AttentionInterface, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import logging

from espnet_mtla.attention.backends import set_attention_backend
from espnet_mtla.attention.cache import AttentionCache, LayerCaches
from espnet_mtla.attention.registry import build_attention
from espnet_mtla.attention.rope import RotaryEmbedding
from espnet_mtla.hf.configuration import LlamaMTLAConfig

logger = logging.get_logger(__name__)

# HF attn_implementation <-> our attn_backend. "mtla_triton": our Triton decode kernel;
# "mtla_auto": our default choice (sdpa, and the Triton decode step where it runs).
BACKEND_OF_IMPLEMENTATION = {"eager": "eager", "sdpa": "sdpa", "mtla_triton": "triton", "mtla_auto": "auto"}
IMPLEMENTATION_OF_BACKEND = {backend: name for name, backend in BACKEND_OF_IMPLEMENTATION.items()}


def _computed_by_the_model(*args, **kwargs):
    raise NotImplementedError("LlamaMTLA layers compute attention themselves (espnet_mtla.attention)")


# Registered so that HF accepts the names; our layers never call HF's attention functions.
for _name in ("mtla_triton", "mtla_auto"):
    AttentionInterface.register(_name, _computed_by_the_model)


def attention_backend(config: LlamaMTLAConfig, requested: Optional[str]) -> str:
    """The backend the layers use: ``requested`` (an explicit ``attn_implementation``, None when
    none was asked for) mapped onto ours, else ``config.attn_backend``. The two must not disagree."""
    if requested is None or requested not in BACKEND_OF_IMPLEMENTATION:
        return config.attn_backend  # nothing asked for (HF's check refuses unknown names)
    wanted = BACKEND_OF_IMPLEMENTATION[requested]
    if wanted == "auto":
        return config.attn_backend  # our default choice: whatever the config says
    if config.attn_backend not in ("auto", wanted):
        raise ValueError(f"LlamaMTLAConfig: attn_backend {config.attn_backend!r} disagrees with attn_implementation "
                         f"{requested!r} (which means attn_backend {wanted!r}); set only one of them")
    return wanted


class CompressedKVCache(LayerCaches):
    """``generate()``'s cache: one ``AttentionCache`` per layer, one row per sequence (x beam).

    ``consumed`` counts the input positions fed so far (padding included), which tells
    ``prepare_inputs_for_generation`` which tokens are new.
    """

    def __init__(self, layers: List[AttentionCache]):
        super().__init__(layers)
        self.consumed = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.consumed

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.reorder(beam_idx)


class LlamaMTLAMLP(nn.Module):
    """Llama's MLP: down_proj(act(gate_proj(x)) * up_proj(x)). (B, T, D) -> (B, T, D)."""

    def __init__(self, config: LlamaMTLAConfig):
        super().__init__()
        dim, hidden, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaMTLADecoderLayer(GradientCheckpointingLayer):
    """Llama's pre-norm layer with our attention. Under gradient checkpointing HF's wrapper
    passes ``cache=None`` (the layer is then recomputed without writing a cache twice)."""

    def __init__(self, config: LlamaMTLAConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = build_attention(config.attention_type, config.hidden_size, config.num_attention_heads,
                                         **config.attention_options())
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = LlamaMTLAMLP(config)

    def forward(self, hidden_states: torch.Tensor, mask: Optional[torch.Tensor] = None,
                cache: Optional[AttentionCache] = None) -> torch.Tensor:
        """hidden_states (B, T, D) new tokens, mask (B, T) real tokens or None -> (B, T, D)."""
        h = hidden_states + self.self_attn(self.input_layernorm(hidden_states), mask, cache=cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaMTLAPreTrainedModel(PreTrainedModel):
    config_class = LlamaMTLAConfig
    base_model_prefix = "model"
    _no_split_modules = ["LlamaMTLADecoderLayer"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: LlamaMTLAConfig, *args, **kwargs):
        requested = config._attn_implementation_internal  # None unless attn_implementation was asked for
        backend = attention_backend(config, requested)
        super().__init__(config, *args, **kwargs)
        # From here on the two say the same (models built inside this one see a consistent pair).
        config.attn_backend = backend
        config._attn_implementation_internal = IMPLEMENTATION_OF_BACKEND[backend]

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model makes its own CompressedKVCache

    def set_attn_implementation(self, attn_implementation, *args, **kwargs):
        """HF's switch, also switching our layers' attn_backend (eager | sdpa | mtla_triton)."""
        super().set_attn_implementation(attn_implementation, *args, **kwargs)
        backend = BACKEND_OF_IMPLEMENTATION.get(self.config._attn_implementation, self.config.attn_backend)
        self.config.attn_backend = backend
        set_attention_backend(self, backend)

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)) and module.weight is not None:
            module.weight.fill_(1.0)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, RotaryEmbedding):  # a non-persistent buffer: from_pretrained leaves it empty
            module.inv_freq.copy_(module.frequencies())


class LlamaMTLAModel(LlamaMTLAPreTrainedModel):
    def __init__(self, config: LlamaMTLAConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        try:  # the layers raise ValueError naming the option; say which config it is in
            self.layers = nn.ModuleList(LlamaMTLADecoderLayer(config) for _ in range(config.num_hidden_layers))
        except ValueError as err:
            raise ValueError(f"LlamaMTLAConfig: {err}") from None
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def new_cache(self, batch_size: int, capacity: int, like: torch.Tensor) -> CompressedKVCache:
        return CompressedKVCache([layer.self_attn.new_cache(batch_size, capacity, dtype=like.dtype, device=like.device)
                                  for layer in self.layers])

    def forward(self, input_ids: torch.LongTensor, attention_mask: Optional[torch.Tensor] = None,
                cache: Optional[CompressedKVCache] = None, use_cache: Optional[bool] = None,
                **kwargs) -> BaseModelOutputWithPast:
        """input_ids (B, t): tokens after what ``cache`` holds; attention_mask (B, past + t) or (B, t),
        1/True on real tokens -> hidden states (B, t, D) (zero at padded positions)."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and self.training and torch.is_grad_enabled() and \
                any(layer.gradient_checkpointing for layer in self.layers):
            logger.warning_once("use_cache=True is incompatible with gradient checkpointing: setting use_cache=False")
            use_cache = False
        h = self.embed_tokens(input_ids)
        new = input_ids.shape[1]
        mask = attention_mask[:, -new:].bool() if attention_mask is not None else None
        if cache is None and use_cache:
            cache = self.new_cache(input_ids.shape[0], new, h)
        for i, layer in enumerate(self.layers):
            h = layer(h, mask, cache=cache.layers[i] if cache is not None else None)
        if cache is not None:
            cache.consumed += new
        return BaseModelOutputWithPast(last_hidden_state=self.norm(h), cache=cache if use_cache else None)


class LlamaMTLAForCausalLM(LlamaMTLAPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LlamaMTLAConfig):
        super().__init__(config)
        self.model = LlamaMTLAModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_llama(cls, llama, attention_type: str = "mtla", attention_init: str = "llama",
                   **fields) -> "LlamaMTLAForCausalLM":
        """This model from a ``LlamaForCausalLM`` (an instance or a local path): embeddings, norms,
        MLPs and ``lm_head`` copied exactly; the attention of ``attention_type`` initialised from the
        Llama's (``attention_init="llama"``, MHA2MLA-style for mla/mtla) or at random (``"random"``).
        ``fields``: further ``LlamaMTLAConfig`` fields (``down_rate``, ``kv_lora_rank``, ...).
        See ``espnet_mtla.hf.from_llama``. Returned in eval mode."""
        from espnet_mtla.hf.from_llama import convert_llama

        return convert_llama(cls, llama, attention_type, attention_init, **fields)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids: torch.LongTensor, attention_mask: Optional[torch.Tensor] = None,
                cache: Optional[CompressedKVCache] = None, use_cache: Optional[bool] = None,
                labels: Optional[torch.LongTensor] = None, **kwargs) -> CausalLMOutputWithPast:
        """labels (B, t): next-token targets aligned with input_ids (shifted inside; -100 ignored)."""
        out = self.model(input_ids, attention_mask, cache, use_cache)
        logits = self.lm_head(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                               labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache)

    def prepare_inputs_for_generation(self, input_ids, cache: Optional[CompressedKVCache] = None,
                                      attention_mask=None, use_cache: Optional[bool] = True, **kwargs):
        """Feed only what the cache has not seen (everything when there is no cache)."""
        if cache is not None:
            input_ids = input_ids[:, cache.consumed:]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "cache": cache, "use_cache": use_cache}
