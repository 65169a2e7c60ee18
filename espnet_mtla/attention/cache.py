"""Per-layer KV caches with pre-allocated growth, per-row lengths and beam reordering.

Every cache stores, for each batch row, the keys/values of the tokens seen so far,
left-aligned: row ``b`` holds ``lengths[b]`` tokens in its first
``ceil(lengths[b] / tokens_per_slot)`` slots. Rows of one batch may hold different numbers
of tokens (padded prompts of different lengths); new tokens are written at each row's own
offset, so a row's cache never contains padding.

Buffers have the time (slot) axis at dim -2: ``(B, *lead, capacity, dim)``.
- MHA/MQA/GQA: ``k`` (B, H_kv, cap, d_k) and ``v`` (B, H_kv, cap, d_v), one slot per token.
- MLA: ``kv`` (B, cap, kv_lora_rank + qk_rope_head_dim): latent and rotated rope key.
- MTLA: the same, but one slot per ``down_rate`` tokens; the last slot of a row holds the
  partial merge of its current chunk.
"""

import copy
import math
from typing import Dict, List, Optional, Tuple

import torch

GROWTH_SLOTS = 16  # the least a full cache grows by: a reallocation every few tokens at most
SparePool = Dict[Tuple, torch.Tensor]  # (shape, dtype, device) -> a buffer no cache is using


