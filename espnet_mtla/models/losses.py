"""Label-smoothed cross entropy with per-token weights (SLU's intent-token weight)."""

import math

import torch


def weighted_label_smoothing_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    smoothing: float,
    ignore_id: int,
    normalize_length: bool = False,
) -> torch.Tensor:
    """sum_t weight_t * KL(q_t || p_t) / (batch or number of tokens), like ESPnet's LabelSmoothingLoss.

    logits: (B, L, V); target: (B, L) with ``ignore_id`` at padding; weight: (B, L).
    q_t puts 1 - smoothing on the target and smoothing / (V - 1) on every other token, so
    with all weights 1 this equals ESPnet's ``LabelSmoothingLoss`` exactly.
    """
    vocab = logits.shape[-1]
    valid = target != ignore_id
    logp = torch.log_softmax(logits.float(), dim=-1)
    target_logp = logp.gather(-1, target.masked_fill(~valid, 0).unsqueeze(-1)).squeeze(-1)
    confidence, other = 1.0 - smoothing, smoothing / (vocab - 1)
    # KL = sum_v q_v log q_v - sum_v q_v log p_v; the first term is a constant.
    entropy_term = (confidence * math.log(confidence) if confidence > 0 else 0.0) + (
        smoothing * math.log(other) if smoothing > 0 else 0.0
    )
    cross_entropy = -(confidence - other) * target_logp - other * logp.sum(-1)
    per_token = (entropy_term + cross_entropy) * weight * valid
    denominator = valid.sum() if normalize_length else target.shape[0]
    return per_token.sum() / denominator
