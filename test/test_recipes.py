"""End-to-end: every stage of the mini recipes on a few dozen utterances with a tiny budget."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--local_data_opts", "--train_size 24 --dev_size 6 --test_size 6 --condition clean", "--nj", "2", "--inference_nj", "2",
        "--train_args", "--max_epoch 1 --batch_size 6",
        "--inference_args", "--beam_size 2 --maxlenratio -8"]
# The corpus in its clean condition: models that learn in a few epochs.
# Speech recipes train a little longer: enough for a model that uses the audio to answer
# differently for different utterances (see assert_listens).
LISTEN = ["--local_data_opts", "--train_size 64 --dev_size 8 --test_size 8 --condition clean", "--nj", "2", "--inference_nj", "2",
          "--train_args", "--max_epoch 15 --batch_size 4 --scheduler_conf warmup_steps=40",
          "--inference_args", "--beam_size 1"]

SCLITE = Path("/usr/lib/sctk/bin/sclite").exists() or shutil.which("sclite") is not None
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("espeak-ng") is None or not SCLITE,
                                 reason="needs espeak-ng and sclite (Debian espeak-ng, sctk: make install)")]


def recipe_copy(tmp_path: Path, corpus: str, task_dir: str) -> Path:
    """The recipe's own files, with the shared ones linked by absolute path."""
    src = ROOT / "egs2" / corpus / task_dir
    dst = tmp_path / task_dir
    dst.mkdir()
    for item in src.iterdir():
        if item.name in ("data", "dump", "exp", "downloads", "RESULTS.md", "RESULTS.json"):  # outputs of earlier runs
            continue
        if item.is_symlink() or item.name == "local":  # local/ scripts find the corpus' shared ones by path
            (dst / item.name).symlink_to(item.resolve())
        elif item.is_dir():
            shutil.copytree(item, dst / item.name)
        else:
            shutil.copy(item, dst / item.name)
    return dst


