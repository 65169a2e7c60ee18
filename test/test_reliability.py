"""Interrupted and repeated runs: stage records, resumed training and decoding, nothing lost.

Kills are real (SIGKILL to the whole process group of ./run.sh or the pipeline, as a job
scheduler or a crash would); the tests then re-run the same command and compare with runs
that were never interrupted.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from espnet_mtla.recipe.records import StageRecord
from espnet_setup import config, parse, write_yaml
from test_pipeline_stages import make_data
from test_recipes import SCLITE, recipe_copy, table

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def pipeline_cmd(*args):
    return [sys.executable, "-m", "espnet_mtla.recipe", "--task", "asr", *map(str, args)]


def run_ok(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def kill_when(cmd, cwd, condition, timeout=300):
    """Start ``cmd`` in its own process group; SIGKILL the group as soon as ``condition()``."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    try:
        while not condition():
            assert proc.poll() is None, "the run finished before the moment it was to be killed"
            assert time.time() < deadline, "timed out waiting for the moment to kill"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def pipeline_log(cwd: Path) -> str:
    return (cwd / "exp" / "pipeline.log").read_text()


# -- stage records -------------------------------------------------------------------------------
def test_finished_stages_are_skipped_and_redone_when_options_or_inputs_change(tmp_path, monkeypatch):
    from espnet_mtla.recipe.runner import main

    monkeypatch.chdir(tmp_path)
    for name in ("train", "dev", "test"):
        make_data(tmp_path / "data" / name, [0.05, 1.0, 2.0])
    args = ["--task", "asr", "--stage", "3", "--stop_stage", "4", "--nj", "1"]
    assert main(args) == 0
    record = StageRecord(tmp_path / "exp" / "stages", 4, "filter")
    assert record.read()["status"] == "done"
    assert record.read()["key"]["options"] == {"max_wav_duration": 30.0, "min_wav_duration": 0.1}
    kept = tmp_path / "dump" / "flac" / "train" / "utt2spk"
    stamp = kept.stat().st_mtime_ns

    assert main(args) == 0  # same command: nothing redone
    assert pipeline_log(tmp_path).count("finished earlier with the same options and inputs") == 2
    assert kept.stat().st_mtime_ns == stamp

    assert main(args + ["--max_wav_duration", "1.5"]) == 0  # stage 4's option changed: only stage 4 redone
    log = pipeline_log(tmp_path)
    assert log.count("stage 3: finished earlier") == 2 and log.count("stage 4: finished earlier") == 1
    assert "stage 4: options or inputs changed since its last run (max_wav_duration): redone" in log
    assert kept.read_text() == "spk-u1 spk\n"

    text = tmp_path / "data" / "dev" / "text"  # an input of stage 3 changed: stage 3 and, through it, 4 redone
    text.write_text(text.read_text().replace("word 1", "word one"))
    assert main(args + ["--max_wav_duration", "1.5"]) == 0
    log = pipeline_log(tmp_path)
    assert "stage 3: options or inputs changed since its last run (data/dev/text): redone" in log
    assert "stage 4: options or inputs changed since its last run (dump/flac/org/dev/text): redone" in log
    assert "word one" in (tmp_path / "dump" / "flac" / "dev" / "text").read_text()

    assert main(args + ["--max_wav_duration", "1.5", "--force", "true"]) == 0
    log = pipeline_log(tmp_path)
    assert log.count("stage 3: finished earlier") == 2 and log.count("stage 4: finished earlier") == 1


