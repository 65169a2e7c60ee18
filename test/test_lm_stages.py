"""The pipeline's language-model stages (12 lm_stats, 13 lm_train, 14 lm_perplexity) and stage 8's
fusion, on the mini ASR recipe with a tiny text: end to end, skipped with --use_lm false, resumed
after a kill, and one-line errors for bad input before anything is written."""

import json
import shutil
import subprocess

import pytest
import torch

from espnet_mtla.recipe.records import StageRecord
from test_recipes import SCLITE, recipe_copy
from test_reliability import ENV, kill_when, pipeline_log, run_ok

OPTS = ["--local_data_opts", "--train_size 32 --dev_size 6 --test_size 4 --condition clean --lm_text_size 300",
        "--nj", "1", "--inference_nj", "1", "--train_args", "--max_epoch 1 --batch_size 8",
        "--inference_args", "--beam_size 2 --maxlenratio -8",
        "--use_lm", "true", "--lm_args", "--max_epoch 2 --batch_size 16 --scheduler_conf warmup_steps=5"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None or not SCLITE, reason="needs espeak-ng and sclite")
def test_lm_stages_end_to_end_skip_and_resume_after_a_kill(tmp_path):
    recipe = recipe_copy(tmp_path, "mini_synth", "asr1")
    run_ok(["./run.sh", *OPTS], recipe)  # every stage: 1-7, the LM (12-14), then 8-11 with the LM fused
    lm_exp = recipe / "exp" / "lm_train_lm_mtla"
    stats = recipe / "exp" / "lm_stats_bpe100"
    # the LM's text: the training transcripts (Kaldi text) and --lm_extra_text's lines, keyed by line
    train_text = (stats / "train.txt").read_text().splitlines()
    assert len(train_text) == 32 + 300 and train_text[-1].startswith("lm_extra1-0000300 ")
    assert (stats / "dev.txt").read_text().splitlines() == (recipe / "dump" / "flac" / "dev" / "text").read_text().splitlines()
    assert (lm_exp / "valid.loss.ave.pth").exists()
    report = json.loads((lm_exp / "perplexity.json").read_text())
    assert report["lm"] == "lm_train_lm_mtla" and report["attention"] == "mtla"
    # 6 dev sentences in bpe100 tokens, <eos> included; two epochs already beat a uniform guess
    assert report["tokens"] > 6 * 5 and 1.0 < report["perplexity"] < 100
    decode = recipe / "exp" / "asr_train_mtla" / "decode_lm_train_lm_mtla_valid.acc.ave" / "test"
    assert json.loads((decode / "scores.json").read_text())["wer"] >= 0
    results = json.loads((recipe / "RESULTS.json").read_text())
    assert [r["lm"] for r in results["rows"]] == ["lm_train_lm_mtla"]
    assert results["lms"] == [report]
    text = (recipe / "RESULTS.md").read_text()
    assert "| asr_train_mtla + lm_train_lm_mtla | test |" in text
    assert f"| lm_train_lm_mtla | mtla | {report['model']} | {report['tokens']} | {report['perplexity']} |" in text

    # The same command again: the LM stages finished with the same options and inputs.
    run_ok(["./run.sh", *OPTS, "--stage", "12", "--stop_stage", "14"], recipe)
    log = pipeline_log(recipe)
    for n in (12, 13, 14):
        assert f"stage {n}: finished earlier with the same options and inputs" in log
    # --use_lm false: the LM stages are skipped, said once each
    result = run_ok(["./run.sh", *OPTS, "--use_lm", "false", "--stage", "12", "--stop_stage", "14"], recipe)
    for n, name in ((12, "lm_stats"), (13, "lm_train"), (14, "lm_perplexity")):
        assert result.stderr.count(f"stage {n}: {name} skipped (--use_lm false)") == 1

    # Killed once epoch 2 of 2 has started (epoch 1's checkpoint written), the same command resumes
    # to the model an uninterrupted run trained.
    killed = tmp_path / "killed"
    shutil.copytree(recipe, killed, symlinks=True)
    shutil.rmtree(killed / "exp" / "lm_train_lm_mtla")
    killed_lm = killed / "exp" / "lm_train_lm_mtla"
    train_log = killed_lm / "train.log"
    kill_when(["./run.sh", *OPTS, "--stage", "13", "--stop_stage", "13"], killed,
              lambda: train_log.exists() and "2/2epoch started" in train_log.read_text())
    assert StageRecord(killed_lm / "stages", 13, "lm_train").read()["status"] == "started"
    run_ok(["./run.sh", *OPTS, "--stage", "13", "--stop_stage", "13"], killed)
    assert "stage 13: resuming an interrupted run" in pipeline_log(killed)
    resumed = torch.load(killed_lm / "checkpoint.pth", weights_only=False)
    reference = torch.load(lm_exp / "checkpoint.pth", weights_only=False)
    assert resumed["reporter"]["epoch"] == reference["reporter"]["epoch"] == 2
    for name, value in reference["model"].items():
        assert torch.equal(resumed["model"][name], value), name


