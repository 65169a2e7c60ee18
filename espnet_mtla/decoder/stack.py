"""Decoder-only stack (torch only): text tokens attend to [prefix ; text] in every layer.

    speech -> frontend -> encoder -> PrefixProjector -> prefix P (B, P, D)
    layer l: keys/values over [P ; text], queries over text (prefix_mode "kv_only", default)
             or over [P ; text] with P updated layer by layer (prefix_mode "causal_lm")

Training and decoding run the same code path: each layer writes the prefix into a KV cache
(``fill_prefix``) and then attends the text tokens with that cache, so parallel training is
exactly what step-by-step decoding computes. Without an encoder (``encoder_output_size=None``)
the stack has no prefix: it is a causal language model over the text alone (the ESPnet LM
adapter ``espnet_mtla.lm.DecoderOnlyLM``). This module needs only torch, so that the stack
and espnet_mtla.search run (and are benchmarked) where ESPnet is not installed; the ESPnet
decoder adapter is ``decoder_only.DecoderOnlyDecoder``.
"""

import inspect
import math
from typing import Optional, Tuple

import torch
from torch import nn

from espnet_mtla.attention.cache import LayerCaches
from espnet_mtla.attention.registry import config_sections
from espnet_mtla.decoder.attention_config import build_layer_attention
from espnet_mtla.decoder.layers import DecoderLayer, PrefixProjector, build_norm
from espnet_mtla.storage.errors import ConfigError, check_dropout_rate, check_known_keys

PREFIX_MODES = ("kv_only", "causal_lm")


# The caches of one decoding batch: one AttentionCache per layer, one row per hypothesis.
DecoderCaches = LayerCaches