def test_a_stage_after_an_interrupted_one_refuses_to_run(tmp_path, monkeypatch, capsys):
    from espnet_mtla.recipe.runner import main

    monkeypatch.chdir(tmp_path)
    for name in ("train", "dev", "test"):
        make_data(tmp_path / "data" / name, [1.0, 2.0])
    assert main(["--task", "asr", "--stage", "3", "--stop_stage", "4", "--nj", "1"]) == 0
    record = StageRecord(tmp_path / "exp" / "stages", 3, "format")
    record.start(record.read()["key"])  # what a kill in the middle of stage 3 leaves
    assert main(["--task", "asr", "--stage", "4", "--stop_stage", "4"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: stage 4 (filter): stage 3 (format) was interrupted ({Path('exp/stages/stage3_format.json')}); "
        "its outputs are incomplete: re-run from it (--stage 3)")


# -- decoding --------------------------------------------------------------------------------------
def make_decode_setup(root: Path, durations, tags=("tiny",)):
    """dump/flac/test with one utterance per duration, and a random tiny MTLA model per tag."""
    test = root / "dump" / "flac" / "test"
    (test / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = {"wav.scp": [], "text": [], "utt2spk": [], "spk2utt": []}
    for i, seconds in enumerate(durations):
        utt = f"utt{i:04d}"
        wav = test / "data" / f"{utt}.flac"
        soundfile.write(wav, 0.1 * rng.standard_normal(int(16000 * seconds)).astype(np.float32), 16000)
        lines["wav.scp"].append(f"{utt} {wav}")
        lines["text"].append(f"{utt} abc")
        lines["utt2spk"].append(f"{utt} {utt}")
        lines["spk2utt"].append(f"{utt} {utt}")
    for name, content in lines.items():
        (test / name).write_text("\n".join(content) + "\n")
    write_yaml(root / "train.yaml", config("asr", "mtla"))
    args = parse("asr", root / "train.yaml")
    import espnet_mtla.tasks.registration as registry

    torch.manual_seed(0)
    model = registry.ESPNET_TASKS["asr"].build_model(args)
    for tag in tags:
        exp = root / "exp" / f"asr_{tag}"
        exp.mkdir(parents=True)
        torch.save(model.state_dict(), exp / "valid.acc.ave.pth")
        write_yaml(exp / "config.yaml", vars(args))


DECODE = ["--stage", "8", "--stop_stage", "8", "--inference_args", "--beam_size 2 --maxlenratio -3 --ctc_weight 0.3"]


def decoded(root: Path, tag: str):
    out = root / "exp" / f"asr_{tag}" / "decode_valid.acc.ave" / "test"
    return out, {name: (out / name).read_text() for name in ("text", "token", "score")}


@pytest.mark.slow
def test_decoding_killed_midway_redoes_only_unfinished_jobs(tmp_path):
    # Job 1 gets the short utterances, job 2 the long ones, so job 1 finishes well before job 2.
    make_decode_setup(tmp_path, [0.3] * 12 + [30.0] * 12, tags=("tiny", "reference"))
    run_ok(pipeline_cmd("--tag", "reference", "--inference_nj", "2", *DECODE), tmp_path)
    _, reference = decoded(tmp_path, "reference")

    cmd = pipeline_cmd("--tag", "tiny", "--inference_nj", "2", *DECODE)
    out = tmp_path / "exp" / "asr_tiny" / "decode_valid.acc.ave" / "test"
    logdir = out / "logdir"
    kill_when(cmd, tmp_path, lambda: (logdir / "output.1").exists())
    assert (logdir / "output.1" / "1best_recog" / "efficiency.json").exists()
    assert not (logdir / "output.2").exists()  # job 2 was still running: only its .partial dir is there
    assert not (out / "token").exists() and not (out / "efficiency.json").exists()  # nothing merged
    record = StageRecord(out.parent / "stages", 8, "decode")
    assert record.read()["status"] == "started"
    log1 = (logdir / "decode.1.log").read_text()

    run_ok(cmd, tmp_path)
    assert "test: job(s) 1 finished before the interruption; decoding job(s) 2" in pipeline_log(tmp_path)
    assert (logdir / "decode.1.log").read_text() == log1  # job 1 was not run again
    assert (logdir / "decode.2.log").read_text().count("# Started at") == 2  # the killed run's log is kept
    assert record.read()["status"] == "done"
    _, resumed = decoded(tmp_path, "tiny")
    assert resumed == reference
    ids = [line.split()[0] for line in resumed["token"].splitlines()]
    assert ids == [f"utt{i:04d}" for i in range(24)]  # each utterance exactly once
    assert json.loads((out / "efficiency.json").read_text())["num_utterances"] == 24

    # Other decoding options: the finished jobs of the old options are not reused.
    run_ok(cmd[:-1] + ["--beam_size 1 --maxlenratio -3 --ctc_weight 0.3"], tmp_path)
    assert "options or inputs changed since its last run (inference_args): redone" in pipeline_log(tmp_path)
    assert "--beam_size 1" in (logdir / "decode.1.log").read_text()  # the old options' jobs were cleared


@pytest.mark.slow
def test_two_decoding_jobs_over_500_utterances_equal_one_job(tmp_path):
    rng = np.random.default_rng(1)
    make_decode_setup(tmp_path, list(rng.uniform(0.1, 0.6, 500)), tags=("one", "two"))
    run_ok(pipeline_cmd("--tag", "one", "--inference_nj", "1", *DECODE), tmp_path)
    run_ok(pipeline_cmd("--tag", "two", "--inference_nj", "2", *DECODE), tmp_path)
    out_one, one = decoded(tmp_path, "one")
    out_two, two = decoded(tmp_path, "two")
    ids = [line.split()[0] for line in two["token"].splitlines()]
    assert ids == [f"utt{i:04d}" for i in range(500)]  # every utterance decoded exactly once
    assert one == two
    assert json.loads((out_two / "efficiency.json").read_text())["num_utterances"] == 500
    assert json.loads((out_two / "efficiency.json").read_text())["jobs"] == 2


# -- training ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not SCLITE, reason="needs sclite")
def test_training_killed_mid_epoch_resumes_to_the_same_model(tmp_path):
    import shutil

    recipe = recipe_copy(tmp_path, "mini_synth", "asr1")
    opts = ["--local_data_opts", "--train_size 48 --dev_size 8 --test_size 4 --condition clean", "--nj", "1", "--inference_nj", "1",
            "--train_args", "--max_epoch 3 --batch_size 8 --num_workers 0"]
    run_ok(["./run.sh", *opts, "--stage", "1", "--stop_stage", "6"], recipe)
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(recipe, uninterrupted, symlinks=True)
    run_ok(["./run.sh", *opts, "--stage", "7", "--stop_stage", "7"], uninterrupted)

    exp = recipe / "exp" / "asr_train_mtla"

    def epoch_2_started():  # ESPnet logs it after epoch 1's checkpoint is written: killed in epoch 2
        log = exp / "train.log"
        return log.exists() and "2/3epoch started" in log.read_text()

    kill_when(["./run.sh", *opts, "--stage", "1", "--stop_stage", "7"], recipe, epoch_2_started)
    assert torch.load(exp / "checkpoint.pth", weights_only=False)["reporter"]["epoch"] == 1
    assert StageRecord(exp / "stages", 7, "train").read()["status"] == "started"

    run_ok(["./run.sh", *opts, "--stage", "1", "--stop_stage", "7"], recipe)  # the same command again
    log = pipeline_log(recipe)
    assert log.count("stage 1: finished earlier with the same options and inputs") == 2  # killed run + this one
    assert "stage 7: resuming an interrupted run" in log
    assert "stage 7: resumed from the checkpoint after epoch 1 of 3" in log  # the progress lines say where
    assert "stage 7: epoch 2/3: " in log and "stage 7: epoch 3/3: " in log
    train_log = (exp / "train.log").read_text()
    assert train_log.count("# Started at") == 2 and "The training was resumed using" in train_log
    resumed = torch.load(exp / "checkpoint.pth", weights_only=False)
    reference = torch.load(uninterrupted / "exp" / "asr_train_mtla" / "checkpoint.pth", weights_only=False)
    assert resumed["reporter"]["epoch"] == reference["reporter"]["epoch"] == 3
    # Same seed, same data order: ESPnet re-seeds at every epoch, so the resumed run is exact.
    for name, value in reference["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    assert (exp / "valid.acc.best.pth").resolve().exists()

    # The training config changed after training: continuing would mix two models, so refuse.
    config = recipe / "conf" / "train_mtla.yaml"
    config.write_text(config.read_text().replace("linear_units: 512\n", "linear_units: 256\n"))
    result = subprocess.run(["./run.sh", *opts, "--stage", "7", "--stop_stage", "7"], cwd=recipe, env=ENV,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: stage 7 (train): exp/asr_train_mtla holds a training run with other options or inputs (changed: "
        "conf/train_mtla.yaml); resuming it would mix the two: move it away, name a new experiment with --tag, "
        "or continue it anyway with --force true")


def test_repair_before_resume_restores_the_files_a_kill_can_leave_behind(tmp_path):
    from espnet2.train.reporter import Reporter

    from espnet_mtla.storage.training_files import atomic_torch_save, repair_before_resume

    reporter = Reporter()
    for epoch, acc in ((1, 0.5), (2, 0.7)):
        reporter.set_epoch(epoch)
        with reporter.observe("valid") as sub:
            sub.register({"acc": acc})
    model = {"w": torch.arange(4.0)}
    with atomic_torch_save():
        torch.save({"model": model, "reporter": reporter.state_dict()}, tmp_path / "checkpoint.pth")
        torch.save({"w": torch.zeros(4)}, tmp_path / "1epoch.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1epoch.pth", "checkpoint.pth"]  # no temporary files
    # Killed after checkpoint.pth of epoch 2, before 2epoch.pth and the links.
    (tmp_path / "latest.pth").symlink_to("1epoch.pth")
    (tmp_path / "valid.acc.best.pth").symlink_to("1epoch.pth")
    repaired = repair_before_resume(tmp_path, [["valid", "acc", "max"], ["train", "loss", "min"]])
    assert repaired == ["wrote 2epoch.pth from checkpoint.pth", "latest.pth -> 2epoch.pth",
                        "valid.acc.best.pth -> 2epoch.pth"]
    assert torch.equal(torch.load(tmp_path / "valid.acc.best.pth")["w"], model["w"])
    assert repair_before_resume(tmp_path, [["valid", "acc", "max"]]) == []
