"""One beam step on tensors: ESPnet's candidate selection and end-of-sentence rules, per utterance.

``select_candidates`` is the seam between scoring and search (fairseq's ``search.py``): given
the weighted scores of every running hypothesis of every utterance, it returns the new beams,
the hypotheses that ended, and which utterances are done, all as device tensors; nothing is
read back to the host. Per utterance it does what ESPnet's ``BeamSearch.forward`` does:

- top-k over (hypothesis x vocabulary), best first (``batch_beam``);
- at the last step (``maxlen - 1``) every hypothesis gets an <eos> appended (``post_process``);
- a hypothesis that ends at step ``i >= minlen`` joins the ended list (earlier ones are dropped);
- with ``maxlenratio == 0``, ``end_detect``: done once the best ended hypotheses of the last
  3 lengths are all more than 10 (log) below the best ended one;
- the n-best are the best ended hypotheses by score, or score / (length - 1) with
  ``normalize_length``; ties keep the order in which they ended (Python's stable ``sorted``).

Only the ``nbest`` best ended hypotheses of each utterance are kept (in tensors), plus, for end
detection, the best ended score of every length.
"""

from typing import NamedTuple, Tuple

import torch

END_DETECT_LENGTHS = 3  # ESPnet's end_detect(M=3, ...)
END_DETECT_MARGIN = -10.0  # ... and D_end = log(exp(-10))


class BeamState(NamedTuple):
    """Search state of U utterances, W running hypotheses each (W = 1 at the first step).

    tokens: (U * W, L) token buffer, <sos> first; row u * W + k is hypothesis k of utterance u.
    scores: (U, W) running scores; -inf marks a hypothesis that ended (its row is a placeholder).
    maxlen, minlen: (U,) ESPnet's length limits.
    ended_tokens: (U, P, L), ended_lengths: (U, P), ended_scores: (U, P), ended_keys: (U, P):
        the P best ended hypotheses (yseq, len(yseq), score, ranking key), best first; -inf
        keys are empty places.
    best_ended: (U,) best ended score; best_by_length: (U, L + 1) best ended score per yseq length.
    """

    tokens: torch.Tensor
    scores: torch.Tensor
    maxlen: torch.Tensor
    minlen: torch.Tensor
    ended_tokens: torch.Tensor
    ended_lengths: torch.Tensor
    ended_scores: torch.Tensor
    ended_keys: torch.Tensor
    best_ended: torch.Tensor
    best_by_length: torch.Tensor

    def rows_of(self, keep: torch.Tensor) -> torch.Tensor:
        """(U' * W,) the token-buffer rows of utterances ``keep`` (U',)."""
        width = self.scores.shape[1]
        return (keep[:, None] * width + torch.arange(width, device=keep.device)).view(-1)

    def select_utterances(self, keep: torch.Tensor) -> "BeamState":
        """The state of utterances ``keep`` (U',) only."""
        return BeamState(self.tokens[self.rows_of(keep)], *(t[keep] for t in self[1:]))


def initial_state(num_utts: int, sos: int, maxlen: torch.Tensor, minlen: torch.Tensor, nbest: int,
                  dtype: torch.dtype = torch.float32) -> BeamState:
    """One hypothesis (<sos>, score 0) per utterance; nothing ended yet. Scores are float32
    whatever the model's dtype: bfloat16 would round a running score of -36.44 to -36.5."""
    device = maxlen.device
    length = int(maxlen.max()) + 2  # <sos>, maxlen tokens, <eos> appended at the last step
    tokens = torch.full((num_utts, length), sos, dtype=torch.long, device=device)
    empty = torch.full((num_utts, nbest), float("-inf"), dtype=dtype, device=device)
    return BeamState(
        tokens, torch.zeros(num_utts, 1, dtype=dtype, device=device), maxlen, minlen,
        torch.full((num_utts, nbest, length), sos, dtype=torch.long, device=device),
        torch.zeros(num_utts, nbest, dtype=torch.long, device=device), empty, empty.clone(),
        torch.full((num_utts,), float("-inf"), dtype=dtype, device=device),
        torch.full((num_utts, length + 1), float("-inf"), dtype=dtype, device=device))


def select_candidates(weighted: torch.Tensor, state: BeamState, step: int, beam: int, eos: int,
                      normalize_length: bool, end_detection: bool
                      ) -> Tuple[BeamState, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the search of every utterance.

    weighted: (U, W, V) running score + weighted scores of each next token (-inf for ended rows).
    Returns (state with W = beam, rows (U * beam,) of the previous step each new hypothesis
    extends, its labels (U * beam,), done (U,)).
    """
    num_utts, width, vocab = weighted.shape
    device = weighted.device
    top_scores, top_ids = weighted.view(num_utts, width * vocab).topk(beam, dim=-1)  # (U, beam), best first
    prev = torch.div(top_ids, vocab, rounding_mode="trunc")
    labels = top_ids % vocab
    rows = (torch.arange(num_utts, device=device)[:, None] * width + prev).view(-1)
    tokens = state.tokens[rows]
    tokens[:, step + 1] = labels.view(-1)
    last_step = (state.maxlen - 1 == step)[:, None]  # (U, 1): <eos> appended to every hypothesis
    tokens[:, step + 2] = torch.where(last_step.expand(-1, beam).reshape(-1), eos, tokens[:, step + 2])
    ends = (labels == eos) | last_step  # (U, beam)
    accepted = ends & (step >= state.minlen)[:, None]
    lengths = torch.where(last_step, step + 3, step + 2).expand(-1, beam)  # len(yseq) of an ended one
    new_scores = top_scores.masked_fill(~accepted, float("-inf"))
    keys = new_scores / (lengths - 1) if normalize_length else new_scores

    # the nbest best ended hypotheses: earlier ones first among equal keys, as sorted() keeps them
    nbest = state.ended_keys.shape[1]
    all_keys = torch.cat([state.ended_keys, keys], 1)  # (U, P + beam)
    order = all_keys.sort(dim=1, descending=True, stable=True).indices[:, :nbest]
    ended_tokens = torch.cat([state.ended_tokens, tokens.view(num_utts, beam, -1)], 1)
    ended_tokens = ended_tokens.gather(1, order[:, :, None].expand(-1, -1, ended_tokens.shape[2]))
    ended_lengths = torch.cat([state.ended_lengths, lengths], 1).gather(1, order)
    ended_scores = torch.cat([state.ended_scores, new_scores], 1).gather(1, order)
    best_ended = torch.maximum(state.best_ended, new_scores.max(1).values)
    best_by_length = state.best_by_length.scatter_reduce(1, lengths, new_scores, reduce="amax")

    running = top_scores.masked_fill(ends, float("-inf"))
    done = last_step[:, 0] | (running == float("-inf")).all(1)
    if end_detection:
        count = torch.zeros(num_utts, dtype=torch.long, device=device)
        for m in range(END_DETECT_LENGTHS):
            if step - m >= 0:
                best = best_by_length[:, step - m]
                count += ((best > float("-inf")) & (best - best_ended < END_DETECT_MARGIN)).long()
        done |= count == END_DETECT_LENGTHS
    new_state = BeamState(tokens, running, state.maxlen, state.minlen, ended_tokens, ended_lengths, ended_scores,
                          all_keys.gather(1, order), best_ended, best_by_length)
    return new_state, rows, labels.view(-1), done
