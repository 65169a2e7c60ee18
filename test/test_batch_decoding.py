"""--batch_size N (many utterances per beam search) gives --batch_size 1's hypotheses and scores."""

import json

import numpy as np
import pytest
import soundfile
import torch

from espnet_setup import ATTENTION_TYPES, TASKS, config, encoder_decoder_config, parse, write_yaml
import espnet_mtla.tasks.registration as registry
from espnet_mtla.cli.inference import run_inference

# Very different lengths, in an order that is not sorted, so that batches mix them.
SECONDS = [0.35, 2.4, 0.8, 1.6, 0.25, 3.1, 1.1]
NBEST = ("1best_recog", "2best_recog", "3best_recog")
SOURCES = ["ab", "h g f e d c b a h g f", "cab", "d e f g a", "b", "a b c d e f g h a b c d e f", "ggg"]


def make_model(tmp_path, task, attention_type, source_attention=None):
    """A random model of ``task``: decoder-only, or with ``source_attention`` ESPnet's own model
    with ``decoder: cached_transformer``."""
    if source_attention:
        conf = encoder_decoder_config(task, attention_type, source_attention)
    else:
        conf = config(task, attention_type)
        conf["decoder_conf"]["tie_embeddings"] = False  # a random tied model just repeats its last token
    write_yaml(tmp_path / "train.yaml", conf)
    args = parse(task, tmp_path / "train.yaml")
    torch.manual_seed(1)
    model = registry.ESPNET_TASKS[task].build_model(args)
    with torch.no_grad():  # peaky next-token distributions, as a trained model has (no near-ties)
        if source_attention:
            model.decoder.output_layer.weight.mul_(3.0)
            model.decoder.output_layer.weight[:2] = 0.0
            model.decoder.output_layer.bias[:2] = 0.0
        else:
            model.decoder.final_norm.weight.mul_(3.0)
            model.decoder.output.weight[:2] = 0.0  # <blank>, <unk>: logit 0, so that real tokens win
    torch.save(model.state_dict(), tmp_path / "model.pth")
    write_yaml(tmp_path / "config.yaml", vars(args))


def make_data(tmp_path, task):
    if task == "mt":
        (tmp_path / "src").write_text("".join(f"u{i} {s}\n" for i, s in enumerate(SOURCES)))
        return f"{tmp_path / 'src'},src_text,text"
    rng = np.random.default_rng(0)
    lines = []
    for i, seconds in enumerate(SECONDS):
        path = tmp_path / f"u{i}.flac"
        soundfile.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
        lines.append(f"u{i} {path}\n")
    (tmp_path / "wav.scp").write_text("".join(lines))
    return f"{tmp_path / 'wav.scp'},speech,sound"


def decode(tmp_path, task, data, out, *options, ctc_weight="0"):
    run_inference(task, [f"--{task}_train_config", str(tmp_path / "config.yaml"), f"--{task}_model_file",
                         str(tmp_path / "model.pth"), "--data_path_and_name_and_type", data, "--output_dir",
                         str(tmp_path / out), "--beam_size", "4", "--nbest", "3",  # (nbest 2: ESPnet's st_inference misreads 2 results)
                         "--minlenratio", "-2", "--maxlenratio", "-7", "--ngpu", "0", *options]
                  + ([] if task in ("st", "mt") else ["--ctc_weight", ctc_weight]))
    return tmp_path / out


# Budgets that give batches of 1, 2 and 3 utterances of different lengths (speech: 10 ms frames
# 35, 240, 80, 160, 25, 310, 110 -> [u5], [u1], [u3 u6], [u2 u0 u4]).
BUDGET = {"asr": "400", "st": "400", "slu": "400", "mt": "40"}


def read(path):
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def score(text):
    return float(text.strip().removeprefix("tensor(").removesuffix(")"))


