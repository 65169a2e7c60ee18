"""espnet_mtla.search: the multi-utterance search equals ESPnet's BatchBeamSearch per utterance.

ESPnet's search (decoder + CTCPrefixScorer + LengthBonus, pre-beam on the full score) decodes
each utterance alone; ours decodes them all in one batch of mixed lengths.
"""

import subprocess
import sys

import pytest
import torch
from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.scorers.ctc import CTCPrefixScorer
from espnet.nets.scorers.length_bonus import LengthBonus
from espnet2.asr.ctc import CTC

from test_decoder import ENC_DIM, EOS, TYPES, VOCAB, tiny_decoder
from espnet_mtla.search import MultiUtteranceBeamSearch
from espnet_mtla.search.batching import budget_batches, speech_frames

BEAM, NBEST = 4, 3
LENGTHS = [11, 7, 17, 8, 9, 13]
# (maxlenratio, minlenratio, penalty, normalize_length)
OPTIONS = {
    "end-detection": (0.0, 0.0, 0.0, False),
    "fixed-lengths+penalty": (-6, -2, 0.2, False),
    "ratios+normalize": (0.6, 0.2, 0.0, True),
}


def search_decoder(attention_type):
    """A random decoder whose outputs depend on the prefix (untied, sharpened: few near-ties)."""
    decoder = tiny_decoder(attention_type, down_rate=2, tie_embeddings=False)
    with torch.no_grad():
        decoder.final_norm.weight.mul_(3.0)
    return decoder


def tiny_ctc():
    torch.manual_seed(3)
    ctc = CTC(VOCAB, ENC_DIM).eval()
    with torch.no_grad():
        ctc.ctc_lo.weight.mul_(4.0)  # peaky posteriors, as a trained CTC has
    return ctc


def inputs(lengths=LENGTHS, seed=5):
    gen = torch.Generator().manual_seed(seed)
    xs = [3.0 * torch.randn(n, ENC_DIM, generator=gen) for n in lengths]
    return xs, torch.nn.utils.rnn.pad_sequence(xs, batch_first=True), torch.tensor(lengths)


def espnet_search(decoder, ctc, ctc_weight, penalty, normalize_length):
    scorers = {"decoder": decoder, "ctc": CTCPrefixScorer(ctc, EOS), "length_bonus": LengthBonus(VOCAB)}
    weights = {"decoder": 1.0 - ctc_weight, "ctc": ctc_weight, "length_bonus": penalty}
    return BatchBeamSearch(scorers=scorers, weights=weights, beam_size=BEAM, vocab_size=VOCAB, sos=EOS, eos=EOS,
                           pre_beam_score_key="full", normalize_length=normalize_length)


def our_search(decoder, ctc_weight, penalty=0.0, normalize_length=False, beam=BEAM):
    return MultiUtteranceBeamSearch(decoder, EOS, EOS, beam, decoder_weight=1.0 - ctc_weight, ctc_weight=ctc_weight,
                                    pre_beam_size=int(1.5 * beam), penalty=penalty,
                                    normalize_length=normalize_length, nbest=NBEST)


def nbest_lists(hyps_per_utt):
    return [[(h.yseq.tolist(), float(h.score)) for h in hyps[:NBEST]] for hyps in hyps_per_utt]


def assert_same(expected, got):
    for n, (a, b) in enumerate(zip(expected, got)):
        assert [y for y, _ in a] == [y for y, _ in b], n
        for (_, sa), (_, sb) in zip(a, b):
            assert abs(sa - sb) <= 1e-4, (n, sa, sb)


