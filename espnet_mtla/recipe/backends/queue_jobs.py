#!/usr/bin/env python3
"""Run a command as N jobs on a cluster (Slurm or SGE), with run_jobs.py's interface and logs.

    espnet_mtla/recipe/backends/queue_jobs.py --backend slurm [--mem 4G] [--gpu 1] [--time 4:00:00] [--partition P] \\
        [--cpus 2] [--nodes N] [--max-jobs-run M] JOB=1:N exp/decode/log/decode.JOB.log command args...
    espnet_mtla/recipe/backends/queue_jobs.py --backend sge [--config conf/queue.conf] ...   # the same, through qsub

Kaldi's slurm.pl / queue.pl, for our pipeline. Each job runs a script that runs
``espnet_mtla/recipe/backends/run_jobs.py JOB=<n> <log> <command>`` on the node, so a job's log is
exactly what a local run writes. The submitting environment goes with the job.

- Slurm: each job is one ``sbatch --wait``, whose exit code is the job's (a job killed by
  ``scancel`` fails). At most M jobs are waited on at once (default: all).
- SGE: the jobs are one array job (``qsub -sync y -t first-last``, ``$SGE_TASK_ID`` is JOB; one
  array per run of consecutive numbers when only some jobs are redone), with at most M tasks
  running at once (``-tc M``). A task succeeded only if qsub reports its exit code 0: qsub itself
  exits 0 when a task is deleted with ``qdel``. The options become qsub options through a Kaldi
  ``queue.conf`` (see queue_conf.py): ``--config FILE``, else the recipe's conf/queue.conf if it
  has one, else a default for a stock cell (-l mem_free, -pe smp, -l gpu, -l h_rt, -q).

The scheduler's own output (what a job printed before run_jobs.py started, or why it never
started or was killed) goes to ``<log dir>/q/<log name>.out``, and the job scripts to
``<log dir>/q/``. If the scheduler refuses the jobs (an unknown resource, partition or queue),
this says so in one line; if any job fails, it exits 1 and names every failed job's log.
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from espnet_mtla.recipe.backends.queue_conf import QueueConf, QueueConfError

RUN_JOBS = Path(__file__).resolve().with_name("run_jobs.py")
SUBMIT = {"slurm": "sbatch", "sge": "qsub"}
# What qsub -sync y prints for each task that ran to its end ("Job 12.3 exited with exit code 0.";
# "Job 12 ..." for a job that is not an array), to stdout for 0, to stderr otherwise. A task that was
# deleted or killed by a signal gets another line ("Unable to run job 12.3", "... because of signal").
SGE_EXIT = re.compile(r"Job (\d+)(?:\.(\d+))? exited with exit code (\d+)\.$")
SGE_SUBMITTED = re.compile(r"^Your job(?:-array)? (\d+)", re.M)

# A job's outcome: its exit code, None when it has none (deleted, killed, never started).
Codes = Dict[Optional[int], Optional[int]]


def slurm_resources(opts) -> list:
    """sbatch options for the requested resources."""
    out = [f"--mem={opts.mem}"] if opts.mem else []
    out += [f"--gres=gpu:{opts.gpu}"] if opts.gpu else []
    out += [f"--time={opts.time}"] if opts.time else []
    out += [f"--partition={opts.partition}"] if opts.partition else []
    out += [f"--cpus-per-task={opts.cpus}"] if opts.cpus else []
    out += [f"--nodes={opts.nodes}", "--ntasks-per-node=1"] if opts.nodes else []
    return out


def slurm_command(name: str, script: Path, out: Path, opts) -> list:
    return ["sbatch", "--wait", "--parsable", f"--job-name={name}", f"--output={out}", *slurm_resources(opts),
            str(script)]


def sge_options(conf: QueueConf, opts) -> list:
    """qsub options for the requested resources, by ``conf``'s rules (QueueConfError: an option it has no rule for)."""
    return conf.arguments({"mem": opts.mem, "gpu": opts.gpu, "time": opts.time, "partition": opts.partition,
                           "num_threads": opts.cpus, "max_jobs_run": opts.max_jobs_run})


def sge_command(conf: QueueConf, name: str, script: Path, out: str, tasks: Optional[Tuple[int, int]],
                resources: list) -> list:
    """qsub of ``script`` as the array ``tasks`` (first, last) or one job (None). ``out`` may hold
    SGE's ``$TASK_ID``."""
    array = ["-t", f"{tasks[0]}-{tasks[1]}"] if tasks else []
    return [*conf.command, "-sync", "y", "-N", name, "-o", out, *array, *resources, str(script)]


