"""The two normalisations the library builds: LayerNorm (with bias) and RMSNorm.

The paper and the reference MTLA normalise the KV latent (and the q_lora latent) with
``nn.LayerNorm`` (eps 1e-5, with bias); DeepSeek's MLA uses RMSNorm (eps 1e-6). The decoder's
layer norms use the same two choices.
"""

from typing import Optional

from torch import nn

NORM_TYPES = ("layer_norm", "rms_norm")


def build_norm(norm_type: str, dim: int, option: str = "norm_type", eps: Optional[float] = None) -> nn.Module:
    """``layer_norm``: nn.LayerNorm(dim) (eps 1e-5); ``rms_norm``: nn.RMSNorm(dim, eps=1e-6); ``eps`` overrides."""
    if norm_type == "layer_norm":
        return nn.LayerNorm(dim, eps=1e-5 if eps is None else eps)
    if norm_type == "rms_norm":
        return nn.RMSNorm(dim, eps=1e-6 if eps is None else eps)
    raise ValueError(f"unknown {option} {norm_type!r}; choose one of {', '.join(NORM_TYPES)}")
