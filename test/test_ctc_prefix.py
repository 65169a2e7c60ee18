"""The CTC prefix scorer at length, its window, half-precision models, and caches that grow with the output.

ESPnet's ``BatchBeamSearch`` with its ``CTCPrefixScorer`` (the recursion frame by frame, float32)
is the reference: our scorer sums prefix scores over frames and runs the recursion in closed form
(float64) only for the extensions the beam keeps.
"""

import pytest
import torch

from test_decoder import ENC_DIM, EOS, VOCAB
from test_search import espnet_search, inputs, nbest_lists, our_search, search_decoder, tiny_ctc
from espnet_mtla.search.ctc_prefix import LOGZERO, BatchedCTCPrefixScorer


def test_long_utterances_give_espnet_hypotheses_and_scores():
    """Hundreds of frames: the closed form's float64 keeps ESPnet's n-best and scores (float32)."""
    decoder, ctc = search_decoder("mtla"), tiny_ctc()
    xs, enc, lens = inputs([420, 260, 333], seed=11)
    with torch.no_grad():
        reference = espnet_search(decoder, ctc, 0.5, 0.0, False)
        expected = [reference(x, maxlenratio=-12, minlenratio=-3) for x in xs]
        got = our_search(decoder, 0.5)(enc, lens, -12, -3, ctc_logp=ctc.log_softmax(enc)).hypotheses
    for ours, theirs in zip(nbest_lists(got), nbest_lists(expected)):
        assert [y for y, _ in ours] == [y for y, _ in theirs]
        assert [s for _, s in ours] == pytest.approx([s for _, s in theirs], abs=2e-3)


def peaky_posteriors(labels, frames, at, floor=1e-4):
    """(1, T, V) log-posteriors spelling ``labels`` at frames ``at``, blank elsewhere; every
    other label ``floor``."""
    probs = torch.full((frames, VOCAB), floor)
    probs[:, 0] = 1 - floor * (VOCAB - 1)
    for label, t in zip(labels, at):
        probs[t, 0] = floor
        probs[t, label] = 1 - floor * (VOCAB - 1)
    return probs.log()[None]


def label_scores(logp, labels, margin):
    """The scorer's increments along ``labels`` then <eos> (one hypothesis, window ``margin``)."""
    scorer = BatchedCTCPrefixScorer(logp, torch.tensor([logp.shape[1]]), 0, EOS, window_margin=margin)
    utt, last, scores = torch.tensor([0]), EOS, []
    state = scorer.initial_state(utt)
    for step, label in enumerate(labels + [EOS]):
        delta, candidates = scorer.score(state, utt, torch.tensor([last]), step, torch.tensor([[label, 1]]))
        scores.append(float(delta[0, label]))
        state, last = scorer.select(candidates, torch.tensor([0]), torch.tensor([label]), utt), label
    return scores


@pytest.mark.parametrize("margin", [12, 40])
def test_the_window_scores_the_spelled_labels_and_eos_after_a_long_silence(margin):
    """Tokens with pauses shorter than the margin, then 80 frames of silence (more than the
    margin): each token scores what the full scorer gives it, and so does <eos>, read through
    the blanks-only continuation past the window."""
    labels, at = [3, 5, 5, 7, 2, 9, 4], [4, 9, 17, 21, 30, 33, 40]
    logp = peaky_posteriors(labels, 120, at)
    full = label_scores(logp, labels, 0)
    assert sum(full) == pytest.approx(0.0, abs=0.2)  # the one likely path
    # within 1e-3: what the window leaves out, and the repeats of the last label past it
    assert label_scores(logp, labels, margin) == pytest.approx(full, abs=1e-3)


def test_a_window_narrower_than_a_pause_loses_the_token_after_it():
    """What the margin must exceed (the module docstring): a 30-frame pause and a margin of 8."""
    labels, at = [3, 5, 7], [4, 8, 40]
    logp = peaky_posteriors(labels, 60, at)
    full, windowed = label_scores(logp, labels, 0), label_scores(logp, labels, 8)
    assert windowed[:2] == pytest.approx(full[:2], abs=1e-3)
    assert windowed[2] < full[2] - 5  # the label after the pause: emitted off its frame, at 1e-4 a frame


def test_frames_stop_at_the_longest_utterance_still_searching():
    logp = torch.randn(3, 50, VOCAB).log_softmax(-1)
    scorer = BatchedCTCPrefixScorer(logp, torch.tensor([50, 12, 30]), 0, EOS)
    assert scorer.initial_state(torch.tensor([0, 1, 2])).r.shape[0] == 50
    scorer.keep_utterances([1, 2])
    state = scorer.initial_state(torch.tensor([1, 2]))
    assert state.r.shape[0] == 30
    ids = torch.tensor([[3, 4], [5, 6]])
    delta, candidates = scorer.score(state, torch.tensor([1, 2]), torch.tensor([EOS, EOS]), 0, ids)
    assert candidates.prev.shape[0] == 29  # frames 1..29 scored (the first label may sit on frame 0)
    assert delta.dtype == torch.float32 and float(delta[0, 0]) == float(delta[0, 0])


