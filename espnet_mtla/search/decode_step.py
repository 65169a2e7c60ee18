"""The decoder's step inside a search: eager, or replayed from CUDA graphs.

A search step asks the decoder for the log-probabilities of every hypothesis' next token and
then keeps the surviving hypotheses' cache rows (the beam reorder). ``DecodeStep`` does both
eagerly. ``GraphedDecodeStep`` records the decoder's whole step (every layer, the final norm,
the output layer, the log-softmax) in a CUDA graph and replays it: one launch per step
instead of 20-50 small kernels per layer issued from Python, which is what bounds a GPU
decode step at beam-search batch sizes (docs/benchmarks.md).

A replay re-runs the recorded kernels on the recorded addresses and shapes and no Python, so:
- rows: the caches keep ``row_bucket(R)`` rows for R hypotheses (at most 25% more); padding
  rows repeat row 0 and their outputs are dropped;
- cache length: every cache view spans ``view_slots`` slots, a multiple of ``SLOT_BUCKET``
  (readers mask slots past each row's length), so one graph serves many steps;
- addresses: a beam reorder copies into the cache's spare buffer and swaps the two, so a
  graph is kept per (rows, view slots, buffer addresses), i.e. two per shape;
- inputs and outputs are static tensors per row bucket: token ids and lengths are copied in
  before a replay, log-probabilities and the new lengths are copied out by the graph itself;
- what the step does in Python (a cache's ``max_length``) the runner does after a replay;
  what it would build lazily (absorbed weights, MTLA's chunk table) is built before capture
  (``prepare_decode``).
Capture runs one eager warm-up step first (library handles, Triton compilation) and then puts
back the only cache contents a step changes: the slot it writes in each row. Where capture
fails (an operation that synchronises, for example), the step logs one notice and runs
eagerly from then on. On a CPU the same fixed-shape step runs eagerly (tests use it: it must
give exactly what ``DecodeStep`` gives; they also emulate capture through ``_capture_stream``
and ``_capture``).
"""

import contextlib
import logging
from typing import Dict, Optional, Tuple

import torch

from espnet_mtla.attention.backends import notice_once

log = logging.getLogger(__name__)

SLOT_BUCKET = 64  # cache views grow by this many slots: one graph (pair) per 64 slots