# -- bad input: one line, nothing written ------------------------------------------------------------
def lm_setup(tmp_path):
    """A token list, an LM config and text files, as stages 1-5 would leave them."""
    tokens = tmp_path / "data" / "token_list" / "char" / "tokens.txt"
    tokens.parent.mkdir(parents=True)
    tokens.write_text("<blank>\n<unk>\na\nb\n<sos/eos>\n")
    (tmp_path / "lm.yaml").write_text("lm: decoder_only\n")
    (tmp_path / "train.txt").write_text("u1 a b\nu2 b a\n")
    (tmp_path / "dev.txt").write_text("d1 a a\n")
    return ["--task", "asr", "--token_type", "char", "--use_lm", "true", "--lm_config", "lm.yaml",
            "--lm_train_text", "train.txt", "--lm_dev_text", "dev.txt", "--expdir", str(tmp_path / "exp")]


@pytest.mark.parametrize("change, message", [
    ("no_config", "error: stage 12 (lm_stats): --use_lm true needs --lm_config (the LM's training config, "
                  "e.g. conf/train_lm_{attention}.yaml)"),
    ("missing_config", "error: stage 12 (lm_stats): --lm_config missing.yaml: no such file"),
    ("missing_text", "error: stage 12 (lm_stats): more.txt: no such LM text file (--lm_train_text, --lm_extra_text, "
                     "--lm_dev_text; the transcripts appear with stages 1-4)"),
    ("empty_text", "error: stage 12 (lm_stats): train.txt: the LM text file is empty"),
    ("no_tokens", "error: stage 12 (lm_stats): data/token_list/char/tokens.txt: no token list: the LM uses the "
                  "model's (stage 5)"),
])
def test_lm_stage_input_errors_are_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys, change, message):
    from espnet_mtla.recipe.runner import main

    monkeypatch.chdir(tmp_path)
    args = lm_setup(tmp_path)
    if change == "no_config":
        args[args.index("--lm_config") + 1] = ""
    if change == "missing_config":
        args[args.index("--lm_config") + 1] = "missing.yaml"
    if change == "missing_text":
        args += ["--lm_extra_text", "more.txt"]
    if change == "empty_text":
        (tmp_path / "train.txt").write_text("\n")
    if change == "no_tokens":
        (tmp_path / "data" / "token_list" / "char" / "tokens.txt").unlink()
    assert main([*args, "--stage", "12", "--stop_stage", "14"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["pipeline.log"]  # nothing else written


def test_decoding_with_an_lm_not_yet_trained_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from espnet_mtla.recipe.runner import main

    monkeypatch.chdir(tmp_path)
    args = lm_setup(tmp_path)
    exp = tmp_path / "exp" / "asr_train_mha"
    exp.mkdir(parents=True)
    (exp / "valid.acc.ave.pth").write_bytes(b"")
    assert main([*args, "--train_config", "conf/train_mha.yaml", "--stage", "8", "--stop_stage", "8"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: stage 8 (decode): {tmp_path / 'exp' / 'lm_lm' / 'valid.loss.ave.pth'} not found: train the LM "
        "first (stages 12-13), or set --lm_inference_model")
    assert sorted(p.name for p in exp.iterdir()) == ["valid.acc.ave.pth"]


def test_lm_stages_skipped_without_use_lm(tmp_path, monkeypatch, caplog):
    from espnet_mtla.recipe.runner import main

    monkeypatch.chdir(tmp_path)
    args = lm_setup(tmp_path)
    args[args.index("--use_lm") + 1] = "false"
    assert main([*args, "--stage", "12", "--stop_stage", "14"]) == 0
    log = (tmp_path / "exp" / "pipeline.log").read_text()
    for n, name in ((12, "lm_stats"), (13, "lm_train"), (14, "lm_perplexity")):
        assert f"stage {n}: {name} skipped (--use_lm false)" in log
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["pipeline.log"]


def test_results_render_rows_with_an_lm_and_the_perplexity_table():
    from espnet_mtla.recipe.results import comparisons, render_results

    def row(attention, lm, wer, speed):
        return {"experiment": f"asr_train_{attention}", "test_set": "test", "decoder": "decoder_only",
                "attention": attention, "lm": lm, "model": "valid.acc.ave", "scores": {"wer": wer, "cer": 1.0},
                "utterances_per_s": speed}

    rows = [row("mha", None, 3.0, 20.0), row("mha", "lm_train_lm_mha", 2.0, 10.0),
            row("mtla", None, 3.2, 30.0), row("mtla", "lm_train_lm_mha", 2.2, 20.0)]
    lms = [{"lm": "lm_train_lm_mha", "attention": "mha", "model": "valid.loss.ave", "tokens": 900, "perplexity": 2.5}]
    text = render_results(rows, "RESULTS.json", None, lms)
    assert "| asr_train_mtla + lm_train_lm_mha | test | valid.acc.ave | wer 2.2, cer 1.0 |" in text
    # MTLA against MHA: without an LM, and with the same LM
    assert [line.split(":")[0] for line in comparisons(rows)] == [
        "asr_train_mtla vs asr_train_mha on test", "asr_train_mtla + lm_train_lm_mha vs asr_train_mha + lm_train_lm_mha on test"]
    assert ("- asr_train_mtla on test with lm_train_lm_mha: wer 2.2 vs 3.2 without (-1.00 points); decoding speed "
            "0.67x\n") in text
    assert "| lm_train_lm_mha | mha | valid.loss.ave | 900 | 2.5 |" in text
