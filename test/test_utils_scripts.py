"""utils/: Kaldi-style option parsing and the parallel job runner."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = """
stage=1
nj=4
use_lm=false
inference_args=""
help_message="Usage: run.sh [options]"
. {root}/utils/parse_options.sh
echo "stage=$stage nj=$nj use_lm=$use_lm args=[$inference_args] rest=$*"
"""


def parse(tmp_path, *args):
    script = tmp_path / "run.sh"
    script.write_text(SCRIPT.format(root=ROOT))
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True)


def test_parse_options_sets_defined_variables(tmp_path):
    out = parse(tmp_path, "--stage", "3", "--nj=2", "--inference-args", "--beam_size 5", "--use_lm", "true", "a", "b")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "stage=3 nj=2 use_lm=true args=[--beam_size 5] rest=a b"


def test_parse_options_errors(tmp_path):
    out = parse(tmp_path, "--stgae", "3")
    assert out.returncode == 1 and "unknown option --stgae" in out.stderr
    out = parse(tmp_path, "--use_lm", "ture")
    assert out.returncode == 1 and "option --use_lm takes true or false, got 'ture'" in out.stderr
    out = parse(tmp_path, "--nj")
    assert out.returncode == 1 and "option --nj needs a value" in out.stderr
    out = parse(tmp_path, "--help")
    assert out.returncode == 0 and out.stdout.strip() == "Usage: run.sh [options]"


def run_jobs(*args):
    return subprocess.run([sys.executable, str(ROOT / "espnet_mtla" / "recipe" / "backends" / "run_jobs.py"), *args], capture_output=True, text=True)


def test_run_jobs_substitutes_job_and_names_failed_logs(tmp_path):
    out = run_jobs("JOB=1:3", str(tmp_path / "log" / "x.JOB.log"), "bash", "-c", "echo job JOB; test JOB -ne 2")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"run_jobs.py: 1 / 3 job(s) failed; see {tmp_path / 'log' / 'x.2.log'}",
        f"run_jobs.py: {tmp_path / 'log' / 'x.2.log'} ends with: job 2"]  # the failed command's last output
    for n in (1, 2, 3):
        log = (tmp_path / "log" / f"x.{n}.log").read_text().splitlines()
        assert log[0] == f"# bash -c 'echo job {n}; test {n} -ne 2'"
        assert log[2] == f"job {n}"
        assert log[-1].startswith(f"# Ended (code {1 if n == 2 else 0})")


def test_run_jobs_single_job_with_a_pipe(tmp_path):
    out = run_jobs("--max-jobs-run", "1", str(tmp_path / "one.log"), "echo", "a b", "|", "tr", "a", "A")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "one.log").read_text().splitlines()[2] == "A b"


def test_corpus_path_from_db_sh_is_checked(tmp_path):
    def check(*args):
        out = subprocess.run([sys.executable, "-m", "espnet_mtla.data.corpus", "MUSTC", *args], cwd=ROOT,
                             capture_output=True, text=True)
        return out.returncode, out.stderr.strip()

    what = "the MuST-C root (with en-de/data)"
    assert check("", what) == (1, f"error: MUSTC is not set in db.sh: set it to {what}")
    assert check(str(tmp_path / "nope"), what) == (
        1, f"error: MUSTC={tmp_path / 'nope'} (db.sh): no such directory; set it to {what}")
    (tmp_path / "en-de" / "data").mkdir(parents=True)
    assert check(str(tmp_path), what, "en-de/data", "en-de/data/train/txt/train.yaml") == (
        1, f"error: MUSTC={tmp_path} (db.sh): {tmp_path / 'en-de/data/train/txt/train.yaml'} not found; is it {what}?")
    assert check(str(tmp_path), what, "en-de/data") == (0, "")


def test_run_jobs_runs_listed_jobs_and_appends_to_logs(tmp_path):
    runner = [sys.executable, str(ROOT / "espnet_mtla" / "recipe" / "backends" / "run_jobs.py")]
    log = tmp_path / "log" / "job.JOB.log"
    out = subprocess.run(runner + ["JOB=1:3", str(log), "echo", "run", "JOB"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(runner + ["JOB=3,1", str(log), "echo", "again", "JOB"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "run 1" in (tmp_path / "log" / "job.1.log").read_text() and "again 1" in (tmp_path / "log" / "job.1.log").read_text()
    assert "again" not in (tmp_path / "log" / "job.2.log").read_text()
    assert (tmp_path / "log" / "job.3.log").read_text().count("# Started at") == 2
    out = subprocess.run(runner + ["JOB=1,2", str(log), "test", "JOB", "-eq", "2"], capture_output=True, text=True)
    assert out.returncode == 1  # (job 1 printed nothing this time: no "ends with" line from an earlier run)
    assert out.stderr.strip() == f"run_jobs.py: 1 / 2 job(s) failed; see {tmp_path / 'log' / 'job.1.log'}"
