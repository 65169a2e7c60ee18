"""CTC prefix scores for the hypotheses of many utterances at once (joint CTC/attention decoding).

The algorithm is ESPnet's ``CTCPrefixScoreTH`` (Watanabe et al. 2017, Algorithm 2; vectorised
over hypotheses by Seki et al. 2019), generalised so that the rows of one call may belong to
different utterances with different numbers of hypotheses each: row ``r`` is a hypothesis of
utterance ``utt[r]``. Frames past an utterance's end are padding with blank probability 1 and
every other label at ``LOGZERO``, so they add exactly nothing to its prefix scores; the
end-of-sentence score reads the forward variables at the utterance's own last frame. Scores
equal ``CTCPrefixScoreTH``'s per utterance (up to float rounding); no windowing (ESPnet's
``CTCPrefixScorer`` uses none).

    ctc = BatchedCTCPrefixScorer(logp, lengths, blank=0, eos=V - 1)   # logp (U, T, V)
    state = ctc.initial_state(utt)                                     # utt (R,): rows' utterances
    delta, new = ctc.score(state, utt, last, out_len, ids)             # ids (R, S): labels to score
    state = ctc.select(new, rows, labels)                              # after the beam step
"""

from typing import NamedTuple, Tuple

import torch

LOGZERO = -1e10  # ESPnet's "log 0": finite, so that sums and differences stay finite


class CTCState(NamedTuple):
    """Forward variables of one prefix per row.

    r: (T, 2, R) log probability of the prefix ending at frame t in a label (0) or a blank (1).
    prefix_score: (R,) log psi of the prefix (0 for the empty prefix).
    """

    r: torch.Tensor
    prefix_score: torch.Tensor


class CTCCandidates(NamedTuple):
    """Forward variables of every scored extension: r (T, 2, R, S), ids (R, S), log_psi (R, V)."""

    r: torch.Tensor
    ids: torch.Tensor
    log_psi: torch.Tensor


class BatchedCTCPrefixScorer:
    """Prefix scores of CTC log-posteriors ``logp`` (U, T, V) with lengths (U,) frames."""

    def __init__(self, logp: torch.Tensor, lengths: torch.Tensor, blank: int, eos: int):
        num_utts, num_frames, vocab = logp.shape
        padding = torch.arange(num_frames, device=logp.device)[None, :] >= lengths.to(logp.device)[:, None]  # (U, T)
        logp = logp.masked_fill(padding[:, :, None], LOGZERO)
        logp[:, :, blank] = logp[:, :, blank].masked_fill(padding, 0.0)
        self.blank, self.eos, self.vocab = blank, eos, vocab
        self.num_frames = num_frames
        self.labels = logp.transpose(0, 1).reshape(num_frames, num_utts * vocab)  # (T, U * V)
        self.blanks = logp[:, :, blank].transpose(0, 1).contiguous()  # (T, U)
        self.end_frames = lengths.to(logp.device) - 1  # (U,)

    def initial_state(self, utt: torch.Tensor) -> CTCState:
        """The empty prefix for rows of utterances ``utt`` (R,): only blanks so far."""
        r = torch.full((self.num_frames, 2, len(utt)), LOGZERO, dtype=self.blanks.dtype, device=self.blanks.device)
        r[:, 1] = torch.cumsum(self.blanks, 0)[:, utt]
        return CTCState(r, torch.zeros(len(utt), dtype=r.dtype, device=r.device))

    def score(self, state: CTCState, utt: torch.Tensor, last: torch.Tensor, out_len: int,
              ids: torch.Tensor) -> Tuple[torch.Tensor, CTCCandidates]:
        """Scores of appending each label of ``ids`` (R, S) to the rows' prefixes.

        utt: (R,) utterance of each row; last: (R,) each prefix's last label; out_len: labels
        in every prefix (without <sos>). Returns (R, V) score increments, as ESPnet's: log psi
        of the extended prefix minus that of the prefix for ``ids`` and <eos>, ``LOGZERO``
        minus it for the other labels and blank; and the candidates for ``select``.
        """
        rows, num_ids = ids.shape
        frames = self.num_frames
        label_x = self.labels.index_select(1, (utt[:, None] * self.vocab + ids).view(-1)).view(frames, rows, num_ids)
        blank_x = self.blanks[:, utt, None].expand(frames, rows, num_ids)
        x = torch.stack([label_x, blank_x])  # (2, T, R, S)
        r_prev = state.r
        r = torch.full((frames, 2, rows, num_ids), LOGZERO, dtype=x.dtype, device=x.device)
        if out_len == 0:
            r[0, 0] = x[0, 0]
        r_sum = torch.logsumexp(r_prev, 1)  # (T, R): prefix ending at t in anything
        # Repeating the last label needs a blank in between: then only the blank-ending paths count.
        repeat = (ids == last[:, None])[None]  # (1, R, S)
        log_phi = torch.where(repeat, r_prev[:, 1, :, None], r_sum[:, :, None])  # (T, R, S)
        start = max(out_len, 1)
        for t in range(start, frames):
            # [label, blank] at t from [label or phi, label or blank] at t - 1
            torch.add(torch.logaddexp(r[t - 1, 0].unsqueeze(0), torch.stack([log_phi[t - 1], r[t - 1, 1]])), x[:, t],
                      out=r[t])
        if start <= frames:
            log_phi_x = torch.cat([log_phi[:1], log_phi[:-1]]) + x[0]  # (T, R, S)
            psi_ids = torch.logsumexp(torch.cat([log_phi_x[start:], r[start - 1, 0][None]]), dim=0)  # (R, S)
        else:  # more labels than frames: impossible (ESPnet's scorer fails here)
            psi_ids = torch.full((rows, num_ids), LOGZERO, dtype=x.dtype, device=x.device)
        log_psi = torch.full((rows, self.vocab), LOGZERO, dtype=x.dtype, device=x.device)
        log_psi.scatter_(1, ids, psi_ids)
        log_psi[:, self.eos] = r_sum[self.end_frames[utt], torch.arange(rows, device=x.device)]
        if self.eos != self.blank:
            log_psi[:, self.blank] = LOGZERO
        return log_psi - state.prefix_score[:, None], CTCCandidates(r, ids, log_psi)

    @staticmethod
    def select(candidates: CTCCandidates, rows: torch.Tensor, labels: torch.Tensor) -> CTCState:
        """The state of row ``rows[k]`` extended by ``labels[k]`` (both (R',)), for each k.

        A label that was not scored (only <eos> can be chosen so) ends its hypothesis; its
        forward variables are a placeholder, as in ESPnet.
        """
        match = candidates.ids[rows] == labels[:, None]  # (R', S)
        pos = torch.where(match.any(1), match.int().argmax(1), candidates.ids.shape[1] - 1)
        r = candidates.r[:, :, rows, pos]  # (T, 2, R')
        return CTCState(r, candidates.log_psi[rows, labels])
