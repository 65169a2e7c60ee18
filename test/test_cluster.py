"""Job backends against real schedulers started here: a private single-node Slurm cluster and a
private single-host Grid Engine cell. Through each, the recipe's stages equal the local run, a
job killed while it runs (scancel / qdel) fails its stage and is the only one redone, and the
resource options reach the scheduler. Without a scheduler (or root) its tests skip, saying why."""

import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import sge_cluster
from sge_cluster import SgeCluster
from slurm_cluster import SlurmCluster, missing_tools
from test_recipes import ROOT, TINY, pytestmark as recipe_marks, recipe_copy, run_recipe

QUEUE_JOBS = [sys.executable, str(ROOT / "espnet_mtla" / "recipe" / "backends" / "queue_jobs.py")]
SGE_VARIABLES = ("SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT")


@contextmanager
def exported(env, names):
    """os.environ[name] = env[name] while it lasts (the recipes' subprocesses submit to the test scheduler)."""
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def started(cluster, daemons):
    """``cluster`` up (or the test skipped, saying why), then down: every daemon it started is gone."""
    try:
        cluster.start()
    except (OSError, LookupError, subprocess.CalledProcessError, RuntimeError) as err:
        cluster.stop()  # a machine where the scheduler is installed but cannot run (hostname, users, ...)
        pytest.skip(f"the test {cluster.backend} cluster did not start: {err}")
    yield cluster
    pids = {daemon: cluster.pid(daemon) for daemon in daemons}
    cluster.stop()
    assert not [daemon for daemon, pid in pids.items() if running(pid)]