def row_bucket(rows: int) -> int:
    """Rows a replayed step computes for ``rows`` hypotheses: at most 25% more (1-8 exact)."""
    if rows <= 8:
        return rows
    step = 1 << (rows.bit_length() - 3)  # rows in [2^k, 2^(k+1)): multiples of 2^(k-2)
    return -(-rows // step) * step


class DecodeStep:
    """A decoder's search step, eager: ``step(caches, tokens)`` and ``step.reorder(caches, rows)``.

    ``decoder`` has ``run_tokens(caches, ys (R, 1)) -> logits (R, 1, V)``; replayed, also
    ``cached_attention()`` (the attention module of each cache layer) and ``output_projection``
    (the linear layer that gives the logits): both stacks (decoder-only, encoder-decoder) have them.
    """

    def __init__(self, decoder):
        self.decoder = decoder

    def __call__(self, caches, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (R, 1), the newest token of each hypothesis -> next-token log-probs (R, V),
        float32 whatever the model's dtype (as fairseq: the search state is float32)."""
        return self.decoder.run_tokens(caches, tokens)[:, -1].float().log_softmax(dim=-1)

    def reorder(self, caches, rows: torch.Tensor) -> None:
        """Keep cache rows ``rows`` (R',): the surviving hypotheses' parents."""
        caches.reorder(rows)


class _Bucket:
    """Static inputs and outputs of the steps replayed for one row bucket."""

    def __init__(self, rows: int, vocab: int, like: torch.Tensor):
        device = like.device
        self.tokens = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self.logp = torch.empty(rows, vocab, dtype=torch.float32, device=device)
        self.new_lengths = torch.zeros(rows, dtype=torch.long, device=device)


class GraphedDecodeStep(DecodeStep):
    """``DecodeStep`` replayed from CUDA graphs (see the module docstring).

    ``capture``: record graphs (default: when the decoder's weights are on a GPU); False runs
    the same fixed-shape step eagerly. ``max_graphs``: graphs kept (least recently used go).
    One object per search: graphs hold the addresses of that search's caches and weights.
    """

    def __init__(self, decoder, capture: Optional[bool] = None, max_graphs: int = 32):
        super().__init__(decoder)
        weight = decoder.output_projection.weight
        self.capture = weight.is_cuda if capture is None else capture
        self.vocab = weight.shape[0]
        self.max_graphs = max_graphs
        self.buckets: Dict[int, _Bucket] = {}
        self.graphs: Dict[Tuple, "torch.cuda.CUDAGraph"] = {}
        self.stream = self.pool = None
        self.warmed = set()  # (rows, view slots) shapes run once eagerly before their first capture
        self.captures = 0  # graphs recorded (for benchmarks and tests)

    # -- rows ------------------------------------------------------------------------------
    def reorder(self, caches, rows: torch.Tensor) -> None:
        caches.shared_spares = False  # a spare per buffer: two addresses per buffer, two graphs per shape
        padding = row_bucket(rows.shape[0]) - rows.shape[0]
        caches.reorder(torch.cat([rows, rows[:1].expand(padding)]) if padding else rows)

    @torch.no_grad()
    def __call__(self, caches, tokens: torch.Tensor) -> torch.Tensor:
        """As ``DecodeStep``'s; the log-probs are a view of a static buffer, valid until the next call."""
        rows = tokens.shape[0]
        bucket_rows = row_bucket(rows)
        if caches.batch_size != bucket_rows:  # a search's first step: caches hold one row per hypothesis
            self.reorder(caches, torch.arange(rows, device=tokens.device))
        bucket = self.buckets.get(bucket_rows)
        if bucket is None:
            self._drop_larger(bucket_rows)
            bucket = self.buckets[bucket_rows] = _Bucket(bucket_rows, self.vocab, self.decoder.output_projection.weight)
        first = caches.layers[0]
        view_slots = min(first.capacity_slots, -(-first.num_slots(first.max_length + 1) // SLOT_BUCKET) * SLOT_BUCKET)
        bucket.tokens[:rows].copy_(tokens)
        bucket.lengths.copy_(first.lengths)
        if self.capture:
            self._replay(caches, bucket, view_slots)
        else:
            self._step(caches, bucket, view_slots)
        for cache in caches.layers:  # what the step did in Python
            cache.lengths = bucket.new_lengths.clone()
            cache.view_slots = None
        return bucket.logp[:rows]

    def _drop_larger(self, rows: int) -> None:
        """Free the buckets (and their graphs) of more rows: hypotheses only fall in number
        after a search's first step, and the static log-probs of 1000s of rows weigh 100s of MB."""
        for larger in [r for r in self.buckets if r > rows]:
            del self.buckets[larger]
        for key in [k for k in self.graphs if k[0] > rows]:
            del self.graphs[key]

    # -- the fixed-shape step ----------------------------------------------------------------
    def _step(self, caches, bucket: _Bucket, view_slots: int) -> None:
        """The decoder's step on ``bucket``'s tensors; all caches read ``bucket.lengths``."""
        for cache in caches.layers:
            cache.lengths, cache.view_slots = bucket.lengths, view_slots
        logits = self.decoder.run_tokens(caches, bucket.tokens)[:, -1]
        bucket.logp.copy_(logits.float().log_softmax(dim=-1))
        bucket.new_lengths.copy_(caches.layers[0].lengths)

    # -- CUDA graphs -----------------------------------------------------------------------
    def _replay(self, caches, bucket: _Bucket, view_slots: int) -> None:
        key = (bucket.tokens.shape[0], view_slots,
               tuple(buf.data_ptr() for cache in caches.layers for buf in cache.buffers.values()))
        graph = self.graphs.pop(key, None)
        if graph is None:
            try:
                graph = self._record(caches, bucket, view_slots)
            except RuntimeError as err:
                notice_once(f"CUDA graphs: capturing the decode step failed ({str(err).splitlines()[0]}); "
                            "decoding eagerly")
                self.capture = False
                self._step(caches, bucket, view_slots)
                return
            if len(self.graphs) >= self.max_graphs:
                self.graphs.pop(next(iter(self.graphs)))
        self.graphs[key] = graph  # most recently used last
        graph.replay()
        for cache in caches.layers:  # the step's Python side, which a replay does not run
            cache.max_length += 1

    def _record(self, caches, bucket: _Bucket, view_slots: int) -> "torch.cuda.CUDAGraph":
        """Capture the step for these shapes and addresses (after one warm-up step per shape);
        the caches end as they began."""
        for attn, cache in zip(self.decoder.cached_attention(), caches.layers):
            attn.prepare_decode(cache.capacity_slots * cache.tokens_per_slot)
        python_state = [(cache.lengths, cache.max_length, dict(cache.buffers)) for cache in caches.layers]
        written = [self._written_slots(cache, bucket.lengths) for cache in caches.layers]

        def restore():
            for cache, (lengths, max_length, buffers), slots in zip(caches.layers, python_state, written):
                cache.lengths, cache.max_length, cache.buffers = lengths, max_length, buffers
                for name, (index, saved) in slots.items():
                    cache.buffers[name].scatter_(-2, index, saved)

        shape = (bucket.tokens.shape[0], view_slots)
        with self._capture_stream():
            if shape not in self.warmed:  # library handles, Triton compilation: once per shape
                self._step(caches, bucket, view_slots)  # it writes one slot per row, put back by restore()
                restore()
                self.warmed.add(shape)
            try:
                graph = self._capture(lambda: self._step(caches, bucket, view_slots))
            finally:
                restore()  # capture runs no kernel: only the Python state moved
        self.captures += 1
        log.debug("captured the decode step: %d rows, %d slots", *shape)
        return graph

    @contextlib.contextmanager
    def _capture_stream(self):
        """Warm-up and capture run on a stream of our own (capture needs a non-default stream)."""
        if self.stream is None:
            self.stream, self.pool = torch.cuda.Stream(), torch.cuda.graph_pool_handle()
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            yield
        torch.cuda.current_stream().wait_stream(self.stream)

    def _capture(self, step) -> "torch.cuda.CUDAGraph":
        """``step()`` recorded in a CUDA graph. torch.cuda.graph() would also empty the
        allocator's cache at every capture (tens per search): capture_begin/end do without."""
        graph = torch.cuda.CUDAGraph()
        graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
        try:
            step()
        finally:
            graph.capture_end()
        return graph

    @staticmethod
    def _written_slots(cache, lengths: torch.Tensor) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        """name -> (index, copy) of the slot a step writes in each row: the one holding token lengths[b]."""
        slot = torch.div(lengths, cache.tokens_per_slot, rounding_mode="floor")
        saved = {}
        for name, buf in cache.buffers.items():
            index = slot.view(-1, *([1] * (buf.dim() - 1))).expand(*buf.shape[:-2], 1, buf.shape[-1])
            saved[name] = (index, buf.gather(-2, index))
        return saved
