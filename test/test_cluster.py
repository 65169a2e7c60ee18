"""Job backends against a real Slurm (a private single-node cluster started here): the recipe's
stages through sbatch equal the local run, a job killed with scancel is the only one redone."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, missing_tools
from test_recipes import ROOT, TINY, pytestmark as recipe_marks, recipe_copy, run_recipe

QUEUE_JOBS = [sys.executable, str(ROOT / "espnet_mtla" / "recipe" / "backends" / "queue_jobs.py")]


@pytest.fixture(scope="module")
def slurm():
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs Slurm and munge (missing {', '.join(missing)}; apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("needs root: slurmd runs the jobs")
    cluster = SlurmCluster()
    try:
        cluster.start()
    except (OSError, LookupError, subprocess.CalledProcessError, RuntimeError) as err:
        cluster.stop()  # a machine where Slurm is installed but cannot run (no munge user, hostname, ...)
        pytest.skip(f"the test Slurm cluster did not start: {err}")
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
    from espnet_mtla.recipe.errors import StageError
    from espnet_mtla.recipe.jobs import Jobs
    from espnet_mtla.recipe.options import get_parser

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    jobs = Jobs(get_parser().parse_args(["--task", "asr", "--decode_cmd", "slurm --mem 4G"]))
    with pytest.raises(StageError, match=r"^--decode_cmd slurm --mem 4G: sbatch not found \(install the scheduler's "
                                         r"client tools, or use --decode_cmd local\)$"):
        jobs.check("decode_cmd")
    jobs.check("cmd")  # local: nothing to check
    with pytest.raises(SystemExit):
        get_parser().parse_args(["--task", "asr", "--cmd", "pbs"])


@pytest.fixture(scope="module")
def local_recipe(tmp_path_factory):
    """The mini ASR recipe run locally, every stage (the reference of the Slurm run, and the
    data and stage-7 command of the DDP run)."""
    recipe = recipe_copy(tmp_path_factory.mktemp("local"), "mini_synth", "asr1")
    run_recipe(recipe, *TINY)
    return recipe


def outputs(recipe):
    """What the stages wrote, keyed by path inside the recipe (paths inside files made relative)."""
    found = {}
    for sub in ("dump", "data/token_list", "exp"):
        for path in sorted((recipe / sub).rglob("*")):
            if not path.is_file() or path.suffix in (".log", ".sh", ".out") or "/logdir/" in str(path) or \
                    "exp/ddp" in str(path) or \
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
def test_recipe_through_slurm_equals_local_and_a_killed_job_is_redone(slurm, local_recipe, tmp_path):
    import torch

    local, cluster = local_recipe, recipe_copy(tmp_path, "mini_synth", "asr1")
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

    log_2 = decode / "logdir" / "decode.2.log"

    def running(log: Path) -> bool:
        """The job has started this run's command (its log opens a section that has not ended)."""
        text = log.read_text() if log.exists() else ""
        return text.rfind("# Started at") > text.rfind("# Ended")

    def cancel_job_2():  # as soon as it runs: the event itself, not a fixed delay after queueing
        deadline = time.time() + 120
        while time.time() < deadline and not cancelled:
            job = slurm.jobs().get("decode.2")
            if job and running(log_2):
                slurm.cancel(job)
                cancelled.append(job)
            time.sleep(0.05)

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


