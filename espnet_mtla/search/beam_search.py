"""Beam search over many utterances at once (fairseq-style), joint CTC/attention, torch only.

ESPnet's ``BatchBeamSearch`` batches the hypotheses of *one* utterance. This search batches
the hypotheses of *all* utterances of a batch: one prefix fill of the decoder-only stack's KV
caches, then per step one decoder call over every running hypothesis of every utterance, one
batched CTC prefix scoring of their pre-beam candidates (``ctc_prefix``), one candidate
selection on tensors (``candidates.select_candidates``) and one gather per cache layer. The
search state (token buffer, scores, ended hypotheses) lives in device tensors; the host reads
one small vector per step (which utterances are done), never one value per hypothesis, and a
done utterance leaves the batch.

Per utterance it scores exactly what ESPnet's ``BatchBeamSearch`` scores with a decoder, CTC
and a length bonus: ``0 + w_dec * decoder + penalty``, CTC scored only for the
``pre_beam_size`` best tokens of that sum (``pre_beam_score_key: full``) and added with
``w_ctc``, then the running score; so its n-best lists equal ``--batch_size 1``'s (scores within
float rounding). With a language model (``lm``, ``lm_weight``: shallow fusion, ``fusion.py``) it
adds ``w_lm * lm`` after the length bonus, as ESPnet adds its ``lm`` scorer, with the LM's
own caches reordered with the beam.

    search = MultiUtteranceBeamSearch(decoder, sos, eos, beam_size=10, ctc_weight=0.3, pre_beam_size=15)
    result = search(enc, enc_lens, ctc_logp=ctc.log_softmax(enc))
    result.hypotheses        # N lists of EndedHypothesis, best first
    result.cache_bytes_peak  # the KV caches' largest size during the search
    MultiUtteranceBeamSearch(decoder, ..., lm=lm, lm_weight=0.3)   # with an LM fused
"""

import logging
from typing import List, NamedTuple, Optional

import torch

from espnet_mtla.attention.absorbed import weights_fixed
from espnet_mtla.search.candidates import BeamState, initial_state, select_candidates
from espnet_mtla.search.ctc_prefix import BatchedCTCPrefixScorer
from espnet_mtla.search.decode_step import DecodeStep, GraphedDecodeStep
from espnet_mtla.search.fusion import fused_language_model

log = logging.getLogger(__name__)

INITIAL_TOKENS = 32  # output tokens the caches have room for at first; they grow with the output


class EndedHypothesis(NamedTuple):
    """yseq: (L,) <sos> ... <eos>; score: 0-d tensor (as ESPnet's ``Hypothesis``)."""

    yseq: torch.Tensor
    score: torch.Tensor


class SearchResult(NamedTuple):
    """What a search returns: each utterance's best ended hypotheses (best first), and the
    largest size in bytes the decoder's KV caches reached (all layers and rows), and the fused
    language model's (0 without one, or for an LM without a KV cache); and the most bytes the
    decoder's caches held meanwhile (buffers with their room to grow, and reorder spares)."""

    hypotheses: List[List[EndedHypothesis]]
    cache_bytes_peak: int
    lm_cache_bytes_peak: int = 0
    cache_bytes_allocated_peak: int = 0


def length_limits(enc_lens: torch.Tensor, maxlenratio: float, minlenratio: float):
    """ESPnet's (maxlen, minlen), each (N,), for encoder outputs of ``enc_lens`` (N,) frames."""
    if maxlenratio == 0:
        maxlen = enc_lens.clone()
    elif maxlenratio < 0:
        maxlen = torch.full_like(enc_lens, -1 * int(maxlenratio))
    else:
        maxlen = (maxlenratio * enc_lens.double()).long().clamp(min=1)  # float64: Python's int(ratio * T)
    if minlenratio < 0:
        minlen = torch.full_like(enc_lens, -1 * int(minlenratio))
    else:
        minlen = (minlenratio * enc_lens.double()).long()
    return maxlen, minlen


