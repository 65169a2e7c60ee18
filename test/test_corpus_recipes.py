"""The paper's four recipes, every stage, on miniature corpora in the official layouts (tiny models)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from espnet_mtla.bin.make_confs import make_confs
from espnet_mtla.bin.make_tiny_ssl_checkpoint import build_tiny_ssl_checkpoint
from mini_corpora import write_ami, write_mustc, write_slurp, write_xsum_original
from test_recipes import ROOT, SCLITE, recipe_copy, table

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("espeak-ng") is None or not SCLITE,
                                 reason="needs espeak-ng and sclite (Debian espeak-ng, sctk: make install)")]
TINY = ["--nj", "2", "--inference_nj", "2", "--train_args", "--max_epoch 1 --batch_size 4",
        "--inference_args", "--beam_size 2 --maxlenratio -8"]


def tiny_recipe(tmp_path, corpus, task_dir, template) -> Path:
    """The recipe, plus tiny/train_<type>.yaml: its configs at the mini size of conf_templates/."""
    recipe = recipe_copy(tmp_path, corpus, task_dir)
    make_confs(ROOT / "conf_templates" / template, None, recipe / "tiny")
    return recipe


def run(recipe: Path, env: dict, *args):
    import subprocess

    result = subprocess.run(["./run.sh", *args], cwd=recipe, env=dict(os.environ, OMP_NUM_THREADS="1", **env),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def scores_and_row(recipe: Path, exp: str, test_set: str):
    decode = next((recipe / "exp" / exp).glob(f"decode_*/{test_set}"))
    scores = json.loads((decode / "scores.json").read_text())
    assert scores and all(isinstance(v, float) for v in scores.values())
    row = next(line for line in (recipe / "RESULTS.md").read_text().splitlines()
               if line.startswith(f"| {exp} | {test_set} |"))
    token_ids = sorted(line.split()[0] for line in (decode / "token").read_text().splitlines())
    return decode, scores, row, token_ids


def asr_model_file(st_config: Path, out: Path) -> dict:
    """An ASR model (random weights) whose encoder has the ST config's shape, saved as ``out``."""
    import torch
    import yaml

    from espnet_setup import TOKENS, parse
    import espnet_mtla.tasks.registration as registry

    config = yaml.safe_load(st_config.read_text())
    config.update(model="decoder_only", model_conf={"ctc_weight": 0.3}, token_list=TOKENS, token_type="char",
                  normalize="utterance_mvn")
    (out.parent / "asr.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(7)
    state = registry.ESPNET_TASKS["asr"].build_model(parse("asr", out.parent / "asr.yaml")).state_dict()
    torch.save(state, out)
    return state


def test_mustc_st1(tmp_path):
    written = write_mustc(tmp_path / "MUSTC")
    recipe = tiny_recipe(tmp_path, "mustc", "st1", "st_mini.yaml")
    asr = asr_model_file(recipe / "tiny" / "train_mtla.yaml", tmp_path / "asr.pth")
    # The paper's ST encoder starts from an ASR model's; frozen here, so the trained model must still hold it.
    tiny = TINY[:4] + ["--train_args", "--max_epoch 1 --batch_size 4 --freeze_param encoder"] + TINY[6:]
    run(recipe, {"MUSTC": str(tmp_path / "MUSTC")}, "--train_config", "tiny/train_{attention}.yaml",
        "--nbpe", "60", "--src_nbpe", "60", "--pretrained_asr", str(tmp_path / "asr.pth"), *tiny)
    import torch

    st = torch.load(recipe / "exp" / "st_train_mtla" / "valid.acc.ave.pth")
    encoder = sorted(k for k in asr if k.startswith("encoder."))
    assert encoder and all(torch.equal(st[k], asr[k]) for k in encoder)
    assert "--init_param" in (recipe / "exp" / "st_train_mtla" / "train.log").read_text()

    # An ASR model of another shape: one line naming the key, before any epoch.
    asr["encoder.after_norm.weight"] = torch.zeros(64)
    torch.save(asr, tmp_path / "other.pth")
    result = subprocess.run(["./run.sh", "--stage", "7", "--stop_stage", "7", "--tag", "other", "--nbpe", "60",
                             "--src_nbpe", "60", "--train_config", "tiny/train_{attention}.yaml",
                             "--pretrained_asr", str(tmp_path / "other.pth"), *TINY], cwd=recipe,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    assert result.returncode != 0
    assert (f"error: --init_param {tmp_path / 'other.pth'}: does not fit the model: shape mismatch: "
            "encoder.after_norm.weight (64,) in the file, (128,) in the model") in result.stdout + result.stderr
    assert not list((recipe / "exp" / "other").glob("*epoch.pth"))
    for split, segments in written.items():
        assert sorted(table(recipe / "data" / split / "segments")) == sorted(s["utt_id"] for s in segments)
    decode, scores, row, ids = scores_and_row(recipe, "st_train_mtla", "tst-COMMON")
    assert set(scores) == {"bleu", "chrf", "bleu_lc_nopunct"} and f"bleu {scores['bleu']}" in row
    assert ids == sorted(s["utt_id"] for s in written["tst-COMMON"])  # each segment decoded once
    assert "BLEU" in (decode / "score_bleu" / "result.txt").read_text()
    assert (recipe / "dump" / "flac.ark" / "tst-COMMON" / "wav.scp").read_text().count(".ark:") == len(ids)

    # Stage 8 decoded several utterances per search (the decode config's frame budget);
    # --batch_size 1, ESPnet's own search one utterance at a time, gives the same hypotheses.
    report = json.loads((decode / "efficiency.json").read_text())
    assert max(u["batch_size"] for u in report["utterances"].values()) == 2  # 3 segments, 2 jobs
    batched = (decode / "token").read_text()
    run(recipe, {"MUSTC": str(tmp_path / "MUSTC")}, "--train_config", "tiny/train_{attention}.yaml",
        "--nbpe", "60", "--src_nbpe", "60", "--stage", "8", "--stop_stage", "10",
        "--inference_args", "--beam_size 2 --maxlenratio -8 --batch_size 1")
    assert (decode / "token").read_text() == batched
    report = json.loads((decode / "efficiency.json").read_text())
    assert {u["batch_size"] for u in report["utterances"].values()} == {1} and report["utterances_per_s"] > 0


def test_ami_asr1_raw_zip_features_and_ssl_frontend(tmp_path):
    written = write_ami(tmp_path / "AMI")
    recipe = tiny_recipe(tmp_path, "ami", "asr1", "asr_mini.yaml")
    env = {"AMI": str(tmp_path / "AMI")}
    run(recipe, env, "--train_config", "tiny/train_{attention}.yaml", "--nbpe", "60", *TINY)
    for split, segments in written.items():
        assert table(recipe / "data" / split / "text") == {s["utt_id"]: s["text"] for s in segments}
    for test_set in ("dev", "eval"):
        decode, scores, row, ids = scores_and_row(recipe, "asr_train_mtla", test_set)
        assert set(scores) == {"wer", "cer"} and f"wer {scores['wer']}" in row
        assert ids == sorted(s["utt_id"] for s in written[test_set])
        assert "Sum/Avg" in (decode / "score_wer" / "result.txt").read_text()

    # Offline fbank in fairseq-style zip storage: formatting, training and decoding read it.
    run(recipe, env, "--train_config", "tiny/train_{attention}.yaml", "--nbpe", "60", "--feats_type", "fbank",
        "--feats_storage", "zip", "--stage", "3", "--stop_stage", "10", "--tag", "fbank_zip", "--test_sets", "eval", *TINY)
    dump = recipe / "dump" / "fbank_zip" / "eval"
    assert all(".zip:" in ref for ref in table(dump / "feats.scp").values())
    assert (dump / "manifest.tsv").read_text().startswith("id\taudio\tn_frames\ttgt_text\tspeaker\n")
    assert "--train_data_path_and_name_and_type dump/fbank_zip/train/feats.scp,speech,zip_npy" in \
        (recipe / "exp" / "asr_fbank_zip" / "train.log").read_text()
    _, _, row, ids = scores_and_row(recipe, "asr_fbank_zip", "eval")
    assert ids == sorted(s["utt_id"] for s in written["eval"])

    # The SSL frontend: a (tiny) local WavLM checkpoint named by db.sh's SSL_CHECKPOINT.
    ckpt = build_tiny_ssl_checkpoint(tmp_path / "wavlm_tiny.pt", "wavlm_local")
    ssl_conf = (recipe / "tiny" / "train_mtla.yaml").read_text().replace(
        "frontend: default\nfrontend_conf: {n_fft: 512, win_length: 400, hop_length: 160, n_mels: 40}\n",
        "frontend: s3prl\nfrontend_conf:\n  frontend_conf: {upstream: wavlm_local, path_or_url: null}\n"
        "  download_dir: null\n  multilayer_feature: true\n").replace("normalize: global_mvn", "normalize: utterance_mvn")
    assert "frontend: s3prl" in ssl_conf
    (recipe / "tiny" / "train_ssl_mtla.yaml").write_text(ssl_conf)
    run(recipe, {**env, "SSL_CHECKPOINT": str(ckpt)}, "--frontend", "ssl", "--train_config",
        "tiny/train_ssl_{attention}.yaml", "--nbpe", "60", "--stage", "6", "--stop_stage", "10",
        "--test_sets", "eval", *TINY)
    config = (recipe / "exp" / "asr_train_ssl_mtla" / "config.yaml").read_text()
    assert f"path_or_url: {ckpt}" in config and "upstream: wavlm_local" in config
    scores_and_row(recipe, "asr_train_ssl_mtla", "eval")


def test_ami_ssl_frontend_without_a_checkpoint(tmp_path):
    import subprocess

    recipe = recipe_copy(tmp_path, "ami", "asr1")
    result = subprocess.run(["./run.sh", "--frontend", "ssl"], cwd=recipe, env=dict(os.environ, SSL_CHECKPOINT=""),
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: --frontend ssl: SSL_CHECKPOINT='' (db.sh) is not a file; set it to a "
                                     "local WavLM/HuBERT checkpoint")


def test_slurp_slu1(tmp_path):
    written = write_slurp(tmp_path / "SLURP")
    recipe = tiny_recipe(tmp_path, "slurp", "slu1", "slu_mini.yaml")
    run(recipe, {"SLURP": str(tmp_path / "SLURP")}, "--train_config", "tiny/train_{attention}.yaml", "--nbpe", "60", *TINY)
    tokens = (recipe / "data" / "token_list" / "bpe60" / "tokens.txt").read_text().split()
    assert all(u["text"].split()[0] in tokens for u in written["train"])  # intents are whole tokens
    decode, scores, row, ids = scores_and_row(recipe, "slu_train_mtla", "test")
    assert set(scores) == {"intent_acc", "scenario_acc", "action_acc", "transcript_wer"}
    assert f"intent_acc {scores['intent_acc']}" in row and ids == sorted(u["utt_id"] for u in written["test"])


def test_xsum_sum1(tmp_path):
    docs = write_xsum_original(tmp_path / "XSUM")
    recipe = tiny_recipe(tmp_path, "xsum", "sum1", "sum_mini.yaml")
    result = run(recipe, {"XSUM": str(tmp_path / "XSUM")}, "--train_config", "tiny/train_{attention}.yaml",
        "--nbpe", "80", "--src_nbpe", "80", "--train_args", "--max_epoch 1 --batch_size 4",
        "--inference_args", "--beam_size 2 --maxlenratio 0.5", "--nj", "2", "--inference_nj", "2")
    assert table(recipe / "data" / "test" / "text") == {d["id"]: d["summary"] for d in docs["test"]}
    assert "xsum test: 4 documents -> data/test" in result.stdout + result.stderr  # stage 1's line per set
    assert "Share this with" not in (recipe / "data" / "train" / "text.doc").read_text()
    decode, scores, row, ids = scores_and_row(recipe, "mt_train_mtla", "test")
    assert set(scores) == {"rouge1", "rouge2", "rougeL"} and f"rouge1 {scores['rouge1']}" in row
    assert ids == sorted(d["id"] for d in docs["test"])


def test_missing_corpus_path_stops_stage_1_with_one_line(tmp_path):
    import subprocess

    recipe = recipe_copy(tmp_path, "mustc", "st1")
    result = subprocess.run(["./run.sh", "--stop_stage", "1"], cwd=recipe, env=dict(os.environ, MUSTC=str(tmp_path / "nope")),
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert (f"ends with: error: MUSTC={tmp_path / 'nope'} (db.sh): no such directory; set it to the MuST-C root "
            f"(holding en-de/data/)") in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: stage 1 (data): failed")
