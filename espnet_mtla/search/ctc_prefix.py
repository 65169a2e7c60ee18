"""CTC prefix scores for the hypotheses of many utterances at once (joint CTC/attention decoding).

The scores are ESPnet's ``CTCPrefixScoreTH`` (Watanabe et al. 2017, Algorithm 2; vectorised
over hypotheses by Seki et al. 2019), generalised so that the rows of one call may belong to
different utterances with different numbers of hypotheses each: row ``r`` is a hypothesis of
utterance ``utt[r]``. Frames past an utterance's end are padding with blank probability 1 and
every other label at ``LOGZERO``, so they add exactly nothing to its prefix scores; the
end-of-sentence score reads the forward variables at the utterance's own last frame.

How they are computed differs. ESPnet runs the forward recursion for every scored label of
every hypothesis, frame by frame in Python (three operations per frame and step, to the batch's
padded length), and then keeps the few that the beam selects. But the prefix score of an
extension ``h + c`` needs only the prefix's forward variables ``phi``:
``psi = logsumexp_t(phi_{t-1} + log x_t(c))``, a sum over frames. So ``score`` computes that
(a few operations over (frames, rows, labels)) and ``select`` runs the recursion only for the
extensions the beam kept, one per row, in closed form: it is linear in the probability domain,

    n_t = (n_{t-1} + phi_{t-1}) x_t(c)          b_t = (n_{t-1} + b_{t-1}) x_t(blank)

so with the prefix sums A_t = sum_{j<=t} log x_j(c), ``n_t = A_t + logcumsumexp_k(phi_k - A_k)``
and likewise ``b`` from ``n`` (``forward_variables``). A step is then about 40 operations
whatever the length (ESPnet's: 3 per frame), which is what a GPU, bound by kernel launches,
needs. The differences of prefix sums lose precision in float32 on long utterances (A reaches
-1e4), so the recursion runs in float64; scores and the forward variables kept between steps
are float32, as ESPnet's, whatever the model's dtype.

Two things bound the frames a step reads:
- they stop at the longest utterance still searching (``keep_utterances``), not at the padded
  length of the batch the search started with;
- ``window_margin > 0`` (ESPnet's CTC window, centred here on the prefix's own CTC alignment:
  the frame where its forward probability peaks): only the ``2 * margin`` frames from ``margin``
  before it are scored. Past the window the forward variables continue with blanks only (exact
  for a prefix that emits nothing more, so <eos> stays possible), before it they are
  ``LOGZERO``. A pause longer than the margin between two tokens loses the second one: choose
  the margin above the longest pause. Off (0), the scores are the full recursion's.

    ctc = BatchedCTCPrefixScorer(logp, lengths, blank=0, eos=V - 1)   # logp (U, T, V)
    state = ctc.initial_state(utt)                                     # utt (R,): rows' utterances
    delta, new = ctc.score(state, utt, last, out_len, ids)             # ids (R, S): labels to score
    state = ctc.select(new, rows, labels, utt[rows])                   # after the beam step
    ctc.keep_utterances([0, 2])                                        # utterance 1 is done
"""

from typing import List, NamedTuple, Sequence, Tuple

import torch

LOGZERO = -1e10  # ESPnet's "log 0": finite, so that sums and differences stay finite
SCAN_DTYPE = torch.float64  # the closed form subtracts prefix sums of up to 1e4 (see the docstring)


class CTCState(NamedTuple):
    """Forward variables of one prefix per row (float32).

    r: (T, 2, R) log probability of the prefix ending at frame t in a label (0) or a blank (1).
    prefix_score: (R,) log psi of the prefix (0 for the empty prefix).
    """

    r: torch.Tensor
    prefix_score: torch.Tensor


class CTCCandidates(NamedTuple):
    """What ``select`` needs of a scored step, per row of that step: the scored frames
    (first (R,) .. first + W - 1), the prefix's forward variables on the frames before them
    (prev (W, 2, R), prev_sum (W, R)), its last label (R,), the scored ``ids`` (R, S), every
    label's log psi (R, V), and the prefix length."""

    first: torch.Tensor
    prev: torch.Tensor
    prev_sum: torch.Tensor
    last: torch.Tensor
    ids: torch.Tensor
    log_psi: torch.Tensor
    out_len: int


