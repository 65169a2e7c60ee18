"""MTLA's hyper-network: the weight with which each latent enters its chunk's merged slot."""

import math
from typing import Optional

import torch
from torch import nn


def sinusoid(index: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal embedding of integer ``index`` (...,) -> (..., dim), float32."""
    freqs = torch.exp(
        torch.arange(0, dim, 2, device=index.device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    angles = index.to(torch.float32).unsqueeze(-1) * freqs
    # Interleave sin/cos as (sin f0, cos f0, sin f1, ...).
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


# How the merge weights start (``mtla_conf: {hypernet_init: ...}``), as the logit every latent
# gets. "random" is PyTorch's default Linear initialisation: logits that vary by about +-1 with
# the chunk index and the content (weights 0.27-0.73), noise on every key and value that also
# keeps the weights chunk-dependent while they learn. Starting every weight alike, whatever the
# chunk and latent ("one": sigmoid(4) = 0.98, each latent enters its slot nearly whole as MLA's
# do; "half": 0.5), learns text about twice as fast (docs/ablations.md: mt1 valid accuracy
# 0.987 / 0.989 at 8 epochs vs 0.934).
INITS = {"one": 4.0, "half": 0.0, "random": None}
DEFAULT_INIT = "one"


class ChunkMergeHyperNetwork(nn.Module):
    """w_t = sigmoid(<W_c e(j), W_p c_t>) for latent c_t in chunk j = t // down_rate.

    ``e(j)`` is the sinusoidal embedding of the chunk index, so the weight depends on both
    the token's content and which chunk (temporal slot) it is merged into. The merged slot
    of chunk j after its i-th token is sum_{t <= i in chunk j} w_t c_t: a weighted cumulative
    sum, identical whether computed all at once (training) or token by token (decoding).
    """

    def __init__(self, latent_dim: int, rank_ratio: int = 4, init: Optional[str] = None):
        super().__init__()
        if latent_dim % 2 != 0:
            raise ValueError(f"kv_lora_rank must be even for MTLA's chunk embedding, got {latent_dim}")
        if rank_ratio < 1 or latent_dim % rank_ratio != 0:
            raise ValueError(
                f"hypernet_rank_ratio ({rank_ratio}) must be >= 1 and divide kv_lora_rank ({latent_dim})"
            )
        init = DEFAULT_INIT if init is None else init
        if init not in INITS:
            raise ValueError(f"hypernet_init must be one of {', '.join(INITS)}, got {init!r}")
        self.latent_dim = latent_dim
        self.chunk_proj = nn.Linear(latent_dim, latent_dim // rank_ratio)
        self.latent_proj = nn.Linear(latent_dim, latent_dim // rank_ratio)
        if init != "random":
            # Constant weights at the start: zero matrices, and biases whose product is the
            # logit (the same for every latent and chunk). Both matrices still get gradients.
            nn.init.zeros_(self.chunk_proj.weight)
            nn.init.zeros_(self.latent_proj.weight)
            rank = latent_dim // rank_ratio
            nn.init.constant_(self.chunk_proj.bias, INITS[init] / rank)
            nn.init.constant_(self.latent_proj.bias, 1.0)

    def forward(self, latent: torch.Tensor, chunk_index: torch.Tensor, table: Optional[torch.Tensor] = None):
        """latent (..., d_c), chunk_index (...) integer -> weights (..., 1), latent's dtype.

        ``table``: the chunk embeddings W_c e(j) + b of chunks j < len (absorbed.py prepares it
        for inference), looked up instead of computed.
        """
        if table is None:
            chunk = self.chunk_proj(sinusoid(chunk_index, self.latent_dim).to(latent.dtype))
        else:
            chunk = table[chunk_index]
        return torch.sigmoid((chunk * self.latent_proj(latent)).sum(-1, keepdim=True))
