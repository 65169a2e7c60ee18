"""decoder: cached_transformer, the encoder-decoder decoder with real caches.

Against ESPnet's TransformerDecoder on its own weights (log-probs, n-best with CTC); parallel ==
incremental for every attention type and source memory, padded batches included; our batched
search == ESPnet's per-utterance search; the source memory is projected once per utterance and
layer; configs: ESPnet's load, mistakes are one line.
"""

from pathlib import Path

import pytest
import torch
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder

from test_decoder import ENC_DIM, EOS, TYPES, VOCAB
from test_search import BEAM, assert_same, espnet_search, inputs, nbest_lists, our_search, tiny_ctc
from espnet_mtla.decoder.cached_transformer import CachedTransformerDecoder
from espnet_mtla.decoder.encoder_decoder import EncoderDecoderStack
from espnet_mtla.storage.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

SIZES = dict(attention_heads=4, linear_units=48, num_blocks=2)
LATENT = {"kv_lora_rank": 16, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4}
SOURCES = {"mha": {}, "latent": {"source_attention": "latent", "source_conf": {"kv_lora_rank": 8}},
           "latent s=3": {"source_attention": "latent", "source_conf": {"kv_lora_rank": 8, "down_rate": 3}}}


def ours(attention_type="mha", source="mha", cls=CachedTransformerDecoder, **overrides):
    torch.manual_seed(0)
    conf = dict(SIZES, dropout_rate=0.0, positional_dropout_rate=0.0, attention_type=attention_type,
                gqa_conf={"num_kv_heads": 2}, mla_conf=LATENT, mtla_conf={"down_rate": 2}, **SOURCES[source])
    decoder = cls(VOCAB, ENC_DIM, **{**conf, **overrides}).eval()
    with torch.no_grad():  # sharper outputs: few near-ties in the searches
        decoder.output_layer.weight.mul_(3.0)
    return decoder


def espnet_decoder(**options):
    torch.manual_seed(1)
    decoder = TransformerDecoder(VOCAB, ENC_DIM, dropout_rate=0.0, positional_dropout_rate=0.0, **SIZES,
                                 **options).eval()
    with torch.no_grad():
        decoder.output_layer.weight.mul_(3.0)
    return decoder


def teacher_forcing_batch(seed=2):
    gen = torch.Generator().manual_seed(seed)
    hs = torch.randn(3, 19, ENC_DIM, generator=gen)
    ys = torch.randint(0, EOS, (3, 7), generator=gen)
    return hs, torch.tensor([19, 12, 5]), ys, torch.tensor([7, 4, 2])


# -- drop-in for ESPnet's TransformerDecoder -------------------------------------------------------
@pytest.mark.parametrize("layout", [{}, {"normalize_before": False, "concat_after": True}])
def test_espnet_weights_load_unchanged_and_give_espnets_log_probs(layout):
    reference, decoder = espnet_decoder(**layout), ours(**layout)
    assert sorted(decoder.state_dict()) == sorted(reference.state_dict())  # ESPnet's names, both ways
    decoder.load_state_dict(reference.state_dict(), strict=True)
    hs, hlens, ys, ylens = teacher_forcing_batch()
    with torch.no_grad():
        expected, _ = reference(hs, hlens, ys, ylens)
        got, lens = decoder(hs, hlens, ys, ylens)
    real = torch.arange(ys.shape[1]) < ylens[:, None]
    assert torch.equal(lens, ylens)
    assert (expected - got)[real].abs().max() < 1e-5
    # step by step through ESPnet's scorer interface, as its searches call it
    x, yseq, ref_states, state = hs[0], torch.tensor([[EOS]]), [None], decoder.batch_init_state(hs[0])
    for _ in range(6):
        ref_logp, ref_states = reference.batch_score(yseq, ref_states, x[None])
        logp, (state,) = decoder.batch_score(yseq, [state], x[None])
        assert (ref_logp - logp).abs().max() < 1e-5
        yseq = torch.cat([yseq, ref_logp.argmax(-1, keepdim=True)], dim=1)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