def run_recipe(recipe: Path, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(["./run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def table(path: Path):
    return dict(line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines())


def table_or_empty(path: Path) -> dict:
    """A Kaldi table whose values may be empty (a decoder's text output)."""
    return dict((line.split(" ", 1) + [""])[:2] for line in path.read_text(encoding="utf-8").splitlines())


def assert_listens(recipe: Path, task: str) -> None:
    """The trained model's answers depend on the audio: test utterances of different content
    do not all get one answer, and replacing every utterance's audio by the next one's gives
    exactly the next one's answer (a decoder that learned only the target language gives
    every input the same sentence, as the ST recipe did before its source-side CTC loss)."""
    exp = recipe / "exp" / f"{task}_train_mtla"
    decode = next(exp.glob("decode_*/test"))
    refs = table(recipe / "dump" / "flac" / "test" / "text")
    assert len(set(refs.values())) > 1  # the test utterances do not all say the same
    found = table_or_empty(decode / "text")
    hyps = {k: found.get(k, "") for k in sorted(refs)}
    assert len(set(hyps.values())) > 1, f"one answer for every input: {hyps}"
    keys = list(hyps)
    wavs = table(recipe / "dump" / "flac" / "test" / "wav.scp")
    swapped = recipe / "swapped.scp"
    swapped.write_text("".join(f"{k} {wavs[keys[(i + 1) % len(keys)]]}\n" for i, k in enumerate(keys)))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", f"espnet_mtla.bin.{task}_inference", "--config", "conf/decode.yaml",
         f"--{task}_train_config", str(exp / "config.yaml"), f"--{task}_model_file", str(exp / "valid.acc.ave.pth"),
         "--data_path_and_name_and_type", f"{swapped},speech,sound", "--output_dir", str(recipe / "swapped"),
         "--beam_size", "1"], cwd=recipe, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    found = table_or_empty(recipe / "swapped" / "1best_recog" / "text")
    other = {k: found.get(k, "") for k in keys}
    assert other == {k: hyps[keys[(i + 1) % len(keys)]] for i, k in enumerate(keys)}  # the answer follows the audio
    assert any(other[k] != hyps[k] for k in keys)


def assert_decoded_the_average(exp: Path, n: int) -> None:
    """Stage 8's default model is ESPnet's average of the n best epochs by valid.acc: check its weights."""
    import torch

    assert os.readlink(exp / "valid.acc.ave.pth") == f"valid.acc.ave_{n}best.pth"
    stats = torch.load(exp / "checkpoint.pth", weights_only=False)["reporter"]["stats"]
    best = sorted(((e, stats[e]["valid"]["acc"]) for e in stats), key=lambda x: -x[1])[:n]
    epochs = [torch.load(exp / f"{e}epoch.pth") for e, _ in best]
    average = torch.load(exp / "valid.acc.ave.pth")
    for name, value in average.items():
        if value.is_floating_point():
            assert torch.allclose(value, sum(e[name] for e in epochs) / n, atol=1e-6), name


def assert_progress_lines(output: str, max_epoch: int, test_utterances: int) -> None:
    """Stage 7 printed one line per epoch, 1..max_epoch; stage 8 counted up to every test utterance."""
    import re

    epochs = [(int(k), int(n)) for k, n in re.findall(r"stage 7: epoch (\d+)/(\d+): train loss [\d.]+ \| valid loss", output)]
    assert epochs == [(k, max_epoch) for k in range(1, max_epoch + 1)], output[-3000:]
    assert re.search(r"stage 7: epoch \d+/\d+: .* s/epoch, ETA ", output)
    counts = [(int(d), int(t)) for d, t in re.findall(r"stage 8: test: (\d+)/(\d+) utterances decoded", output)]
    assert counts and counts[-1] == (test_utterances, test_utterances), output[-3000:]
    assert [d for d, _ in counts] == sorted(d for d, _ in counts)


def test_mini_synth_asr_every_stage(tmp_path):
    recipe = recipe_copy(tmp_path, "mini_synth", "asr1")
    result = run_recipe(recipe, *LISTEN, "--long_form_minutes", "0.5", "--long_form_args", "--beam_size 1")
    assert_listens(recipe, "asr")
    assert_progress_lines(result.stdout + result.stderr, max_epoch=15, test_utterances=8)
    for name in ("train", "dev", "test"):
        assert (recipe / "data" / name / "wav.scp").exists()
    assert (recipe / "data" / "token_list" / "bpe100" / "bpe.model").exists() or \
        (recipe / "data" / "token_list" / "char" / "tokens.txt").exists()
    exp = recipe / "exp" / "asr_train_mtla"
    assert (exp / "latest.pth").resolve().exists() and (exp / "valid.acc.best.pth").exists()
    assert_decoded_the_average(exp, 3)  # keep_nbest_models: 3
    decode = next((exp).glob("decode_*/test"))
    assert decode.parent.name == "decode_valid.acc.ave"
    hyps = table_or_empty(decode / "text")
    refs = table(recipe / "dump" / "flac" / "test" / "text")
    token_keys = [line.split()[0] for line in (decode / "token").read_text().splitlines()]
    assert sorted(token_keys) == sorted(refs)  # every test utterance decoded exactly once
    assert set(hyps) <= set(refs)
    scores = json.loads((decode / "scores.json").read_text())
    assert set(scores) == {"wer", "cer"} and all(isinstance(v, float) for v in scores.values())
    assert "Sum/Avg" in (decode / "score_wer" / "result.txt").read_text()
    eff = json.loads((decode / "efficiency.json").read_text())
    assert eff["num_utterances"] == len(refs) and eff["jobs"] == 2 and eff["cache_bytes_peak"] > 0
    results = (recipe / "RESULTS.md").read_text()
    row = next(line for line in results.splitlines() if line.startswith("| asr_train_mtla | test |"))
    assert f"wer {scores['wer']}" in row and "| valid.acc.ave -> valid.acc.ave_3best |" in row
    assert "![test: the experiments side by side](RESULTS_test.png)" in results
    assert (recipe / "RESULTS_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "- asr_train_mtla: [loss](exp/asr_train_mtla/images/loss.png), [acc](exp/asr_train_mtla/images/acc.png)" in results

    # The long-form condition: a recording of the test utterances, decoded by voice activity and
    # at its true segments, scored per recording and reported
    long_data = recipe / "dump" / "flac" / "test_long"
    assert list(table(long_data / "wav.scp")) == ["long01_00030s"]
    for name in ("test_long", "test_long_oracle"):
        out = decode.parent / name
        assert list(table(out / "text")) == ["long01_00030s"]
        assert set(json.loads((out / "scores.json").read_text())) == {"wer", "cer"}
        assert json.loads((out / "efficiency.json").read_text())["long_form"]["recordings"] == 1
        assert f"| asr_train_mtla | {name} |" in results
    oracle = (decode.parent / "test_long_oracle" / "kaldi" / "segments").read_text().splitlines()
    assert len(oracle) <= len(table(long_data / "oracle_segments"))

    # Stage 11's zip decodes from anywhere (paths inside are rewritten on unpacking).
    packed = exp / "asr_train_mtla.zip"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(packed, elsewhere / "model.zip")
    one = next(iter(refs))
    (elsewhere / "wav.scp").write_text(f"{one} {table(recipe / 'dump' / 'flac' / 'test' / 'wav.scp')[one]}\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m",
         "espnet_mtla.bin.asr_inference", "--packed_model", "model.zip", "--data_path_and_name_and_type",
         "wav.scp,speech,sound", "--output_dir", "out", "--beam_size", "2", "--maxlenratio", "-5"],
        cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (elsewhere / "out" / "1best_recog" / "token").read_text().split()[0] == one


def test_mini_synth_st_every_stage(tmp_path):
    recipe = recipe_copy(tmp_path, "mini_synth", "st1")
    run_recipe(recipe, *LISTEN)
    assert_listens(recipe, "st")
    data = recipe / "data" / "test"
    assert table(data / "text") == table(data / "text.de") and (data / "text.en").exists()
    for side in ("bpe100", "src_bpe100"):
        assert (recipe / "data" / "token_list" / side / "bpe.model").exists()
    exp = recipe / "exp" / "st_train_mtla"
    decode = next(exp.glob("decode_*/test"))
    scores = json.loads((decode / "scores.json").read_text())
    assert set(scores) == {"bleu", "chrf", "bleu_lc_nopunct"} and all(isinstance(v, float) for v in scores.values())
    assert "BLEU" in (decode / "score_bleu" / "result.txt").read_text()
    row = next(line for line in (recipe / "RESULTS.md").read_text().splitlines() if line.startswith("| st_train_mtla |"))
    assert f"bleu {scores['bleu']}" in row
    assert (exp / "st_train_mtla.zip").exists()


def test_mini_synth_slu_every_stage(tmp_path):
    recipe = recipe_copy(tmp_path, "mini_synth", "slu1")
    run_recipe(recipe, *LISTEN)
    assert_listens(recipe, "slu")
    tokens = (recipe / "data" / "token_list" / "bpe100" / "tokens.txt").read_text().split()
    assert "alarm_set" in tokens and "play_music" in tokens  # intents stay whole tokens
    exp = recipe / "exp" / "slu_train_mtla"
    decode = next(exp.glob("decode_*/test"))
    scores = json.loads((decode / "scores.json").read_text())
    assert set(scores) == {"intent_acc", "scenario_acc", "action_acc", "transcript_wer"}
    row = next(line for line in (recipe / "RESULTS.md").read_text().splitlines() if line.startswith("| slu_train_mtla |"))
    assert f"intent_acc {scores['intent_acc']}" in row



# Text translation learns in a minute: enough sentences and epochs for BLEU well above 0
# (about 19 BLEU, 50 chrF on this budget), so that the test checks a model that translates.
TRANSLATE = ["--local_data_opts", "--train_size 160 --dev_size 8 --test_size 8 --condition clean", "--nj", "2",
             "--inference_nj", "2",
             "--train_args", "--max_epoch 12 --batch_size 8 --scheduler_conf warmup_steps=60",
             "--inference_args", "--beam_size 2", "--tune_penalty", "0 1"]


def test_mini_synth_mt_every_stage(tmp_path):
    recipe = recipe_copy(tmp_path, "mini_synth", "mt1")
    run_recipe(recipe, *TRANSLATE)
    data = recipe / "data" / "test"
    assert not (data / "wav.scp").exists()  # text only
    assert table(data / "text") == table(data / "text.de") and table(data / "text.en").keys() == table(data / "text").keys()
    exp = recipe / "exp" / "mt_train_mtla"
    decode = next(exp.glob("decode_*/test"))
    scores = json.loads((decode / "scores.json").read_text())
    assert list(scores) == ["bleu", "bleu_lc_nopunct", "chrf"]  # run.sh's --metrics, not the mt task's ROUGE
    assert scores["bleu"] >= 8 and scores["chrf"] >= 35  # it translates (a floor with a margin)
    assert (decode / "score_bleu" / "result.txt").exists() and (decode / "score_chrf" / "result.txt").exists()
    row = next(line for line in (recipe / "RESULTS.md").read_text().splitlines() if line.startswith("| mt_train_mtla |"))
    assert f"bleu {scores['bleu']}" in row
    (result,) = json.loads((recipe / "RESULTS.json").read_text())["rows"]  # what RESULTS.md is rendered from
    assert (result["experiment"], result["test_set"], result["scores"]) == ("mt_train_mtla", "test", scores)
    assert (exp / "mt_train_mtla.zip").exists()
    # run.sh's --tune_penalty: the dev set decoded with each length bonus, the best one used for test
    tuning = json.loads((decode.parent / "tune_penalty_dev" / "tuning.json").read_text())
    assert tuning["metric"] == "bleu" and [r["penalty"] for r in tuning["sweep"]] == [0.0, 1.0]
    best = max(tuning["sweep"], key=lambda r: (r["scores"]["bleu"], -r["penalty"]))
    assert tuning["best"] == best["penalty"]
    assert json.loads((decode / "efficiency.json").read_text())["decoding"]["penalty"] == best["penalty"]
    hyps = [line.split(maxsplit=1) for line in (decode / "text").read_text().splitlines()]
    assert result["empty_hypotheses"] == sum(len(h) < 2 for h in hyps)
    # another metric set re-scores (stage 9 redone: its options changed) and the row follows
    run_recipe(recipe, "--stage", "9", "--stop_stage", "10", "--metrics", "bleu")
    assert list(json.loads((decode / "scores.json").read_text())) == ["bleu", "bleu_lc_nopunct"]
    (result,) = json.loads((recipe / "RESULTS.json").read_text())["rows"]
    assert list(result["scores"]) == ["bleu", "bleu_lc_nopunct"]
