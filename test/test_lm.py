"""Language models: ``lm: decoder_only`` (parallel = incremental, trained by ESPnet's lm task) and
shallow fusion in the multi-utterance search == ESPnet's BatchBeamSearch with the same LM."""

import pytest
import torch
from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.scorers.ctc import CTCPrefixScorer
from espnet.nets.scorers.length_bonus import LengthBonus
from espnet2.lm.espnet_model import ESPnetLanguageModel
from espnet2.lm.transformer_lm import TransformerLM

import espnet_mtla.tasks.registration  # noqa: F401  (registers lm: decoder_only)
from test_decoder import EOS, TYPES, VOCAB
from test_search import BEAM, assert_same, inputs, nbest_lists, search_decoder, tiny_ctc
from espnet_mtla.lm import DecoderOnlyLM
from espnet_mtla.search import MultiUtteranceBeamSearch
from espnet_mtla.storage.errors import ConfigError

LM_WEIGHT = 0.5


def tiny_lm(attention_type, **overrides):
    torch.manual_seed(7)
    conf = dict(attention_type=attention_type, model_dim=32, attention_heads=4, linear_units=48, num_blocks=2,
                dropout_rate=0.0, gqa_conf={"num_kv_heads": 2},
                mla_conf={"kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8},
                mtla_conf={"down_rate": 2})
    conf.update(overrides)
    lm = DecoderOnlyLM(VOCAB, **conf).eval()
    with torch.no_grad():
        lm.embed.weight.mul_(3.0)  # sharper: searches not decided by float noise between near-ties
    return lm


def espnet_transformer_lm():
    torch.manual_seed(8)
    lm = TransformerLM(VOCAB, pos_enc="sinusoidal", embed_unit=16, att_unit=32, head=4, unit=48, layer=2,
                       dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0).eval()
    with torch.no_grad():
        lm.decoder.weight.mul_(3.0)
    return lm


@pytest.mark.parametrize("attention_type", TYPES)
def test_lm_parallel_equals_incremental(attention_type):
    lm = tiny_lm(attention_type)
    ys = torch.randint(0, VOCAB - 1, (2, 9))
    ys[:, 0] = EOS
    with torch.no_grad():
        logits, hidden = lm(ys, None)
        assert hidden is None and logits.shape == (2, 9, VOCAB)
        for b in range(2):
            state = lm.batch_init_state(torch.zeros(5, 4))
            for t in range(9):
                logp, (state,) = lm.batch_score(ys[b: b + 1, : t + 1], [state], None)
                torch.testing.assert_close(logp[0], logits[b, t].log_softmax(-1), atol=1e-5, rtol=0)


def test_lm_trains_in_espnets_language_model():
    """ESPnet's ESPnetLanguageModel computes its loss through our LM, and gradients reach it."""
    lm = tiny_lm("mtla")
    model = ESPnetLanguageModel(lm=lm, vocab_size=VOCAB)
    text, lengths = torch.randint(1, VOCAB - 1, (3, 6)), torch.tensor([6, 4, 2])
    loss, stats, _ = model(text, lengths)
    loss.backward()
    assert torch.isfinite(loss) and set(stats) >= {"loss"}
    assert all(p.grad is not None for p in lm.parameters() if p.requires_grad)


@pytest.mark.parametrize("key, message", [
    ({"prefix_stack": 2}, "lm_conf: prefix_stack is a decoder option"),
    ({"num_blocks": 0}, "lm_conf: num_blocks must be an integer >= 1"),
    ({"mtla_conf": {"down_rat": 2}}, "down_rat"),
])
def test_lm_config_errors_are_one_line(key, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        tiny_lm("mtla", **key)


def espnet_search_with_lm(decoder, lm, ctc, ctc_weight):
    scorers = {"decoder": decoder, "ctc": CTCPrefixScorer(ctc, EOS), "length_bonus": LengthBonus(VOCAB), "lm": lm}
    weights = {"decoder": 1.0 - ctc_weight, "ctc": ctc_weight, "length_bonus": 0.2, "lm": LM_WEIGHT}
    return BatchBeamSearch(scorers=scorers, weights=weights, beam_size=BEAM, vocab_size=VOCAB, sos=EOS, eos=EOS,
                           pre_beam_score_key="full")


def fusion_case(lm, ctc_weight):
    decoder, ctc = search_decoder("mtla"), tiny_ctc()
    xs, enc, lens = inputs()
    with torch.no_grad():
        reference = espnet_search_with_lm(decoder, lm, ctc, ctc_weight)
        expected = nbest_lists([reference(x, 0.0, 0.0) for x in xs])
        ours = MultiUtteranceBeamSearch(decoder, EOS, EOS, BEAM, decoder_weight=1.0 - ctc_weight,
                                        ctc_weight=ctc_weight, pre_beam_size=int(1.5 * BEAM), penalty=0.2,
                                        nbest=3, lm=lm, lm_weight=LM_WEIGHT)
        result = ours(enc, lens, 0.0, 0.0, ctc_logp=ctc.log_softmax(enc))
        without = MultiUtteranceBeamSearch(decoder, EOS, EOS, BEAM, decoder_weight=1.0 - ctc_weight,
                                           ctc_weight=ctc_weight, pre_beam_size=int(1.5 * BEAM), penalty=0.2,
                                           nbest=3)(enc, lens, 0.0, 0.0, ctc_logp=ctc.log_softmax(enc))
    assert_same(expected, nbest_lists(result.hypotheses))
    assert nbest_lists(result.hypotheses) != nbest_lists(without.hypotheses)  # the LM changes the search
    return result


@pytest.mark.parametrize("attention_type", TYPES)
@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
def test_fusion_equals_espnet_per_utterance(attention_type, ctc_weight):
    result = fusion_case(tiny_lm(attention_type), ctc_weight)
    assert result.lm_cache_bytes_peak > 0


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
def test_fusion_with_espnets_transformer_lm_equals_espnet(ctc_weight):
    result = fusion_case(espnet_transformer_lm(), ctc_weight)
    assert result.lm_cache_bytes_peak > 0  # no KV cache: the layer outputs it keeps, counted in its place


def test_mtla_lm_cache_is_smaller_than_mha():
    sizes = {t: fusion_case(tiny_lm(t), 0.0).lm_cache_bytes_peak for t in ("mha", "mtla")}
    assert sizes["mha"] > 2 * sizes["mtla"], sizes


# -- the inference CLI: --lm_train_config/--lm_file, batched == one utterance at a time ---------------
LM_CONF = dict(model_dim=32, attention_heads=4, linear_units=48, num_blocks=2, dropout_rate=0.0,
               gqa_conf={"num_kv_heads": 2}, mtla_conf={"down_rate": 2},
               mla_conf={"kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8})
ESPNET_LM_CONF = dict(pos_enc="sinusoidal", embed_unit=16, att_unit=32, head=4, unit=48, layer=2, dropout_rate=0.0)


def make_lm(tmp_path, lm: str, attention_type=None, token_list=None):
    """An LM's config.yaml and model file, built by ESPnet's lm task (our lm: decoder_only or its transformer)."""
    from espnet_setup import TOKENS, write_yaml

    conf = {"lm": lm, "token_list": token_list or TOKENS, "token_type": "char",
            "lm_conf": dict(LM_CONF, attention_type=attention_type) if lm == "decoder_only" else ESPNET_LM_CONF}
    write_yaml(tmp_path / "lm.yaml", conf)
    task = espnet_mtla.tasks.registration.ESPNET_LM_MODULE.LMTask
    args = task.get_parser().parse_args(["--config", str(tmp_path / "lm.yaml"), "--output_dir", "unused"])
    torch.manual_seed(4)
    model = task.build_model(args)
    with torch.no_grad():  # a peaky LM, so that it changes the search
        for name, p in model.lm.named_parameters():
            if name in ("embed.weight", "decoder.weight"):
                p.mul_(4.0)
    torch.save(model.state_dict(), tmp_path / "lm.pth")
    write_yaml(tmp_path / "lm_config.yaml", vars(args))
    return ["--lm_train_config", str(tmp_path / "lm_config.yaml"), "--lm_file", str(tmp_path / "lm.pth"),
            "--lm_weight", "0.6"]


@pytest.mark.parametrize("lm, attention_type", [("decoder_only", "mtla"), ("decoder_only", "mha"),
                                                ("transformer", None)])
def test_cli_fusion_batched_equals_one_utterance_at_a_time(tmp_path, lm, attention_type):
    from test_batch_decoding import BUDGET, assert_same_results, decode, make_data, make_model, read

    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")
    lm_options = make_lm(tmp_path, lm, attention_type)
    lengths = ["--maxlenratio", "0", "--minlenratio", "0"]  # end detection (ESPnet's CTC scorer fails on fixed lengths)
    single = decode(tmp_path, "asr", data, "single", "--batch_size", "1", *lengths, *lm_options, ctc_weight="0.3")
    batched = decode(tmp_path, "asr", data, "batched", "--batch_frames", BUDGET["asr"], *lengths, *lm_options,
                     ctc_weight="0.3")
    without = decode(tmp_path, "asr", data, "without", "--batch_frames", BUDGET["asr"], *lengths, ctc_weight="0.3")
    assert_same_results(single, batched)
    assert read(batched / "1best_recog" / "token_int") != read(without / "1best_recog" / "token_int")


@pytest.mark.parametrize("change, message", [
    ("tokens", "the LM's token list differs from the model's (12 vs 12 tokens, first difference at id 3)"),
    ("no_file", "--lm_file: no such file"),
    ("no_config", "--lm_train_config is required with"),
])
def test_cli_lm_input_errors_are_one_line(tmp_path, capsys, change, message):
    from espnet_setup import TOKENS
    from test_batch_decoding import decode, make_data, make_model

    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")
    tokens = TOKENS[:3] + ["z"] + TOKENS[4:] if change == "tokens" else None
    options = make_lm(tmp_path, "decoder_only", "mtla", tokens)
    if change == "no_file":
        options[3] = str(tmp_path / "missing.pth")
    if change == "no_config":
        options = options[2:]
    with pytest.raises(SystemExit) as exit_info:
        decode(tmp_path, "asr", data, "out", "--batch_frames", "400", *options)
    # the message is the exit's (Python prints it as the one line), or was printed before exiting
    code = exit_info.value.code
    err = [code] if isinstance(code, str) else capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_scorer_lms_cache_peak_is_its_largest_state_not_its_last():
    """ESPnet's TransformerLM keeps every layer's outputs per hypothesis: they grow with the
    prefix until utterances finish and leave. The peak is the largest seen after any step."""
    from espnet_mtla.search.fusion import storage_bytes

    lm, sizes = espnet_transformer_lm(), []
    score = lm.batch_score

    def measured(ys, states, xs):
        logp, new = score(ys, states, xs)
        sizes.append(storage_bytes(new))
        return logp, new

    lm.batch_score = measured
    decoder = search_decoder("mtla")
    _, enc, lens = inputs([9, 14, 6])
    search = MultiUtteranceBeamSearch(decoder, EOS, EOS, BEAM, lm=lm, lm_weight=LM_WEIGHT)
    with torch.no_grad():
        result = search(enc, lens, max_length=torch.tensor([2, 7, 4]))
    assert result.lm_cache_bytes_peak == max(sizes) > sizes[-1]
