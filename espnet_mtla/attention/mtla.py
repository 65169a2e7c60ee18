"""Multi-head temporal latent attention (MTLA, Deng & Woodland, NeurIPS 2025).

MLA plus temporal compression: every ``down_rate`` (s) consecutive latents are merged into
one cache slot, each weighted by a hyper-network (``ChunkMergeHyperNetwork``). The cache
holds ceil(T/s) slots of (kv_lora_rank + qk_rope_head_dim) numbers; the last slot is the
partial merge of the current chunk. A query sees the completed slots before its chunk and
its own partial state (the stride-aware causal pattern), so parallel training computes
exactly what step-by-step decoding computes. The layer and the merge into slots are
``MultiHeadLatentAttention``'s (mla.py), the attention paths mla_paths.py's; this class only
adds the merge weights.
"""

from typing import Optional

import torch

from espnet_mtla.attention.absorbed import absorbed_weights
from espnet_mtla.attention.base import check_positive
from espnet_mtla.attention.hypernet import ChunkMergeHyperNetwork
from espnet_mtla.attention.mla import MultiHeadLatentAttention


class MultiHeadTemporalLatentAttention(MultiHeadLatentAttention):
    """MTLA. ``down_rate`` >= 1 tokens per cache slot; ``hypernet_init``: how the merge weights
    start (hypernet.INITS; None: hypernet.DEFAULT_INIT); other arguments as for MLA."""

    def __init__(self, embed_dim: int, num_heads: int, down_rate: int = 2, hypernet_rank_ratio: int = 4,
                 hypernet_init: Optional[str] = None, **mla_conf):
        check_positive(down_rate, "down_rate")
        super().__init__(embed_dim, num_heads, **mla_conf)
        self.down_rate = down_rate
        self.hypernet = ChunkMergeHyperNetwork(self.kv_lora_rank, hypernet_rank_ratio, hypernet_init)

    def merge_weights(self, latent, chunk_index, absorbed=None, num_chunks: int = 0) -> torch.Tensor:
        table = None if absorbed is None else absorbed.chunk_embeddings(self.hypernet, num_chunks, latent.dtype)
        return self.hypernet(latent, chunk_index, table)

    def prepare_decode(self, num_tokens: int) -> None:
        super().prepare_decode(num_tokens)
        if self.absorbed_decode:
            absorbed_weights(self).chunk_embeddings(self.hypernet, num_tokens // self.down_rate + 1,
                                                    self.kv_down.weight.dtype)