class MultiUtteranceBeamSearch:
    """Beam search of a decoder-only stack over a batch of utterances.

    Args:
        decoder: a cached decoder stack: ``cache_capacity(frames, tokens)``, ``new_caches``,
            ``fill_prefix`` (what precedes the tokens: the decoder-only stack's speech prefix,
            the encoder-decoder stack's source memory) and ``run_tokens``. Rows are
            utterance-major: utterance n's hypotheses are rows n*W .. n*W+W-1.
        sos, eos: token ids. beam_size: hypotheses kept per utterance.
        decoder_weight: ``1 - ctc_weight`` in ESPnet. ctc_weight: weight of the CTC prefix
            score (0: not scored). pre_beam_size: tokens per hypothesis CTC scores (ESPnet's
            ``int(pre_beam_ratio * beam_size)``; None or >= vocabulary: all of them).
        penalty: length bonus per token (ESPnet's ``--penalty``).
        normalize_length: rank ended hypotheses by score / length.
        nbest: ended hypotheses returned per utterance.
        blank: the CTC blank id.
        cuda_graphs: replay the decoder's step from CUDA graphs (``decode_step.GraphedDecodeStep``;
            on a CPU the same fixed-shape step runs eagerly).
        lm: a language model fused with weight ``lm_weight``: ``lm: decoder_only`` (cached) or
            any ESPnet ``BatchScorerInterface`` LM (``fusion.py``); None or weight 0: none.
    """

    def __init__(self, decoder, sos: int, eos: int, beam_size: int, decoder_weight: float = 1.0,
                 ctc_weight: float = 0.0, pre_beam_size: Optional[int] = None, penalty: float = 0.0,
                 normalize_length: bool = False, nbest: Optional[int] = None, blank: int = 0,
                 cuda_graphs: bool = False, lm=None, lm_weight: float = 0.0, ctc_window_margin: int = 0):
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.decoder = decoder
        self.sos, self.eos, self.blank = sos, eos, blank
        self.beam_size = beam_size
        self.decoder_weight, self.ctc_weight = decoder_weight, ctc_weight
        self.pre_beam_size = pre_beam_size
        self.penalty = penalty
        self.normalize_length = normalize_length
        self.nbest = nbest or beam_size
        self.cuda_graphs = cuda_graphs
        self.lm, self.lm_weight = lm, lm_weight
        self.ctc_window_margin = ctc_window_margin

    @torch.no_grad()
    def __call__(self, enc: torch.Tensor, enc_lens: torch.Tensor, maxlenratio: float = 0.0,
                 minlenratio: float = 0.0, ctc_logp: Optional[torch.Tensor] = None,
                 max_length: Optional[torch.Tensor] = None) -> SearchResult:
        """enc: (N, T, D_enc), enc_lens: (N,), ctc_logp: (N, T, V) CTC log-posteriors (needed
        when ``ctc_weight`` > 0) -> for each utterance its best ended hypotheses, best first,
        and the caches' peak size.

        ``max_length`` (N,): each utterance's maximum number of output tokens, instead of
        ``maxlenratio`` (benchmarks that replay a test set's target lengths use it)."""
        if self.ctc_weight > 0 and ctc_logp is None:
            raise ValueError("ctc_weight > 0 needs ctc_logp, the CTC log-posteriors of the encoder output")
        if max_length is not None:
            if max_length.shape != enc_lens.shape or int(max_length.min()) < 1:
                raise ValueError(f"max_length must be ({enc_lens.shape[0]},) integers >= 1, one per utterance")
            maxlenratio = -1.0  # a fixed maximum: no end detection
        with weights_fixed(self.decoder, self.lm):  # checked once, not per step
            nbest, cache_bytes_peak, lm_bytes_peak, allocated_peak = self._search(enc, enc_lens, maxlenratio,
                                                                                  minlenratio, ctc_logp, max_length)
        for n, hyps in enumerate(nbest):
            if not hyps and minlenratio >= 0.1:  # as ESPnet: retry with a smaller minlenratio
                log.warning("utterance %d: no ended hypothesis; decoding again with minlenratio %.1f", n,
                            max(0.0, minlenratio - 0.1))
                length = int(enc_lens[n])
                again = self(enc[n: n + 1, :length], enc_lens[n: n + 1], maxlenratio, max(0.0, minlenratio - 0.1),
                             None if ctc_logp is None else ctc_logp[n: n + 1, :length])
                nbest[n] = again.hypotheses[0]
                cache_bytes_peak = max(cache_bytes_peak, again.cache_bytes_peak)
                lm_bytes_peak = max(lm_bytes_peak, again.lm_cache_bytes_peak)
                allocated_peak = max(allocated_peak, again.cache_bytes_allocated_peak)
        return SearchResult(nbest, cache_bytes_peak, lm_bytes_peak, allocated_peak)

    def _search(self, enc, enc_lens, maxlenratio, minlenratio, ctc_logp, max_length=None) -> SearchResult:
        decoder, device, beam = self.decoder, enc.device, self.beam_size
        num_utts = enc.shape[0]
        enc_lens = enc_lens.to(device)
        maxlen, minlen = length_limits(enc_lens, maxlenratio, minlenratio)
        if max_length is not None:
            maxlen = max_length.to(device=device, dtype=maxlen.dtype)
        state = initial_state(num_utts, self.sos, maxlen, minlen, self.nbest)
        # Caches start with room for a few tokens and grow with the output; a replayed step needs
        # fixed addresses, so CUDA graphs get the whole output's room at once.
        tokens = state.tokens.shape[1] if self.cuda_graphs else min(state.tokens.shape[1], INITIAL_TOKENS)
        caches = decoder.new_caches(num_utts, decoder.cache_capacity(enc.shape[1], tokens), enc)
        decoder.fill_prefix(caches, enc, enc_lens)
        lm = None
        if self.lm is not None and self.lm_weight != 0:
            lm = fused_language_model(self.lm, num_utts, tokens, enc, self.cuda_graphs)
        ctc = ctc_state = None
        utt = torch.arange(num_utts, device=device)  # (R,) the (original) utterance of each row
        if self.ctc_weight > 0:
            ctc = BatchedCTCPrefixScorer(ctc_logp, enc_lens, self.blank, self.eos, self.ctc_window_margin)
            ctc_state = ctc.initial_state(utt)
        decoder_step = GraphedDecodeStep(decoder) if self.cuda_graphs else DecodeStep(decoder)
        active = list(range(num_utts))  # original index of each utterance still searching
        finished_states = []  # (state of utterances that are done, their original indices)
        step = 0
        while True:
            width = state.scores.shape[1]
            logp = decoder_step(caches, state.tokens[:, step: step + 1])  # (R, V)
            caches.note_peak()
            # ESPnet's order of additions: 0 + w_dec * decoder + w_len * 1 (+ w_lm * lm) (+ w_ctc * ctc) + score
            weighted = self.decoder_weight * logp + self.penalty
            if lm is not None:
                weighted = weighted + self.lm_weight * lm(state.tokens, step)
            if ctc is not None:
                ids = self._pre_beam(weighted)
                ctc_delta, candidates = ctc.score(ctc_state, utt, state.tokens[:, step], step, ids)
                weighted = weighted + self.ctc_weight * ctc_delta
            weighted = weighted.view(len(active), width, -1) + state.scores[:, :, None]
            weighted = weighted.masked_fill((state.scores == float("-inf"))[:, :, None], float("-inf"))
            state, rows, labels, done = select_candidates(weighted, state, step, beam, self.eos,
                                                          self.normalize_length, maxlenratio == 0.0)
            if ctc is not None:
                utt = utt[rows]
                ctc_state = ctc.select(candidates, rows, labels, utt)
            finished = done.tolist()  # the one host read of a step
            if any(finished):
                gone = [k for k, f in enumerate(finished) if f]
                finished_states.append((state.select_utterances(torch.tensor(gone, device=device)),
                                        [active[k] for k in gone]))
                kept = [k for k, f in enumerate(finished) if not f]
                if not kept:
                    break
                keep = torch.tensor(kept, device=device)
                caches.keep_utterances(keep)
                kept_rows = state.rows_of(keep)
                state = state.select_utterances(keep)
                active = [active[k] for k in kept]
                rows = rows[kept_rows]
                if ctc is not None:
                    ctc_state = type(ctc_state)(*(t[..., kept_rows] for t in ctc_state))
                    utt = utt[kept_rows]
                    ctc.keep_utterances(active)
            decoder_step.reorder(caches, rows)
            if lm is not None:
                lm.reorder(rows)
            step += 1
        # one read back for the whole batch, utterances in the order they finished
        finished = BeamState(*(torch.cat(parts) for parts in zip(*(s for s, _ in finished_states))))
        order = [k for _, indices in finished_states for k in indices]
        results: List[List[EndedHypothesis]] = [[] for _ in range(num_utts)]
        for k, hyps in zip(order, self._hypotheses(finished)):
            results[k] = hyps
        return SearchResult(results, caches.peak_nbytes, lm.cache_bytes_peak if lm is not None else 0,
                            caches.peak_allocated_nbytes)

    def _pre_beam(self, weighted: torch.Tensor) -> torch.Tensor:
        """(R, S) token ids CTC scores for each row: ESPnet's pre-beam on the weighted sum."""
        vocab = weighted.shape[-1]
        if self.pre_beam_size is None or self.pre_beam_size >= vocab:
            return torch.arange(vocab, device=weighted.device).expand(weighted.shape[0], vocab)
        return weighted.topk(self.pre_beam_size, dim=-1).indices

    @staticmethod
    def _hypotheses(state: BeamState) -> List[List[EndedHypothesis]]:
        """The ended hypotheses of each utterance of ``state``, best first."""
        tokens, scores = state.ended_tokens.cpu(), state.ended_scores.cpu()
        lengths, keys = state.ended_lengths.tolist(), state.ended_keys.tolist()
        return [[EndedHypothesis(tokens[u, k, : lengths[u][k]], scores[u, k])
                 for k in range(len(keys[u])) if keys[u][k] > float("-inf")] for u in range(len(keys))]
