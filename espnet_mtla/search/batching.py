"""Token budgets for decoding (fairseq's ``--max-tokens``): group utterances by padded size.

A batch costs what its padded input costs: ``count x longest``. ``budget_batches`` sorts the
utterances longest first (ties in input order) and closes a batch when one more utterance would
take it over the budget, so batches hold utterances of similar lengths and short utterances
share a batch in large numbers. An utterance longer than the whole budget is decoded alone.

    batches, alone = budget_batches([310, 120, 95, 400], budget=500)   # [[3], [0], [1, 2]], [3]
"""

from typing import List, Optional, Sequence, Tuple


def budget_batches(lengths: Sequence[int], budget: int, max_count: Optional[int] = None
                   ) -> Tuple[List[List[int]], List[int]]:
    """Indices of ``lengths`` in batches of padded size <= ``budget`` (and <= ``max_count``
    utterances); also the indices of utterances over the budget on their own."""
    if budget < 1:
        raise ValueError(f"the budget must be >= 1, got {budget}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # sorted() is stable
    batches: List[List[int]] = []
    alone = [i for i in order if lengths[i] > budget]
    for i in order:
        batch = batches[-1] if batches else None
        if batch and (len(batch) + 1) * lengths[batch[0]] <= budget and (max_count is None or len(batch) < max_count):
            batch.append(i)
        else:
            batches.append([i])
    return batches, alone


def speech_frames(num_samples: int, sampling_rate: int) -> int:
    """10 ms frames of ``num_samples`` samples (the unit of fairseq's speech --max-tokens)."""
    hop = sampling_rate // 100
    return -(-num_samples // hop)
