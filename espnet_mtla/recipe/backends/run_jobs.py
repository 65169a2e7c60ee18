#!/usr/bin/env python3
"""Run a command as N parallel jobs, Kaldi run.pl style, each with its own log file.

    espnet_mtla/recipe/backends/run_jobs.py [--max-jobs-run M] JOB=1:N exp/decode/log/decode.JOB.log command args...
    espnet_mtla/recipe/backends/run_jobs.py JOB=2,5 exp/decode/log/decode.JOB.log command args...   # only jobs 2 and 5
    espnet_mtla/recipe/backends/run_jobs.py exp/x/log/stats.log command args...          # one job

Every "JOB" in the log path and in the command is replaced by the job number. The command
runs through bash, so pipes and redirections work; its stdout and stderr are appended to the
job's log (a re-run never erases the log of the run it resumes), each run's part starting
with the command and ending with its exit code and duration. At most
M jobs run at once (default: all). If any job fails, this exits 1 and names every failed
job's log file, so a failure is one `less` away.
"""

import argparse
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path


def run_job(number, command: str, log_path: Path) -> int:
    command = command.replace("JOB", str(number)) if number is not None else command
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"# {command}\n# Started at {datetime.now():%Y-%m-%d %H:%M:%S}\n")
        log.flush()
        code = subprocess.call(["bash", "-c", command], stdout=log, stderr=subprocess.STDOUT)
        log.write(f"# Accounting: time={time.time() - start:.0f} s\n"
                  f"# Ended (code {code}) at {datetime.now():%Y-%m-%d %H:%M:%S}, elapsed time {time.time() - start:.0f} s\n")
    return code


def last_output_line(log_path: Path) -> str:
    """The command's last line of output in this run's part of a job log (logs are appended to)."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    this_run = text[text.rfind("\n# Started at") + 1:]
    lines = [line for line in this_run.splitlines() if line.strip() and not line.startswith("# ")]
    return lines[-1].strip() if lines else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-jobs-run", type=int, default=None)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    args = list(opts.args)
    jobs = [None]
    if args and re.fullmatch(r"JOB=\d+:\d+", args[0]):
        first, last = map(int, args.pop(0)[4:].split(":"))
        if first > last:
            parser.error(f"empty job range JOB={first}:{last}")
        jobs = list(range(first, last + 1))
    elif args and re.fullmatch(r"JOB=\d+(,\d+)*", args[0]):
        jobs = sorted(set(map(int, args.pop(0)[4:].split(","))))
    if len(args) < 2:
        parser.error("expected a log file and a command")
    log_template, command = args[0], " ".join(shlex.quote(a) if " " in a or a == "" else a for a in args[1:])
    if jobs != [None] and "JOB" not in log_template:
        parser.error(f"the log file {log_template} must contain JOB when running several jobs")
    workers = opts.max_jobs_run or len(jobs)
    logs = {n: Path(log_template.replace("JOB", str(n)) if n is not None else log_template) for n in jobs}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        codes = dict(zip(jobs, pool.map(lambda n: run_job(n, command, logs[n]), jobs)))
    failed = [n for n, code in codes.items() if code != 0]
    if failed:
        names = ", ".join(str(logs[n]) for n in failed)
        print(f"run_jobs.py: {len(failed)} / {len(jobs)} job(s) failed; see {names}", file=sys.stderr)
        cause = last_output_line(logs[failed[0]])
        if cause:  # a one-line error (ours) is the whole story; a traceback's last line names the exception
            print(f"run_jobs.py: {logs[failed[0]]} ends with: {cause}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
