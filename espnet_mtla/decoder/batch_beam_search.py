"""Beam search over many utterances at once (fairseq-style), for the decoder-only stack.

ESPnet's ``BatchBeamSearch`` batches the hypotheses of *one* utterance. This search batches
the hypotheses of *all* utterances of a batch: one encoder pass, the prefixes written into
one set of KV caches (rows hold their own lengths, so nothing is padded inside a cache), and
per step one decoder call over every running hypothesis of every utterance, then one gather
per layer to keep the surviving rows. Per utterance it does exactly what ESPnet's
``BeamSearch.forward`` does with a decoder and a length bonus (``--penalty``): the same
top-k over hypothesis x vocabulary, the same end-of-sentence handling at the maximum length,
``minlenratio``, end detection when ``maxlenratio`` is 0, ``normalize_length`` and n-best;
so its hypotheses and scores equal ``--batch_size 1``'s (scores within float rounding).

    search = MultiUtteranceBeamSearch(decoder, sos, eos, beam_size=10)
    nbest = search(enc, enc_lens)        # enc (N, T, D_enc) -> N lists of Hypothesis, best first
"""

import logging
from dataclasses import dataclass
from typing import List

import numpy as np
import torch

from espnet.nets.beam_search import Hypothesis
from espnet.nets.e2e_asr_common import end_detect

log = logging.getLogger(__name__)


@dataclass
class _Utterance:
    """Search state of one utterance: its running hypotheses are rows of the shared caches."""

    index: int
    maxlen: int
    minlen: int
    yseqs: List[torch.Tensor]  # running hypotheses (with <sos>), one per cache row of this utterance
    scores: torch.Tensor  # (n_running,)
    ended: List[Hypothesis]
    done: bool = False


def length_limits(enc_len: int, maxlenratio: float, minlenratio: float):
    """ESPnet's (maxlen, minlen) for an encoder output of ``enc_len`` frames."""
    if maxlenratio == 0:
        maxlen = enc_len
    elif maxlenratio < 0:
        maxlen = -1 * int(maxlenratio)
    else:
        maxlen = max(1, int(maxlenratio * enc_len))
    minlen = -1 * int(minlenratio) if minlenratio < 0 else int(minlenratio * enc_len)
    return maxlen, minlen


