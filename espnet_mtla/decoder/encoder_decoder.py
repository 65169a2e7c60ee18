"""Encoder-decoder Transformer decoder with real caches (torch only): ESPnet's
``TransformerDecoder`` architecture, with any registered self-attention type and a source
memory computed once per utterance.

    ys -> embed (Embedding, x sqrt(D) + sinusoidal position, as ESPnet's PositionalEncoding)
    layer l: x + self_attn(norm1(x))                 the type's cache (MTLA: merged latents)
             x + src_attn(norm2(x), memory_l)        memory_l: the encoder output projected once
             x + feed_forward(norm3(x))
    -> after_norm -> output_layer -> logits

(``normalize_before: false`` is ESPnet's post-norm; ``concat_after`` its concat-linear.)
Parameter names are ESPnet's (``embed.0``, ``decoders.N.{self_attn,src_attn}.linear_*``,
``feed_forward.w_{1,2}``, ``norm{1,2,3}``, ``after_norm``, ``output_layer``): with MHA
self-attention (no RoPE, biases) a trained ESPnet decoder loads as it is. MLA/MTLA keep the
same embedding (absolute positions) and add their decoupled RoPE inside the attention.

Training and decoding run the same code: ``fill_prefix`` writes each layer's source memory into
the caches, ``run_tokens`` runs tokens after what the caches hold, so teacher forcing is exactly
step-by-step decoding. A search's rows are utterance-major (see ``source_attention``).
"""

import inspect
import math
from typing import List, Optional, Tuple

import torch
from torch import nn

from espnet_mtla.attention.cache import AttentionCache, LayerCaches
from espnet_mtla.attention.base import check_positive
from espnet_mtla.attention.registry import attention_options, attention_types, config_sections
from espnet_mtla.decoder.attention_config import build_layer_attention
from espnet_mtla.decoder.source_attention import SourceAttention, SourceMemory
from espnet_mtla.storage.errors import ConfigError, check_dropout_rate, check_known_keys

LAYER_NORM_EPS = 1e-12  # ESPnet's LayerNorm


class EncoderDecoderCaches(LayerCaches):
    """The caches of one decoding batch: per layer, the self-attention cache (one row per
    hypothesis) and the source memory (one entry per utterance, shared by its rows)."""

    def __init__(self, layers: List[AttentionCache], sources: Optional[List[SourceMemory]] = None):
        super().__init__(layers)
        self.sources = sources or []

    def source_nbytes(self) -> int:
        return sum(memory.nbytes() for memory in self.sources)

    def nbytes(self) -> int:
        return super().nbytes() + self.source_nbytes()

    def allocated_nbytes(self) -> int:
        return super().allocated_nbytes() + self.source_nbytes()

    def note_peak(self) -> None:
        """The peak of (self-attention caches + source memory), without a device sync."""
        before, self.peak_nbytes = self.peak_nbytes, 0
        super().note_peak()  # the self-attention caches now
        self.peak_nbytes = max(before, self.peak_nbytes + self.source_nbytes())

    def keep_utterances(self, utterances: torch.Tensor) -> None:
        """Drop the source memory of utterances that left the search (their rows are gone)."""
        self.sources = [memory.select(utterances) for memory in self.sources]

    def select(self, rows: torch.Tensor) -> "EncoderDecoderCaches":
        """Copies of ``rows`` (all of one utterance: ESPnet's one-utterance searches)."""
        selected = super().select(rows)
        if self.sources and self.sources[0].num_utterances > 1:
            width = self.batch_size // self.sources[0].num_utterances
            utterance = (rows[:1] // width).to(self.sources[0].keys.device)
            selected.sources = [memory.select(utterance) for memory in self.sources]
        return selected


class PositionalEncoding(nn.Module):
    """x * sqrt(D) + sin/cos of each token's position (ESPnet's ``PositionalEncoding``), then dropout.

    x: (B, L, D), positions: (B, L) -> (B, L, D). The table is computed, never saved."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.dim = dim
        self.dropout = nn.Dropout(dropout)
        self._frequencies = {}  # device -> (D/2,) float32, computed once, not per decoding step

    def frequencies(self, device) -> torch.Tensor:
        """(D/2,) float32 whatever the model's dtype (bfloat16 would shift the angles by radians)."""
        table = self._frequencies.get(device)
        if table is None:
            table = torch.exp(torch.arange(0, self.dim, 2, dtype=torch.float32, device=device)
                              * -(math.log(10000.0) / self.dim))
            self._frequencies[device] = table
        return table

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        angle = positions.to(torch.float32).unsqueeze(-1) * self.frequencies(x.device)  # (B, L, D/2)
        pe = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2).to(x.dtype)  # sin, cos interleaved
        return self.dropout(x * math.sqrt(self.dim) + pe)