@pytest.mark.parametrize("attention_type", TYPES)
@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
@pytest.mark.parametrize("options", list(OPTIONS))
def test_batched_search_equals_espnet_per_utterance(attention_type, ctc_weight, options):
    maxlenratio, minlenratio, penalty, normalize_length = OPTIONS[options]
    decoder, ctc = search_decoder(attention_type), tiny_ctc()
    xs, enc, lens = inputs()
    with torch.no_grad():
        reference = espnet_search(decoder, ctc, ctc_weight, penalty, normalize_length)
        expected = nbest_lists([reference(x, maxlenratio, minlenratio) for x in xs])
        got = nbest_lists(our_search(decoder, ctc_weight, penalty, normalize_length)(
            enc, lens, maxlenratio, minlenratio, ctc_logp=ctc.log_softmax(enc)).hypotheses)
    assert_same(expected, got)
    assert all(len(hyps) == NBEST for hyps in expected)
    assert len({str([y for y, _ in hyps]) for hyps in expected}) > 1  # utterances decode differently


class RowCounter:
    """The decoder, counting the rows of each decoding step."""

    def __init__(self, decoder):
        self._decoder, self.rows = decoder, []

    def __getattr__(self, name):
        return getattr(self._decoder, name)

    def run_tokens(self, caches, ys, mask=None):
        self.rows.append(ys.shape[0])
        return self._decoder.run_tokens(caches, ys, mask)


def test_an_utterance_that_ends_early_leaves_the_others_unchanged():
    decoder, ctc = search_decoder("mtla"), tiny_ctc()
    xs, enc, lens = inputs([3, 17, 12])  # end detection stops the 3-frame utterance after 3 steps at most
    counter = RowCounter(decoder)
    with torch.no_grad():
        batched = our_search(counter, 0.3)(enc, lens, 0.0, 0.0, ctc_logp=ctc.log_softmax(enc)).hypotheses
        alone = [our_search(decoder, 0.3)(x[None], torch.tensor([len(x)]), 0.0, 0.0,
                                          ctc_logp=ctc.log_softmax(x[None])).hypotheses[0] for x in xs]
    assert_same(nbest_lists(alone), nbest_lists(batched))
    assert counter.rows[:2] == [3, 3 * BEAM] and counter.rows[-1] < 3 * BEAM  # rows left with their utterance
    assert sorted(counter.rows[1:], reverse=True) == counter.rows[1:]


def test_search_returns_its_caches_peak_size():
    """The result carries the caches' peak (no side channel on the decoder): the largest size
    the caches had after any step, rows x slots x bytes per slot over every layer."""
    decoder = search_decoder("mtla")
    sizes = []

    class Measuring(RowCounter):
        def run_tokens(self, caches, ys, mask=None):
            out = super().run_tokens(caches, ys, mask)
            sizes.append(sum(c.batch_size * c.num_slots(c.max_length) * c.bytes_per_slot() for c in caches.layers))
            return out

    _, enc, lens = inputs([9, 12, 7])
    with torch.no_grad():
        result = our_search(Measuring(decoder), 0.0)(enc, lens, max_length=torch.tensor([3, 6, 4]))
    assert result.cache_bytes_peak == max(sizes) > 0
    assert not hasattr(decoder, "active_caches")


def test_max_length_per_utterance_equals_fixed_lengths_one_at_a_time():
    """``max_length`` (N,) gives each utterance what ``maxlenratio = -n`` gives it alone."""
    decoder = search_decoder("mtla")
    xs, enc, lens = inputs([9, 12, 7])
    limits = [3, 6, 4]
    with torch.no_grad():
        batched = our_search(decoder, 0.0)(enc, lens, max_length=torch.tensor(limits)).hypotheses
        alone = [our_search(decoder, 0.0)(x[None], torch.tensor([len(x)]), -n).hypotheses[0]
                 for x, n in zip(xs, limits)]
    assert_same(nbest_lists(alone), nbest_lists(batched))
    assert [max(len(h.yseq) for h in hyps) for hyps in batched] == [n + 2 for n in limits]
    with pytest.raises(ValueError, match=r"max_length must be \(3,\) integers >= 1, one per utterance"):
        our_search(decoder, 0.0)(enc, lens, max_length=torch.tensor([3, 0, 4]))