@pytest.fixture(scope="module")
def slurm():
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs Slurm and munge (missing {', '.join(missing)}; apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("needs root: slurmd runs the jobs")
    with started(SlurmCluster(), ("munged", "slurmctld", "slurmd")) as cluster:
        with exported(cluster.env, ["SLURM_CONF"]):
            yield cluster


@pytest.fixture(scope="module")
def sge():
    missing = sge_cluster.missing_tools()
    if missing:
        pytest.skip(f"needs Grid Engine (missing {', '.join(missing)}; apt-get install gridengine-master "
                    "gridengine-exec gridengine-client, or utils/install_system_deps.sh)")
    if os.geteuid() != 0:
        pytest.skip("needs root: sge_execd runs the jobs")
    with started(SgeCluster(), ("sge_execd", "sge_qmaster")) as cluster:
        with exported(cluster.env, SGE_VARIABLES):
            yield cluster


@pytest.fixture(params=["slurm", "sge"])
def cluster(request):
    """Each scheduler in turn (the same test body through sbatch and through qsub)."""
    return request.getfixturevalue(request.param)


def running(pid) -> bool:
    """Whether process ``pid`` runs (an exited daemon nobody reaped is a zombie: not running)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except (FileNotFoundError, TypeError):
        return False


def cancel(cluster, name: str, number: int) -> bool:
    """Kill job ``number`` of the jobs whose logs are ``<name>.JOB.log`` if the scheduler runs it;
    whether it did. queue_jobs.py submits one Slurm job per number (named ``<name>.<n>``) and one
    SGE array job (named ``<name>.JOB``, task n)."""
    if cluster.backend == "slurm":
        job = cluster.jobs().get(f"{name}.{number}")
        if job:
            cluster.cancel(job)
        return bool(job)
    job = cluster.jobs().get(f"{name}.JOB")
    if job and number in cluster.running_tasks(job):
        cluster.delete(job, number)
        return True
    return False


def started_running(log: Path) -> bool:
    """The job has started this run's command (its log opens a section that has not ended)."""
    text = log.read_text() if log.exists() else ""
    return text.rfind("# Started at") > text.rfind("# Ended")


def kill_when_running(cluster, name: str, number: int, log: Path, killed: list) -> threading.Thread:
    """A thread that kills the job as soon as it runs (the event itself, not a delay after queueing)."""
    def watch():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if started_running(log) and cancel(cluster, name, number):
                killed.append(number)
            time.sleep(0.05)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def queue_jobs(backend: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(QUEUE_JOBS + ["--backend", backend, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True)


def test_queue_jobs_runs_jobs_and_names_the_failed_ones(cluster, tmp_path):
    backend = cluster.backend
    log = tmp_path / "log" / "echo.JOB.log"
    done = queue_jobs(backend, "--mem", "100M", "JOB=1:2", log, "echo", "job", "JOB", "on", "$(hostname)")
    assert done.returncode == 0, done.stderr
    for n in (1, 2):
        text = (tmp_path / "log" / f"echo.{n}.log").read_text()
        assert f"job {n} on" in text and "# Ended (code 0)" in text  # run_jobs.py's log, written on the node
    failed = queue_jobs(backend, "JOB=1:2", log, "exit", "$((JOB-1))")
    assert failed.returncode == 1
    assert f"1 / 2 {backend} job(s) failed; see {tmp_path / 'log' / 'echo.2.log'}" in failed.stderr
    assert "# Ended (code 1)" in (tmp_path / "log" / "echo.2.log").read_text()


def test_a_refused_submission_is_one_line_naming_the_reason(cluster, tmp_path):
    log = tmp_path / "log" / "none.JOB.log"
    refused = queue_jobs(cluster.backend, "--partition", "nowhere", "JOB=1:2", log, "true")
    submit = {"slurm": "sbatch", "sge": "qsub"}[cluster.backend]
    reason = {"slurm": "sbatch: error: invalid partition specified: nowhere",
              "sge": 'Unable to run job: Job was rejected because job requests unknown queue "nowhere"'}
    hint = "" if cluster.backend == "slurm" else "; the qsub options come from queue_jobs.py's default queue.conf"
    assert (refused.returncode, refused.stderr) == (1, f"queue_jobs.py: {submit} refused the jobs of {log}: "
                                                      f"{reason[cluster.backend]} (check the options against the "
                                                      f"cluster's resources{hint})\n")
    assert not list(log.parent.glob("*.log"))  # no job ran


def test_a_job_killed_while_it_runs_fails_and_only_it(cluster, tmp_path):
    """scancel / qdel of a running job: the submission reports it failed (qsub -sync y itself exits 0
    for a deleted task), names its log, and the other job's success stands."""
    log = tmp_path / "log" / "nap.JOB.log"
    killed = []
    killer = kill_when_running(cluster, "nap", 2, tmp_path / "log" / "nap.2.log", killed)
    done = queue_jobs(cluster.backend, "JOB=1:2", log, "sleep", "$(((JOB-1)*60))")
    killer.join()
    assert killed == [2] and done.returncode == 1
    assert f"1 / 2 {cluster.backend} job(s) failed; see {tmp_path / 'log' / 'nap.2.log'} " in done.stderr
    assert "# Ended (code 0)" in (tmp_path / "log" / "nap.1.log").read_text()
    assert "# Ended" not in (tmp_path / "log" / "nap.2.log").read_text()  # killed before its end
    if cluster.backend == "sge":
        assert "# qsub: Unable to run job" in (tmp_path / "log" / "q" / "nap.2.log.out").read_text()


def test_only_the_listed_jobs_are_submitted(cluster, tmp_path):
    """JOB=2,3,5 (what a re-run submits: the unfinished jobs) runs those and no other; on SGE as
    the arrays 2-3 and 5-5, $SGE_TASK_ID being the job's number."""
    log = tmp_path / "log" / "redo.JOB.log"
    done = queue_jobs(cluster.backend, "JOB=2,3,5", log, "echo", "job", "JOB", "task", "${SGE_TASK_ID:-none}")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in log.parent.glob("*.log")) == ["redo.2.log", "redo.3.log", "redo.5.log"]
    for n in (2, 3, 5):
        task = n if cluster.backend == "sge" else "none"
        assert f"job {n} task {task}\n" in (log.parent / f"redo.{n}.log").read_text()


def test_sge_resource_options_reach_the_job(sge, tmp_path):
    """--mem, --num_threads (--cpus) and --gpu through the default mapping: the job runs with 2 slots
    of the smp parallel environment, and the qmaster holds its gpu and mem_free requests."""
    log = tmp_path / "res.log"
    done = queue_jobs("sge", "--mem", "100M", "--num_threads", "2", "--gpu", "1", log,
                      "echo", "slots=$NSLOTS", "pe=$PE", ";", "qstat", "-j", "$JOB_ID")
    assert done.returncode == 0, done.stderr
    text = log.read_text()
    assert "slots=2 pe=smp" in text
    requests = next(line for line in text.splitlines() if line.startswith("hard resource_list:"))
    assert set(requests.split(":", 1)[1].strip().split(",")) == {"gpu=1", "mem_free=100M"}


def test_sge_reads_a_kaldi_queue_conf_in_conf(sge, tmp_path):
    """A Kaldi conf/queue.conf in the recipe maps the options (lines for options we do not have are
    fine); a resource the cell lacks is refused in one line, naming the file."""
    conf = tmp_path / "conf" / "queue.conf"
    conf.parent.mkdir()
    conf.write_text("# as in Kaldi's recipes\n"
                    "command qsub -v PATH -cwd -S /bin/bash -j y -l h_rt=0:10:0\n"
                    "option name=* -N $0\n"
                    "option mem=* -l mem_free=$0,ram_free=$0\n"
                    "option mem=0          # nothing\n"
                    "default gpu=0\n"
                    "option gpu=0\n"
                    "option gpu=* -l gpu=$0 -q all.q\n")
    done = queue_jobs("sge", "--gpu", "1", "log/gpu.log", "qstat", "-j", "$JOB_ID", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "log" / "gpu.log").read_text()
    assert "hard_queue_list:            all.q" in text
    requests = next(line for line in text.splitlines() if line.startswith("hard resource_list:"))
    assert set(requests.split(":", 1)[1].strip().split(",")) == {"gpu=1", "h_rt=600"}
    refused = queue_jobs("sge", "--mem", "1G", "log/mem.log", "true", cwd=tmp_path)
    assert refused.returncode == 1 and not (tmp_path / "log" / "mem.log").exists()
    assert refused.stderr == ('queue_jobs.py: qsub refused the jobs of log/mem.log: Unable to run job: unknown '
                              'resource "ram_free" (check the options against the cluster\'s resources; the qsub '
                              'options come from conf/queue.conf)\n')


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
def test_recipe_through_the_cluster_equals_local_and_a_killed_job_is_redone(cluster, local_recipe, tmp_path):
    import torch

    backend = cluster.backend
    local, remote = local_recipe, recipe_copy(tmp_path, "mini_synth", "asr1")
    run_recipe(remote, *TINY, "--stop_stage", "2")
    run_recipe(remote, *TINY, "--stage", "3", "--cmd", f"{backend} --mem 500M")  # stages 3-11, 2 jobs each
    ours, theirs = outputs(local), outputs(remote)
    assert ours.keys() == theirs.keys() and len(ours) > 20
    assert [k for k in ours if ours[k] != theirs[k]] == []
    for name, value in model_tensors(local).items():
        assert torch.equal(value, model_tensors(remote)[name]), name
    exp = remote / "exp" / "asr_train_mtla"
    decode = next(exp.glob("decode_*/test"))
    queued = sorted(p.name for p in (decode / "logdir" / "q").glob("*.sh"))
    # decoding went through the scheduler: a script per sbatch, one for SGE's array
    assert queued == (["decode.1.log.sh", "decode.2.log.sh"] if backend == "slurm" else ["decode.JOB.log.sh"])
    assert (exp / "q" / "train.log.sh").exists()

    # Decode again (--force) and kill job 2 while it runs: the stage fails naming its log ...
    uninterrupted = (decode / "text").read_text()
    killed = []
    killer = kill_when_running(cluster, "decode", 2, decode / "logdir" / "decode.2.log", killed)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = TINY + ["--stage", "8", "--stop_stage", "8", "--decode_cmd", backend, "--force", "true"]
    failed = subprocess.run(["./run.sh", *args], cwd=remote, env=env, capture_output=True, text=True)
    killer.join()
    assert killed and failed.returncode != 0
    assert "decode.2.log" in failed.stderr
    # ... and the re-run redoes only that job, with the uninterrupted run's result.
    again = run_recipe(remote, *TINY, "--stage", "8", "--stop_stage", "8", "--decode_cmd", backend)
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


def load_queue_jobs():
    """queue_jobs.py as a module (it is a script, run by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("queue_jobs", ROOT / "espnet_mtla" / "recipe" / "backends" / "queue_jobs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_submission_commands_carry_the_resources(tmp_path, monkeypatch):
    """What each scheduler is asked for, without one."""
    import argparse

    from espnet_mtla.recipe.backends.queue_conf import QueueConf

    queue_jobs = load_queue_jobs()
    opts = argparse.Namespace(mem="4G", gpu=2, time="1:00:00", partition="p", cpus=3, nodes=0, max_jobs_run=None)
    slurm = queue_jobs.slurm_command("train", Path("q/train.sh"), Path("q/train.out"), opts)
    assert slurm == ["sbatch", "--wait", "--parsable", "--job-name=train", "--output=q/train.out", "--mem=4G",
                     "--gres=gpu:2", "--time=1:00:00", "--partition=p", "--cpus-per-task=3", "q/train.sh"]
    monkeypatch.chdir(tmp_path)  # no conf/queue.conf here: the default mapping
    conf = QueueConf.find(None)
    resources = queue_jobs.sge_options(conf, opts)
    sge = queue_jobs.sge_command(conf, "decode.JOB", Path("q/decode.JOB.log.sh"), "/e/q/decode.$TASK_ID.log.out",
                                 (3, 4), resources)
    assert sge == ["qsub", "-V", "-cwd", "-S", "/bin/bash", "-j", "y", "-sync", "y", "-N", "decode.JOB",
                   "-o", "/e/q/decode.$TASK_ID.log.out", "-t", "3-4", "-l", "mem_free=4G", "-l", "gpu=2",
                   "-l", "h_rt=1:00:00", "-q", "p", "-pe", "smp", "3", "q/decode.JOB.log.sh"]
    opts.max_jobs_run = 2
    assert queue_jobs.sge_options(conf, opts)[-2:] == ["-tc", "2"]
    opts.nodes = 2
    assert queue_jobs.slurm_resources(opts)[-2:] == ["--nodes=2", "--ntasks-per-node=1"]
    assert queue_jobs.consecutive([1, 2, 3, 7, 9, 10]) == [[1, 2, 3], [7], [9, 10]]
    assert queue_jobs.job_name("exp/log/1best.JOB.log") == "j1best.JOB"  # SGE refuses names that start with a digit


def test_queue_conf_rules_as_kaldi_reads_them(tmp_path):
    from espnet_mtla.recipe.backends.queue_conf import QueueConf, QueueConfError

    conf = QueueConf("command qsub -v PATH -cwd -S /bin/bash -j y -l arch=*64*   # the base\n"
                     "option mem=* -l mem_free=$0,ram_free=$0\n"
                     "option mem=0\n"
                     "option num_threads=* -pe smp $0\n"
                     "option num_threads=1\n"
                     "option gpu=* -l gpu=$0 -q '*.q'\n"
                     "default gpu=0\n"
                     "option gpu=0\n", "q.conf")
    assert conf.command == ["qsub", "-v", "PATH", "-cwd", "-S", "/bin/bash", "-j", "y", "-l", "arch=*64*"]
    assert conf.arguments({"mem": "2G", "cpus": 4, "gpu": None}) == [
        "-l", "mem_free=2G,ram_free=2G", "-pe", "smp", "4"]  # cpus is Kaldi's num_threads; gpu's default 0: nothing
    assert conf.arguments({"mem": "0", "num_threads": 1, "gpu": 1}) == ["-l", "gpu=1", "-q", "*.q"]
    with pytest.raises(QueueConfError, match=r"^q.conf has no rule for time=1:00:00 \(add a line "
                                             r"'option time=\* <qsub options, \$0 for the value>'\)$"):
        conf.arguments({"time": "1:00:00"})
    with pytest.raises(QueueConfError, match=r"^bad.conf:2: expected 'command qsub \.\.\.', "):
        QueueConf("command qsub\noptions mem=* -l h_vmem=$0\n", "bad.conf")
    with pytest.raises(QueueConfError, match=r"^empty.conf: no 'command qsub \.\.\.' line$"):
        QueueConf("# nothing\n", "empty.conf")
    wrong = queue_jobs("sge", "--config", tmp_path / "nope.conf", "log/x.log", "true", cwd=tmp_path)
    assert (wrong.returncode, wrong.stderr) == (1, f"queue_jobs.py: --config {tmp_path / 'nope.conf'}: No such "
                                                   f"file or directory\n")
    assert queue_jobs("sge", "--nodes", "2", "log/x.log", "true", cwd=tmp_path).stderr == (
        "queue_jobs.py: --nodes is Slurm's (SGE: use a parallel environment, --cpus N -> -pe smp N)\n")