def test_espnet_model_decodes_to_the_same_nbest_with_joint_ctc(ctc_weight):
    reference, decoder, ctc = espnet_decoder(), ours(), tiny_ctc()
    decoder.load_state_dict(reference.state_dict())
    xs, _, _ = inputs()
    with torch.no_grad():
        expected = nbest_lists([espnet_search(reference, ctc, ctc_weight, 0.0, False)(x, 0.0, 0.0) for x in xs])
        got = nbest_lists([espnet_search(decoder, ctc, ctc_weight, 0.0, False)(x, 0.0, 0.0) for x in xs])
    assert_same(expected, got)


# -- every attention type and source memory -------------------------------------------------------
@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("attention_type", TYPES)
def test_parallel_equals_incremental_with_padding(attention_type, source):
    decoder = ours(attention_type, source, cls=EncoderDecoderStack)
    hs, hlens, ys, ylens = teacher_forcing_batch()
    with torch.no_grad():
        parallel, _ = decoder(hs, hlens, ys, ylens)
        caches = decoder.new_caches(3, 2, hs)  # caches grow as tokens come
        decoder.fill_prefix(caches, hs, hlens)
        steps = torch.cat([decoder.run_tokens(caches, ys[:, t: t + 1]) for t in range(ys.shape[1])], dim=1)
    real = torch.arange(ys.shape[1]) < ylens[:, None]
    assert (parallel - steps)[real].abs().max() < 1e-5
    # a row's outputs do not depend on the padding of the others
    with torch.no_grad():
        alone, _ = decoder(hs[2:, :5], hlens[2:], ys[2:, :2], ylens[2:])
    assert (alone[0] - parallel[2, :2]).abs().max() < 1e-5


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
@pytest.mark.parametrize("attention_type,source", [("mha", "mha"), ("mla", "latent"), ("mtla", "latent s=3"),
                                                   ("gqa", "mha")])
def test_batched_search_equals_espnet_per_utterance(attention_type, source, ctc_weight):
    decoder, ctc = ours(attention_type, source), tiny_ctc()
    xs, enc, lens = inputs()
    with torch.no_grad():
        expected = nbest_lists([espnet_search(decoder, ctc, ctc_weight, 0.0, False)(x, 0.0, 0.0) for x in xs])
        got = nbest_lists(our_search(decoder, ctc_weight)(enc, lens, 0.0, 0.0,
                                                          ctc_logp=ctc.log_softmax(enc)).hypotheses)
    assert_same(expected, got)
    assert len({str([y for y, _ in hyps]) for hyps in expected}) > 1  # utterances decode differently


@pytest.mark.parametrize("source", ["mha", "latent"])
def test_source_memory_is_projected_once_per_utterance_and_layer(source):
    """ESPnet projects the encoder output for every hypothesis at every step; here once."""
    decoder = ours("mtla", source)
    projected = []
    for layer in decoder.decoders:
        module = layer.src_attn.linear_k if source == "mha" else layer.src_attn.kv_down
        module.register_forward_hook(lambda mod, args, out: projected.append(args[0].shape[0]))
    _, enc, lens = inputs()
    with torch.no_grad():
        result = our_search(decoder, 0.0)(enc, lens, 0.0, 0.0)
    assert projected == [len(lens)] * len(decoder.decoders)  # one call per layer, over the utterances
    assert all(len(hyps) > 0 for hyps in result.hypotheses)