class FeedForward(nn.Module):
    """ESPnet's PositionwiseFeedForward: w_2(dropout(relu(w_1(x)))). (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(torch.relu(self.w_1(x))))


# MHA-family self-attention under ESPnet's names; the other types keep their own
_ESPNET_SELF_ATTN = {"linear_q": "q_proj", "linear_k": "k_proj", "linear_v": "v_proj", "linear_out": "out_proj"}


class EncoderDecoderLayer(nn.Module):
    """ESPnet's ``DecoderLayer`` with a cached self-attention and a source memory."""

    def __init__(self, dim: int, self_attn: nn.Module, src_attn: SourceAttention, linear_units: int,
                 dropout: float, normalize_before: bool, concat_after: bool):
        super().__init__()
        self.self_attn, self.src_attn = self_attn, src_attn
        self.feed_forward = FeedForward(dim, linear_units, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim, eps=LAYER_NORM_EPS) for _ in range(3))
        self.dropout = nn.Dropout(dropout)
        self.normalize_before, self.concat_after = normalize_before, concat_after
        if concat_after:
            self.concat_linear1 = nn.Linear(2 * dim, dim)
            self.concat_linear2 = nn.Linear(2 * dim, dim)
        if hasattr(self_attn, "k_proj"):  # the MHA family: checkpoints hold ESPnet's names
            self._register_state_dict_hook(_to_espnet_names)
        if hasattr(self_attn, "q_proj"):  # MLA/MTLA checkpoints saved before 2026-12 hold some of them too
            self._register_load_state_dict_pre_hook(_from_espnet_names)

    def _residual(self, x, norm, attend, concat_linear):
        y = norm(x) if self.normalize_before else x
        out = concat_linear(torch.cat([y, attend(y)], dim=-1)) if self.concat_after else self.dropout(attend(y))
        x = x + out
        return x if self.normalize_before else norm(x)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor], cache: AttentionCache,
                memory: SourceMemory) -> torch.Tensor:
        """x: (R, L, D) new tokens, mask: (R, L) real tokens or None -> (R, L, D)."""
        x = self._residual(x, self.norm1, lambda y: self.self_attn(y, mask, cache=cache),
                           getattr(self, "concat_linear1", None))
        x = self._residual(x, self.norm2, lambda y: self.src_attn(y, memory), getattr(self, "concat_linear2", None))
        y = self.norm3(x) if self.normalize_before else x
        x = x + self.dropout(self.feed_forward(y))
        return x if self.normalize_before else self.norm3(x)


def _rename_self_attn(state_dict, prefix, names) -> None:
    for old, new in names.items():
        for kind in ("weight", "bias"):
            key = f"{prefix}self_attn.{old}.{kind}"
            if key in state_dict:
                state_dict[f"{prefix}self_attn.{new}.{kind}"] = state_dict.pop(key)


def _to_espnet_names(module, state_dict, prefix, local_metadata):
    _rename_self_attn(state_dict, prefix, {ours: espnet for espnet, ours in _ESPNET_SELF_ATTN.items()})
    return state_dict


def _from_espnet_names(state_dict, prefix, *args):
    _rename_self_attn(state_dict, prefix, _ESPNET_SELF_ATTN)


