"""Where a stage's jobs run: this machine or a cluster, as cmd.sh's ``--cmd``, ``--train_cmd``
and ``--decode_cmd`` say, and the per-job files (key lists in, outputs merged back).

    backend   runner (espnet_mtla/recipe/backends/)   Kaldi's name
    local     run_jobs.py                             run.pl
    slurm     queue_jobs.py --backend slurm           slurm.pl
    sge       queue_jobs.py --backend sge             queue.pl
"""

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Union

from espnet_mtla.data import datadir
from espnet_mtla.recipe.backends.queue_jobs import SUBMIT
from espnet_mtla.recipe.errors import StageError
from espnet_mtla.storage.fileio import write_text_atomic

RUNNERS = Path(__file__).resolve().parent / "backends"
JOB_BACKENDS = {"local": ["run_jobs.py"], "slurm": ["queue_jobs.py", "--backend", "slurm"],
                "sge": ["queue_jobs.py", "--backend", "sge"]}
KALDI_BACKENDS = {"run.pl": "local", "slurm.pl": "slurm", "queue.pl": "sge"}
log = logging.getLogger("pipeline")


def job_backend(value: str) -> List[str]:
    """A --cmd value -> [backend, its options...]; Kaldi's run.pl/slurm.pl/queue.pl are accepted."""
    words = shlex.split(value)
    if not words:
        raise argparse.ArgumentTypeError("empty; use local, slurm [options] or sge [options]")
    backend = KALDI_BACKENDS.get(words[0], words[0])
    if backend not in JOB_BACKENDS:
        raise argparse.ArgumentTypeError(f"unknown job backend {words[0]!r}; use local, slurm [options] or "
                                         "sge [options]")
    return [backend] + words[1:]


class Jobs:
    """The jobs of one stage, run through the backend of its option (``cmd``, ``train_cmd`` or
    ``decode_cmd``; None: this machine)."""

    def __init__(self, args: argparse.Namespace, option: Optional[str] = None):
        self.args = args
        self.option = option

    def backend(self, option: Optional[str] = None) -> List[str]:
        """[backend, options...] of ``--cmd``, ``--train_cmd`` or ``--decode_cmd`` (the last two default to --cmd)."""
        option = option or self.option
        if option is None:
            return ["local"]
        return getattr(self.args, option) or self.args.cmd

    def check(self, option: Optional[str] = None) -> None:
        """StageError when ``option``'s scheduler cannot be reached from here."""
        option = option or self.option
        if option is None:
            return
        backend = self.backend(option)
        submit = SUBMIT.get(backend[0])
        if submit and shutil.which(submit) is None:
            raise StageError(f"--{option} {shlex.join(backend)}: {submit} not found (install the scheduler's client "
                             f"tools, or use --{option} local)")

    def launch(self, cmd: List, log_file: Path, jobs: Union[None, int, Sequence[int]] = None) -> None:
        """Run ``cmd`` as jobs 1..jobs (an int), the listed jobs, or once (None); every ``JOB`` in
        ``cmd`` and ``log_file`` becomes the job's number."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        numbers = list(range(1, jobs + 1)) if isinstance(jobs, int) else list(jobs or [])
        job_args = [f"JOB={','.join(map(str, numbers))}"] if numbers else []
        backend, *options = self.backend()
        runner, *runner_args = JOB_BACKENDS[backend]
        full = ([sys.executable, str(RUNNERS / runner)] + runner_args + options + job_args + [str(log_file)]
                + [str(c) for c in cmd])
        env = dict(os.environ)
        if backend == "local":  # parallel jobs share this machine's thread budget: 2 x 2 threads on 2 cores ran 4x slower
            budget = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
            env["OMP_NUM_THREADS"] = str(max(1, budget // max(1, len(numbers))))
        log.info("running: %s", " ".join(shlex.quote(str(c)) for c in cmd))
        if subprocess.run(full, env=env).returncode != 0:
            raise StageError(f"failed; see the log above ({log_file})")


def split_keys(data_dir: Path, jobs: int, path_template: Path, line: str = "{key}") -> int:
    """Write data_dir's utterance ids as ``jobs`` near-equal key files (JOB -> 1..n); returns n."""
    keys = list(datadir.read_table(data_dir / "utt2spk", datadir.Problems()))
    jobs = max(1, min(jobs, len(keys)))
    path_template.parent.mkdir(parents=True, exist_ok=True)
    for job, part in enumerate(datadir.partition(keys, jobs), 1):
        write_text_atomic(str(path_template).replace("JOB", str(job)),
                          "".join(line.format(key=k) + "\n" for k in part))
    return jobs


def merge_job_files(path_template: Path, jobs: int, out: Path, sort: bool = False, remove: bool = False) -> None:
    """Concatenate the jobs' files (JOB -> 1..jobs; missing ones skipped) into ``out``."""
    parts = [Path(str(path_template).replace("JOB", str(j + 1))) for j in range(jobs)]
    lines = [line for p in parts if p.exists() for line in p.read_text(encoding="utf-8").splitlines(keepends=True)]
    write_text_atomic(out, "".join(sorted(lines, key=str.encode) if sort else lines))
    if remove:
        for p in parts:
            p.unlink()
