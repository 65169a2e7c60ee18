"""The search's decode step: fixed-shape steps (and on a GPU their CUDA-graph replays) compute
exactly what the eager step computes, through row padding, growing cache views and reorders.

Torch only (utils/gpu_checks.sh runs it on GPU nodes without ESPnet)."""

import contextlib

import pytest
import torch

from espnet_mtla.attention.registry import attention_types
from espnet_mtla.decoder.stack import DecoderOnlyStack
from espnet_mtla.search import MultiUtteranceBeamSearch, decode_step
from espnet_mtla.search.decode_step import DecodeStep, GraphedDecodeStep, row_bucket

CUDA = torch.cuda.is_available()
TYPES = attention_types()
VOCAB, ENC_DIM, EOS, BEAM = 13, 16, 12, 5


def tiny_decoder(attention_type):
    """A random stack whose outputs depend on the prefix, sharpened (few near-ties in searches)."""
    torch.manual_seed(0)
    decoder = DecoderOnlyStack(
        VOCAB, ENC_DIM, attention_type=attention_type, model_dim=32, attention_heads=4, linear_units=48,
        num_blocks=2, dropout_rate=0.0, prefix_stack=2, prefix_hidden=24, tie_embeddings=False,
        gqa_conf={"num_kv_heads": 2},
        mla_conf={"kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8},
        mtla_conf={"down_rate": 3},
    ).eval()
    with torch.no_grad():
        decoder.embed.weight.mul_(3.0)
        decoder.final_norm.weight.mul_(3.0)
    return decoder


def inputs(lengths, device="cpu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(5)
    xs = [3.0 * torch.randn(n, ENC_DIM, generator=gen) for n in lengths]
    enc = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
    return enc.to(device, dtype), torch.tensor(lengths, device=device)


def searched(decoder, enc, lens, cuda_graphs, ctc_weight=0.3):
    """Each utterance's 3-best (token ids, score) of a joint CTC search with end detection."""
    torch.manual_seed(3)
    ctc = torch.nn.Linear(ENC_DIM, VOCAB).to(enc.device, enc.dtype)
    search = MultiUtteranceBeamSearch(decoder, EOS, EOS, BEAM, decoder_weight=1.0 - ctc_weight,
                                      ctc_weight=ctc_weight, pre_beam_size=7, nbest=3, cuda_graphs=cuda_graphs)
    with torch.no_grad():
        result = search(enc, lens, ctc_logp=(4.0 * ctc(enc)).log_softmax(-1))
    return [[(h.yseq.tolist(), float(h.score)) for h in hyps] for hyps in result.hypotheses]


def assert_same(expected, got, tol=1e-4):
    for n, (a, b) in enumerate(zip(expected, got)):
        assert [y for y, _ in a] == [y for y, _ in b], n
        assert all(abs(sa - sb) <= tol for (_, sa), (_, sb) in zip(a, b)), n


def test_row_buckets_pad_by_at_most_a_quarter():
    assert [row_bucket(n) for n in (1, 5, 8, 9, 15, 16, 17, 30, 33, 100, 2000)] == \
        [1, 5, 8, 10, 16, 16, 20, 32, 40, 112, 2048]
    for rows in range(1, 3000):
        assert rows <= row_bucket(rows) <= 1.25 * rows
        assert row_bucket(row_bucket(rows)) == row_bucket(rows)


def drive(step, decoder, enc, lens, steps=12, seed=0):
    """``steps`` decode steps with random tokens and beam reorders whose row count changes
    (1 row per utterance, then 5 per utterance, then fewer); returns each step's log-probs."""
    gen = torch.Generator().manual_seed(seed)
    device = enc.device
    caches = decoder.new_caches(enc.shape[0], enc.shape[1] + steps + 2, enc)
    decoder.fill_prefix(caches, enc, lens)
    rows, out = enc.shape[0], []
    for i in range(steps):
        tokens = torch.randint(0, VOCAB, (rows, 1), generator=gen).to(device)
        out.append(step(caches, tokens).clone())
        new_rows = 5 * enc.shape[0] if i == 0 else max(1, rows - (i % 3))
        step.reorder(caches, torch.randint(0, rows, (new_rows,), generator=gen).to(device))
        rows = new_rows
    return out


@pytest.mark.parametrize("attention_type", TYPES)
def test_fixed_shape_steps_equal_eager_steps(attention_type, monkeypatch):
    monkeypatch.setattr(decode_step, "SLOT_BUCKET", 4)  # the views grow past several buckets
    decoder = tiny_decoder(attention_type)
    enc, lens = inputs([11, 7, 17, 8])
    with torch.no_grad():
        eager = drive(DecodeStep(decoder), decoder, enc, lens)
        graphed_step = GraphedDecodeStep(decoder)
        fixed = drive(graphed_step, decoder, enc, lens)
    assert not graphed_step.capture and graphed_step.captures == 0  # on a CPU: eager, fixed shapes
    # rows went 4 -> 20 -> fewer: the buckets of more rows than the last step's are freed
    assert max(graphed_step.buckets) == row_bucket(fixed[-1].shape[0]) < 20
    for a, b in zip(eager, fixed):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


class ReplayedGraph:
    """A CUDA graph emulated on a CPU: a replay re-runs the step's kernels with the Python state
    the step had at capture (a real replay runs no Python at all)."""

    def __init__(self, step, caches):
        self.step, self.caches = step, caches
        self.max_lengths = [cache.max_length for cache in caches.layers]

    def replay(self):
        layers = self.caches.layers
        now = [(c.lengths, c.max_length, c.view_slots, dict(c.buffers), c.equal_rows) for c in layers]
        for cache, max_length in zip(layers, self.max_lengths):
            cache.max_length = max_length
        self.step()
        for cache, (lengths, max_length, view_slots, buffers, equal_rows) in zip(layers, now):
            cache.lengths, cache.max_length, cache.view_slots, cache.buffers = lengths, max_length, view_slots, buffers
            cache.equal_rows = equal_rows


class EmulatedGraphs(GraphedDecodeStep):
    """GraphedDecodeStep with its capture emulated (``ReplayedGraph``): graph reuse, the
    warm-up's put-back slots and the runner's Python bookkeeping are the real ones."""

    def __call__(self, caches, tokens):
        self.caches = caches
        return super().__call__(caches, tokens)

    def _capture_stream(self):
        return contextlib.nullcontext()

    def _capture(self, step):
        return ReplayedGraph(step, self.caches)


@pytest.mark.parametrize("attention_type", TYPES)
def test_replayed_steps_equal_eager_steps(attention_type, monkeypatch):
    """Steps replayed from graphs captured at earlier steps (with their Python state) compute
    what eager steps compute: nothing a step computes depends on Python state that moves."""
    monkeypatch.setattr(decode_step, "SLOT_BUCKET", 4)
    decoder = tiny_decoder(attention_type)
    enc, lens = inputs([11, 7, 17, 8])
    with torch.no_grad():
        eager = drive(DecodeStep(decoder), decoder, enc, lens, steps=30)
        replaying = EmulatedGraphs(decoder, capture=True)
        replayed = drive(replaying, decoder, enc, lens, steps=30)
    assert replaying.capture, "capture fell back to eager steps"
    assert 4 <= replaying.captures < 30  # graphs are reused across steps
    for a, b in zip(eager, replayed):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


@pytest.mark.parametrize("attention_type", TYPES)
def test_search_on_fixed_shape_steps_gives_the_same_nbest(attention_type, monkeypatch):
    monkeypatch.setattr(decode_step, "SLOT_BUCKET", 4)
    decoder = tiny_decoder(attention_type)
    enc, lens = inputs([11, 7, 17, 8, 9, 13])  # 6 utterances x beam 5 = 30 rows: padded to 32, then fewer
    eager = searched(decoder, enc, lens, cuda_graphs=False)
    assert_same(eager, searched(decoder, enc, lens, cuda_graphs=True))
    assert len({str([y for y, _ in hyps]) for hyps in eager}) > 1  # utterances decode differently


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("attention_type", TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_replays_equal_eager_steps(attention_type, dtype):
    decoder = tiny_decoder(attention_type).to("cuda", dtype)
    enc, lens = inputs([11, 7, 17, 8], "cuda", dtype)
    with torch.no_grad():
        eager = drive(DecodeStep(decoder), decoder, enc, lens, steps=80)
        graphed_step = GraphedDecodeStep(decoder)
        replayed = drive(graphed_step, decoder, enc, lens, steps=80)
    assert graphed_step.capture, "capture fell back to eager steps (see the logged notice)"
    assert graphed_step.captures >= 4  # row buckets x view buckets x the reorder's two buffers
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for a, b in zip(eager, replayed):
        torch.testing.assert_close(b.float(), a.float(), rtol=0, atol=tol)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("attention_type", TYPES)
def test_search_on_cuda_graphs_gives_the_same_nbest(attention_type):
    decoder = tiny_decoder(attention_type).cuda()
    enc, lens = inputs([11, 7, 17, 8, 9, 13], "cuda")
    assert_same(searched(decoder, enc, lens, cuda_graphs=False), searched(decoder, enc, lens, cuda_graphs=True))
