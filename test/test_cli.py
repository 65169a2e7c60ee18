"""The CLIs: ESPnet's real trainer and inference through `python -m espnet_mtla.bin.*`."""

import json
import re
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from espnet_setup import TOKENS, config, encoder_decoder_config, write_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["abc", "bad", "cab", "fed", "ace", "dab"]


def write_data_dir(path, rng):
    path.mkdir(parents=True)
    with open(path / "wav.scp", "w") as wav_scp, open(path / "text", "w") as text:
        for i, transcript in enumerate(TEXTS):
            utt = f"utt{i}"
            wav = path / f"{utt}.flac"
            soundfile.write(wav, 0.1 * rng.standard_normal(4000 + 800 * i).astype(np.float32), 16000)
            wav_scp.write(f"{utt} {wav}\n")
            text.write(f"{utt} {transcript}\n")


def run(module, args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True)


def write_asr_setup(root, decoder: str = "decoder_only") -> None:
    """data/ (6 utterances), tokens.txt and train.yaml (tiny MTLA ASR, 2 epochs) under ``root``;
    ``decoder: cached_transformer``: ESPnet's own model with our encoder-decoder decoder."""
    write_data_dir(root / "data", np.random.default_rng(0))
    (root / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    conf = config("asr", "mtla") if decoder == "decoder_only" else encoder_decoder_config("asr", "mtla", "auto")
    conf.pop("token_list")
    conf.update(max_epoch=2, batch_type="unsorted", batch_size=3, num_workers=0, seed=0,
                optim="adam", optim_conf={"lr": 0.002}, best_model_criterion=[["valid", "acc", "max"]])
    write_yaml(root / "train.yaml", conf)


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["decoder_only", "cached_transformer"])
def test_asr_train_then_decode_with_efficiency_report(tmp_path, decoder):
    write_asr_setup(tmp_path, decoder)
    exp = tmp_path / "exp"
    train = run("espnet_mtla.bin.asr_train", [
        "--config", "train.yaml", "--output_dir", str(exp), "--ngpu", "0", "--token_list", "tokens.txt",
        "--train_data_path_and_name_and_type", "data/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", "data/text,text,text",
        "--valid_data_path_and_name_and_type", "data/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", "data/text,text,text",
        "--train_shape_file", "data/text", "--valid_shape_file", "data/text",
    ], cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (exp / "2epoch.pth").exists() and (exp / "valid.acc.best.pth").exists()
    saved = (exp / "config.yaml").read_text()
    assert f"decoder: {decoder}" in saved and "attention_type: mtla" in saved

    decode = run("espnet_mtla.bin.asr_inference", [
        "--asr_train_config", str(exp / "config.yaml"), "--asr_model_file", str(exp / "valid.acc.best.pth"),
        "--data_path_and_name_and_type", "data/wav.scp,speech,sound", "--output_dir", str(tmp_path / "decode"),
        "--ngpu", "0", "--beam_size", "3", "--ctc_weight", "0.3", "--nbest", "2", "--maxlenratio", "-5",
    ], cwd=tmp_path)
    assert decode.returncode == 0, decode.stderr[-3000:]
    best = tmp_path / "decode" / "1best_recog"
    keys = [line.split()[0] for line in (best / "token").read_text().splitlines()]
    assert sorted(keys) == [f"utt{i}" for i in range(len(TEXTS))]
    assert (tmp_path / "decode" / "2best_recog" / "score").exists()

    report = json.loads((best / "efficiency.json").read_text())
    assert report["num_utterances"] == len(TEXTS)
    assert sorted(report["utterances"]) == sorted(keys)
    for utt in report["utterances"].values():
        assert utt["decode_time_s"] > 0 and utt["cache_bytes"] > 0 and utt["cache_bytes_peak"] >= utt["cache_bytes"]
    assert report["total_decode_time_s"] == pytest.approx(
        sum(u["decode_time_s"] for u in report["utterances"].values()), abs=1e-5)
    tokens = sum(len(line.split()) - 1 for line in (best / "token_int").read_text().splitlines())
    assert report["output_tokens"] == tokens
    assert report["peak_memory_kind"] in ("cpu_rss", "cpu_rss_lifetime")


def test_config_error_is_one_line_without_traceback(tmp_path, capsys):
    from espnet_mtla.bin import asr_train

    conf = config("asr", "mtla")
    conf["decoder_conf"]["attention_type"] = "mtlaa"
    write_yaml(tmp_path / "train.yaml", conf)
    with pytest.raises(SystemExit) as exit_info:
        asr_train.main(["--config", str(tmp_path / "train.yaml"), "--output_dir", str(tmp_path / "exp"),
                        "--ngpu", "0", "--dry_run", "true"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: decoder_conf: unknown attention_type 'mtlaa'")
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("task", ["asr", "st", "slu", "mt"])
def test_train_clis_offer_the_decoder_only_choices(task, capsys):
    import importlib

    module = importlib.import_module(f"espnet_mtla.bin.{task}_train")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    decoders = help_text.split("--decoder ")[1].split("--")[0]
    assert "decoder_only" in decoders and "cached_transformer" in decoders
    if task != "st":  # the st task has no --model choice (see espnet_mtla.models.st)
        assert "decoder_only" in help_text.split("--model ")[1].split("--")[0]


@pytest.mark.parametrize("task", ["asr", "st", "slu", "mt"])
def test_inference_clis_parse_espnet_options(task, capsys):
    import importlib

    module = importlib.import_module(f"espnet_mtla.bin.{task}_inference")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--beam_size" in capsys.readouterr().out


def test_missing_input_files_are_one_line_errors(tmp_path):
    """Token list, BPE model, data and model files: named before ESPnet opens (and tracebacks on) them."""
    from espnet_mtla.bin import asr_inference, asr_train

    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    write_yaml(tmp_path / "train.yaml", {k: v for k, v in config("asr", "mtla").items() if k != "token_list"})
    train = ["--config", str(tmp_path / "train.yaml"), "--output_dir", str(tmp_path / "exp"), "--ngpu", "0"]
    hint = " (make it with the recipe's stage 5 (tokenisers), or fix the path)"
    cases = [
        (["--token_list", "data/token_list/bpe100/tokens.txt"],
         "--token_list: no such file: data/token_list/bpe100/tokens.txt" + hint),
        (["--token_list", str(tmp_path / "tokens.txt"), "--token_type", "bpe", "--bpemodel", "bpe.model"],
         "--bpemodel: no such file: bpe.model" + hint),
        (["--token_list", str(tmp_path / "tokens.txt"), "--train_data_path_and_name_and_type", "dump/train/wav.scp,speech,sound"],
         "--train_data_path_and_name_and_type: no such file for 'speech': dump/train/wav.scp"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit, match=f"^error: {re.escape(message)}$"):
            asr_train.main(train + extra)

    conf = config("asr", "mtla")
    conf.update(token_list=str(tmp_path / "gone" / "tokens.txt"))
    write_yaml(tmp_path / "config.yaml", conf)
    (tmp_path / "model.pth").write_bytes(b"")
    decode = ["--asr_train_config", str(tmp_path / "config.yaml"), "--output_dir", str(tmp_path / "out"),
              "--data_path_and_name_and_type", f"{tmp_path / 'tokens.txt'},speech,sound"]
    with pytest.raises(SystemExit, match=f"^error: --asr_model_file: no such file: {re.escape(str(tmp_path / 'm.pth'))}$"):
        asr_inference.main(decode + ["--asr_model_file", str(tmp_path / "m.pth")])
    with pytest.raises(SystemExit, match=f"^error: --token_list: no such file: {re.escape(str(tmp_path / 'gone'))}"):
        asr_inference.main(decode + ["--asr_model_file", str(tmp_path / "model.pth")])
    with pytest.raises(SystemExit, match=r"^error: --streaming true: ESPnet's streaming simulation .* "
                                         r"decode whole utterances \(--streaming false\)$"):
        asr_inference.main(decode + ["--asr_model_file", str(tmp_path / "model.pth"), "--streaming", "true"])
    assert not (tmp_path / "out").exists() and not (tmp_path / "exp").exists()  # nothing half-made
