"""Job backends against a real Slurm (a private single-node cluster started here): the recipe's
stages through sbatch equal the local run, a job killed with scancel is the only one redone."""

import os
import subprocess
import sys
import threading
import time

import pytest

from slurm_cluster import SlurmCluster, missing_tools
from test_recipes import ROOT, TINY, pytestmark as recipe_marks, recipe_copy, run_recipe

QUEUE_JOBS = [sys.executable, str(ROOT / "utils" / "queue_jobs.py")]


@pytest.fixture(scope="module")
def slurm():
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs Slurm and munge (missing {', '.join(missing)}; apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("needs root: slurmd runs the jobs")
    cluster = SlurmCluster().start()
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]  # the recipes' subprocesses submit to it
    yield cluster
    if saved is None:
        del os.environ["SLURM_CONF"]
    else:
        os.environ["SLURM_CONF"] = saved
    pids = {d: cluster.pid(d) for d in ("munged", "slurmctld", "slurmd")}
    cluster.stop()
    assert not [daemon for daemon, pid in pids.items() if running(pid)]  # every daemon it started is gone


def running(pid) -> bool:
    """Whether process ``pid`` runs (an exited daemon nobody reaped is a zombie: not running)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except (FileNotFoundError, TypeError):
        return False


def test_queue_jobs_runs_jobs_and_names_the_failed_ones(slurm, tmp_path):
    log = tmp_path / "log" / "echo.JOB.log"
    done = subprocess.run(QUEUE_JOBS + ["--backend", "slurm", "--mem", "100M", "JOB=1:2", str(log),
                                        "echo", "job", "JOB", "on", "$(hostname)"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for n in (1, 2):
        text = (tmp_path / "log" / f"echo.{n}.log").read_text()
        assert f"job {n} on" in text and "# Ended (code 0)" in text  # run_jobs.py's log, written on the node
    failed = subprocess.run(QUEUE_JOBS + ["--backend", "slurm", "JOB=1:2", str(log), "exit", "$((JOB-1))"],
                            capture_output=True, text=True)
    assert failed.returncode == 1
    assert f"1 / 2 slurm job(s) failed; see {tmp_path / 'log' / 'echo.2.log'}" in failed.stderr


def test_missing_sbatch_is_a_one_line_error_naming_the_option(tmp_path, monkeypatch):
    from espnet_mtla.pipeline import Pipeline, StageError, get_parser

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    pipeline = Pipeline(get_parser().parse_args(["--task", "asr", "--decode_cmd", "slurm --mem 4G"]))
    with pytest.raises(StageError, match=r"^--decode_cmd slurm --mem 4G: sbatch not found \(install the scheduler's "
                                         r"client tools, or use --decode_cmd local\)$"):
        pipeline.check_backend("decode_cmd")
    pipeline.check_backend("cmd")  # local: nothing to check
    with pytest.raises(SystemExit):
        get_parser().parse_args(["--task", "asr", "--cmd", "pbs"])


def outputs(recipe):
    """What the stages wrote, keyed by path inside the recipe (paths inside files made relative)."""
    found = {}
    for sub in ("dump", "data/token_list", "exp"):
        for path in sorted((recipe / sub).rglob("*")):
            if not path.is_file() or path.suffix in (".log", ".sh", ".out") or "/logdir/" in str(path) or \
                    "/q/" in str(path) or path.name in ("efficiency.json", "pipeline.log") or "/stages/" in str(path) \
                    or "tensorboard" in str(path) or "/images/" in str(path) or path.name.endswith(".pth") \
                    or path.suffix == ".zip" or path.name == "config.yaml" or "/logs/" in str(path):
                continue
            data = path.read_bytes()
            found[str(path.relative_to(recipe))] = data.replace(str(recipe).encode(), b"RECIPE")
    return found


def model_tensors(recipe):
    import torch

    return torch.load(recipe / "exp" / "asr_train_mtla" / "valid.acc.ave.pth")


@recipe_marks[0]
@recipe_marks[1]
def test_recipe_through_slurm_equals_local_and_a_killed_job_is_redone(slurm, tmp_path):
    import torch

    for name in ("local", "slurm"):
        (tmp_path / name).mkdir()
    local, cluster = recipe_copy(tmp_path / "local", "mini_synth", "asr1"), recipe_copy(tmp_path / "slurm", "mini_synth", "asr1")
    run_recipe(local, *TINY)
    run_recipe(cluster, *TINY, "--stop_stage", "2")
    run_recipe(cluster, *TINY, "--stage", "3", "--cmd", "slurm --mem 500M")  # stages 3-11, 2 jobs each
    ours, theirs = outputs(local), outputs(cluster)
    assert ours.keys() == theirs.keys() and len(ours) > 20
    assert [k for k in ours if ours[k] != theirs[k]] == []
    for name, value in model_tensors(local).items():
        assert torch.equal(value, model_tensors(cluster)[name]), name
    exp = cluster / "exp" / "asr_train_mtla"
    decode = next(exp.glob("decode_*/test"))
    queued = sorted(p.name for p in (decode / "logdir" / "q").glob("*.sh"))
    assert queued == ["decode.1.log.sh", "decode.2.log.sh"]  # decoding went through sbatch
    assert (exp / "q" / "train.log.sh").exists()

    # Decode again (--force) and cancel job 2 while it runs: the stage fails naming its log ...
    uninterrupted = (decode / "text").read_text()
    cancelled = []

    def cancel_job_2():
        deadline = time.time() + 120
        while time.time() < deadline and not cancelled:
            job = slurm.jobs().get("decode.2")
            if job:
                time.sleep(1)
                slurm.cancel(job)
                cancelled.append(job)
            time.sleep(0.2)

    killer = threading.Thread(target=cancel_job_2)
    killer.start()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = TINY + ["--stage", "8", "--stop_stage", "8", "--decode_cmd", "slurm", "--force", "true"]
    failed = subprocess.run(["./run.sh", *args], cwd=cluster, env=env, capture_output=True, text=True)
    killer.join()
    assert cancelled and failed.returncode != 0
    assert "decode.2.log" in failed.stderr
    # ... and the re-run redoes only that job, with the uninterrupted run's result.
    again = run_recipe(cluster, *TINY, "--stage", "8", "--stop_stage", "8", "--decode_cmd", "slurm")
    assert "job(s) 1 finished before the interruption; decoding job(s) 2" in again.stderr + again.stdout
    assert (decode / "text").read_text() == uninterrupted
