"""Slow reference scorer for tests: re-runs the whole decoder over [prefix ; ys] every step."""

import torch
from espnet.nets.scorer_interface import BatchScorerInterface


class RecomputingScorer(BatchScorerInterface):
    """Same scores as DecoderOnlyDecoder's cached search, without any cache."""

    def __init__(self, decoder):
        self.decoder = decoder

    def init_state(self, x):
        return None

    def batch_init_state(self, x):
        return None

    @torch.no_grad()
    def batch_score(self, ys, states, xs):
        batch, length = ys.shape
        hlens = torch.full((batch,), xs.shape[1], dtype=torch.long)
        ylens = torch.full((batch,), length, dtype=torch.long)
        logits, _ = self.decoder(xs, hlens, ys, ylens)
        return logits[:, -1].log_softmax(-1), [None] * batch