@pytest.fixture
def host_reads(monkeypatch):
    """Counts the values read back from tensors to Python."""
    reads = []
    for name in ("item", "tolist", "__int__", "__float__", "__bool__", "__index__", "cpu", "numpy"):
        method = getattr(torch.Tensor, name)

        def counted(self, *args, _method=method, _name=name, **kwargs):
            reads.append(_name)
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
def test_host_reads_per_step_do_not_grow_with_the_hypotheses(host_reads, ctc_weight):
    decoder, ctc = search_decoder("mtla"), tiny_ctc()
    for beam, lengths in ((2, [9, 10]), (6, [9, 10, 11, 12, 13, 14, 15, 16])):
        _, enc, lens = inputs(lengths)
        counter = RowCounter(decoder)
        with torch.no_grad():
            ctc_logp = ctc.log_softmax(enc)
            host_reads.clear()
            hyps = our_search(counter, ctc_weight, beam=beam)(enc, lens, -6, -4, ctc_logp=ctc_logp).hypotheses
        assert all(hyps) and len(counter.rows) >= 5
        # one read per step (which utterances are done), a few per batch (lengths, the CTC's
        # frames per utterance, the results)
        assert len(host_reads) <= len(counter.rows) + 6 + (ctc_weight > 0), (beam, host_reads)


def test_search_core_imports_only_torch():
    """The search and the decoder-only stack run where ESPnet is not installed."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('espnet', 'espnet2'):\n"
        "            raise ImportError('no ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch\n"
        "from espnet_mtla.decoder.stack import DecoderOnlyStack\n"
        "from espnet_mtla.search import MultiUtteranceBeamSearch\n"
        "torch.manual_seed(0)\n"
        "stack = DecoderOnlyStack(13, 16, attention_type='mtla', model_dim=32, attention_heads=4, linear_units=48,\n"
        "                         num_blocks=2, dropout_rate=0.0).eval()\n"
        "enc = torch.randn(2, 9, 16)\n"
        "ctc_logp = torch.randn(2, 9, 13).log_softmax(-1)\n"
        "hyps = MultiUtteranceBeamSearch(stack, 12, 12, 3, decoder_weight=0.7, ctc_weight=0.3, pre_beam_size=4)(\n"
        "    enc, torch.tensor([9, 6]), -4, ctc_logp=ctc_logp)\n"
        "assert len(hyps.hypotheses) == 2 and all(hyps.hypotheses)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('espnet', 'espnet2')]\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_budget_batches_sort_by_length_and_stay_within_the_budget():
    lengths = [310, 120, 95, 400, 120, 700]
    batches, alone = budget_batches(lengths, 500)
    assert batches == [[5], [3], [0], [1, 4, 2]] and alone == [5]
    for batch in batches:
        assert len(batch) * lengths[batch[0]] <= 500 or batch == [5]
    assert budget_batches(lengths, 10_000, max_count=2)[0] == [[5, 3], [0, 1], [4, 2]]
    with pytest.raises(ValueError, match="budget must be >= 1"):
        budget_batches(lengths, 0)
    assert speech_frames(16000, 16000) == 100 and speech_frames(16001, 16000) == 101


@pytest.mark.parametrize("attention_type", TYPES)
def test_streaming_simulation_is_refused_with_the_reason(attention_type):
    """ESPnet's BatchBeamSearchOnlineSim re-extends hypotheses as blocks arrive: a decoder-only
    model cannot follow (its speech prefix precedes the text), and says so instead of failing obscurely."""
    from espnet.nets.batch_beam_search_online_sim import BatchBeamSearchOnlineSim

    search = BatchBeamSearchOnlineSim(
        scorers={"decoder": search_decoder(attention_type), "ctc": CTCPrefixScorer(tiny_ctc(), EOS)},
        weights={"decoder": 0.7, "ctc": 0.3}, beam_size=BEAM, vocab_size=VOCAB, sos=EOS, eos=EOS,
        pre_beam_score_key="full")
    search.block_size, search.hop_size, search.look_ahead = 4, 2, 1
    xs, _, _ = inputs()
    with pytest.raises(RuntimeError, match=r"streaming simulation \(BatchBeamSearchOnlineSim, --streaming true\)"):
        search(xs[2], maxlenratio=0.0)
