"""What every attention type shares: padding handling, positions, the cache interface.

Conventions (all types):
- ``x`` (B, T, D) are the new tokens; ``mask`` (B, T) marks real tokens (True) and may pad on
  either side. Internally rows are packed left (right-padded) so that a token's rank among
  its row's real tokens is its column; outputs are scattered back and padded rows are zero.
- Tokens attend causally to everything the cache holds for their row plus the earlier new
  tokens. The rank of new token ``t`` of row ``b`` is ``cache.lengths[b] + t``; RoPE uses it
  unless ``positions`` (B, T) are given explicitly.
- ``forward(x, cache=cache)`` writes the new tokens into ``cache``; ``prefill(cache, x)``
  writes them without computing any query (keys/values-only tokens, e.g. a speech prefix
  that the decoder attends to but does not predict).
"""

from typing import Callable, Optional, Tuple

import torch

from espnet_mtla.attention.cache import AttentionCache


def check_positive(value, option: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{option} must be an integer >= 1, got {value!r}")


def check_dropout(value, option: str = "dropout") -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(f"{option} must be in [0, 1), got {value!r}")


def linear_weight_bias(module: torch.nn.Module) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The (out, in) weight and (out,) bias (or None) that a Linear-like ``module`` applies.

    An ``nn.Linear`` gives its parameters. A wrapper that adds to them in ``forward`` (a PEFT
    LoRA layer: base weight plus a low-rank update) is read by applying it to the identity, so
    that code using weights directly (the absorbed form) computes what the module computes.
    """
    if type(module) is torch.nn.Linear:
        return module.weight, module.bias
    base = module.weight
    eye = torch.eye(base.shape[1], dtype=base.dtype, device=base.device)
    bias = module(torch.zeros_like(eye[:1]))[0]
    has_bias = getattr(module, "bias", None) is not None or bool(bias.any())
    return (module(eye) - bias).T, (bias if has_bias else None)


def right_padded_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True on the first ``lengths[b]`` columns."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)


class CachedAttention(torch.nn.Module):
    """Base class: subclasses implement ``_attend`` and ``_store`` on right-padded input."""

    def new_cache(self, batch_size: int, capacity: int = 256, dtype=None, device=None) -> AttentionCache:
        param = next(self.parameters())
        return AttentionCache(
            batch_size,
            self.cache_shapes(),
            tokens_per_slot=self.tokens_per_slot,
            capacity=capacity,
            dtype=dtype or param.dtype,
            device=device or param.device,
        )

    tokens_per_slot = 1

    def prepare_decode(self, num_tokens: int) -> None:
        """Build now whatever decode steps up to ``num_tokens`` cached tokens would build lazily,
        so that a step recorded in a CUDA graph allocates and computes nothing outside it."""

    def cache_shapes(self):
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
        cache: Optional[AttentionCache] = None,
    ) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D). See the module docstring for mask/positions/cache."""
        x, positions, lengths, start, restore = self._pack(x, mask, positions, cache)
        return restore(self._attend(x, positions, lengths, start, cache))

    @torch.no_grad()
    def prefill_(self, cache: AttentionCache, x, mask=None, positions=None) -> None:
        """Inference-only ``prefill`` (no autograd graph)."""
        self.prefill(cache, x, mask, positions)

    def prefill(self, cache: AttentionCache, x, mask=None, positions=None) -> None:
        """Append ``x``'s keys/values to ``cache`` without computing queries or outputs."""
        x, positions, lengths, start, _ = self._pack(x, mask, positions, cache)
        self._store(x, positions, lengths, start, cache)

    def _pack(
        self, x, mask, positions, cache
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Callable]:
        """Left-pack real tokens; returns x, positions, lengths (B,), start (B,), restore."""
        batch, time = x.shape[:2]
        if cache is not None and cache.batch_size != batch:
            raise ValueError(
                f"x has {batch} rows but the cache holds {cache.batch_size}; "
                "reorder the cache to the new rows (cache.reorder) before calling"
            )
        start = cache.lengths if cache is not None else x.new_zeros(batch, dtype=torch.long)
        if mask is None:
            lengths = torch.full((batch,), time, dtype=torch.long, device=x.device)
            restore = _identity
        else:
            mask = mask.to(device=x.device, dtype=torch.bool)
            if mask.shape != (batch, time):
                raise ValueError(f"mask must have shape {(batch, time)} like x, got {tuple(mask.shape)}")
            lengths = mask.sum(1)
            packed_mask = right_padded_mask(lengths, time)
            if torch.equal(mask, packed_mask):
                restore = _zero_padding(packed_mask)
            else:
                # Stable sort puts each row's real tokens first, in their original order.
                order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
                x = x.gather(1, order.unsqueeze(-1).expand_as(x))
                if positions is not None:
                    positions = positions.gather(1, order)
                restore = _unpack(order, packed_mask)
        if positions is None:
            positions = start.unsqueeze(1) + torch.arange(time, device=x.device)
        if cache is not None:
            cache.equal_rows_step = mask is None  # every row gets all ``time`` tokens
        return x, positions, lengths, start, restore

    def _attend(self, x, positions, lengths, start, cache) -> torch.Tensor:
        raise NotImplementedError

    def _store(self, x, positions, lengths, start, cache) -> None:
        raise NotImplementedError


def _identity(out: torch.Tensor) -> torch.Tensor:
    return out


def _zero_padding(packed_mask: torch.Tensor) -> Callable:
    def restore(out: torch.Tensor) -> torch.Tensor:
        return out.masked_fill(~packed_mask.unsqueeze(-1), 0.0)

    return restore


def _unpack(order: torch.Tensor, packed_mask: torch.Tensor) -> Callable:
    def restore(out: torch.Tensor) -> torch.Tensor:
        out = out.masked_fill(~packed_mask.unsqueeze(-1), 0.0)
        return torch.zeros_like(out).scatter(1, order.unsqueeze(-1).expand_as(out), out)

    return restore

