"""Every task x attention type: YAML -> ESPnet build -> forward/backward -> save -> reload -> beam 3."""

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from espnet_setup import ATTENTION_TYPES, INTENTS, SLU_TOKENS, TASKS, TOKENS, config, parse, write_yaml
import espnet_mtla.tasks.registration as registry
from espnet_mtla.decoder import DecoderOnlyDecoder
from espnet_mtla.storage.errors import ConfigError
from espnet_mtla.models.asr import DecoderOnlyASRModel
from espnet_mtla.models.common import CheckpointMismatchError
from espnet_mtla.models.mt import DecoderOnlyMTModel
from espnet_mtla.models.slu import DecoderOnlySLUModel
from espnet_mtla.models.st import DecoderOnlySTModel

ROOT = Path(__file__).resolve().parent.parent

MODEL_CLASSES = {"asr": DecoderOnlyASRModel, "st": DecoderOnlySTModel, "slu": DecoderOnlySLUModel,
                 "mt": DecoderOnlyMTModel}
INFERENCE = {  # task -> (module, class, config kwarg, model kwarg, extra kwargs)
    "asr": ("asr_inference", "Speech2Text", "asr_train_config", "asr_model_file", {"ctc_weight": 0.3}),
    "st": ("st_inference", "Speech2Text", "st_train_config", "st_model_file", {}),
    "slu": ("slu_inference", "Speech2Understand", "slu_train_config", "slu_model_file", {"ctc_weight": 0.3}),
    "mt": ("mt_inference", "Text2Text", "mt_train_config", "mt_model_file", {"ctc_weight": 0.0}),
}


def batch(task, vocab):
    torch.manual_seed(0)
    text = torch.randint(3, vocab - 1, (2, 6))
    text[1, 4:] = -1
    data = {"text": text, "text_lengths": torch.tensor([6, 4])}
    if task == "mt":
        src = torch.randint(3, vocab - 1, (2, 7))
        src[0, 5:] = -1
        data.update(src_text=src, src_text_lengths=torch.tensor([5, 7]))
    else:
        data.update(speech=torch.randn(2, 8000), speech_lengths=torch.tensor([8000, 6000]))
    return data


def build_save_reload(tmp_path, task, attention_type):
    config_path = tmp_path / "train.yaml"
    write_yaml(config_path, config(task, attention_type))
    args = parse(task, config_path)
    model = registry.ESPNET_TASKS[task].build_model(args)
    # ESPnet's trainer saves config.yaml (the full namespace) and the state dict.
    saved_config = tmp_path / "config.yaml"
    write_yaml(saved_config, vars(args))
    return model, args, saved_config


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_build_train_save_reload_decode(tmp_path, task, attention_type):
    model, args, saved_config = build_save_reload(tmp_path, task, attention_type)
    assert type(model) is MODEL_CLASSES[task]
    assert isinstance(model.decoder, DecoderOnlyDecoder) and model.decoder.attention_type == attention_type

    model.train()
    loss, stats, _ = model(**batch(task, len(args.token_list)))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.decoder.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if task == "slu":
        assert 0.0 <= float(stats["acc_intent"]) <= 1.0
        assert "_calc_att_loss" not in vars(model)  # returned with the stats; nothing kept between calls

    model_file = tmp_path / "model.pth"
    torch.save(model.state_dict(), model_file)
    reloaded, _ = registry.ESPNET_TASKS[task].build_model_from_file(saved_config, model_file)
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name

    module_name, class_name, config_kw, model_kw, extra = INFERENCE[task]
    module = importlib.import_module(f"espnet2.bin.{module_name}")
    infer = getattr(module, class_name)(
        **{config_kw: str(saved_config), model_kw: str(model_file)}, beam_size=3, nbest=3, maxlenratio=-6, **extra
    )
    assert type(infer.beam_search).__name__ == "BatchBeamSearch"
    if task == "mt":
        results = infer(np.array([3, 4, 5, 6, 7]))
    else:
        results = infer(np.random.default_rng(0).standard_normal(6400).astype(np.float32))
    if isinstance(results, tuple):
        results = results[0]
    assert 1 <= len(results) <= 3
    scores = [float(hyp.score) for *_, hyp in results]
    assert scores == sorted(scores, reverse=True)
    for text, token, token_int, hyp in results:
        assert len(token_int) <= 6 and all(0 <= t < len(args.token_list) for t in token_int)
        assert token == [args.token_list[t] for t in token_int]
    cache_bytes = results[0][3].states["decoder"].caches.nbytes()  # the search's caches, from its result
    assert cache_bytes > 0