def test_latent_source_memory_holds_fewer_bytes():
    _, enc, lens = inputs()
    held = {}
    for source in SOURCES:
        decoder = ours("mtla", source)
        caches = decoder.new_caches(len(lens), 4, enc)
        decoder.fill_prefix(caches, enc, lens)
        held[source] = caches.source_nbytes()
    frames, layers = enc.shape[1], SIZES["num_blocks"]
    assert held["mha"] == len(lens) * layers * 2 * frames * ENC_DIM * 4  # keys + values, fp32
    assert held["latent"] == len(lens) * layers * frames * 8 * 4  # one 8-d latent per frame
    assert held["latent s=3"] == len(lens) * layers * -(-frames // 3) * 8 * 4


# -- configs ----------------------------------------------------------------------------------------
def test_config_mistakes_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^decoder_conf: unknown key 'num_block'; valid keys: "):
        ours(num_block=3)
    with pytest.raises(ConfigError, match=r"^decoder_conf: unknown attention_type 'mlta'; choose one of "):
        ours("mlta")
    with pytest.raises(ConfigError, match=r"^decoder_conf.source_conf: unknown key 'rank'; valid keys: "):
        ours(source_attention="latent", source_conf={"rank": 8})
    with pytest.raises(ConfigError, match=r"^decoder_conf: unknown source_attention .mla.; choose one of mha, latent, auto$"):
        ours(source_attention="mla")
    with pytest.raises(ConfigError, match=r"^decoder_conf: qk_norm: True is not supported by cached_transformer"):
        ours(qk_norm=True)
    with pytest.raises(ConfigError, match=r"^decoder_conf: attention_heads must be an integer >= 1, got 0$"):
        ours(attention_heads=0)
    with pytest.raises(ConfigError, match=r"^decoder_conf: source_conf.down_rate must be an integer >= 1, got 0$"):
        ours(source_attention="latent", source_conf={"kv_lora_rank": 8, "down_rate": 0})
    with pytest.raises(ConfigError, match=r"^decoder_conf: input_layer 'linear' is not supported by cached_transformer"):
        ours(input_layer="linear")


def test_an_espnet_decoder_config_builds_with_one_word_changed(tmp_path):
    """A config written for ESPnet's ``decoder: transformer`` (its keys, its defaults) builds
    ``decoder: cached_transformer`` through ESPnet's own ASR task."""
    import yaml

    import espnet_mtla.tasks.registration as registry

    config = {
        "token_list": ["<blank>", "<unk>"] + list("abcdefghij") + ["<sos/eos>"], "token_type": "char",
        "frontend": "default", "frontend_conf": {"n_fft": 512, "hop_length": 160, "n_mels": 20},
        "encoder": "transformer", "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32,
                                                   "num_blocks": 1, "input_layer": "conv2d"},
        "decoder": "cached_transformer",
        "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 2, "dropout_rate": 0.1,
                         "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1,
                         "src_attention_dropout_rate": 0.1, "use_flash_attn": False},
        "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    task = registry.ESPNET_TASKS["asr"]
    args = task.get_parser().parse_args(["--config", str(path), "--output_dir", "unused"])
    model = task.build_model(args)
    assert type(model.decoder).__name__ == "CachedTransformerDecoder"
    assert type(model).__name__ == "ESPnetASRModel"  # ESPnet's own model: attention + CTC loss
    speech = torch.randn(2, 8000)
    text = torch.tensor([[2, 3, 4], [5, 6, -1]])
    loss, stats, _ = model(speech, torch.tensor([8000, 6000]), text, torch.tensor([3, 2]))
    loss.backward()
    assert torch.isfinite(loss) and stats["acc"] is not None


def test_auto_source_follows_the_self_attention():
    """source_attention: auto: per-head for the MHA family, the self-attention's latent for
    MLA, merged over MTLA's down_rate for MTLA: one word switches both."""
    got = {}
    for attention_type in TYPES:
        src = ours(attention_type, source_attention="auto").decoders[0].src_attn
        got[attention_type] = (src.kind, getattr(src, "down_rate", None),
                               src.kv_down.out_features if src.kind == "latent" else None)
    assert got == {"mha": ("mha", None, None), "mqa": ("mha", None, None), "gqa": ("mha", None, None),
                   "mla": ("latent", 1, LATENT["kv_lora_rank"]), "mtla": ("latent", 2, LATENT["kv_lora_rank"])}


