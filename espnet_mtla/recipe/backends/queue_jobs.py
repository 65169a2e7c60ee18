#!/usr/bin/env python3
"""Run a command as N jobs on a cluster (Slurm or SGE), with run_jobs.py's interface and logs.

    espnet_mtla/recipe/backends/queue_jobs.py --backend slurm [--mem 4G] [--gpu 1] [--time 4:00:00] [--partition P] \\
        [--cpus 2] [--nodes N] [--max-jobs-run M] JOB=1:N exp/decode/log/decode.JOB.log command args...
    espnet_mtla/recipe/backends/queue_jobs.py --backend sge ...        # the same, through qsub

Kaldi's slurm.pl / queue.pl, for our pipeline: each job is one submission (``sbatch --wait`` or
``qsub -sync y``) of a script that runs ``espnet_mtla/recipe/backends/run_jobs.py JOB=<n> <log> <command>`` on the
node, so a job's log is exactly what a local run writes, and the submission returns the job's
exit code (a job killed by ``scancel``/``qdel`` fails). The submitting environment goes with
the job. The scheduler's own output (what a job printed before run_jobs.py started, or why it
never started) goes to ``<log dir>/q/<log name>.out``. At most M submissions are waited on at
once (default: all). If any job fails, this exits 1 and names every failed job's log.
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

RUN_JOBS = Path(__file__).resolve().with_name("run_jobs.py")
SUBMIT = {"slurm": "sbatch", "sge": "qsub"}


def resources(backend: str, opts) -> list:
    """Scheduler options for the requested resources."""
    if backend == "slurm":
        out = [f"--mem={opts.mem}"] if opts.mem else []
        out += [f"--gres=gpu:{opts.gpu}"] if opts.gpu else []
        out += [f"--time={opts.time}"] if opts.time else []
        out += [f"--partition={opts.partition}"] if opts.partition else []
        out += [f"--cpus-per-task={opts.cpus}"] if opts.cpus else []
        out += [f"--nodes={opts.nodes}", "--ntasks-per-node=1"] if opts.nodes else []
        return out
    out = ["-l", f"mem_free={opts.mem},ram_free={opts.mem}"] if opts.mem else []
    out += ["-l", f"gpu={opts.gpu}"] if opts.gpu else []
    out += ["-l", f"h_rt={opts.time}"] if opts.time else []
    out += ["-q", opts.partition] if opts.partition else []
    out += ["-pe", "smp", str(opts.cpus)] if opts.cpus else []
    if opts.nodes:
        raise SystemExit("queue_jobs.py: --nodes is Slurm's (SGE: use a parallel environment with -pe)")
    return out


def submit_command(backend: str, name: str, script: Path, out: Path, opts) -> list:
    if backend == "slurm":
        return ["sbatch", "--wait", "--parsable", f"--job-name={name}", f"--output={out}",
                *resources(backend, opts), str(script)]
    return ["qsub", "-sync", "y", "-terse", "-cwd", "-V", "-N", name, "-j", "y", "-o", str(out),
            *resources(backend, opts), str(script)]


def job_script(number, log_template: str, command: str) -> str:
    job = [f"JOB={number}"] if number is not None else []
    run = [sys.executable, str(RUN_JOBS), *job, log_template]
    return (f"#!/usr/bin/env bash\ncd {shlex.quote(os.getcwd())}\n"
            f"exec {' '.join(shlex.quote(a) for a in run)} {command}\n")


def run_job(backend: str, number, log_template: str, command: str, opts) -> int:
    log = Path(log_template.replace("JOB", str(number)) if number is not None else log_template)
    qdir = log.parent / "q"
    qdir.mkdir(parents=True, exist_ok=True)
    script = qdir / f"{log.name}.sh"
    script.write_text(job_script(number, log_template, command), encoding="utf-8")
    script.chmod(0o755)
    name = re.sub(r"[^\w.-]", "_", log.stem)[:60]
    result = subprocess.run(submit_command(backend, name, script, qdir / f"{log.name}.out", opts),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0 and result.stderr.strip():
        with open(qdir / f"{log.name}.out", "a", encoding="utf-8") as out:
            out.write(f"# {SUBMIT[backend]}: {result.stderr.strip()}\n")
    return result.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(SUBMIT), required=True)
    parser.add_argument("--mem", help="memory per job, e.g. 4G")
    parser.add_argument("--gpu", type=int, default=0, help="GPUs per job")
    parser.add_argument("--time", help="time limit per job, e.g. 4:00:00")
    parser.add_argument("--partition", help="Slurm partition / SGE queue")
    parser.add_argument("--cpus", type=int, default=0, help="CPU cores per job")
    parser.add_argument("--nodes", type=int, default=0, help="Slurm: nodes per job, one task each (distributed "
                                                             "training started with srun inside the job)")
    parser.add_argument("--max-jobs-run", type=int, default=None)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    submit = SUBMIT[opts.backend]
    if shutil.which(submit) is None:
        print(f"queue_jobs.py: --backend {opts.backend}: {submit} not found (install the scheduler's client tools, "
              f"or run the jobs locally)", file=sys.stderr)
        return 1
    args = list(opts.args)
    jobs = [None]
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
    with ThreadPoolExecutor(max_workers=max(1, opts.max_jobs_run or len(jobs))) as pool:
        codes = dict(zip(jobs, pool.map(lambda n: run_job(opts.backend, n, log_template, command, opts), jobs)))
    failed = [n for n, code in codes.items() if code != 0]
    if failed:
        logs = [log_template.replace("JOB", str(n)) if n is not None else log_template for n in failed]
        print(f"queue_jobs.py: {len(failed)} / {len(jobs)} {opts.backend} job(s) failed; see {', '.join(logs)} "
              f"(the scheduler's output: {Path(logs[0]).parent / 'q'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
