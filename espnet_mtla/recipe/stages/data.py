"""Stages 1-4: the data dirs (``local/data.sh``), speed perturbation, the dump (audio or fbank
formatted per job), and the length filter of the training and validation sets."""

import logging
import shlex
import shutil
import sys
from pathlib import Path
from typing import Dict, List

from espnet_mtla.data import datadir
from espnet_mtla.recipe.errors import StageError
from espnet_mtla.recipe.experiment import Experiment
from espnet_mtla.recipe.jobs import merge_job_files, split_keys
from espnet_mtla.recipe.stage import Cover, Stage, StageRun, tables
from espnet_mtla.storage.fileio import write_text_atomic

log = logging.getLogger("pipeline")


def check_data_dir(path: Path, speech: bool) -> None:
    problems = datadir.validate(path, needs_audio=speech)
    if problems:
        raise StageError(problems.report(path))


class Data(Stage):
    number, name = 1, "data"

    def ready(self, x: Experiment) -> None:
        script = Path("local/data.sh")
        if not script.exists():
            raise StageError(f"{script.resolve()} not found: run from a recipe dir (egs2/<corpus>/<task>1)")

    def covers(self, x: Experiment) -> Cover:
        a = x.args
        sets = [a.train_set, a.valid_set] + x.test_sets
        return Cover({"local_data_opts": a.local_data_opts, "sets": sets}, [Path("local/data.sh")],
                     [Path("data") / name / "utt2spk" for name in sets])

    def run(self, x: Experiment, run: StageRun) -> None:
        a = x.args
        log_file = Path(a.expdir) / "log" / "data_prep.log"
        run.jobs.launch(["bash", "local/data.sh"] + shlex.split(a.local_data_opts), log_file)
        for name in [a.train_set, a.valid_set] + x.test_sets:
            check_data_dir(Path("data") / name, x.task.speech)
        # The corpus preparers' line per set (kaldi_dir.write_sets: "<corpus> <set>: N utterances,
        # H h, S speakers -> data/<set> (skipped: ...)"), repeated where a person follows the run.
        for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines() if log_file.exists() else []:
            if " -> data/" in line and ": " in line:
                log.info("%s", line.strip())


class SpeedPerturb(Stage):
    number, name = 2, "speed_perturb"

    def covers(self, x: Experiment) -> Cover:
        a = x.args
        return Cover({"speed_perturb_factors": a.speed_perturb_factors}, tables([Path("data") / a.train_set]),
                     [Path("data") / x.train_set / "utt2spk"])

    def run(self, x: Experiment, run: StageRun) -> None:
        factors = x.args.speed_perturb_factors.split()
        if not factors:
            log.info("no --speed_perturb_factors: skipped")
            return
        src, dst = Path("data") / x.args.train_set, Path("data") / x.train_set
        dst.mkdir(parents=True, exist_ok=True)
        if (src / "segments").exists():
            raise StageError("speed perturbation of segmented data: format the set first (not supported)")
        tables_in = {p.name: datadir.read_table(p, datadir.Problems(), True) for p in src.iterdir()
                     if p.is_file() and p.name not in ("spk2utt", "utt2num_samples", "utt2dur")}
        out: Dict[str, List[str]] = {name: [] for name in tables_in}
        for factor in factors:
            prefix = "" if float(factor) == 1.0 else f"sp{factor}-"
            for name, table in tables_in.items():
                for key, value in table.items():
                    if name == "wav.scp" and prefix:
                        value = f"sox -t {Path(value).suffix[1:] or 'wav'} {value} -t wav - speed {factor} |"
                    elif name == "utt2spk" and prefix:
                        value = prefix + value
                    out[name].append(f"{prefix}{key} {value}")
        for name, lines in out.items():
            write_text_atomic(dst / name, "".join(line + "\n" for line in sorted(lines, key=str.encode)))
        datadir.fix(dst)