@recipe_marks[0]
@recipe_marks[1]
def test_ddp_two_cpu_ranks_train_one_model_that_decodes(slurm, local_recipe):
    """2 processes (srun -n 2, gloo) train the mini model: the ranks end with the same weights,
    the loss decreases, and the rank-0 checkpoint decodes."""
    import shlex

    import torch

    from slurm_cluster import free_port

    recipe = local_recipe
    single = recipe / "exp" / "asr_train_mtla"
    command = next(line[2:] for line in (single / "train.log").read_text().splitlines() if line.startswith("# "))
    args = shlex.split(command)
    args = args[args.index("espnet_mtla.bin.asr_train") + 1:]
    args[args.index("--output_dir") + 1] = "exp/ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(["srun", "-n", "2", sys.executable, str(ROOT / "test" / "ddp_rank.py"), str(free_port()),
                           *args, "--max_epoch", "3"], cwd=recipe, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    exp = recipe / "exp" / "ddp"
    ranks = [torch.load(exp / f"rank{r}.final.pth") for r in (0, 1)]  # both ranks trained to the end
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # DDP kept the replicas identical
    stats = torch.load(exp / "checkpoint.pth", weights_only=False)["reporter"]["stats"]
    losses = [stats[epoch]["train"]["loss"] for epoch in (1, 2, 3)]
    assert losses[2] < losses[0], losses
    latest = torch.load(exp / "latest.pth")
    assert all(torch.equal(latest[k], ranks[0][k]) for k in latest)  # rank 0 wrote the checkpoints
    key, wav = (recipe / "dump" / "flac" / "test" / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)
    (recipe / "one.scp").write_text(f"{key} {wav}\n")
    decoded = subprocess.run(
        [sys.executable, "-m", "espnet_mtla.bin.asr_inference", "--asr_train_config", str(exp / "config.yaml"),
         "--asr_model_file", str(exp / "latest.pth"), "--data_path_and_name_and_type", "one.scp,speech,sound",
         "--output_dir", "decode_ddp", "--beam_size", "2", "--maxlenratio", "-5"],
        cwd=recipe, env=env, capture_output=True, text=True)
    assert decoded.returncode == 0, decoded.stderr[-3000:]
    assert (recipe / "decode_ddp" / "1best_recog" / "token").read_text().startswith(key)


def test_stage7_passes_espnets_distributed_options():
    from espnet_mtla.recipe.experiment import Experiment
    from espnet_mtla.recipe.options import get_parser

    def dist(*options):
        return [str(x) for x in Experiment(get_parser().parse_args(["--task", "asr", *options])).distributed_args()]

    assert dist() == []  # one process: nothing (and older stage-7 records keep their key)
    assert dist("--ngpu", "4", "--num_nodes", "2", "--dist_launcher", "slurm", "--dist_backend", "nccl") == [
        "--num_nodes", "2", "--multiprocessing_distributed", "true", "--dist_launcher", "slurm",
        "--dist_backend", "nccl"]


def test_submission_commands_carry_the_resources():
    """What each scheduler is asked for (SGE has no cluster here: its command line is what is tested)."""
    import argparse
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("queue_jobs", ROOT / "espnet_mtla" / "recipe" / "backends" / "queue_jobs.py")
    queue_jobs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(queue_jobs)
    opts = argparse.Namespace(mem="4G", gpu=2, time="1:00:00", partition="p", cpus=3, nodes=0)
    slurm = queue_jobs.submit_command("slurm", "train", Path("q/train.sh"), Path("q/train.out"), opts)
    assert slurm == ["sbatch", "--wait", "--parsable", "--job-name=train", "--output=q/train.out", "--mem=4G",
                     "--gres=gpu:2", "--time=1:00:00", "--partition=p", "--cpus-per-task=3", "q/train.sh"]
    sge = queue_jobs.submit_command("sge", "train", Path("q/train.sh"), Path("q/train.out"), opts)
    assert sge == ["qsub", "-sync", "y", "-terse", "-cwd", "-V", "-N", "train", "-j", "y", "-o", "q/train.out",
                   "-l", "mem_free=4G,ram_free=4G", "-l", "gpu=2", "-l", "h_rt=1:00:00", "-q", "p", "-pe", "smp", "3",
                   "q/train.sh"]
    opts.nodes = 2
    assert queue_jobs.resources("slurm", opts)[-2:] == ["--nodes=2", "--ntasks-per-node=1"]