def assert_same_results(single, batched, every_id=True):
    for n in NBEST:
        a, b = single / n, batched / n
        assert read(a / "token_int") == read(b / "token_int")
        if every_id:
            assert sorted(read(b / "token_int")) == sorted(f"u{i}" for i in range(len(SECONDS)))
        for key, value in read(a / "score").items():
            # ESPnet prints scores with 4 decimals: at most one unit of the last digit apart.
            assert round(abs(score(value) - score(read(b / "score")[key])), 6) <= 1e-4, key


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_batches_of_utterances_give_the_single_utterance_results(tmp_path, task, attention_type):
    make_model(tmp_path, task, attention_type)
    data = make_data(tmp_path, task)
    single = decode(tmp_path, task, data, "single", "--batch_size", "1")
    batched = decode(tmp_path, task, data, "batched", "--batch_frames", BUDGET[task])
    assert_same_results(single, batched)
    # written in input order, as ESPnet writes them
    assert [line.split()[0] for line in (batched / "1best_recog" / "token_int").read_text().splitlines()] == \
        [f"u{i}" for i in range(len(SECONDS))]
    nbest_lists = {key: tuple(read(single / n / "token_int")[key] for n in NBEST) for key in read(single / "1best_recog" / "token_int")}
    assert len(set(nbest_lists.values())) > 1  # the utterances' n-best lists are not all alike
    assert all(len(h.split()) >= 2 for hyps in nbest_lists.values() for h in hyps)  # --minlenratio -2
    report = json.loads((batched / "1best_recog" / "efficiency.json").read_text())
    assert report["num_utterances"] == len(SECONDS) and report["utterances_per_s"] > 0
    assert len({u["batch_size"] for u in report["utterances"].values()}) > 1
    assert report["cache_bytes_peak"] > 0


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("attention_type,source_attention", [("mha", "mha"), ("mtla", "latent")])
def test_encoder_decoder_batches_give_the_single_utterance_results(tmp_path, task, attention_type, source_attention):
    """ESPnet's own models with decoder: cached_transformer."""
    make_model(tmp_path, task, attention_type, source_attention)
    data = make_data(tmp_path, task)
    single = decode(tmp_path, task, data, "single", "--batch_size", "1")
    batched = decode(tmp_path, task, data, "batched", "--batch_frames", BUDGET[task])
    assert_same_results(single, batched)
    nbest_lists = {key: tuple(read(single / n / "token_int")[key] for n in NBEST) for key in read(single / "1best_recog" / "token_int")}
    assert len(set(nbest_lists.values())) > 1


@pytest.mark.parametrize("task", ["asr", "slu"])
@pytest.mark.parametrize("options", [("--maxlenratio", "0"), ("--maxlenratio", "0.3", "--minlenratio", "0.1"),
                                     ("--maxlenratio", "0.5", "--penalty", "0.5", "--normalize_length", "true")])
@pytest.mark.parametrize("source_attention", [None, "latent"])
def test_joint_ctc_attention_batches_give_the_single_utterance_results(tmp_path, task, options, source_attention):
    make_model(tmp_path, task, "mtla", source_attention)
    data = make_data(tmp_path, task)
    single = decode(tmp_path, task, data, "single", "--batch_size", "1", *options, ctc_weight="0.3")
    batched = decode(tmp_path, task, data, "batched", "--batch_frames", BUDGET[task], *options, ctc_weight="0.3")
    assert_same_results(single, batched, every_id=False)


def test_batch_size_and_budget_together(tmp_path):
    """--batch_size N caps the utterances of a budget batch; --batch_size 1 keeps ESPnet's search."""
    make_model(tmp_path, "asr", "mha")
    data = make_data(tmp_path, "asr")
    single = decode(tmp_path, "asr", data, "single", "--batch_frames", "400", "--batch_size", "1")
    capped = decode(tmp_path, "asr", data, "capped", "--batch_frames", "100000", "--batch_size", "2")
    assert_same_results(single, capped)
    sizes = {u["batch_size"] for u in json.loads((capped / "1best_recog" / "efficiency.json").read_text())["utterances"].values()}
    assert sizes == {1, 2}
    assert {u["batch_size"] for u in json.loads((single / "1best_recog" / "efficiency.json").read_text())["utterances"].values()} == {1}
    # each report says how it decoded (RESULTS rows are compared only where that is the same)
    how = {name: json.loads((path / "1best_recog" / "efficiency.json").read_text())["decoding"]
           for name, path in (("single", single), ("capped", capped))}
    assert {k: how["single"][k] for k in ("search", "beam_size", "batch_frames", "batch_size", "ctc_weight", "device")} == \
        {"search": "per-utterance", "beam_size": 4, "batch_frames": None, "batch_size": 1, "ctc_weight": 0.0, "device": "cpu"}
    assert {k: how["capped"][k] for k in ("search", "batch_frames", "batch_size")} == \
        {"search": "batched", "batch_frames": 100000, "batch_size": 2}
    assert how["capped"]["machine"] == how["single"]["machine"] and how["capped"]["lm_weight"] is None