class Format(Stage):
    """Training and validation sets go to ``dump/.../org/`` (stage 4 filters them), test sets to
    ``dump/.../``; audio is formatted (or fbank extracted) by ``espnet_mtla.data.format_audio`` jobs."""

    number, name = 3, "format"
    jobs = "cmd"

    def covers(self, x: Experiment) -> Cover:
        a = x.args
        train_valid = x.train_valid()
        dump_sets = train_valid + [x.dump / name for name in x.test_sets]
        return Cover({"audio_format": a.audio_format, "feats_type": a.feats_type, "feats_storage": a.feats_storage,
                      "fs": a.fs},
                     tables([Path("data") / name for name in [x.train_set, a.valid_set] + x.test_sets]),
                     [x.dump / ("org" if d in train_valid else "") / d.name / x.features.scp for d in dump_sets])

    def run(self, x: Experiment, run: StageRun) -> None:
        a, features = x.args, x.features
        for name in [x.train_set, a.valid_set] + x.test_sets:
            src = Path("data") / name
            dst = x.dump / ("org" if name in (x.train_set, a.valid_set) else "") / name
            dst.mkdir(parents=True, exist_ok=True)
            for file in src.iterdir():
                if file.is_file() and file.name not in ("wav.scp", "segments", "feats.scp"):
                    shutil.copyfile(file, dst / file.name)
            if not features.speech:
                continue
            logdir = dst / "logs"
            jobs = split_keys(src, a.nj, logdir / "keys.JOB")
            run.jobs.launch([sys.executable, "-m", "espnet_mtla.data.format_audio", src, dst, "--audio_format",
                             a.audio_format, "--feats_type", features.feats_type, "--feats_storage",
                             features.feats_storage, "--fs", a.fs, "--keys", logdir / "keys.JOB", "--job", "JOB"],
                            logdir / "format.JOB.log", jobs)
            for name_out in (features.scp, features.shape_file):
                merge_job_files(dst / f"{name_out}.JOB", jobs, dst / name_out, remove=True)
            report_resampling(name, dst, jobs, a.fs)
            if features.fbank:
                write_text_atomic(dst / "feats_type", "fbank\n")
            if features.kind == "zip":
                from espnet_mtla.data.zip_features import write_manifest

                write_manifest(dst, x.text_names()["text"])
            check_data_dir(dst, features.speech)


def report_resampling(name: str, dst: Path, jobs: int, fs: int) -> None:
    """One log line per data dir: how many utterances stage 3 resampled to --fs, and from which rates."""
    counts: Dict[str, int] = {}
    for job in range(1, jobs + 1):
        part = dst / f"resampled.{job}"
        for line in part.read_text(encoding="utf-8").splitlines():
            rate, count = line.split()
            counts[rate] = counts.get(rate, 0) + int(count)
        part.unlink()
    total = counts.pop("all", 0)
    if not counts:
        log.info("stage 3: %s: all %d utterances at %d Hz, none resampled", name, total, fs)
        return
    rates = ", ".join(f"{count} from {int(rate)} Hz" for rate, count in sorted(counts.items(), key=lambda kv: int(kv[0])))
    log.info("stage 3: %s: %d of %d utterances resampled to %d Hz (%s)", name, sum(counts.values()), total, fs, rates)


class Filter(Stage):
    number, name = 4, "filter"

    def covers(self, x: Experiment) -> Cover:
        a = x.args
        train_valid = x.train_valid()
        return Cover({"min_wav_duration": a.min_wav_duration, "max_wav_duration": a.max_wav_duration},
                     tables([x.dump / "org" / d.name for d in train_valid]), [d / "utt2spk" for d in train_valid])

    def run(self, x: Experiment, run: StageRun) -> None:
        a = x.args
        for name in (x.train_set, a.valid_set):
            src, dst = x.dump / "org" / name, x.dump / name
            scratch = datadir.Problems()
            keep = list(datadir.read_table(src / "utt2spk", scratch))
            total = len(keep)
            if x.features.speech:
                lengths = x.features.seconds(src)
                keep = [k for k in keep if a.min_wav_duration <= lengths[k] <= a.max_wav_duration]
            texts = [datadir.read_table(src / f, scratch, True) for f in x.text_names().values()]
            keep = [k for k in keep if all(t.get(k, "").strip() for t in texts)]
            if dst.exists():
                shutil.rmtree(dst)
            datadir.subset(src, dst, keep)
            log.info("%s: kept %d utterances, dropped %d (duration outside [%s, %s] s or empty text)",
                     name, len(keep), total - len(keep), a.min_wav_duration, a.max_wav_duration)