@pytest.mark.parametrize("template", sorted(p.name for p in (ROOT / "conf_templates").glob("*_encdec.yaml")))
def test_encoder_decoder_templates_build_espnets_models(template, tmp_path):
    """Every encoder-decoder template builds ESPnet's own model of its task around our decoder."""
    import yaml

    import espnet_mtla.tasks.registration as registry

    task = {"sum": "mt"}.get(template.split("_")[0], template.split("_")[0])
    conf = yaml.safe_load((ROOT / "conf_templates" / template).read_text())
    tokens = ["<blank>", "<unk>"] + list("abcdefgh") + ["<sos/eos>"]
    conf.update(token_list=tokens, token_type="char")
    conf.pop("normalize", None)  # global_mvn needs the recipe's statistics
    if task in ("st", "mt"):
        conf.update(src_token_list=tokens, src_token_type="char")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(conf))
    espnet_task = registry.ESPNET_TASKS[task]
    model = espnet_task.build_model(espnet_task.get_parser().parse_args(
        ["--config", str(tmp_path / "train.yaml"), "--output_dir", "unused"]))
    assert type(model.decoder).__name__ == "CachedTransformerDecoder"
    assert type(model).__module__.startswith("espnet2.")  # ESPnet's model class, not ours
    assert model.decoder.decoders[0].src_attn.kind == "latent"  # the templates' MTLA: latent source


# -- small faults ------------------------------------------------------------------------------------
def test_tokens_without_a_source_memory_are_refused():
    decoder = ours("mtla", "latent")
    caches = decoder.new_caches(2, 4, torch.zeros(1, 1, ENC_DIM))
    with pytest.raises(ValueError, match="call fill_prefix first"):
        decoder.run_tokens(caches, torch.ones(2, 1, dtype=torch.long))


@pytest.mark.parametrize("attention_type", ["mla", "mtla"])
def test_latent_self_attention_saves_its_own_names_and_loads_the_old_ones(attention_type):
    """MLA/MTLA keep their own names (q_proj, kv_down, ...): ESPnet's linear_q/linear_out were
    MHA's. Checkpoints saved with them before (linear_q beside kv_down) still load."""
    decoder = ours(attention_type, "latent")
    state = decoder.state_dict()
    names = {k.split(".self_attn.")[1].split(".")[0] for k in state if ".self_attn." in k}
    assert {"q_proj", "out_proj", "kv_down"} <= names and not names & {"linear_q", "linear_out"}
    old = {k.replace("self_attn.q_proj.", "self_attn.linear_q.").replace("self_attn.out_proj.", "self_attn.linear_out."): v
           for k, v in state.items()}
    fresh = ours(attention_type, "latent")
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), state.values()))
    mha = ours("mha").state_dict()
    assert any(".self_attn.linear_q." in k for k in mha)  # MHA keeps ESPnet's names


def test_position_frequencies_are_computed_once_and_stay_float32():
    decoder = ours("mha").to(torch.bfloat16)
    encoding = decoder.embed[1]
    x = torch.zeros(1, 3, ENC_DIM, dtype=torch.bfloat16)
    first = encoding(x, torch.tensor([[0, 500, 1000]]))
    table = encoding.frequencies(x.device)
    assert table.dtype == torch.float32 and encoding(x, torch.tensor([[0, 500, 1000]])).equal(first)
    assert encoding.frequencies(x.device) is table
    angle = 1000 * torch.exp(torch.tensor(-(2 / ENC_DIM) * torch.log(torch.tensor(10000.0))))
    assert float(first[0, 2, 2]) == pytest.approx(float(angle.sin()), abs=1e-2)
    assert not [k for k in decoder.state_dict() if "frequenc" in k]  # checkpoints keep ESPnet's keys
