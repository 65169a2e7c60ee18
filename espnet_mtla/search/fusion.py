"""Shallow fusion inside the multi-utterance search: a language model's next-token log-probs
for every running hypothesis of every utterance, one LM call per step, and its state kept in
step with the beam.

    lm = fused_language_model(lm_module, num_utts, capacity, like, cuda_graphs)
    logp = lm(tokens, step)  # (R, V) for the token buffer (R, L) at ``step``
    lm.reorder(rows)         # the surviving hypotheses' parents, as the decoder's caches

Two kinds of LM:
- ``CachedLanguageModel``: a cached stack (``run_tokens`` + ``new_caches``: ``lm: decoder_only``,
  any attention type). Its own KV caches, one row per hypothesis, fed only the newest token;
  the same step object as the decoder's (``decode_step``), so CUDA graphs serve it too.
- ``ScorerLanguageModel``: any other ESPnet ``BatchScorerInterface`` LM (ESPnet's
  ``TransformerLM``, ``SequentialRNNLM``): ``batch_score`` over all rows with the whole token
  prefix and its per-hypothesis states, reordered on the host (one read of ``rows`` per step).
  What it holds in place of a cache (``TransformerLM``: every layer's outputs for every earlier
  token, from which it re-projects keys and values at each step) is counted as its cache bytes.
"""

from typing import List

import torch

from espnet_mtla.search.decode_step import DecodeStep, GraphedDecodeStep


class CachedLanguageModel:
    def __init__(self, lm, num_utts: int, capacity: int, like: torch.Tensor, cuda_graphs: bool = False):
        self.caches = lm.new_caches(num_utts, lm.cache_capacity(0, capacity), like)
        self.step = GraphedDecodeStep(lm) if cuda_graphs else DecodeStep(lm)

    def __call__(self, tokens: torch.Tensor, step: int) -> torch.Tensor:
        """tokens: (R, L) the hypotheses' token buffer -> (R, V) log-probs of token ``step + 1``."""
        logp = self.step(self.caches, tokens[:, step: step + 1])
        self.caches.note_peak()
        return logp

    def reorder(self, rows: torch.Tensor) -> None:
        self.step.reorder(self.caches, rows)

    @property
    def cache_bytes_peak(self) -> int:
        return self.caches.peak_nbytes


class ScorerLanguageModel:
    def __init__(self, lm, num_utts: int):
        self.lm = lm
        self.states: List = [lm.init_state(None) for _ in range(num_utts)]
        self.peak_nbytes = 0

    def __call__(self, tokens: torch.Tensor, step: int) -> torch.Tensor:
        logp, self.states = self.lm.batch_score(tokens[:, : step + 1], self.states, None)
        # read now: the states only grow with the prefix, until finished utterances' rows go
        self.peak_nbytes = max(self.peak_nbytes, storage_bytes(self.states))
        return logp.float()

    def reorder(self, rows: torch.Tensor) -> None:
        self.states = [self.states[r] for r in rows.tolist()]

    @property
    def cache_bytes_peak(self) -> int:
        """The most bytes the states held after a step."""
        return self.peak_nbytes


def storage_bytes(tree) -> int:
    """Bytes of the distinct storages of the tensors in ``tree`` (lists, tuples, dicts): the
    per-hypothesis states are rows of a few batched tensors, each counted once."""
    seen, total, stack = set(), 0, [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def fused_language_model(lm, num_utts: int, capacity: int, like: torch.Tensor, cuda_graphs: bool = False):
    """The search-side object of ``lm`` for ``num_utts`` utterances and ``capacity`` tokens."""
    if hasattr(lm, "run_tokens") and hasattr(lm, "new_caches"):
        return CachedLanguageModel(lm, num_utts, capacity, like, cuda_graphs)
    return ScorerLanguageModel(lm, num_utts)