def test_a_budget_below_the_longest_utterance_decodes_it_alone(tmp_path, caplog):
    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")
    single = decode(tmp_path, "asr", data, "single", "--batch_size", "1")
    with caplog.at_level("WARNING"):
        small = decode(tmp_path, "asr", data, "small", "--batch_frames", "200")
    assert_same_results(single, small)
    notices = [r.getMessage() for r in caplog.records if "--batch_frames" in r.getMessage()]
    assert notices == ["2 utterance(s) exceed --batch_frames 200 on their own (longest: u5, 310 frames): decoded alone"]


@pytest.mark.parametrize("options, message", [
    (["--batch_frames", "0"], "error: --batch_frames must be >= 1 (frames per batch), got 0; use --batch_size 1 "
                              "to decode one utterance at a time"),
    (["--batch_frames", "-5"], "error: --batch_frames must be >= 1 (frames per batch), got -5; use --batch_size 1 "
                               "to decode one utterance at a time"),
    (["--batch_frames", "400", "--beam_size", "0"], "error: --beam_size must be >= 1, got 0"),
])
def test_a_budget_or_beam_that_cannot_work_is_one_line(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as info:
        run_inference("asr", ["--output_dir", str(tmp_path / "out"), "--data_path_and_name_and_type",
                              f"{tmp_path / 'wav.scp'},speech,sound", *options])
    assert str(info.value) == message
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("task", TASKS)
def test_end_detection_and_dropped_short_hypotheses_match_too(tmp_path, task):
    """maxlenratio 0: lengths from the encoder, end detection; an utterance may end with no hypothesis."""
    make_model(tmp_path, task, "mtla")
    data = make_data(tmp_path, task)
    single = decode(tmp_path, task, data, "single", "--batch_size", "1", "--maxlenratio", "0")
    batched = decode(tmp_path, task, data, "batched", "--batch_size", "3", "--maxlenratio", "0")
    assert_same_results(single, batched, every_id=False)


def test_batch_encoder_is_exact_for_text_sources(tmp_path):
    make_model(tmp_path, "mt", "mtla")
    data = make_data(tmp_path, "mt")
    single = decode(tmp_path, "mt", data, "single", "--batch_size", "1")
    batched = decode(tmp_path, "mt", data, "batched", "--batch_size", "7", "--batch_encoder", "true")
    assert read(single / "1best_recog" / "token_int") == read(batched / "1best_recog" / "token_int")


def test_batch_encoder_takes_true_or_false(tmp_path):
    with pytest.raises(SystemExit, match="^error: --batch_encoder takes one of true, false$"):
        run_inference("mt", ["--batch_size", "2", "--batch_encoder", "yes", "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_cuda_graphs_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    make_model(tmp_path, "mt", "mtla")
    data = make_data(tmp_path, "mt")
    with pytest.raises(SystemExit):
        decode(tmp_path, "mt", data, "out", "--batch_size", "2", "--cuda_graphs", "true")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --cuda_graphs true replays batched decoding steps on a GPU: it needs --ngpu 1 and "
                   "--batch_frames N or --batch_size N > 1"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_cuda_graphs_refuse_an_encoder_decoder_model_in_one_line(tmp_path):
    """A replayed step pads its rows, which an encoder-decoder's per-utterance source memory cannot
    group (reached here below the CLI, whose GPU check comes first on a CPU machine)."""
    import importlib

    from espnet_mtla.cli import batch_inference
    from espnet_mtla.cli.options import inference_parser
    from espnet_mtla.metrics.efficiency import EfficiencyRecorder
    from espnet_mtla.storage.errors import BatchDecodingError
    from espnet_mtla.task_specs import get_task

    make_model(tmp_path, "mt", "mtla", "latent")
    data = make_data(tmp_path, "mt")
    module = importlib.import_module("espnet2.bin.mt_inference")
    args = inference_parser(module).parse_args([
        "--mt_train_config", str(tmp_path / "config.yaml"), "--mt_model_file", str(tmp_path / "model.pth"),
        "--data_path_and_name_and_type", data, "--output_dir", str(tmp_path / "out"), "--batch_size", "2"])
    with pytest.raises(BatchDecodingError, match=r"^--cuda_graphs true replays decoder_only models only \(the "
                                                 r"encoder-decoder's source memory is read per utterance\): use "
                                                 r"--cuda_graphs false$"):
        batch_inference.decode(module, get_task("mt"), args, EfficiencyRecorder("cpu", total=7), cuda_graphs=True)
    assert not (tmp_path / "out").exists()


def test_attn_backend_option_keeps_the_results(tmp_path, monkeypatch):
    """--attn_backend switches how the loaded model computes attention, never the hypotheses;
    triton runs its kernel in Triton's CPU interpreter here (see conftest.py)."""
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the interpreter is off (conftest.py) and this decodes on the CPU")
    from espnet_mtla.attention import triton_decode

    kernel_calls = []
    kernel = triton_decode.latent_decode
    monkeypatch.setattr(triton_decode, "latent_decode", lambda *a, **k: kernel_calls.append(1) or kernel(*a, **k))
    make_model(tmp_path, "mt", "mtla")
    data = make_data(tmp_path, "mt")
    default = decode(tmp_path, "mt", data, "default", "--batch_size", "1")
    for backend, batch_size in (("eager", "1"), ("eager", "7"), ("triton", "1"), ("triton", "7")):
        out = decode(tmp_path, "mt", data, f"{backend}-{batch_size}", "--batch_size", batch_size, "--attn_backend", backend)
        assert_same_results(default, out)
        assert bool(kernel_calls) == (backend == "triton"), backend
        kernel_calls.clear()


def test_attn_backend_takes_a_known_backend(tmp_path):
    with pytest.raises(SystemExit, match="^error: --attn_backend takes one of auto, eager, sdpa, triton$"):
        run_inference("mt", ["--attn_backend", "flash", "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# -- precision, the CTC window, out of memory, unreadable audio ------------------------------------
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_decodes_with_joint_ctc(tmp_path, dtype):
    """--dtype float16 with CTC used to overflow (LOGZERO in float16); bfloat16 was no choice.
    The search state is float32; the model runs in the dtype (CPU kernels emulate it here)."""
    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")
    full = decode(tmp_path, "asr", data, "fp32", "--batch_frames", "400", ctc_weight="0.3")
    half = decode(tmp_path, "asr", data, dtype, "--batch_frames", "400", "--dtype", dtype, ctc_weight="0.3")
    hyps, ref = read(half / "1best_recog" / "token_int"), read(full / "1best_recog" / "token_int")
    assert sorted(hyps) == sorted(ref)
    assert sum(hyps[k] == ref[k] for k in ref) >= len(ref) // 2  # random weights: near-ties flip


def test_bfloat16_needs_batched_decoding(tmp_path, capsys):
    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")
    with pytest.raises(SystemExit, match="^error: --dtype bfloat16 needs batched decoding"):
        decode(tmp_path, "asr", data, "out", "--batch_size", "1", "--dtype", "bfloat16")
    assert not (tmp_path / "out").exists()


def test_a_ctc_window_wider_than_the_utterances_changes_nothing(tmp_path):
    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")
    full = decode(tmp_path, "asr", data, "full", "--batch_frames", "400", ctc_weight="0.3")
    windowed = decode(tmp_path, "asr", data, "windowed", "--batch_frames", "400", "--ctc_window_margin", "60",
                      ctc_weight="0.3")
    assert_same_results(full, windowed)
    with pytest.raises(SystemExit, match="^error: --ctc_window_margin must be >= 0 frames"):
        decode(tmp_path, "asr", data, "bad", "--batch_frames", "400", "--ctc_window_margin", "-1")


def test_a_batch_that_runs_out_of_memory_is_split_until_it_fits(tmp_path, monkeypatch, caplog):
    """Injected: any search of more than one utterance runs out of memory. Each batch is halved
    down to single utterances, with one line per split, and the outputs are the unsplit run's."""
    from espnet_mtla.search import beam_search

    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")
    whole = decode(tmp_path, "asr", data, "whole", "--batch_size", "4", ctc_weight="0.3")
    search = beam_search.MultiUtteranceBeamSearch.__call__

    def small_memory(self, enc, *args, **kwargs):
        if enc.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return search(self, enc, *args, **kwargs)

    monkeypatch.setattr(beam_search.MultiUtteranceBeamSearch, "__call__", small_memory)
    split = decode(tmp_path, "asr", data, "split", "--batch_size", "4", ctc_weight="0.3")
    assert_same_results(whole, split)
    lines = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert lines[0] == "out of memory on a batch of 4 utterances (u0 ... u3): decoding it as 2 + 2"
    assert len(lines) == 5  # 4 -> 2 + 2, each -> 1 + 1; 3 -> 1 + 2, 2 -> 1 + 1
    report = json.loads((split / "1best_recog" / "efficiency.json").read_text())
    assert {u["batch_size"] for u in report["utterances"].values()} == {1}


def test_an_utterance_out_of_memory_alone_is_one_line(tmp_path, monkeypatch, capsys):
    from espnet_mtla.search import beam_search

    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")

    def no_memory(self, *args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(beam_search.MultiUtteranceBeamSearch, "__call__", no_memory)
    with pytest.raises(SystemExit):
        decode(tmp_path, "asr", data, "out", "--batch_size", "2")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: utterance u0: out of memory even alone")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def corrupt(tmp_path):
    """u3's audio is not audio."""
    (tmp_path / "u3.flac").write_bytes(b"fLaC but not really" * 10)
    return tmp_path / "u3.flac"


@pytest.mark.parametrize("options", [("--batch_frames", "400"), ("--batch_size", "3"), ("--batch_size", "1")])
def test_unreadable_audio_is_one_line_naming_the_file_and_utterance(tmp_path, capsys, options):
    """Batched, and in ESPnet's per-utterance loop (--batch_size 1), where a DataLoader worker reads."""
    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")
    path = corrupt(tmp_path)
    with pytest.raises(SystemExit):
        decode(tmp_path, "asr", data, "out", *options)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: utterance u3: cannot read it (")
    assert "fix or drop it, or decode the rest with" in err[0] and err[0].endswith("--skip_bad_audio true")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("options", [("--batch_frames", "400"), ("--batch_size", "3")])
def test_skip_bad_audio_decodes_the_rest_and_lists_what_it_skipped(tmp_path, capsys, options):
    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")
    reference = decode(tmp_path, "asr", data, "reference", *options)
    path = corrupt(tmp_path)
    out = decode(tmp_path, "asr", data, "out", *options, "--skip_bad_audio", "true")
    expected = {k: v for k, v in read(reference / "1best_recog" / "token_int").items() if k != "u3"}
    assert read(out / "1best_recog" / "token_int") == expected
    skipped = (out / "skipped_utterances").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(f"u3 {path}: utterance u3: cannot read it (")
    with pytest.raises(SystemExit):
        decode(tmp_path, "asr", data, "single", "--batch_size", "1", "--skip_bad_audio", "true")
    assert capsys.readouterr().err.startswith("error: --skip_bad_audio true needs batched decoding")


def test_half_precision_speech_models_compute_features_in_float32(tmp_path):
    """An STFT's power spectrum can pass float16's 65504 (on the mini recipe's trained model, 7
    of 200 test utterances then turned NaN and got no hypothesis): the frontend and feature
    normalisation run in float32, the encoder onward in the model's dtype."""
    from espnet_mtla.cli.batch_inference import FeaturesInDtype, features_in_float32

    write_yaml(tmp_path / "train.yaml", config("asr", "mtla"))
    args = parse("asr", tmp_path / "train.yaml")
    torch.manual_seed(0)
    full = registry.ESPNET_TASKS["asr"].build_model(args).eval()
    half = registry.ESPNET_TASKS["asr"].build_model(args).eval()
    half.load_state_dict(full.state_dict())
    half.half()
    assert features_in_float32(half, torch.float16)
    assert isinstance(half.normalize, FeaturesInDtype) and next(half.frontend.parameters(), torch.zeros(1)).dtype != torch.float16
    speech = torch.tensor(np.random.default_rng(0).uniform(-1, 1, (1, 12000)), dtype=torch.float32)
    with torch.no_grad():
        want = full.encode(speech, torch.tensor([12000]))[0]
        got = half.encode(speech, torch.tensor([12000]))[0]
    assert got.dtype == torch.float16 and torch.allclose(got.float(), want, atol=0.05, rtol=0.05)
    assert not features_in_float32(full, torch.float32)


def test_skip_bad_audio_passes_over_a_batch_with_nothing_readable(tmp_path):
    """--batch_size 2 without a budget: the batch [u2, u3] has no readable utterance at all."""
    make_model(tmp_path, "asr", "mtla")
    data = make_data(tmp_path, "asr")
    reference = decode(tmp_path, "asr", data, "reference", "--batch_size", "2")
    corrupt(tmp_path)
    (tmp_path / "u2.flac").write_bytes(b"not audio either" * 10)
    out = decode(tmp_path, "asr", data, "out", "--batch_size", "2", "--skip_bad_audio", "true")
    expected = {k: v for k, v in read(reference / "1best_recog" / "token_int").items() if k not in ("u2", "u3")}
    assert read(out / "1best_recog" / "token_int") == expected
    assert [line.split()[0] for line in (out / "skipped_utterances").read_text().splitlines()] == ["u2", "u3"]