def forward_variables(label: torch.Tensor, blank: torch.Tensor, phi: torch.Tensor, n_init: torch.Tensor):
    """The forward variables of extended prefixes on W consecutive frames, in closed form.

    label: (W, R) log x_t(c); blank: (W, R) log x_t(blank); phi: (W, R) the prefix's log phi on
    the frame before each; n_init: (R,) n on the frame before the first (where the blank ending
    is impossible). Returns (W + 1, 2, R) float32: (n, b) on the frame before the first and on
    the W frames.
    """
    label, blank, phi, n_init = (t.to(SCAN_DTYPE) for t in (label, blank, phi, n_init))
    a = label.cumsum(0)
    a_before = torch.cat([torch.zeros_like(a[:1]), a[:-1]])
    n = torch.cat([n_init[None], a + torch.logaddexp(n_init, torch.logcumsumexp(phi - a_before, 0))])
    q = blank.cumsum(0)
    q_before = torch.cat([torch.zeros_like(q[:1]), q[:-1]])
    b = torch.cat([torch.full_like(n_init, LOGZERO)[None], q + torch.logcumsumexp(n[:-1] - q_before, 0)])
    return torch.stack([n, b], 1).float()


class BatchedCTCPrefixScorer:
    """Prefix scores of CTC log-posteriors ``logp`` (U, T, V) with lengths (U,) frames.

    ``window_margin``: frames scored on each side of a prefix's alignment (0: every frame).
    """

    def __init__(self, logp: torch.Tensor, lengths: torch.Tensor, blank: int, eos: int, window_margin: int = 0):
        if window_margin < 0:
            raise ValueError(f"window_margin must be >= 0 frames, got {window_margin}")
        logp = logp.float()  # the search state is float32 whatever the model's dtype (LOGZERO overflows float16)
        num_utts, num_frames, vocab = logp.shape
        self.margin = window_margin
        if window_margin:  # a window may reach past the last frame: padding there
            logp = torch.cat([logp, logp.new_zeros(num_utts, window_margin, vocab)], 1)
        padded, device = logp.shape[1], logp.device
        self.lengths: List[int] = [int(n) for n in lengths.tolist()]
        padding = torch.arange(padded, device=device)[None, :] >= lengths.to(device)[:, None]  # (U, T')
        logp = logp.masked_fill(padding[:, :, None], LOGZERO)
        logp[:, :, blank] = logp[:, :, blank].masked_fill(padding, 0.0)
        self.blank, self.eos, self.vocab = blank, eos, vocab
        self.labels = logp.transpose(0, 1).reshape(padded, num_utts * vocab)  # (T', U * V)
        self.blanks = logp[:, :, blank].transpose(0, 1).contiguous()  # (T', U)
        self.blank_sums = self.blanks.to(SCAN_DTYPE).cumsum(0)  # (T', U): log prob of blanks only, frames 0..t
        self.end_frames = lengths.to(device) - 1  # (U,)
        self.active_frames = max(self.lengths)  # frames of the longest utterance still searching

    def keep_utterances(self, utterances: Sequence[int]) -> None:
        """Only utterances ``utterances`` (indices into the batch given at construction) are
        still searching: later steps read no frame past the longest of them."""
        self.active_frames = max(self.lengths[k] for k in utterances)

    def initial_state(self, utt: torch.Tensor) -> CTCState:
        """The empty prefix for rows of utterances ``utt`` (R,): only blanks so far."""
        frames = self.active_frames
        r = torch.full((frames, 2, len(utt)), LOGZERO, dtype=torch.float32, device=self.blanks.device)
        r[:, 1] = self.blank_sums[:frames, utt].float()
        return CTCState(r, torch.zeros(len(utt), dtype=torch.float32, device=r.device))

    def score(self, state: CTCState, utt: torch.Tensor, last: torch.Tensor, out_len: int,
              ids: torch.Tensor) -> Tuple[torch.Tensor, CTCCandidates]:
        """Scores of appending each label of ``ids`` (R, S) to the rows' prefixes.

        utt: (R,) utterance of each row; last: (R,) each prefix's last label; out_len: labels
        in every prefix (without <sos>). Returns (R, V) float32 score increments, as ESPnet's:
        log psi of the extended prefix minus that of the prefix for ``ids`` and <eos>,
        ``LOGZERO`` minus it for the other labels and blank; and the candidates for ``select``.
        """
        rows, device = ids.shape[0], ids.device
        frames = self.active_frames
        r_prev = state.r[:frames]
        r_sum = torch.logaddexp(r_prev[:, 0], r_prev[:, 1])  # (T, R): prefix ending at t in anything
        start = max(out_len, 1)  # a prefix of out_len labels needs out_len frames
        width = max(frames - start, 0)
        if self.margin and 2 * self.margin < width:
            width = 2 * self.margin
            first = (r_sum.argmax(0) - self.margin).clamp(min=start)  # (R,) the alignment, less the margin
            # the frames before the scored ones; past every active utterance's end all is padding
            before = (first[None] + torch.arange(-1, width - 1, device=device)[:, None]).clamp(max=frames - 1)
            prev = r_prev.gather(0, before[:, None].expand(-1, 2, -1))  # (W, 2, R)
            prev_sum = r_sum.gather(0, before)
        else:
            first = torch.full((rows,), start, dtype=torch.long, device=device)
            prev, prev_sum = r_prev[start - 1: frames - 1], r_sum[start - 1: frames - 1]
        candidates = CTCCandidates(first, prev, prev_sum, last, ids, None, out_len)
        label = self._label_frames(candidates, utt, ids)  # (W, R, S)
        psi_ids = torch.logsumexp(torch.cat([self._n_init(candidates, utt, ids)[None],
                                             self._phi(candidates, ids) + label]), 0)
        log_psi = torch.full((rows, self.vocab), LOGZERO, dtype=torch.float32, device=device)
        log_psi.scatter_(1, ids, psi_ids)
        log_psi[:, self.eos] = r_sum[self.end_frames[utt], torch.arange(rows, device=device)]
        if self.eos != self.blank:
            log_psi[:, self.blank] = LOGZERO
        return log_psi - state.prefix_score[:, None], candidates._replace(log_psi=log_psi)

    def select(self, candidates: CTCCandidates, rows: torch.Tensor, labels: torch.Tensor,
               utt: torch.Tensor) -> CTCState:
        """The state of row ``rows[k]`` of the scored step extended by ``labels[k]`` (both
        (R',)), for each k; ``utt`` (R',): the utterance of each new row.

        A hypothesis that ends (<eos>, the only label chosen without being scored) gets the
        forward variables of <eos> as a label: a placeholder, as in ESPnet, never extended.
        """
        chosen = candidates._replace(first=candidates.first[rows], prev=candidates.prev[:, :, rows],
                                     prev_sum=candidates.prev_sum[:, rows], last=candidates.last[rows])
        label = self._label_frames(chosen, utt, labels[:, None])[:, :, 0]  # (W, R')
        width = label.shape[0]
        blank = self.blanks[chosen.first[None] + torch.arange(width, device=rows.device)[:, None], utt[None]]
        scored = forward_variables(label, blank, self._phi(chosen, labels[:, None])[:, :, 0],
                                   self._n_init(chosen, utt, labels[:, None])[:, 0])  # (W + 1, 2, R')
        # In full: LOGZERO before the scored frames, blanks only after them.
        frames = self.active_frames
        offset = torch.arange(frames, device=rows.device)[:, None] - (chosen.first[None] - 1)  # (T, R')
        values = scored.gather(0, offset.clamp(0, width)[:, None].expand(-1, 2, -1))  # (T, 2, R')
        # (R',) the last scored frame (past the end when a prefix has more labels than frames: unused then)
        end = (chosen.first + width - 1).clamp(max=self.blank_sums.shape[0] - 1)
        tail = (torch.logaddexp(scored[-1, 0], scored[-1, 1]).to(SCAN_DTYPE)[None]
                + self.blank_sums[:frames, utt] - self.blank_sums[end, utt][None]).float()
        inside = (offset >= 0) & (offset <= width)
        label_r = torch.where(inside, values[:, 0], LOGZERO)
        blank_r = torch.where(inside, values[:, 1], torch.where(offset > width, tail, LOGZERO))
        return CTCState(torch.stack([label_r, blank_r], 1), candidates.log_psi[rows, labels])

    # -- the pieces score and select share -----------------------------------------------------
    def _label_frames(self, candidates: CTCCandidates, utt: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(W, R, S) log-posteriors of labels ``ids`` (R, S) of the rows' utterances on the scored frames."""
        width = candidates.prev.shape[0]
        if not self.margin:  # the same frames for every row: a slice
            columns = (utt[:, None] * self.vocab + ids).view(-1)
            start = max(candidates.out_len, 1)
            return self.labels[start: start + width].index_select(1, columns).view(width, *ids.shape)
        frame = candidates.first[None] + torch.arange(width, device=ids.device)[:, None]  # (W, R)
        return self.labels[frame[:, :, None], (utt[:, None] * self.vocab + ids)[None]]

    @staticmethod
    def _phi(candidates: CTCCandidates, ids: torch.Tensor) -> torch.Tensor:
        """(W, R, S) the prefix's log phi before each scored frame, for appending ``ids`` (R, S):
        repeating the last label needs a blank in between, so only blank-ending paths count."""
        repeat = (ids == candidates.last[:, None])[None]
        return torch.where(repeat, candidates.prev[:, 1, :, None], candidates.prev_sum[:, :, None])

    def _n_init(self, candidates: CTCCandidates, utt: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(R, S) n of appending ``ids`` (R, S) on the frame before the scored ones: LOGZERO,
        but for the empty prefix on frame 0, where the first label may sit."""
        n = torch.full(ids.shape, LOGZERO, dtype=torch.float32, device=ids.device)
        if candidates.out_len > 0:
            return n
        at_zero = self.labels[0][utt[:, None] * self.vocab + ids]
        return torch.where((candidates.first == 1)[:, None], at_zero, n)