def resolve_source(kind: str, conf: Optional[dict], self_attn: nn.Module):
    """``source_attention``/``source_conf`` with ``auto`` replaced by the self-attention's kind:
    MLA/MTLA's latent (its rank, norm and ``down_rate``), else per-head keys and values."""
    conf = dict(conf or {})
    check_known_keys("decoder_conf.source_conf", conf, ("kv_lora_rank", "down_rate", "latent_norm"))
    if kind != "auto":
        return kind, conf
    if not hasattr(self_attn, "kv_lora_rank"):
        return "mha", conf
    latent = {"kv_lora_rank": self_attn.kv_lora_rank, "down_rate": self_attn.down_rate,
              "latent_norm": self_attn.latent_norm}
    return "latent", {**latent, **conf}


class EncoderDecoderStack(nn.Module):
    """Attention decoder of an encoder-decoder model: ESPnet's ``TransformerDecoder`` options,
    any registered self-attention type, and a cached source attention.

    Args:
        vocab_size, encoder_output_size: as ESPnet passes them (the decoder is as wide as the
            encoder output).
        attention_heads, linear_units, num_blocks, dropout_rate, positional_dropout_rate,
        self_attention_dropout_rate, src_attention_dropout_rate, input_layer (embed only),
        use_output_layer, normalize_before, concat_after: ESPnet's ``TransformerDecoder``'s;
        layer_drop_rate, qk_norm, gradient_checkpoint_layers: ESPnet's too, at their defaults
        only; use_flash_attn: ignored (the attention runs on PyTorch's SDPA).
        attention_type: the self-attention (mha | mqa | gqa | mla | mtla); options in
            ``attention_conf`` and the type's sections (``mha_conf``, ``mla_conf``, ...). The
            MHA family defaults to ESPnet's layer here: biases, no RoPE (``mha_conf.rope``).
        source_attention: ``mha`` (per-head keys and values, ESPnet's), ``latent``, or ``auto``:
            the self-attention's kind (``mha`` for the MHA family; ``latent`` for MLA with its
            ``kv_lora_rank``, and for MTLA also merged over its ``down_rate`` frames).
        source_conf: ``latent``'s ``kv_lora_rank``, ``down_rate``, ``latent_norm``.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: int,
        attention_type: str = "mha",
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        self_attention_dropout_rate: float = 0.0,
        src_attention_dropout_rate: float = 0.0,
        input_layer: str = "embed",
        use_output_layer: bool = True,
        normalize_before: bool = True,
        concat_after: bool = False,
        source_attention: str = "mha",
        source_conf: Optional[dict] = None,
        attention_conf: Optional[dict] = None,
        layer_drop_rate: float = 0.0,
        qk_norm: bool = False,
        use_flash_attn: bool = True,
        gradient_checkpoint_layers: Optional[List[int]] = None,
        **type_sections: Optional[dict],
    ):
        super().__init__()
        # ESPnet's options that a converted config may carry; flash_attn: our attention runs on SDPA
        for name, value, default in (("layer_drop_rate", layer_drop_rate, 0.0), ("qk_norm", qk_norm, False),
                                     ("gradient_checkpoint_layers", gradient_checkpoint_layers or [], [])):
            if value != default:
                raise ConfigError(f"decoder_conf: {name}: {value!r} is not supported by cached_transformer "
                                  f"(use {default!r})")
        arguments = [p for p in inspect.signature(EncoderDecoderStack.__init__).parameters if p != "type_sections"]
        check_known_keys("decoder_conf", type_sections, set(arguments[3:]) | set(config_sections()))
        for name in ("dropout_rate", "positional_dropout_rate", "self_attention_dropout_rate",
                     "src_attention_dropout_rate"):
            check_dropout_rate(f"decoder_conf.{name}", locals()[name])
        if input_layer != "embed":
            raise ConfigError(f"decoder_conf: input_layer {input_layer!r} is not supported by cached_transformer "
                              "(token ids only: use input_layer: embed)")
        dim = encoder_output_size
        self.attention_type, self.model_dim, self.normalize_before = attention_type, dim, normalize_before
        attention_conf = {"dropout": self_attention_dropout_rate, **(attention_conf or {})}
        if attention_type in attention_types() and "rope" in attention_options(attention_type):  # MHA family: ESPnet's layer unless asked otherwise
            attention_conf.setdefault("bias", True)
            type_sections = dict(type_sections, mha_conf={"rope": False, **(type_sections.get("mha_conf") or {})})
        sections = dict(type_sections, attention_conf=attention_conf)
        try:  # the layers raise ValueError; here they are decoder_conf's
            for name, value in (("attention_heads", attention_heads), ("linear_units", linear_units),
                                ("num_blocks", num_blocks)):
                check_positive(value, name)
            self.embed = nn.Sequential(nn.Embedding(vocab_size, dim), PositionalEncoding(dim, positional_dropout_rate))
            layers = []  # built layer by layer: a seed gives the same weights as it always has
            for _ in range(num_blocks):
                self_attn = build_layer_attention(attention_type, dim, attention_heads, sections)
                if not layers:  # ``auto`` reads the first self-attention
                    source_attention, source_conf = resolve_source(source_attention, source_conf, self_attn)
                src_attn = SourceAttention(dim, attention_heads, src_attention_dropout_rate, source_attention,
                                           **source_conf)
                layers.append(EncoderDecoderLayer(dim, self_attn, src_attn, linear_units, dropout_rate,
                                                  normalize_before, concat_after))
            self.decoders = nn.ModuleList(layers)
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"decoder_conf: {err}") from None
        if normalize_before:
            self.after_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.output_layer = nn.Linear(dim, vocab_size) if use_output_layer else None

    # -- the search protocol (espnet_mtla.search): caches, source, tokens ---------------------------
    @staticmethod
    def cache_capacity(frames: int, tokens: int) -> int:
        """Self-attention cache slots a search needs: the tokens only (the source is apart)."""
        return tokens

    def cached_attention(self):
        """The self-attention module of each cache layer (what a replayed decode step prepares)."""
        return [layer.self_attn for layer in self.decoders]

    @property
    def output_projection(self) -> Optional[nn.Linear]:
        return self.output_layer

    def new_caches(self, batch_size: int, capacity: int, like: torch.Tensor) -> EncoderDecoderCaches:
        return EncoderDecoderCaches([layer.self_attn.new_cache(batch_size, capacity, dtype=like.dtype,
                                                               device=like.device) for layer in self.decoders])

    def fill_prefix(self, caches: EncoderDecoderCaches, hs: torch.Tensor, hlens: torch.Tensor) -> None:
        """Project the encoder output (N, T, D) once per layer into the caches' source memory."""
        caches.sources = [layer.src_attn.memory(hs, hlens) for layer in self.decoders]

    def run_tokens(self, caches: EncoderDecoderCaches, ys: torch.Tensor,
                   mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens (R, L) after what ``caches`` hold -> logits (R, L, V); writes them into the caches."""
        if len(caches.sources) != len(self.decoders):
            raise ValueError("run_tokens needs the source memory of every layer: call fill_prefix first")
        first = caches.layers[0]
        positions = first.lengths.unsqueeze(1) + torch.arange(ys.shape[1], device=ys.device)  # (R, L)
        h = self.embed[1](self.embed[0](ys), positions)
        for layer, cache, memory in zip(self.decoders, caches.layers, caches.sources):
            h = layer(h, mask, cache, memory)
        if self.normalize_before:
            h = self.after_norm(h)
        return self.output_layer(h) if self.output_layer is not None else h

    def forward(self, hs_pad: torch.Tensor, hlens: torch.Tensor, ys_in_pad: torch.Tensor,
                ys_in_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: hs_pad (B, T, D), hlens (B,), ys_in_pad (B, L) <sos> + tokens,
        ys_in_lens (B,) -> logits (B, L, V), ys_in_lens."""
        caches = self.new_caches(hs_pad.shape[0], ys_in_pad.shape[1], hs_pad)
        self.fill_prefix(caches, hs_pad, hlens)
        mask = torch.arange(ys_in_pad.shape[1], device=ys_in_pad.device) < ys_in_lens.unsqueeze(1)
        return self.run_tokens(caches, ys_in_pad, mask), ys_in_lens