class DecoderOnlyStack(nn.Module):
    """Pre-norm decoder-only Transformer over [prefix ; text] with a switchable attention.

    Args:
        vocab_size: output vocabulary (ESPnet passes it).
        encoder_output_size: width of the encoder output fed to the prefix projector; None: no
            prefix (a language model; the prefix options are then unused).
        attention_type: a registered type (mha | mqa | gqa | mla | mtla); options in
            ``attention_conf`` and the type's sections (``mha_conf``, ``gqa_conf``, ``mla_conf``,
            ``mtla_conf``, ...), passed as keywords (see attention_config.py).
        model_dim, attention_heads, linear_units, num_blocks: layer sizes.
        ffn_activation: relu | gelu | swiglu.  norm_type: layer_norm | rms_norm.
        norm_layout: pre_norm (default) | mtla_fairseq (the reference toolkit's layers, for
            imported models; see layers.DecoderLayer).
        dropout_rate: residual, FFN and embedding dropout.
        tie_embeddings: share the token embedding with the output layer.
        prefix_stack, prefix_hidden: the projector stacks ``prefix_stack`` encoder frames and
            maps them through Linear(-> prefix_hidden), ReLU, Linear(-> model_dim).
        prefix_mode: kv_only (prefix = keys/values only) or causal_lm (prefix also as queries).
    """

    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: Optional[int],
        attention_type: str = "mtla",
        model_dim: int = 512,
        attention_heads: int = 8,
        linear_units: int = 2048,
        num_blocks: int = 9,
        ffn_activation: str = "relu",
        norm_type: str = "layer_norm",
        norm_layout: str = "pre_norm",
        dropout_rate: float = 0.1,
        tie_embeddings: bool = True,
        prefix_stack: int = 1,
        prefix_hidden: Optional[int] = 256,
        prefix_mode: str = "kv_only",
        attention_conf: Optional[dict] = None,
        **type_sections: Optional[dict],
    ):
        super().__init__()
        if prefix_mode not in PREFIX_MODES:
            raise ConfigError(f"decoder_conf: unknown prefix_mode {prefix_mode!r}; choose one of {', '.join(PREFIX_MODES)}")
        for name, value in [("model_dim", model_dim), ("attention_heads", attention_heads),
                            ("linear_units", linear_units), ("num_blocks", num_blocks)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"decoder_conf: {name} must be an integer >= 1, got {value!r}")
        check_dropout_rate("decoder_conf.dropout_rate", dropout_rate)
        arguments = [p for p in inspect.signature(DecoderOnlyStack.__init__).parameters if p != "type_sections"]
        check_known_keys("decoder_conf", type_sections, set(arguments[3:]) | set(config_sections()))
        sections = dict(type_sections, attention_conf=attention_conf)
        self.attention_type = attention_type
        self.prefix_mode = prefix_mode
        self.model_dim = model_dim
        try:  # the layers raise ValueError; here they are decoder_conf's
            self.projector = (None if encoder_output_size is None else
                              PrefixProjector(encoder_output_size, model_dim, prefix_stack, prefix_hidden))
            self.embed = nn.Embedding(vocab_size, model_dim)
            nn.init.normal_(self.embed.weight, std=model_dim**-0.5)
            self.embed_dropout = nn.Dropout(dropout_rate)
            self.layers = nn.ModuleList(
                DecoderLayer(
                    build_layer_attention(attention_type, model_dim, attention_heads, sections),
                    model_dim, linear_units, ffn_activation, dropout_rate, norm_type, norm_layout=norm_layout,
                )
                for _ in range(num_blocks)
            )
            self.final_norm = build_norm(norm_type, model_dim)
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"decoder_conf: {err}") from None
        self.output = nn.Linear(model_dim, vocab_size, bias=False)
        if tie_embeddings:
            self.output.weight = self.embed.weight

    # -- shared by training and decoding ---------------------------------------------------
    def embed_tokens(self, ys: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, D); embeddings are scaled by sqrt(D) (init std D^-1/2)."""
        return self.embed_dropout(self.embed(ys) * math.sqrt(self.model_dim))

    def cache_capacity(self, frames: int, tokens: int) -> int:
        """Cache slots for an encoder output of ``frames`` frames and ``tokens`` tokens."""
        return tokens if self.projector is None else -(-frames // self.projector.stack) + tokens

    def cached_attention(self):
        """The attention module of each cache layer (what a replayed decode step prepares)."""
        return [layer.attn for layer in self.layers]

    @property
    def output_projection(self) -> nn.Linear:
        return self.output

    def new_caches(self, batch_size: int, capacity: int, like: torch.Tensor) -> DecoderCaches:
        return DecoderCaches(
            [layer.attn.new_cache(batch_size, capacity, dtype=like.dtype, device=like.device) for layer in self.layers]
        )

    def fill_prefix(self, caches: DecoderCaches, hs: torch.Tensor, hlens: torch.Tensor) -> None:
        """Project encoder output (B, T, D_enc) to the prefix and write it into every layer
        (nothing to write without a prefix)."""
        if self.projector is None:
            return
        prefix, prefix_lens = self.projector(hs, hlens)
        mask = torch.arange(prefix.shape[1], device=prefix.device) < prefix_lens.unsqueeze(1)
        if bool(mask.all()):  # one host read here instead of one per layer; equal rows need no masks later
            mask = None
        for layer, cache in zip(self.layers, caches.layers):
            if self.prefix_mode == "kv_only":
                layer.prefill(cache, prefix, mask)
            else:
                prefix = layer(prefix, mask, cache)

    def run_tokens(self, caches: DecoderCaches, ys: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens (B, L) after what ``caches`` hold -> logits (B, L, V); writes them into the caches."""
        h = self.embed_tokens(ys)
        for layer, cache in zip(self.layers, caches.layers):
            h = layer(h, mask, cache)
        return self.output(self.final_norm(h))

    def forward(
        self, hs_pad: torch.Tensor, hlens: torch.Tensor, ys_in_pad: torch.Tensor, ys_in_lens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits.

        hs_pad: (B, T, D_enc) encoder output, hlens: (B,); ys_in_pad: (B, L) <sos> + tokens,
        ys_in_lens: (B,) -> logits (B, L, V), ys_in_lens.
        """
        capacity = math.ceil(hs_pad.shape[1] / self.projector.stack) + ys_in_pad.shape[1]
        caches = self.new_caches(hs_pad.shape[0], capacity, hs_pad)
        self.fill_prefix(caches, hs_pad, hlens)
        mask = torch.arange(ys_in_pad.shape[1], device=ys_in_pad.device) < ys_in_lens.unsqueeze(1)
        return self.run_tokens(caches, ys_in_pad, mask), ys_in_lens