def job_name(log_template: str) -> str:
    """The log's name without .log, as the scheduler's job name (SGE refuses names that start with a digit)."""
    name = re.sub(r"[^\w.-]", "_", Path(log_template).stem)[:60]
    return f"j{name}" if name[:1].isdigit() else name


def job_script(job: Optional[str], log_template: str, command: str) -> str:
    """The script a job runs: run_jobs.py with ``JOB=<job>`` (a number, or a shell word such as
    "$SGE_TASK_ID"), or once when ``job`` is None."""
    run = " ".join(shlex.quote(a) for a in (sys.executable, str(RUN_JOBS)))
    job_arg = f' "JOB={job}"' if job is not None else ""
    return (f"#!/usr/bin/env bash\ncd {shlex.quote(os.getcwd())}\n"
            f"exec {run}{job_arg} {shlex.quote(log_template)} {command}\n")


def write_script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)
    return path


def refusal(stderr: str) -> str:
    """The scheduler's reason for refusing a submission: its first line that is not qsub's "Exiting."."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and line.strip() != "Exiting."]
    return lines[0] if lines else "no reason given"


def run_slurm_job(number: Optional[int], log_template: str, command: str, opts) -> Tuple[Codes, Optional[str]]:
    """One sbatch --wait: (its exit code, the reason sbatch refused it or None)."""
    log = Path(log_template.replace("JOB", str(number)) if number is not None else log_template)
    qdir = log.parent / "q"
    script = write_script(qdir / f"{log.name}.sh", job_script(number, log_template, command))
    out = qdir / f"{log.name}.out"
    result = subprocess.run(slurm_command(job_name(str(log)), script, out, opts), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0 and result.stderr.strip():
        with open(out, "a", encoding="utf-8") as f:
            f.write(f"# sbatch: {result.stderr.strip()}\n")
    refused = refusal(result.stderr) if result.returncode != 0 and not result.stdout.strip() else None
    return {number: result.returncode}, refused


def run_sge_jobs(numbers: List[Optional[int]], log_template: str, script: Path, conf: QueueConf,
                 resources: list) -> Tuple[Codes, Optional[str]]:
    """One qsub -sync y of ``script`` for the consecutive jobs ``numbers`` as an array (or for the
    one job [None]): (each job's exit code, the reason qsub refused them or None)."""
    array = numbers != [None]
    # SGE expands $TASK_ID in -o; absolute, since a relative path would be the job's home's without -cwd
    name = Path(log_template).name.replace("JOB", "$TASK_ID")
    out = os.path.abspath(Path(log_template).parent / "q" / f"{name}.out")
    submit = sge_command(conf, job_name(log_template), script, out, (numbers[0], numbers[-1]) if array else None,
                         resources)
    result = subprocess.run(submit, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    submitted = SGE_SUBMITTED.search(result.stdout)
    if submitted is None:
        return {n: None for n in numbers}, refusal(result.stderr or result.stdout)
    said = (result.stdout + result.stderr).splitlines()
    codes: Codes = {n: None for n in numbers}
    for line in said:
        exited = SGE_EXIT.match(line)
        if exited:
            codes[int(exited.group(2)) if array else None] = int(exited.group(3))
    for n in numbers:  # what qsub said about a failed job goes beside the scheduler's output for it
        if codes[n] != 0:
            task = re.escape(f"{submitted.group(1)}.{n}" if array else submitted.group(1))
            about = [line for line in said if re.search(rf"\b{task}\b", line)]
            with open(out.replace("$TASK_ID", str(n)), "a", encoding="utf-8") as f:
                f.write("".join(f"# qsub: {line}\n" for line in about) or
                        f"# qsub -sync y ended (exit code {result.returncode}) with no exit code for this job\n")
    return codes, None


def consecutive(numbers: List[int]) -> List[List[int]]:
    """[1, 2, 3, 7, 9, 10] -> [[1, 2, 3], [7], [9, 10]]: qsub -t takes one range."""
    runs: List[List[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(SUBMIT), required=True)
    parser.add_argument("--mem", help="memory per job, e.g. 4G")
    parser.add_argument("--gpu", type=int, help="GPUs per job")
    parser.add_argument("--time", help="time limit per job, e.g. 4:00:00")
    parser.add_argument("--partition", help="Slurm partition / SGE queue")
    parser.add_argument("--cpus", "--num_threads", "--num-threads", dest="cpus", type=int,
                        help="CPU cores per job (SGE: slots of the parallel environment; Kaldi's --num_threads)")
    parser.add_argument("--nodes", type=int, default=0, help="Slurm: nodes per job, one task each (distributed "
                                                             "training started with srun inside the job)")
    parser.add_argument("--max-jobs-run", "--max_jobs_run", dest="max_jobs_run", type=int, default=None)
    parser.add_argument("--config", help="SGE: a Kaldi queue.conf mapping the options to qsub options "
                                         "(default: conf/queue.conf if it exists, else a stock cell's names)")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    submit = SUBMIT[opts.backend]
    if opts.backend == "slurm" and opts.config:
        print("queue_jobs.py: --config is SGE's (a Kaldi queue.conf); give Slurm --mem, --gpu, ... as they are",
              file=sys.stderr)
        return 1
    if opts.backend == "sge" and opts.nodes:
        print("queue_jobs.py: --nodes is Slurm's (SGE: use a parallel environment, --cpus N -> -pe smp N)",
              file=sys.stderr)
        return 1
    conf, resources = None, []
    if opts.backend == "sge":
        try:
            conf = QueueConf.find(opts.config)
            resources = sge_options(conf, opts)
        except QueueConfError as err:
            print(f"queue_jobs.py: {err}", file=sys.stderr)
            return 1
        submit = conf.command[0]
    if shutil.which(submit) is None:
        print(f"queue_jobs.py: --backend {opts.backend}: {submit} not found (install the scheduler's client tools, "
              f"or run the jobs locally)", file=sys.stderr)
        return 1
    args = list(opts.args)
    jobs: List[Optional[int]] = [None]
    if args and re.fullmatch(r"JOB=\d+:\d+", args[0]):
        first, last = map(int, args.pop(0)[4:].split(":"))
        jobs = list(range(first, last + 1))
    elif args and re.fullmatch(r"JOB=\d+(,\d+)*", args[0]):
        jobs = sorted(set(map(int, args.pop(0)[4:].split(","))))
    if len(args) < 2 or not jobs:
        parser.error("expected JOB=..., a log file and a command")
    log_template, command = args[0], " ".join(shlex.quote(a) for a in args[1:])
    if jobs != [None] and "JOB" not in log_template:
        parser.error(f"the log file {log_template} must contain JOB when running several jobs")
    if opts.backend == "slurm":  # one sbatch per job, at most M waited on at once
        batches, workers = [[n] for n in jobs], opts.max_jobs_run or len(jobs)
    else:  # one array per run of numbers; one after another if -tc is to hold for them all
        batches = consecutive(jobs) if jobs != [None] else [[None]]
        workers = 1 if opts.max_jobs_run else len(batches)
        # one script for all the arrays (written before any qsub reads it)
        script = write_script(Path(log_template).parent / "q" / f"{Path(log_template).name}.sh",
                              job_script("$SGE_TASK_ID" if jobs != [None] else None, log_template, command))

    def run(batch: List[Optional[int]]) -> Tuple[Codes, Optional[str]]:
        if opts.backend == "slurm":
            return run_slurm_job(batch[0], log_template, command, opts)
        return run_sge_jobs(batch, log_template, script, conf, resources)

    codes: Codes = {}
    reasons: List[str] = []
    refused: List[Optional[int]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for batch, (batch_codes, reason) in zip(batches, pool.map(run, batches)):
            codes.update(batch_codes)
            if reason:
                refused += batch
                reasons += [reason] if reason not in reasons else []
    hint = f"; the qsub options come from {conf.source}" if conf else ""
    for reason in reasons:
        print(f"queue_jobs.py: {submit} refused the jobs of {log_template}: {reason} (check the options "
              f"against the cluster's resources{hint})", file=sys.stderr)
    failed = [n for n in jobs if codes[n] != 0 and n not in refused]
    if failed:
        logs = [log_template.replace("JOB", str(n)) if n is not None else log_template for n in failed]
        print(f"queue_jobs.py: {len(failed)} / {len(jobs)} {opts.backend} job(s) failed; see {', '.join(logs)} "
              f"(the scheduler's output: {Path(logs[0]).parent / 'q'})", file=sys.stderr)
    return 1 if failed or refused else 0


if __name__ == "__main__":
    sys.exit(main())
