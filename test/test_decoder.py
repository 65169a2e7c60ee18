"""DecoderOnlyDecoder: parallel = incremental, beam search over shared caches = recomputation."""

import pytest
import torch
from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.beam_search import BeamSearch
from espnet.nets.scorers.length_bonus import LengthBonus

from decoder_reference import RecomputingScorer
from espnet_mtla.decoder import DecoderOnlyDecoder
from espnet_mtla.attention.registry import attention_types
from espnet_mtla.storage.errors import ConfigError

TYPES = attention_types()
VOCAB, ENC_DIM, EOS = 13, 16, 12


def tiny_decoder(attention_type, prefix_mode="kv_only", down_rate=2, **overrides):
    torch.manual_seed(0)
    conf = dict(
        attention_type=attention_type, model_dim=32, attention_heads=4, linear_units=48, num_blocks=2,
        dropout_rate=0.0, prefix_stack=2, prefix_hidden=24, prefix_mode=prefix_mode,
        gqa_conf={"num_kv_heads": 2},
        mla_conf={"kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8},
        mtla_conf={"down_rate": down_rate},
    )
    conf.update(overrides)
    decoder = DecoderOnlyDecoder(VOCAB, ENC_DIM, **conf).eval()
    # Sharpen the output so that searches are not decided by float noise between near-ties.
    with torch.no_grad():
        decoder.embed.weight.mul_(3.0)
    return decoder


def run_search(scorer, x, beam, batch=True, length_bonus=0.0, maxlen=8):
    scorers = {"decoder": scorer, "length_bonus": LengthBonus(VOCAB)}
    cls = BatchBeamSearch if batch else BeamSearch
    search = cls(scorers=scorers, weights={"decoder": 1.0, "length_bonus": length_bonus},
                 beam_size=beam, vocab_size=VOCAB, sos=EOS, eos=EOS, pre_beam_score_key="full")
    return search(x, maxlenratio=-maxlen)


@pytest.mark.parametrize("attention_type", TYPES)
@pytest.mark.parametrize("prefix_mode", ["kv_only", "causal_lm"])
def test_parallel_equals_incremental(attention_type, prefix_mode):
    decoder = tiny_decoder(attention_type, prefix_mode, down_rate=3)
    hs, hlens = torch.randn(3, 11, ENC_DIM), torch.tensor([11, 7, 4])
    ys, ylens = torch.randint(0, VOCAB, (3, 7)), torch.tensor([7, 3, 5])
    with torch.no_grad():
        logits, _ = decoder(hs, hlens, ys, ylens)
    for b in range(3):
        state = decoder.batch_init_state(hs[b, : hlens[b]])
        for t in range(int(ylens[b])):
            logp, (state,) = decoder.batch_score(ys[b : b + 1, : t + 1], [state], None)
            torch.testing.assert_close(logp[0], logits[b, t].log_softmax(-1), atol=1e-5, rtol=0)


def test_prefix_padding_does_not_change_outputs():
    decoder = tiny_decoder("mtla", down_rate=2)
    hs, ys = torch.randn(2, 9, ENC_DIM), torch.randint(0, VOCAB, (2, 4))
    hs_noisy = hs.clone()
    hs_noisy[1, 5:] = 100.0  # padding frames past row 1's length
    with torch.no_grad():
        a, _ = decoder(hs, torch.tensor([9, 5]), ys, torch.tensor([4, 4]))
        b, _ = decoder(hs_noisy, torch.tensor([9, 5]), ys, torch.tensor([4, 4]))
        alone, _ = decoder(hs[1:, :5], torch.tensor([5]), ys[1:], torch.tensor([4]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[1], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention_type", TYPES)
def test_cached_beam_search_equals_recomputation(attention_type):
    decoder = tiny_decoder(attention_type, down_rate=2)
    for seed in range(3):
        torch.manual_seed(seed)
        x = torch.randn(9 + seed, ENC_DIM)
        cached = run_search(decoder, x, beam=3, length_bonus=0.5)
        reference = run_search(RecomputingScorer(decoder), x, beam=3, length_bonus=0.5)
        assert [h.yseq.tolist() for h in cached] == [h.yseq.tolist() for h in reference]
        for h, r in zip(cached, reference):
            assert abs(float(h.score) - float(r.score)) < 1e-4


@pytest.mark.parametrize("attention_type", ["mha", "mtla"])
def test_non_batch_beam_search_matches_batch(attention_type):
    decoder = tiny_decoder(attention_type)
    x = torch.randn(10, ENC_DIM)
    batch = run_search(decoder, x, beam=3)
    single = run_search(decoder, x, beam=3, batch=False)
    assert [h.yseq.tolist() for h in batch] == [h.yseq.tolist() for h in single]


def greedy_teacher_forced(decoder, x, maxlen):
    ys = torch.tensor([[EOS]])
    hlens = torch.tensor([x.shape[0]])
    with torch.no_grad():
        for _ in range(maxlen):
            logits, _ = decoder(x[None], hlens, ys, torch.tensor([ys.shape[1]]))
            token = logits[0, -1].argmax()
            ys = torch.cat([ys, token.view(1, 1)], dim=1)
            if token == EOS:
                break
        logits, _ = decoder(x[None], hlens, ys[:, :-1], torch.tensor([ys.shape[1] - 1]))
        logp = logits[0].log_softmax(-1).gather(1, ys[0, 1:, None]).sum()
    return ys[0].tolist(), float(logp)


@pytest.mark.parametrize("attention_type", TYPES)
def test_beam_one_is_greedy_and_scores_are_teacher_forced_log_probs(attention_type):
    decoder = tiny_decoder(attention_type)
    for seed in range(3):
        torch.manual_seed(10 + seed)
        x = torch.randn(8, ENC_DIM)
        (best,) = run_search(decoder, x, beam=1, maxlen=12)
        tokens, logp = greedy_teacher_forced(decoder, x, maxlen=12)
        assert best.yseq.tolist() == tokens
        assert abs(float(best.score) - logp) < 1e-4


def test_search_reports_cache_bytes():
    decoder = tiny_decoder("mtla", down_rate=2)
    x = torch.randn(10, ENC_DIM)
    best = run_search(decoder, x, beam=3, maxlen=6)[0]
    caches = best.states["decoder"].caches  # the search's shared caches, read from its result
    # prefix of ceil(10 / 2) = 5 frames + sos + up to 6 tokens, 2 tokens per slot, (16 + 4) floats per slot.
    per_row = caches.layers[0].num_slots(caches.layers[0].lengths) * (16 + 4) * 4
    assert caches.nbytes() == 2 * int(per_row.sum())
    assert caches.peak_nbytes >= caches.nbytes() > 0


def test_stale_state_is_refused():
    decoder = tiny_decoder("mla")
    state = decoder.batch_init_state(torch.randn(6, ENC_DIM))
    ys = torch.tensor([[EOS]])
    decoder.batch_score(ys, [state], None)
    with pytest.raises(RuntimeError, match="a decoding state was extended a second time"):
        decoder.batch_score(ys, [state], None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"attention_type": "flash"}, "unknown attention_type 'flash'"),
        ({"mla_conf": {"kv_lora_rnak": 8}}, "decoder_conf.mla_conf: unknown key 'kv_lora_rnak'"),
        ({"mtla_conf": {"down_rate": 0}}, "down_rate must be an integer >= 1"),
        ({"attention_conf": {"dropout": 1.5}}, r"dropout must be in \[0, 1\)"),
        ({"prefix_mode": "both"}, "unknown prefix_mode 'both'"),
        ({"ffn_activation": "tanh"}, "unknown ffn_activation 'tanh'"),
        ({"norm_layout": "post_norm"}, "decoder_conf: unknown norm_layout 'post_norm'; choose one of pre_norm, mtla_fairseq"),
        ({"mla_conf": {"latent_norm": "batch_norm"}}, "latent_norm must be one of layer_norm, rms_norm"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_decoder(overrides.pop("attention_type", "mtla"), **overrides)


def test_unused_family_sections_are_still_checked():
    with pytest.raises(ConfigError, match="decoder_conf.gqa_conf: unknown key 'num_kv_head'"):
        tiny_decoder("mla", gqa_conf={"num_kv_head": 2})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("attention_type", TYPES)
def test_half_precision_parallel_equals_incremental_on_gpu(attention_type, dtype):
    decoder = tiny_decoder(attention_type, down_rate=2).to("cuda", dtype)
    hs = torch.randn(2, 9, ENC_DIM, device="cuda", dtype=dtype)
    hlens, ys = torch.tensor([9, 6], device="cuda"), torch.randint(0, VOCAB, (2, 5), device="cuda")
    with torch.no_grad():
        logits, _ = decoder(hs, hlens, ys, torch.tensor([5, 5], device="cuda"))
    for b in range(2):
        state = decoder.batch_init_state(hs[b, : hlens[b]])
        for t in range(5):
            logp, (state,) = decoder.batch_score(ys[b : b + 1, : t + 1], [state], None)
            torch.testing.assert_close(logp[0].float(), logits[b, t].float().log_softmax(-1), atol=2e-2, rtol=0)
