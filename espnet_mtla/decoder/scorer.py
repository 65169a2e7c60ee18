"""Our cached decoders as scorers of ESPnet's beam searches (``BatchScorerInterface``).

All hypotheses of an utterance share one caches object (one cache per layer, one row per
hypothesis); a hypothesis' state is only a handle (caches, row). ``batch_init_state`` fills the
caches with what precedes the tokens once (the speech prefix, or the source memory);
``batch_score`` reorders the cache rows to the surviving hypotheses (one gather per layer),
then feeds only the newest token of each. The decoder provides ``new_caches``,
``cache_capacity``, ``fill_prefix`` and ``run_tokens`` (the protocol of espnet_mtla.search).
"""

from typing import Any, List, NamedTuple, Tuple

import torch

from espnet.nets.scorer_interface import BatchScorerInterface

from espnet_mtla.attention.cache import LayerCaches

SPARE_TOKENS = 64  # cache slots for tokens at the start; caches grow as a search needs


class HypothesisState(NamedTuple):
    """A hypothesis' decoder state: row ``row`` of ``caches`` as of step ``version``."""

    caches: LayerCaches
    row: int
    version: int


class CachedScorer(BatchScorerInterface):
    """The scorer side of a cached decoder (mixed into its ESPnet adapter)."""

    @torch.no_grad()
    def batch_init_state(self, x: torch.Tensor) -> HypothesisState:
        """x: (T, D_enc) encoder output of one utterance -> the state of the initial hypothesis."""
        caches = self.new_caches(1, self.cache_capacity(x.shape[0], SPARE_TOKENS), x)
        self.fill_prefix(caches, x.unsqueeze(0), torch.tensor([x.shape[0]], device=x.device))
        return HypothesisState(caches, 0, caches.version)

    init_state = batch_init_state

    @torch.no_grad()
    def batch_score(self, ys: torch.Tensor, states: List[HypothesisState], xs: torch.Tensor) -> Tuple[torch.Tensor, List[Any]]:
        """ys: (N, L) hypotheses -> log-probs of their next token (N, V) and N new states.

        ``xs`` is not read: what the tokens attend to besides themselves is in the caches.
        """
        caches = states[0].caches
        for state in states:
            if state.caches is not caches or state.version != caches.version:
                raise RuntimeError(
                    f"{type(self).__name__}.batch_score: a decoding state was extended a second time (or states of "
                    "two searches were mixed). ESPnet's streaming simulation (BatchBeamSearchOnlineSim, "
                    "--streaming true) does this as encoder blocks arrive, which a decoder-only model cannot "
                    "follow: its speech prefix precedes the text; decode whole utterances (BatchBeamSearch)"
                )
        rows = [state.row for state in states]
        if rows != list(range(caches.batch_size)):
            caches.reorder(torch.tensor(rows, device=ys.device))
        logp = self.run_tokens(caches, ys[:, -1:])[:, -1].log_softmax(dim=-1)
        caches.version += 1
        caches.note_peak()
        return logp, [HypothesisState(caches, row, caches.version) for row in range(len(rows))]

    def score(self, ys: torch.Tensor, state: HypothesisState, x: torch.Tensor) -> Tuple[torch.Tensor, HypothesisState]:
        """Non-batch beam search: extends a private copy of the hypothesis' row."""
        caches = state.caches.select(torch.tensor([state.row], device=ys.device))
        caches.version = state.version
        logp, (new_state,) = self.batch_score(ys.unsqueeze(0), [HypothesisState(caches, 0, state.version)], x)
        return logp.squeeze(0), new_state