class AttentionCache:
    """Growable slot buffers shared by all attention types.

    Args:
        batch_size: rows (utterances x beams).
        shapes: buffer name -> (lead dims..., feature dim), e.g. ``{"k": (4, 64)}``.
        tokens_per_slot: 1, or MTLA's ``down_rate``.
        capacity: initial capacity in tokens; grown by a quarter (at least ``GROWTH_SLOTS``
            slots) when exceeded, so that a cache holds little more than its tokens.
    """

    def __init__(
        self,
        batch_size: int,
        shapes: Dict[str, Tuple[int, ...]],
        tokens_per_slot: int = 1,
        capacity: int = 256,
        dtype: torch.dtype = torch.float32,
        device=None,
    ):
        self.tokens_per_slot = tokens_per_slot
        self.shapes = dict(shapes)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        # Upper bound on max(lengths), tracked in Python so that slicing needs no device sync.
        self.max_length = 0
        slots = self.num_slots(max(capacity, 1))
        self.buffers = {
            name: torch.zeros(batch_size, *shape[:-1], slots, shape[-1], dtype=dtype, device=device)
            for name, shape in self.shapes.items()
        }
        # Reordering copies into these (allocated once): fresh pages for every beam step
        # cost more than the copy itself.
        self._spare: Dict[str, torch.Tensor] = {}
        # Set by a replayed decode step (search/decode_step.py): views span this many slots
        # whatever the lengths, so that one captured graph serves many steps (every reader
        # masks slots past each row's length).
        self.view_slots: Optional[int] = None
        # Whether every row holds exactly max_length tokens, known without a device sync (then
        # a new token's attention over the view needs no mask). ``advance`` keeps it only when
        # the caller vouches that all rows got the same tokens (``equal_rows_step``, set by the
        # attention layers from their input mask): a direct ``advance`` clears it.
        self.equal_rows = True
        self.equal_rows_step = False

    # -- sizes ---------------------------------------------------------------------------
    def num_slots(self, num_tokens):
        """Slots that ``num_tokens`` tokens occupy (int or LongTensor)."""
        if isinstance(num_tokens, torch.Tensor):
            return torch.div(num_tokens + self.tokens_per_slot - 1, self.tokens_per_slot, rounding_mode="floor")
        return math.ceil(num_tokens / self.tokens_per_slot)

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @property
    def capacity_slots(self) -> int:
        return next(iter(self.buffers.values())).shape[-2]

    def bytes_per_slot(self) -> int:
        """Bytes of one slot of one row, over all buffers."""
        return sum(
            math.prod(buf.shape[1:-2]) * buf.shape[-1] * buf.element_size() for buf in self.buffers.values()
        )

    def nbytes(self) -> int:
        """Bytes the cached tokens occupy: sum over rows of slots(length) x bytes per slot."""
        return int(self.num_slots(self.lengths).sum().item()) * self.bytes_per_slot()

    def allocated_nbytes(self) -> int:
        """Bytes held by the buffers (>= nbytes()) and this cache's own reorder spares."""
        return sum(buf.numel() * buf.element_size() for buf in [*self.buffers.values(), *self._spare.values()])

    # -- writing -------------------------------------------------------------------------
    def reserve(self, extra_slots: int) -> None:
        """Make room for ``extra_slots`` slots past the current maximum length."""
        needed = self.num_slots(self.max_length) + extra_slots
        if needed <= self.capacity_slots:
            return
        new_cap = max(needed, self.capacity_slots + max(self.capacity_slots // 4, GROWTH_SLOTS))
        for name, buf in self.buffers.items():
            grown = buf.new_zeros(*buf.shape[:-2], new_cap, buf.shape[-1])
            grown[..., : buf.shape[-2], :] = buf
            self.buffers[name] = grown
        self._spare = {}

    def write(self, name: str, slot_index: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` (B, *lead, N, d) at per-row slots ``slot_index`` (B, N).

        Out of place when autograd needs it (training through a prefix), in place otherwise.
        """
        buf = self.buffers[name]
        index = slot_index.view(slot_index.shape[0], *([1] * (buf.dim() - 3)), slot_index.shape[1], 1)
        index = index.expand(*values.shape)
        values = values.to(buf.dtype)
        if torch.is_grad_enabled() and (values.requires_grad or buf.requires_grad):
            self.buffers[name] = buf.scatter(-2, index, values)
        else:
            buf.scatter_(-2, index, values)

    def advance(self, new_tokens: torch.Tensor, max_new: int) -> None:
        """Count ``new_tokens`` (B,) more tokens per row; ``max_new`` bounds them (no sync)."""
        self.lengths = self.lengths + new_tokens
        self.max_length += max_new
        self.equal_rows = self.equal_rows and self.equal_rows_step
        self.equal_rows_step = False

    def view_is_visible(self) -> bool:
        """Whether the newest token of every row sees the whole ``view``: rows are equally long
        and the view ends at them (no ``view_slots`` past the lengths)."""
        return self.equal_rows and self.view_slots is None

    def view(self, name: str) -> torch.Tensor:
        """The buffer up to the longest row (or ``view_slots`` when set): (B, *lead, S, d)."""
        slots = self.num_slots(self.max_length) if self.view_slots is None else self.view_slots
        return self.buffers[name][..., :slots, :]

    # -- beam search ---------------------------------------------------------------------
    def reorder(self, index: torch.Tensor, pool: Optional[SparePool] = None) -> None:
        """Keep rows ``index`` (B',), e.g. the surviving beams; B' may differ from B.

        The rows are copied into a spare buffer, which then takes the old one's place: this
        cache's own spare (fixed addresses, which CUDA graphs need), or one from ``pool``,
        shared by the caches of all layers, into which the old buffer goes back (one spare for
        the model instead of one per layer and buffer).
        """
        index = index.to(self.lengths.device)
        self.lengths = self.lengths.index_select(0, index)
        used = self.num_slots(self.max_length)  # slots past every row's length are not copied
        spares = self._spare if pool is None else pool
        for name, buf in self.buffers.items():
            if buf.requires_grad:
                self.buffers[name] = buf.index_select(0, index)
                continue
            shape = (index.shape[0], *buf.shape[1:])
            key = name if pool is None else (shape, buf.dtype, buf.device)
            spare = spares.pop(key, None)
            if spare is None or spare.shape != shape:
                # zeros: the slots past ``used`` are never copied, and masked readers must not
                # meet NaN there (0 x NaN in a weighted sum is NaN)
                spare = buf.new_zeros(shape)
            torch.index_select(buf[..., :used, :], 0, index, out=spare[..., :used, :])
            self.buffers[name] = spare
            spares[name if pool is None else (tuple(buf.shape), buf.dtype, buf.device)] = buf

    def select(self, index: torch.Tensor) -> "AttentionCache":
        """A new cache holding copies of rows ``index``; this one is left unchanged."""
        index = index.to(self.lengths.device)
        selected = copy.copy(self)
        selected.shapes = dict(self.shapes)
        selected.lengths = self.lengths.index_select(0, index)
        selected.buffers = {name: buf.index_select(0, index) for name, buf in self.buffers.items()}
        selected._spare = {}
        return selected

    def __repr__(self) -> str:
        dims = ", ".join(f"{n}={tuple(b.shape)}" for n, b in self.buffers.items())
        return f"{type(self).__name__}({dims}, tokens_per_slot={self.tokens_per_slot}, max_length={self.max_length})"


class LayerCaches:
    """The caches of a whole model: one ``AttentionCache`` per layer, one row per sequence.

    Shared by the ESPnet decoder and its searches (``DecoderCaches``) and HF ``generate()``
    (``CompressedKVCache``). ``version`` counts the decoding steps written (a beam-search
    state from an older step no longer points at valid rows); ``peak_nbytes`` is the largest
    size ``note_peak`` saw.
    """

    def __init__(self, layers: List[AttentionCache]):
        self.layers = layers
        self.version = 0
        self.peak_nbytes = 0
        self.peak_allocated_nbytes = 0
        # One reorder spare per buffer shape for all layers (False: one per buffer, at fixed
        # addresses, for CUDA graphs: decode_step.GraphedDecodeStep sets it).
        self.shared_spares = True
        self._pool: SparePool = {}

    @property
    def batch_size(self) -> int:
        return self.layers[0].batch_size

    def nbytes(self) -> int:
        """Bytes the cached tokens occupy, summed over layers and rows."""
        return sum(cache.nbytes() for cache in self.layers)

    def allocated_nbytes(self) -> int:
        """Bytes the caches hold: buffers and reorder spares, of every layer."""
        return sum(cache.allocated_nbytes() for cache in self.layers) + sum(
            buf.numel() * buf.element_size() for buf in self._pool.values())

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` (B',) of every layer, e.g. the surviving beams."""
        pool = self._pool if self.shared_spares else None
        for cache in self.layers:
            cache.reorder(rows, pool)
        if pool:  # spares of shapes no buffer has any more (fewer rows, grown caches) go
            shapes = {(tuple(buf.shape), buf.dtype, buf.device) for cache in self.layers for buf in cache.buffers.values()}
            for key in [k for k in pool if k not in shapes]:
                del pool[key]

    def keep_utterances(self, utterances: torch.Tensor) -> None:
        """A search dropped the utterances not in ``utterances`` (N',); their rows are reordered
        away separately. Per-utterance state (none here; an encoder-decoder's source memory)
        keeps these."""

    def select(self, rows: torch.Tensor) -> "LayerCaches":
        """A new, independent object of the same class holding copies of ``rows``."""
        selected = copy.copy(self)
        selected.layers = [cache.select(rows) for cache in self.layers]
        selected.peak_nbytes = selected.peak_allocated_nbytes = 0
        selected._pool = {}
        return selected

    def note_peak(self) -> None:
        """Update ``peak_nbytes``, assuming rows hold equally many tokens (true within one beam
        search), so that no device sync is needed."""
        nbytes = sum(
            cache.batch_size * cache.num_slots(cache.max_length) * cache.bytes_per_slot() for cache in self.layers
        )
        self.peak_nbytes = max(self.peak_nbytes, nbytes)
        self.peak_allocated_nbytes = max(self.peak_allocated_nbytes, self.allocated_nbytes())