def test_the_scorer_keeps_float32_state_for_half_precision_posteriors():
    """float16 posteriors: LOGZERO (-1e10) does not fit float16; the state is float32."""
    logp = torch.randn(2, 20, VOCAB).log_softmax(-1).half()
    scorer = BatchedCTCPrefixScorer(logp, torch.tensor([20, 15]), 0, EOS)
    state = scorer.initial_state(torch.tensor([0, 1]))
    delta, _ = scorer.score(state, torch.tensor([0, 1]), torch.tensor([EOS, EOS]), 0, torch.tensor([[3], [4]]))
    assert state.r.dtype == delta.dtype == torch.float32
    assert float(delta[0, 1]) == pytest.approx(LOGZERO, rel=1e-6)  # an unscored label


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
def test_half_precision_models_decode_with_and_without_ctc(dtype, ctc_weight):
    decoder, ctc = search_decoder("mtla").to(dtype), tiny_ctc().to(dtype)
    _, enc, lens = inputs()
    enc = enc.to(dtype)
    with torch.no_grad():
        hyps = our_search(decoder, ctc_weight)(enc, lens, -6, -2, ctc_logp=ctc.log_softmax(enc)).hypotheses
    assert all(hyps) and all(h.score.dtype == torch.float32 and torch.isfinite(h.score) for u in hyps for h in u)


def test_bfloat16_gives_the_float32_best_hypothesis_for_most_utterances():
    """bfloat16 rounds the decoder's logits (8 bits of mantissa), not the scores: where the
    float32 model's best two hypotheses are far apart, the bfloat16 model keeps the best."""
    decoder, ctc = search_decoder("mtla"), tiny_ctc()
    lengths = [11, 7, 17, 8, 9, 13, 10, 15, 12, 6, 14, 16]
    _, enc, lens = inputs(lengths, seed=7)
    best = {}
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            d, c, x = search_decoder("mtla").to(dtype), tiny_ctc().to(dtype), enc.to(dtype)
            hyps = our_search(d, 0.3)(x, lens, 0.0, 0.0, ctc_logp=c.ctc_lo(x).float().log_softmax(-1)).hypotheses
            best[dtype] = [u[0].yseq.tolist() for u in hyps]
    same = sum(a == b for a, b in zip(best[torch.float32], best[torch.bfloat16]))
    assert same >= 0.75 * len(lengths), same
    del decoder, ctc


def test_caches_grow_with_the_output_not_the_input():
    """maxlenratio 0 allows as many tokens as frames; the caches hold what the output needs
    (and one reorder spare for all layers), not room for 2000 tokens."""
    decoder, ctc = search_decoder("mha"), tiny_ctc()
    _, enc, lens = inputs([2000, 1500], seed=3)
    with torch.no_grad():
        result = our_search(decoder, 0.0)(enc, lens, -10, 0.0)
    assert result.cache_bytes_allocated_peak <= 2 * result.cache_bytes_peak
    del ctc


@torch.no_grad()
def test_one_reorder_spare_serves_every_layer():
    decoder = search_decoder("mtla")
    enc = torch.randn(2, 5, ENC_DIM)
    caches = decoder.new_caches(2, decoder.cache_capacity(5, 8), enc)
    decoder.fill_prefix(caches, enc, torch.tensor([5, 5]))
    private = decoder.new_caches(2, decoder.cache_capacity(5, 8), enc)
    decoder.fill_prefix(private, enc, torch.tensor([5, 5]))
    private.shared_spares = False
    for rows in (torch.tensor([1, 0, 1]), torch.tensor([2, 2, 0]), torch.tensor([1, 0]), torch.tensor([0, 1])):
        decoder.run_tokens(caches, torch.ones(caches.batch_size, 1, dtype=torch.long))
        decoder.run_tokens(private, torch.ones(private.batch_size, 1, dtype=torch.long))
        caches.reorder(rows)
        private.reorder(rows)
        for shared, own in zip(caches.layers, private.layers):
            assert all(torch.equal(shared.view(n), own.view(n)) for n in shared.buffers)
    assert len(caches._pool) == 1  # one spare, the shape of every layer's buffer
    layers = len(caches.layers)
    assert caches.allocated_nbytes() * 2 * layers == private.allocated_nbytes() * (layers + 1)
