"""Building blocks of the decoder-only stack: feed-forward, pre-norm layer, prefix projector.

Torch only. Bad arguments raise ValueError naming the argument; each adapter says which
config it came from (``decoder_conf: ...`` in DecoderOnlyStack, ``LlamaMTLAConfig: ...`` in
the HF model).
"""

from typing import Optional, Tuple

import torch
from torch import nn

from espnet_mtla.attention.cache import AttentionCache
from espnet_mtla.attention.norms import NORM_TYPES
from espnet_mtla.attention.norms import build_norm as _build_norm

FFN_ACTIVATIONS = ("relu", "gelu", "swiglu")


def build_norm(norm_type: str, dim: int, eps: Optional[float] = None) -> nn.Module:
    if norm_type not in NORM_TYPES:
        raise ValueError(f"unknown norm_type {norm_type!r}; choose one of {', '.join(NORM_TYPES)}")
    return _build_norm(norm_type, dim, eps=eps)


class FeedForward(nn.Module):
    """Position-wise FFN: W2 act(W1 x), or SwiGLU W2 (silu(W1 x) * W3 x). (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, hidden: int, activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        if activation not in FFN_ACTIVATIONS:
            raise ValueError(
                f"unknown ffn_activation {activation!r}; choose one of {', '.join(FFN_ACTIVATIONS)}"
            )
        self.activation = activation
        self.w1 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(dim, hidden) if activation == "swiglu" else None
        self.w2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "swiglu":
            hidden = nn.functional.silu(self.w1(x)) * self.w3(x)
        elif self.activation == "gelu":
            hidden = nn.functional.gelu(self.w1(x))
        else:
            hidden = torch.relu(self.w1(x))
        return self.w2(self.dropout(hidden))


NORM_LAYOUTS = ("pre_norm", "mtla_fairseq")


class DecoderLayer(nn.Module):
    """A decoder layer: attention over the layer's cache plus the new tokens, then a FFN.

    ``norm_layout`` ``pre_norm`` (default): h + attn(norm(h)), then h + ffn(norm(h)); a prefix
    is normalised before it is written. ``mtla_fairseq``: the layers of the MTLA paper's fairseq
    models, for models imported from the reference toolkit: h = N1(h + attn(N1(h))) (the same
    norm twice), then h = N2(h + ffn(h)); the prefix is written as the projector gives it.
    The attention sees the layer's cache (whatever earlier calls wrote into it: the prefix,
    earlier tokens) plus the new tokens causally.
    """

    def __init__(self, attention: nn.Module, dim: int, linear_units: int, activation: str, dropout: float, norm_type: str,
                 norm_eps: Optional[float] = None, norm_layout: str = "pre_norm"):
        super().__init__()
        if norm_layout not in NORM_LAYOUTS:
            raise ValueError(f"unknown norm_layout {norm_layout!r}; choose one of {', '.join(NORM_LAYOUTS)}")
        self.attn_norm = build_norm(norm_type, dim, norm_eps)
        self.attn = attention
        self.ffn_norm = build_norm(norm_type, dim, norm_eps)
        self.ffn = FeedForward(dim, linear_units, activation, dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm_layout = norm_layout

    def forward(self, h: torch.Tensor, mask: Optional[torch.Tensor], cache: AttentionCache) -> torch.Tensor:
        """h: (B, T, D) new tokens, mask: (B, T) real tokens or None -> (B, T, D)."""
        if self.norm_layout == "mtla_fairseq":
            h = self.attn_norm(h + self.dropout(self.attn(self.attn_norm(h), mask, cache=cache)))
            return self.ffn_norm(h + self.dropout(self.ffn(h)))
        h = h + self.dropout(self.attn(self.attn_norm(h), mask, cache=cache))
        return h + self.dropout(self.ffn(self.ffn_norm(h)))

    def prefill(self, cache: AttentionCache, prefix: torch.Tensor, mask: Optional[torch.Tensor]) -> None:
        """Write a keys/values-only prefix (B, P, D) into ``cache``."""
        self.attn.prefill(cache, prefix if self.norm_layout == "mtla_fairseq" else self.attn_norm(prefix), mask)


class PrefixProjector(nn.Module):
    """Encoder output -> decoder prefix: stack ``stack`` frames, then Linear-ReLU-Linear.

    (B, T, D_enc), lengths (B,) -> (B, ceil(T / stack), D), lengths ceil(len / stack).
    Frames past a row's length are zeroed before stacking, so a row's prefix does not depend
    on how much padding its batch has.
    """

    def __init__(self, input_dim: int, output_dim: int, stack: int = 1, hidden: Optional[int] = None):
        super().__init__()
        if not isinstance(stack, int) or stack < 1:
            raise ValueError(f"prefix_stack must be an integer >= 1, got {stack!r}")
        hidden = hidden or output_dim
        self.stack = stack
        self.net = nn.Sequential(nn.Linear(input_dim * stack, hidden), nn.ReLU(), nn.Linear(hidden, output_dim))

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        batch, time, dim = frames.shape
        real = torch.arange(time, device=frames.device) < lengths.unsqueeze(1)
        frames = frames.masked_fill(~real.unsqueeze(-1), 0.0)
        pad = (-time) % self.stack
        if pad:
            frames = nn.functional.pad(frames, (0, 0, 0, pad))
        stacked = frames.reshape(batch, (time + pad) // self.stack, self.stack * dim)
        out_lengths = torch.div(lengths + self.stack - 1, self.stack, rounding_mode="floor")
        return self.net(stacked), out_lengths