def test_slu_intent_weight_changes_only_the_intent_term(tmp_path):
    model, args, _ = build_save_reload(tmp_path, "slu", "mtla")
    model.eval()
    data = batch("slu", len(SLU_TOKENS))
    data["text"][:, 0] = SLU_TOKENS.index(INTENTS[0])
    losses = {}
    for weight in (1.0, 3.0):
        model.intent_weight = weight
        with torch.no_grad():
            enc, enc_lens = model.encode(data["speech"], data["speech_lengths"])
            losses[weight], *_ = model._calc_att_loss(enc, enc_lens, data["text"], data["text_lengths"])
    # With weight 1 the loss is exactly ESPnet's label-smoothing loss.
    from espnet.nets.pytorch_backend.transformer.add_sos_eos import add_sos_eos

    ys_in, ys_out = add_sos_eos(data["text"], model.sos, model.eos, model.ignore_id)
    with torch.no_grad():
        logits, _ = model.decoder(enc, enc_lens, ys_in, data["text_lengths"] + 1)
        expected = model.criterion_att(logits, ys_out)
        intent_only = ys_out.clone()
        intent_only[:, 1:] = model.ignore_id
        intent_term = model.criterion_att(logits, intent_only)
    torch.testing.assert_close(losses[1.0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses[3.0], expected + 2.0 * intent_term, rtol=1e-5, atol=1e-5)


def test_reload_is_strict(tmp_path):
    model, _, saved_config = build_save_reload(tmp_path, "asr", "mtla")
    state = model.state_dict()
    state.pop("decoder.layers.1.attn.kv_up.weight")
    state["decoder.extra.weight"] = torch.zeros(1)
    model_file = tmp_path / "model.pth"
    torch.save(state, model_file)
    with pytest.raises(CheckpointMismatchError, match=r"1 missing key\(s\): decoder.layers.1.attn.kv_up.weight; "
                                                      r"1 unexpected key\(s\): decoder.extra.weight"):
        registry.ESPNET_TASKS["asr"].build_model_from_file(saved_config, model_file)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["decoder_conf"].update(attention_type="mtlaa"), "unknown attention_type 'mtlaa'"),
        (lambda c: c["decoder_conf"].update(num_blokcs=2), "decoder_conf: unknown key 'num_blokcs'"),
        (lambda c: c["decoder_conf"]["mtla_conf"].update(downrate=2), "decoder_conf.mtla_conf: unknown key 'downrate'"),
        (lambda c: c["model_conf"].update(ctc_wieght=0.3), "model_conf: unknown key 'ctc_wieght'"),
        (lambda c: c["encoder_conf"].update(num_block=2), "encoder_conf: unknown key 'num_block'"),
        (lambda c: c["decoder_conf"]["mtla_conf"].update(down_rate=0),
         r"^decoder_conf \(mtla\): down_rate must be an integer >= 1, got 0$"),
        (lambda c: c["decoder_conf"].update(attention_conf={"dropout": 1.5}),
         r"^decoder_conf \(mtla\): dropout must be in \[0, 1\), got 1.5$"),
        (lambda c: c["decoder_conf"].update(dropout_rate=1.5), r"^decoder_conf.dropout_rate must be in \[0, 1\), got 1.5$"),
    ],
)
def test_config_mistakes_are_one_line_errors(tmp_path, edit, message):
    conf = config("asr", "mtla")
    edit(conf)
    write_yaml(tmp_path / "train.yaml", conf)
    with pytest.raises(ConfigError, match=message) as info:
        registry.ESPNET_TASKS["asr"].build_model(parse("asr", tmp_path / "train.yaml"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("upstream", ["hubert_local", "wavlm_local"])
def test_s3prl_frontend_from_a_local_checkpoint(tmp_path, upstream):
    from espnet2.bin.asr_inference import Speech2Text

    from espnet_mtla.bin.make_tiny_ssl_checkpoint import build_tiny_ssl_checkpoint

    ckpt = build_tiny_ssl_checkpoint(tmp_path / "ssl.pt", upstream)
    conf = config("asr", "mtla")
    conf.update(frontend="s3prl", normalize=None, frontend_conf={
        "frontend_conf": {"upstream": upstream, "path_or_url": ckpt}, "download_dir": None,
        "multilayer_feature": True})
    conf["encoder_conf"]["input_layer"] = "linear"
    write_yaml(tmp_path / "train.yaml", conf)
    args = parse("asr", tmp_path / "train.yaml")
    model = registry.ESPNET_TASKS["asr"].build_model(args)
    assert model.frontend.output_size() == 64
    loss, _, _ = model(**batch("asr", len(TOKENS)))
    loss.backward()
    torch.save(model.state_dict(), tmp_path / "model.pth")
    write_yaml(tmp_path / "config.yaml", vars(args))
    infer = Speech2Text(str(tmp_path / "config.yaml"), str(tmp_path / "model.pth"), beam_size=2,
                        ctc_weight=0.3, maxlenratio=-4)
    results = infer(np.random.default_rng(0).standard_normal(8000).astype(np.float32))
    assert len(results) >= 1


def test_extracted_features_with_input_size(tmp_path):
    conf = config("asr", "mla")
    conf.update(input_size=20, frontend=None)
    conf.pop("frontend_conf")
    write_yaml(tmp_path / "train.yaml", conf)
    model = registry.ESPNET_TASKS["asr"].build_model(parse("asr", tmp_path / "train.yaml"))
    assert model.frontend is None
    feats = torch.randn(2, 50, 20)
    data = batch("asr", len(TOKENS))
    data.update(speech=feats, speech_lengths=torch.tensor([50, 37]))
    loss, _, _ = model(**data)
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("encoder, encoder_conf", [
    ("conformer", {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 1,
                   "cnn_module_kernel": 3, "input_layer": "conv2d"}),
    ("e_branchformer", {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 1,
                        "cgmlp_linear_units": 64, "cgmlp_conv_kernel": 3, "input_layer": "conv2d"}),
])
def test_other_espnet_encoders_in_front(tmp_path, encoder, encoder_conf):
    conf = config("asr", "mtla")
    conf.update(encoder=encoder, encoder_conf=encoder_conf)
    write_yaml(tmp_path / "train.yaml", conf)
    model = registry.ESPNET_TASKS["asr"].build_model(parse("asr", tmp_path / "train.yaml"))
    loss, _, _ = model(**batch("asr", len(TOKENS)))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.decoder.projector.net[0].in_features == 2 * 32


@pytest.mark.parametrize("template", ["asr_paper", "asr_ssl_paper", "st_paper", "slu_paper", "sum_paper"])
def test_paper_size_templates_build(tmp_path, template):
    """The recipes' paper-size configs build through ESPnet's parser (the sizes of the paper's
    experiments) and take one training step (forward, backward) on a batch of two utterances."""
    import yaml

    from espnet_mtla.bin.make_tiny_ssl_checkpoint import build_tiny_ssl_checkpoint

    conf = yaml.safe_load((ROOT / "conf_templates" / f"{template}.yaml").read_text())
    task = {"asr": "asr", "st": "st", "slu": "slu", "sum": "mt"}[template.split("_")[0]]
    tokens = {"asr": TOKENS, "st": TOKENS, "slu": SLU_TOKENS, "mt": TOKENS}[task]
    conf.update(token_list=tokens, token_type="char")
    if task in ("st", "mt"):
        conf.update(src_token_list=TOKENS, src_token_type="char")
    if conf.get("normalize") == "global_mvn":
        conf["normalize"] = "utterance_mvn"  # no statistics file here
    if conf["frontend"] == "s3prl":
        conf["frontend_conf"]["frontend_conf"]["path_or_url"] = str(build_tiny_ssl_checkpoint(tmp_path / "ssl.pt", "wavlm_local"))
    write_yaml(tmp_path / "train.yaml", conf)
    model = registry.ESPNET_TASKS[task].build_model(parse(task, tmp_path / "train.yaml"))
    decoder = model.decoder
    assert len(decoder.layers) == 9 and decoder.model_dim == 512 and decoder.attention_type == "mtla"
    assert model.encoder.output_size() == 512
    data = batch(task, len(tokens))
    if task == "st":  # the transcript of the ST model's CTC (asr_weight)
        data.update({k: v for k, v in batch("mt", len(TOKENS)).items() if k.startswith("src_")})
    loss, _, _ = model(**data)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in decoder.parameters() if p.grad is not None)
