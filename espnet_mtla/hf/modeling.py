"""``LlamaMTLAForCausalLM``: a Llama-shaped causal LM on espnet_mtla's attention library.

    embed -> N x [RMSNorm -> attention (MTLA | MLA | MHA | MQA | GQA) -> RMSNorm -> SwiGLU] -> RMSNorm -> lm_head

Each layer's attention is ``espnet_mtla.attention.build_attention`` and keeps its own
compressed KV cache (``CompressedKVCache``, one ``AttentionCache`` per layer): MTLA stores one
[latent ; rope key] slot per ``down_rate`` tokens. Padding never enters a cache: every row
holds only its real tokens, so a left-padded batch gives each row exactly what the row alone
gives (RoPE positions count real tokens; MTLA's chunks start at a row's first real token).
``generate()`` works with greedy, sampling and beam search; 0/1 integer and boolean attention
masks mean the same.
"""

from typing import List, Optional

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from espnet_mtla.attention.cache import AttentionCache, LayerCaches
from espnet_mtla.attention.registry import build_attention
from espnet_mtla.attention.rope import RotaryEmbedding
from espnet_mtla.decoder.layers import DecoderLayer
from espnet_mtla.hf.configuration import LlamaMTLAConfig


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


class LlamaMTLAPreTrainedModel(PreTrainedModel):
    config_class = LlamaMTLAConfig
    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model makes its own CompressedKVCache

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
            self.layers = nn.ModuleList(
                DecoderLayer(build_attention(config.attention_type, config.hidden_size, config.num_attention_heads,
                                             **config.attention_options()),
                             config.hidden_size, config.intermediate_size, "swiglu", 0.0, "rms_norm",
                             config.rms_norm_eps)
                for _ in range(config.num_hidden_layers))
        except ValueError as err:
            raise ValueError(f"LlamaMTLAConfig: {err}") from None
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def new_cache(self, batch_size: int, capacity: int, like: torch.Tensor) -> CompressedKVCache:
        return CompressedKVCache([layer.attn.new_cache(batch_size, capacity, dtype=like.dtype, device=like.device)
                                  for layer in self.layers])

    def forward(self, input_ids: torch.LongTensor, attention_mask: Optional[torch.Tensor] = None,
                cache: Optional[CompressedKVCache] = None, use_cache: Optional[bool] = None,
                **kwargs) -> BaseModelOutputWithPast:
        """input_ids (B, t): tokens after what ``cache`` holds; attention_mask (B, past + t) or (B, t),
        1/True on real tokens -> hidden states (B, t, D) (zero at padded positions)."""
        h = self.embed_tokens(input_ids)
        new = input_ids.shape[1]
        mask = attention_mask[:, -new:].bool() if attention_mask is not None else None
        if cache is None:
            cache = self.new_cache(input_ids.shape[0], new, h)
        for layer, layer_cache in zip(self.layers, cache.layers):
            h = layer(h, mask, layer_cache)
        cache.consumed += new
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return BaseModelOutputWithPast(last_hidden_state=self.norm(h), cache=cache if use_cache else None)


class LlamaMTLAForCausalLM(LlamaMTLAPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LlamaMTLAConfig):
        super().__init__(config)
        self.model = LlamaMTLAModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

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