class MultiUtteranceBeamSearch:
    """Beam search of a ``DecoderOnlyDecoder`` over a batch of utterances.

    Args:
        decoder: the decoder-only stack (its caches take per-row lengths).
        sos, eos: token ids. beam_size: hypotheses kept per utterance.
        penalty: length bonus per token (ESPnet's ``--penalty``). decoder_weight: the
            decoder's score weight (``1 - ctc_weight`` in ESPnet; CTC itself is not scored here).
        normalize_length: rank ended hypotheses by score / length.
    """

    def __init__(self, decoder, sos: int, eos: int, beam_size: int, penalty: float = 0.0,
                 decoder_weight: float = 1.0, normalize_length: bool = False):
        self.decoder = decoder
        self.sos, self.eos = sos, eos
        self.beam_size = beam_size
        self.penalty = penalty
        self.decoder_weight = decoder_weight
        self.normalize_length = normalize_length

    @torch.no_grad()
    def __call__(self, enc: torch.Tensor, enc_lens: torch.Tensor, maxlenratio: float = 0.0,
                 minlenratio: float = 0.0) -> List[List[Hypothesis]]:
        """enc: (N, T, D_enc), enc_lens: (N,) -> for each utterance its ended hypotheses, best first."""
        nbest = self._search(enc, enc_lens, maxlenratio, minlenratio)
        for n, hyps in enumerate(nbest):
            if not hyps and minlenratio >= 0.1:  # as ESPnet: retry with a smaller minlenratio
                log.warning("utterance %d: no ended hypothesis; decoding again with minlenratio %.1f", n,
                            max(0.0, minlenratio - 0.1))
                nbest[n] = self(enc[n: n + 1, : int(enc_lens[n])], enc_lens[n: n + 1], maxlenratio,
                                max(0.0, minlenratio - 0.1))[0]
        return nbest

    def _search(self, enc, enc_lens, maxlenratio, minlenratio) -> List[List[Hypothesis]]:
        decoder, device = self.decoder, enc.device
        lens = enc_lens.tolist()
        utts = []
        for n, length in enumerate(lens):
            maxlen, minlen = length_limits(length, maxlenratio, minlenratio)
            utts.append(_Utterance(n, maxlen, minlen, [torch.tensor([self.sos], device=device)],
                                   torch.zeros(1, dtype=enc.dtype, device=device), []))
        capacity = -(-enc.shape[1] // decoder.projector.stack) + max(u.maxlen for u in utts) + 2
        caches = decoder.new_caches(len(utts), capacity, enc)
        decoder.fill_prefix(caches, enc, enc_lens)
        decoder.active_caches = caches
        active = list(utts)  # utterances still searching, in cache-row order
        step = 0
        while active:
            last = torch.stack([y[-1] for u in active for y in u.yseqs]).unsqueeze(1)  # (R, 1)
            logp = decoder.run_tokens(caches, last)[:, -1].log_softmax(dim=-1)  # (R, V)
            caches.note_peak()
            vocab = logp.shape[-1]
            # ESPnet's order of additions: 0 + w_dec * decoder + w_len * 1, then + the running score.
            weighted = torch.zeros_like(logp) + self.decoder_weight * logp + self.penalty
            counts = [len(u.yseqs) for u in active]
            padded = weighted.new_full((len(active), max(counts), vocab), float("-inf"))
            rows = torch.cat([torch.full((c,), i, device=device) for i, c in enumerate(counts)])
            within = torch.cat([torch.arange(c, device=device) for c in counts])
            scores = torch.cat([u.scores for u in active])
            padded[rows, within] = weighted + scores.unsqueeze(1)
            top_scores, top_ids = padded.view(len(active), -1).topk(self.beam_size, dim=-1)  # (U, beam)
            prev = torch.div(top_ids, vocab, rounding_mode="trunc")
            tokens = top_ids % vocab
            first_row = np.cumsum([0] + counts[:-1])
            keep_rows, still_active = [], []
            for k, u in enumerate(active):
                yseqs = [torch.cat([u.yseqs[p], t.view(1)]) for p, t in zip(prev[k].tolist(), tokens[k])]
                if step == u.maxlen - 1:  # as ESPnet: end every hypothesis at the maximum length
                    yseqs = [torch.cat([y, y.new_tensor([self.eos])]) for y in yseqs]
                is_eos = [int(y[-1]) == self.eos for y in yseqs]
                for y, s, e in zip(yseqs, top_scores[k], is_eos):
                    if e and step >= u.minlen:
                        u.ended.append(Hypothesis(yseq=y, score=s, scores={"decoder": s}, states={}))
                survivors = [j for j, e in enumerate(is_eos) if not e]
                u.yseqs = [yseqs[j] for j in survivors]
                u.scores = top_scores[k][survivors]
                stop = (maxlenratio == 0.0 and end_detect([h.asdict() for h in u.ended], step)) or not survivors \
                    or step == u.maxlen - 1
                if stop:
                    u.done = True
                    continue
                still_active.append(u)
                keep_rows += [int(first_row[k]) + int(prev[k, j]) for j in survivors]
            active = still_active
            if active:
                caches.reorder(torch.tensor(keep_rows, device=device))
            step += 1
        return [self._ranked(u.ended) for u in utts]

    def _ranked(self, ended: List[Hypothesis]) -> List[Hypothesis]:
        if self.normalize_length:
            return sorted(ended, key=lambda h: h.score / (len(h.yseq) - 1), reverse=True)
        return sorted(ended, key=lambda h: h.score, reverse=True)
