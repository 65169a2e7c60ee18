"""The recipe pipeline shared by every egs2 recipe (ESPnet2-style stages).

    python -m espnet_mtla.recipe.pipeline --task asr --stage 1 --stop_stage 10 --train_config conf/train.yaml ...

Run from a recipe dir (egs2/<corpus>/<task>1/), normally through its run.sh. Stages:
 1 data preparation (local/data.sh -> data/<set>/)     7 training
 2 speed perturbation of the training set            8 decoding (--inference_nj jobs)
 3 audio formatting to dump/ (flac|wav|wav.ark|fbank) 9 scoring
 4 length filtering of the training/valid sets       10 RESULTS.md
 5 tokenisers (bpe|char|word; source side for st/mt) 11 packing the model into a zip
 6 statistics collection (ESPnet collect_stats)
Each stage logs to a file under exp/ (named when the stage starts) and stops the run with
that file's name if a job fails. Each stage records that it finished, with the options and
input files it depends on (espnet_mtla.recipe.records): re-running the same command skips
finished stages, redoes those whose options or inputs changed, resumes an interrupted
training from its checkpoint and an interrupted decoding from its finished jobs.
"""

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from espnet_mtla.data import datadir
from espnet_mtla.attention.registry import attention_types
from espnet_mtla.storage.fileio import write_text_atomic
from espnet_mtla.metrics.scoring import METRICS, check_metrics
from espnet_mtla.recipe.progress import DecodingProgress, TrainingProgress
from espnet_mtla.recipe.results import (RESULT_FIELDS, comparisons, figure_path, learning_curves, plot_results,
                                 render_results)
from espnet_mtla.recipe.records import StageRecord, make_key, table_files
from espnet_mtla.tasks.specs import TASKS, get_task

ROOT = Path(__file__).resolve().parents[2]
# Job backends of --cmd/--train_cmd/--decode_cmd: the runner of each (Kaldi's names too)
JOB_BACKENDS = {"local": ["run_jobs.py"], "slurm": ["queue_jobs.py", "--backend", "slurm"],
                "sge": ["queue_jobs.py", "--backend", "sge"]}
KALDI_BACKENDS = {"run.pl": "local", "slurm.pl": "slurm", "queue.pl": "sge"}
SUBMIT_COMMANDS = {"slurm": "sbatch", "sge": "qsub"}
log = logging.getLogger("pipeline")


class StageError(RuntimeError):
    pass


# -- options ----------------------------------------------------------------------------
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


def metric_names(value: str) -> Union[str, List[str]]:
    """``--metrics``: "auto", or metric names separated by spaces or commas."""
    if value == "auto":
        return value
    names = value.replace(",", " ").split()
    try:
        check_metrics(names)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return names


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--task", choices=tuple(TASKS), required=True)
    add("--stage", type=int, default=1)
    add("--stop_stage", type=int, default=11)
    add("--nj", type=int, default=2, help="parallel jobs for formatting and statistics")
    add("--inference_nj", type=int, default=2, help="parallel decoding jobs")
    add("--cmd", default="local", type=job_backend,
        help='where the jobs of stages 3 and 6 run: "local", "slurm [--mem 4G --gpu 1 --time T --partition P '
             '--cpus N]" or "sge [...]" (a recipe\'s cmd.sh sets it)')
    add("--train_cmd", default=None, type=job_backend, help="stage 7's backend (default: --cmd's)")
    add("--decode_cmd", default=None, type=job_backend, help="stage 8's backend (default: --cmd's)")
    add("--ngpu", type=int, default=0, help="GPUs per node for training (ESPnet's DDP when > 1) and decoding")
    add("--num_nodes", type=int, default=1, help="training nodes (ESPnet's --num_nodes; > 1 needs --dist_launcher)")
    add("--dist_launcher", default="none", choices=("none", "slurm", "mpi"),
        help="how ESPnet's distributed training finds its processes: slurm runs one srun task per node "
             "(the training job asks its backend for --num_nodes nodes)")
    add("--dist_backend", default=None, choices=("nccl", "gloo"),
        help="ESPnet's torch.distributed backend (ESPnet's default: nccl)")
    add("--train_set", default="train")
    add("--valid_set", default="dev")
    add("--test_sets", default="test", help="space-separated")
    add("--local_data_opts", default="", help="options passed to local/data.sh")
    add("--audio_format", default="flac", choices=("flac", "wav", "flac.ark", "wav.ark"))
    add("--feats_type", default="raw", choices=("raw", "fbank"))
    add("--feats_storage", default="ark", choices=("ark", "zip"),
        help="fbank: kaldi ark, or fairseq-style npy entries in an uncompressed zip with a manifest.tsv")
    add("--fs", type=int, default=16000)
    add("--speed_perturb_factors", default="", help='e.g. "0.9 1.0 1.1"; empty: none')
    add("--min_wav_duration", type=float, default=0.1)
    add("--max_wav_duration", type=float, default=30.0)
    add("--token_type", default="bpe", choices=("bpe", "char", "word"))
    add("--nbpe", type=int, default=100)
    add("--src_token_type", default="bpe", choices=("bpe", "char", "word"))
    add("--src_nbpe", type=int, default=100)
    add("--src_lang", default="en", help="st/mt: source text is data/<set>/text.<src_lang>")
    add("--tgt_lang", default="de", help="st: target text is data/<set>/text.<tgt_lang>")
    add("--user_defined_symbols", default="", help="space-separated tokens kept whole by BPE (e.g. SLU intents)")
    add("--user_defined_symbols_file", default="",
        help="a file of such tokens, one per line, read at stage 5 (e.g. data/intents.txt written by local/data.sh)")
    add("--pretrained_asr", default="",
        help="st: initialise the encoder from this ASR model file (as the paper does); its encoder must "
             "have the ST config's shape")
    add("--ssl_checkpoint", default="",
        help="an S3PRL upstream's local checkpoint: sets frontend_conf.path_or_url of an s3prl frontend config")
    add("--attention", default="mtla", choices=attention_types(),
        help="fills {attention} in --train_config, e.g. conf/train_{attention}.yaml")
    add("--train_config", required=False, help="may contain {attention}")
    add("--inference_config", default=None)
    add("--inference_model", default="valid.acc.ave.pth",
        help="model file under the experiment dir; default: ESPnet's average of the keep_nbest_models best "
             "epochs by valid.acc (as ESPnet's recipes and the paper decode); e.g. valid.acc.best.pth: the best one")
    add("--tag", default=None, help="experiment name; default: the train config's stem")
    add("--train_args", default="", help="extra options for <task>_train")
    add("--inference_args", default="", help="extra options for <task>_inference")
    add("--dumpdir", default="dump")
    add("--expdir", default="exp")
    add("--metrics", default="auto", type=metric_names,
        help=f"stage 9's scorers, space- or comma-separated, from: {', '.join(METRICS)}; auto: the task's ("
             + "; ".join(f"{t.name} {' '.join(t.metrics)}" for t in TASKS.values()) + ")")
    add("--results", default="RESULTS.md")
    add("--force", default="false", choices=("true", "false"),
        help="redo stages recorded as finished with the same options and inputs, and continue a training "
             "whose options changed")
    return p


class Pipeline:
    def __init__(self, args: argparse.Namespace):
        if args.train_config:
            args.train_config = args.train_config.replace("{attention}", args.attention)
        self.args = args
        self.task = args.task
        self.spec = get_task(args.task)
        self.speech = self.spec.speech
        self.metrics = list(self.spec.metrics) if args.metrics == "auto" else args.metrics
        self.feats = args.feats_type if self.speech else "text"
        self.zipped = self.feats == "fbank" and args.feats_storage == "zip"
        self.dump = Path(args.dumpdir) / (args.audio_format if self.feats == "raw" else
                                          self.feats + ("_zip" if self.zipped else ""))
        self.test_sets = args.test_sets.split()
        self.tag = args.tag or (Path(args.train_config).stem if args.train_config else "default")
        self.exp = Path(args.expdir) / f"{self.task}_{self.tag}"
        self.stats_dir = Path(args.expdir) / f"{self.task}_stats_{self.feats}"
        self.train_set = args.train_set + ("_sp" if args.speed_perturb_factors.strip() else "")
        self.resuming = False  # set per stage by main(): the stage was interrupted, same options and inputs
        self.jobs_option: Optional[str] = None  # set per stage: the option whose backend runs its jobs

    # -- helpers ---------------------------------------------------------------------------
    def backend(self, option: str) -> List[str]:
        """[backend, options...] of ``--cmd``, ``--train_cmd`` or ``--decode_cmd`` (the last two default to --cmd)."""
        return getattr(self.args, option) or self.args.cmd

    def check_backend(self, option: str) -> None:
        """StageError when ``option``'s scheduler cannot be reached from here."""
        backend = self.backend(option)
        submit = SUBMIT_COMMANDS.get(backend[0])
        if submit and shutil.which(submit) is None:
            raise StageError(f"--{option} {shlex.join(backend)}: {submit} not found (install the scheduler's client "
                             f"tools, or use --{option} local)")

    def run(self, cmd: List[str], log_file: Path, jobs: Union[None, int, Sequence[int]] = None) -> None:
        """Run ``cmd`` as jobs 1..jobs (an int), the listed jobs, or once (None), through the backend
        of the running stage's ``jobs`` option: this machine (utils/run_jobs.py) or a cluster
        (utils/queue_jobs.py)."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        numbers = list(range(1, jobs + 1)) if isinstance(jobs, int) else list(jobs or [])
        job_args = [f"JOB={','.join(map(str, numbers))}"] if numbers else []
        backend, *options = self.backend(self.jobs_option) if self.jobs_option else ["local"]
        runner, *runner_args = JOB_BACKENDS[backend]
        full = ([sys.executable, str(ROOT / "utils" / runner)] + runner_args + options + job_args + [str(log_file)]
                + [str(c) for c in cmd])
        env = dict(os.environ)
        if backend == "local":  # parallel jobs share this machine's thread budget: 2 x 2 threads on 2 cores ran 4x slower
            budget = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
            env["OMP_NUM_THREADS"] = str(max(1, budget // max(1, len(numbers))))
        log.info("running: %s", " ".join(shlex.quote(str(c)) for c in cmd))
        if subprocess.run(full, env=env).returncode != 0:
            raise StageError(f"failed; see the log above ({log_file})")

    @staticmethod
    def split_keys(data_dir: Path, jobs: int, path_template: Path, line: str = "{key}") -> int:
        """Write data_dir's utterance ids as ``jobs`` near-equal key files (JOB -> 1..n); returns n."""
        keys = list(datadir.read_table(data_dir / "utt2spk", datadir.Problems()))
        jobs = max(1, min(jobs, len(keys)))
        path_template.parent.mkdir(parents=True, exist_ok=True)
        for job, part in enumerate(datadir.partition(keys, jobs), 1):
            write_text_atomic(str(path_template).replace("JOB", str(job)),
                              "".join(line.format(key=k) + "\n" for k in part))
        return jobs

    @staticmethod
    def merge_job_files(path_template: Path, jobs: int, out: Path, sort: bool = False, remove: bool = False) -> None:
        """Concatenate the jobs' files (JOB -> 1..jobs; missing ones skipped) into ``out``."""
        parts = [Path(str(path_template).replace("JOB", str(j + 1))) for j in range(jobs)]
        lines = [line for p in parts if p.exists() for line in p.read_text(encoding="utf-8").splitlines(keepends=True)]
        write_text_atomic(out, "".join(sorted(lines, key=str.encode) if sort else lines))
        if remove:
            for p in parts:
                p.unlink()

    def text_names(self) -> Dict[str, str]:
        """ESPnet data name -> file in a data dir."""
        return self.spec.text_names(self.args.src_lang, self.args.tgt_lang)

    def token_dir(self, side: str) -> Path:
        if side == "src":
            return Path("data") / "token_list" / f"src_{self.args.src_token_type}{self.args.src_nbpe if self.args.src_token_type == 'bpe' else ''}"
        return Path("data") / "token_list" / f"{self.args.token_type}{self.args.nbpe if self.args.token_type == 'bpe' else ''}"

    def token_args(self) -> List[str]:
        tgt = self.token_dir("tgt")
        out = ["--token_type", self.args.token_type, "--token_list", tgt / "tokens.txt"]
        if self.args.token_type == "bpe":
            out += ["--bpemodel", tgt / "bpe.model"]
        if self.spec.source_text:
            src = self.token_dir("src")
            out += ["--src_token_type", self.args.src_token_type, "--src_token_list", src / "tokens.txt"]
            if self.args.src_token_type == "bpe":
                out += ["--src_bpemodel", src / "bpe.model"]
        return out

    def data_args(self, flag: str, data_dir: Path, only: Optional[str] = None) -> List[str]:
        """``flag path,name,type`` for each input of a data dir (or only the input ``only``)."""
        inputs = []
        if self.speech:
            scp, kind = ("feats.scp", "zip_npy" if self.zipped else "kaldi_ark") if self.feats == "fbank" else (
                ("wav.scp", "kaldi_ark") if self.args.audio_format.endswith(".ark") else ("wav.scp", "sound"))
            inputs.append(("speech", scp, kind))
        inputs += [(name, file, "text") for name, file in self.text_names().items()]
        return [arg for name, file, kind in inputs if only in (None, name)
                for arg in (flag, f"{data_dir / file},{name},{kind}")]

    def train_command(self, *options) -> List:
        """``<task>_train`` with the recipe's config, tokens, features and train/valid data."""
        cmd = [sys.executable, "-m", f"espnet_mtla.bin.{self.task}_train"]
        if self.args.train_config:
            cmd += ["--config", self.args.train_config]
        cmd += ["--use_preprocessor", "true", *options] + self.token_args() + self.feature_args()
        if self.args.ssl_checkpoint:
            cmd += ["--frontend_conf", f"frontend_conf.path_or_url={Path(self.args.ssl_checkpoint).resolve()}"]
        cmd += self.data_args("--train_data_path_and_name_and_type", self.dump / self.train_set)
        return cmd + self.data_args("--valid_data_path_and_name_and_type", self.dump / self.args.valid_set)

    def distributed_args(self) -> List[str]:
        """ESPnet's distributed-training options for stage 7 (none for one process)."""
        a = self.args
        out = []
        if a.num_nodes > 1 or a.dist_launcher != "none":
            out += ["--num_nodes", a.num_nodes, "--multiprocessing_distributed", "true"]
        if a.dist_launcher != "none":
            out += ["--dist_launcher", a.dist_launcher]
        if a.dist_backend:
            out += ["--dist_backend", a.dist_backend]
        return out

    def feature_args(self) -> List[str]:
        return ["--input_size", "80"] if self.feats == "fbank" else []

    def config_value(self, key: str, default=None):
        """A top-level value of the training config (ESPnet's default when the config omits it)."""
        import yaml

        with open(self.args.train_config, encoding="utf-8") as f:
            return (yaml.safe_load(f) or {}).get(key, default)

    def token_files(self) -> List[Path]:
        sides = ("tgt", "src") if self.spec.source_text else ("tgt",)
        return [self.token_dir(side) / f for side in sides for f in ("tokens.txt", "bpe.model")]

    def record(self, stage: "Stage") -> StageRecord:
        """Where ``stage`` records that it finished (see ``Stage.records_under``)."""
        where = {"expdir": Path(self.args.expdir), "exp": self.exp, "decode": self.decode_dir("-").parent}
        return StageRecord(where[stage.records_under] / "stages", stage.number, stage.name)

    # -- what a stage needs before it starts: each raises StageError (nothing created yet) --------
    def ready_data(self) -> None:
        script = Path("local/data.sh")
        if not script.exists():
            raise StageError(f"{script.resolve()} not found: run from a recipe dir (egs2/<corpus>/<task>1)")

    def ready_tokenizer(self) -> None:
        symbols = self.args.user_defined_symbols_file
        if symbols and not Path(symbols).is_file():
            raise StageError(f"--user_defined_symbols_file {symbols}: no such file (the recipe's stage 1 writes it)")

    def ready_stats(self) -> None:
        if self.args.ssl_checkpoint and not Path(self.args.ssl_checkpoint).is_file():
            raise StageError(f"--ssl_checkpoint {self.args.ssl_checkpoint}: no such file (a local HuBERT/WavLM "
                             f"checkpoint; recipes take it from SSL_CHECKPOINT in db.sh)")

    def ready_train(self) -> None:
        if not self.args.train_config:
            raise StageError("--train_config is required for training")
        self.ready_stats()
        if self.args.pretrained_asr and not Path(self.args.pretrained_asr).is_file():
            raise StageError(f"--pretrained_asr {self.args.pretrained_asr}: no such file (an ASR model file, e.g. "
                             "exp/asr_train_mtla/valid.acc.ave.pth of an ASR recipe on the same audio)")

    def ready_model(self) -> None:
        model = self.exp / self.args.inference_model
        if not model.exists():
            raise StageError(f"{model} not found: train first (stage 7), or set --inference_model")

    def refuse_mixed_training(self, changed: List[str]) -> None:
        """Stage 7 with other options or inputs than the run its checkpoint holds."""
        if (self.exp / "checkpoint.pth").exists() and self.args.force != "true":
            raise StageError(f"{self.exp} holds a training run with other options or inputs (changed: "
                             f"{describe_changes(changed)}); resuming it would mix the two: move it away, name a new "
                             f"experiment with --tag, or continue it anyway with --force true")

    # -- what each stage's record covers: (options, input files, output files) ---------------
    # The options and inputs make its key; the outputs must still exist for a finished stage
    # to be skipped.
    def _tables(self, dirs: List[Path]) -> List[Path]:
        return [f for d in dirs for f in table_files(d)]

    def _train_valid(self) -> List[Path]:
        return [self.dump / self.train_set, self.dump / self.args.valid_set]

    def _decode_dirs(self) -> List[Path]:
        return [self.decode_dir(name) for name in self.test_sets]

    def spec_data(self) -> "StageSpec":
        a = self.args
        sets = [a.train_set, a.valid_set] + self.test_sets
        return ({"local_data_opts": a.local_data_opts, "sets": sets}, [Path("local/data.sh")],
                [Path("data") / name / "utt2spk" for name in sets])

    def spec_speed_perturb(self) -> "StageSpec":
        a = self.args
        return ({"speed_perturb_factors": a.speed_perturb_factors}, self._tables([Path("data") / a.train_set]),
                [Path("data") / self.train_set / "utt2spk"])

    def spec_format(self) -> "StageSpec":
        a = self.args
        train_valid = self._train_valid()
        dump_sets = train_valid + [self.dump / name for name in self.test_sets]
        scp = "feats.scp" if self.feats == "fbank" else ("wav.scp" if self.speech else "utt2spk")
        return ({"audio_format": a.audio_format, "feats_type": a.feats_type, "feats_storage": a.feats_storage,
                 "fs": a.fs},
                self._tables([Path("data") / name for name in [self.train_set, a.valid_set] + self.test_sets]),
                [self.dump / ("org" if d in train_valid else "") / d.name / scp for d in dump_sets])

    def spec_filter(self) -> "StageSpec":
        a = self.args
        train_valid = self._train_valid()
        return ({"min_wav_duration": a.min_wav_duration, "max_wav_duration": a.max_wav_duration},
                self._tables([self.dump / "org" / d.name for d in train_valid]), [d / "utt2spk" for d in train_valid])

    def spec_tokenizer(self) -> "StageSpec":
        a = self.args
        options = {k: getattr(a, k) for k in ("token_type", "nbpe", "src_token_type", "src_nbpe", "src_lang",
                                              "tgt_lang", "user_defined_symbols", "user_defined_symbols_file")}
        symbols = [Path(a.user_defined_symbols_file)] if a.user_defined_symbols_file else []
        return options, self._tables([self.dump / self.train_set]) + symbols, [self.token_dir("tgt") / "tokens.txt"]

    def spec_stats(self) -> "StageSpec":
        a = self.args
        return ({"train_config": a.train_config, "ssl_checkpoint": a.ssl_checkpoint},
                [Path(a.train_config or "-")] + self._tables(self._train_valid()) + self.token_files(),
                [self.stats_dir / "train" / "text_shape"])

    def spec_train(self) -> "StageSpec":
        a = self.args
        stats = [f for tag in ("train", "valid") for f in sorted((self.stats_dir / tag).glob("*"))]
        distributed = [str(x) for x in self.distributed_args()]
        return ({"train_config": a.train_config, "train_args": a.train_args, "ngpu": a.ngpu,
                 **({"distributed": distributed} if distributed else {}),  # older records: no key
                 "ssl_checkpoint": a.ssl_checkpoint, "pretrained_asr": a.pretrained_asr},
                [Path(a.train_config or "-")] + ([Path(a.pretrained_asr)] if a.pretrained_asr else []) +
                self._tables(self._train_valid()) + self.token_files() + stats,
                [self.exp / "config.yaml", self.exp / "checkpoint.pth"])

    def spec_decode(self) -> "StageSpec":
        a = self.args
        options = {k: getattr(a, k) for k in ("inference_config", "inference_model", "inference_args",
                                              "inference_nj", "ngpu")}
        return ({**options, "test_sets": self.test_sets},
                [Path(a.inference_config or "-"), self.exp / "config.yaml", self.exp / a.inference_model] +
                self.token_files() + self._tables([self.dump / name for name in self.test_sets]),
                [d / "efficiency.json" for d in self._decode_dirs()])

    def spec_score(self) -> "StageSpec":
        decode = self._decode_dirs()
        return ({"test_sets": self.test_sets, "metrics": self.metrics}, [d / "text" for d in decode],
                [d / "scores.json" for d in decode])

    def spec_pack(self) -> "StageSpec":
        return ({"inference_config": self.args.inference_config},
                [self.exp / self.args.inference_model, self.exp / "config.yaml"] + self.token_files(),
                [self.exp / f"{self.exp.name}.zip"])

    # -- stages -------------------------------------------------------------------------------
    def stage1_data(self) -> None:
        self.run(["bash", "local/data.sh"] + shlex.split(self.args.local_data_opts), Path(self.args.expdir) / "log" / "data_prep.log")
        for name in [self.args.train_set, self.args.valid_set] + self.test_sets:
            problems = datadir.validate(Path("data") / name, needs_audio=self.speech)
            if problems:
                raise StageError(problems.report(Path("data") / name))

    def stage2_speed_perturb(self) -> None:
        factors = self.args.speed_perturb_factors.split()
        if not factors:
            log.info("no --speed_perturb_factors: skipped")
            return
        src, dst = Path("data") / self.args.train_set, Path("data") / self.train_set
        dst.mkdir(parents=True, exist_ok=True)
        if (src / "segments").exists():
            raise StageError("speed perturbation of segmented data: format the set first (not supported)")
        tables = {p.name: datadir.read_table(p, datadir.Problems(), True) for p in src.iterdir()
                  if p.is_file() and p.name not in ("spk2utt", "utt2num_samples", "utt2dur")}
        out: Dict[str, List[str]] = {name: [] for name in tables}
        for factor in factors:
            prefix = "" if float(factor) == 1.0 else f"sp{factor}-"
            for name, table in tables.items():
                for key, value in table.items():
                    if name == "wav.scp" and prefix:
                        value = f"sox -t {Path(value).suffix[1:] or 'wav'} {value} -t wav - speed {factor} |"
                    elif name == "utt2spk" and prefix:
                        value = prefix + value
                    out[name].append(f"{prefix}{key} {value}")
        for name, lines in out.items():
            write_text_atomic(dst / name, "".join(line + "\n" for line in sorted(lines, key=str.encode)))
        datadir.fix(dst)

    def stage3_format(self) -> None:
        sets = [self.train_set, self.args.valid_set] + self.test_sets
        for name in sets:
            src = Path("data") / name
            dst = self.dump / ("org" if name in (self.train_set, self.args.valid_set) else "") / name
            dst.mkdir(parents=True, exist_ok=True)
            for file in src.iterdir():
                if file.is_file() and file.name not in ("wav.scp", "segments", "feats.scp"):
                    shutil.copyfile(file, dst / file.name)
            if not self.speech:
                continue
            logdir = dst / "logs"
            jobs = self.split_keys(src, self.args.nj, logdir / "keys.JOB")
            self.run([sys.executable, "-m", "espnet_mtla.data.format_audio", src, dst, "--audio_format",
                      self.args.audio_format, "--feats_type", self.feats, "--feats_storage", self.args.feats_storage,
                      "--fs", self.args.fs,
                      "--keys", logdir / "keys.JOB", "--job", "JOB"], logdir / "format.JOB.log", jobs)
            scp = "feats.scp" if self.feats == "fbank" else "wav.scp"
            shape = "feats_shape" if self.feats == "fbank" else "utt2num_samples"
            for name_out in (scp, shape):
                self.merge_job_files(dst / f"{name_out}.JOB", jobs, dst / name_out, remove=True)
            self.report_resampling(name, dst, jobs)
            if self.feats == "fbank":
                write_text_atomic(dst / "feats_type", "fbank\n")
            if self.zipped:
                from espnet_mtla.data.zip_features import write_manifest

                write_manifest(dst, self.text_names()["text"])
            problems = datadir.validate(dst, needs_audio=self.speech)
            if problems:
                raise StageError(problems.report(dst))

    def report_resampling(self, name: str, dst: Path, jobs: int) -> None:
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
            log.info("stage 3: %s: all %d utterances at %d Hz, none resampled", name, total, self.args.fs)
            return
        rates = ", ".join(f"{count} from {int(rate)} Hz" for rate, count in sorted(counts.items(), key=lambda kv: int(kv[0])))
        log.info("stage 3: %s: %d of %d utterances resampled to %d Hz (%s)", name, sum(counts.values()), total,
                 self.args.fs, rates)

    def stage4_filter(self) -> None:
        for name in (self.train_set, self.args.valid_set):
            src, dst = self.dump / "org" / name, self.dump / name
            scratch = datadir.Problems()
            keep = list(datadir.read_table(src / "utt2spk", scratch))
            total = len(keep)
            if self.speech:
                if self.feats == "fbank":
                    lengths = {k: int(v.split(",")[0]) / 100 for k, v in datadir.read_table(src / "feats_shape", scratch).items()}
                else:
                    lengths = {k: int(v) / self.args.fs for k, v in datadir.read_table(src / "utt2num_samples", scratch).items()}
                keep = [k for k in keep if self.args.min_wav_duration <= lengths[k] <= self.args.max_wav_duration]
            texts = [datadir.read_table(src / f, scratch, True) for f in self.text_names().values()]
            keep = [k for k in keep if all(t.get(k, "").strip() for t in texts)]
            if dst.exists():
                shutil.rmtree(dst)
            datadir.subset(src, dst, keep)
            log.info("%s: kept %d utterances, dropped %d (duration outside [%s, %s] s or empty text)",
                     name, len(keep), total - len(keep), self.args.min_wav_duration, self.args.max_wav_duration)

    def _train_tokenizer(self, side: str, token_type: str, nbpe: int, text_file: str) -> None:
        out = self.token_dir(side)
        out.mkdir(parents=True, exist_ok=True)
        lines = [v for v in datadir.read_table(self.dump / self.train_set / text_file, datadir.Problems()).values()]
        write_text_atomic(out / "train.txt", "".join(line + "\n" for line in lines))
        special = ["<blank>", "<unk>"]
        if token_type == "bpe":
            import sentencepiece as spm

            symbols = self.user_defined_symbols() if side == "tgt" else []
            spm.SentencePieceTrainer.train(
                input=str(out / "train.txt"), model_prefix=str(out / ".bpe.partial"), vocab_size=nbpe,
                model_type="unigram", character_coverage=1.0, input_sentence_size=100000000,
                user_defined_symbols=symbols or None, minloglevel=2,
                hard_vocab_limit=False,  # a small corpus may support fewer pieces than asked
            )
            for ext in ("vocab", "model"):
                os.replace(out / f".bpe.partial.{ext}", out / f"bpe.{ext}")
            pieces = [line.split("\t")[0] for line in (out / "bpe.vocab").read_text(encoding="utf-8").splitlines()]
            tokens = [t for t in pieces if t not in ("<unk>", "<s>", "</s>")]
        elif token_type == "char":
            tokens = ["<space>"] + sorted({c for line in lines for c in line if c != " "})
        else:
            tokens = sorted({w for line in lines for w in line.split()})
        write_text_atomic(out / "tokens.txt", "".join(t + "\n" for t in special + tokens + ["<sos/eos>"]))
        log.info("%s tokens (%s): %d -> %s", side, token_type, len(tokens) + 3, out / "tokens.txt")

    def user_defined_symbols(self) -> List[str]:
        symbols = self.args.user_defined_symbols.split()
        if self.args.user_defined_symbols_file:
            symbols += Path(self.args.user_defined_symbols_file).read_text(encoding="utf-8").split()
        return symbols

    def stage5_tokenizer(self) -> None:
        names = self.text_names()
        self._train_tokenizer("tgt", self.args.token_type, self.args.nbpe, names["text"])
        if "src_text" in names:
            self._train_tokenizer("src", self.args.src_token_type, self.args.src_nbpe, names["src_text"])

    def stage6_stats(self) -> None:
        logdir = self.stats_dir / "logdir"
        logdir.mkdir(parents=True, exist_ok=True)
        # Both sets need the same number of jobs: each job reads one train and one valid split.
        sizes = [len(datadir.read_table(self.dump / name / "utt2spk", datadir.Problems()))
                 for name in (self.train_set, self.args.valid_set)]
        jobs = max(1, min([self.args.nj] + sizes))
        for name, tag in ((self.train_set, "train"), (self.args.valid_set, "valid")):
            self.split_keys(self.dump / name, jobs, logdir / f"{tag}.JOB.scp", "{key} {key}")
        # The statistics are what global_mvn will normalise with (the mt task has no normalize).
        normalize = ["--normalize", "none"] if self.speech else []
        cmd = self.train_command(
            "--collect_stats", "true", "--ngpu", "0", "--num_workers", "0", *normalize,
            "--train_shape_file", logdir / "train.JOB.scp", "--valid_shape_file", logdir / "valid.JOB.scp",
            "--output_dir", logdir / "stats.JOB")
        self.run(cmd, logdir / "stats.JOB.log", jobs)
        inputs = []
        for j in range(jobs):
            inputs += ["--input_dir", logdir / f"stats.{j + 1}"]
        self.run([sys.executable, "-m", "espnet2.bin.aggregate_stats_dirs", *inputs, "--output_dir", self.stats_dir],
                 self.stats_dir / "aggregate.log")

    def stage7_train(self) -> None:
        self.exp.mkdir(parents=True, exist_ok=True)
        cmd = self.train_command("--ngpu", self.args.ngpu, "--output_dir", self.exp, "--resume", "true",
                                 *self.distributed_args())
        for tag in ("train", "valid"):
            for shape in sorted((self.stats_dir / tag).glob("*_shape*")):
                cmd += [f"--{tag}_shape_file", shape]
        stats = self.stats_dir / "train" / "feats_stats.npz"
        if self.speech and stats.exists() and self.config_value("normalize", "global_mvn") == "global_mvn":
            cmd += ["--normalize_conf", f"stats_file={stats}"]
        if self.args.pretrained_asr:  # ESPnet copies the encoder.* tensors before the first epoch
            cmd += ["--init_param", f"{Path(self.args.pretrained_asr).resolve()}:encoder:encoder"]
        cmd += shlex.split(self.args.train_args)
        if self.args.dist_launcher == "slurm":  # one task per node (ESPnet spawns a process per GPU); the
            cmd = ["srun", "--ntasks-per-node=1"] + cmd  # job asks for the nodes: --train_cmd "slurm --nodes N"
        with TrainingProgress(self.exp / "train.log", self.max_epoch()):
            self.run(cmd, self.exp / "train.log")

    def max_epoch(self) -> int:
        """Epochs stage 7 trains: --train_args' --max_epoch, else the config's, else ESPnet's default (40)."""
        words = shlex.split(self.args.train_args)
        for i, word in enumerate(words):
            if word.startswith("--max_epoch"):
                value = word.split("=", 1)[1] if "=" in word else (words[i + 1] if i + 1 < len(words) else "")
                if value.isdigit():
                    return int(value)
        return int(self.config_value("max_epoch", 40) if self.args.train_config else 40)

    def stage8_decode(self) -> None:
        model = self.exp / self.args.inference_model
        config = self.exp / "config.yaml"
        for name in self.test_sets:
            data = self.dump / name
            out = self.decode_dir(name)
            logdir = out / "logdir"
            if logdir.exists() and not self.resuming:  # outputs of other options: never merge them
                shutil.rmtree(logdir)
            jobs = self.split_keys(data, self.args.inference_nj, logdir / "keys.JOB.scp", "{key} {key}")
            # A job's output dir appears (renamed from <dir>.partial) only when the job finished.
            finished = [j for j in range(1, jobs + 1) if (logdir / f"output.{j}" / "1best_recog" / "efficiency.json").exists()]
            pending = [j for j in range(1, jobs + 1) if j not in finished]
            if finished:
                log.info("%s: job(s) %s finished before the interruption; decoding job(s) %s", name,
                         ",".join(map(str, finished)), ",".join(map(str, pending)) or "none")
            t = self.task
            cmd = [sys.executable, "-m", f"espnet_mtla.bin.{t}_inference", "--ngpu", self.args.ngpu,
                   f"--{t}_train_config", config, f"--{t}_model_file", model, "--key_file", logdir / "keys.JOB.scp",
                   "--output_dir", logdir / "output.JOB"]
            if self.args.inference_config:
                cmd += ["--config", self.args.inference_config]
            cmd += self.data_args("--data_path_and_name_and_type", data, only=self.spec.input_name)
            cmd += shlex.split(self.args.inference_args)
            if pending:
                sizes = [len((logdir / f"keys.{j}.scp").read_text(encoding="utf-8").splitlines()) for j in range(1, jobs + 1)]
                with DecodingProgress([logdir / f"decode.{j}.log" for j in pending], sum(sizes),
                                      sum(sizes[j - 1] for j in finished), name):
                    self.run(cmd, logdir / "decode.JOB.log", pending)
            for file in ("text", "token", "token_int", "score"):
                self.merge_job_files(logdir / "output.JOB" / "1best_recog" / file, jobs, out / file, sort=True)
            reports = [json.loads((logdir / f"output.{j + 1}" / "1best_recog" / "efficiency.json").read_text())
                       for j in range(jobs)]
            summary = {"model": describe_model(model), **merge_efficiency(reports)}
            write_text_atomic(out / "efficiency.json", json.dumps(summary, indent=2) + "\n")

    def decode_dir(self, test_set: str) -> Path:
        tag = Path(self.args.inference_config).stem if self.args.inference_config else "decode"
        return self.exp / f"{tag}_{Path(self.args.inference_model).stem}" / test_set

    def stage9_score(self) -> None:
        from espnet_mtla.metrics.scoring import score

        for name in self.test_sets:
            out = self.decode_dir(name)
            ref_file = self.dump / name / self.text_names()["text"]
            refs = dict(datadir.read_table(ref_file, datadir.Problems()))
            hyps = dict(datadir.read_table(out / "text", datadir.Problems(), allow_empty_value=True))
            hyps = {k: hyps.get(k, "") for k in refs}
            scores = score(self.metrics, refs, hyps, out)
            write_text_atomic(out / "scores.json", json.dumps(scores, indent=2) + "\n")
            log.info("%s %s: %s", self.exp.name, name, scores)

    def stage10_report(self) -> None:
        """Merge this experiment's rows into results.json (next to --results), then render RESULTS.md."""
        path = Path(self.args.results)
        results_file = path.with_suffix(".json")
        rows = json.loads(results_file.read_text(encoding="utf-8"))["rows"] if results_file.exists() else []
        notes = ""  # sections a person added below the table ("## ..."): kept as they are
        if path.exists():
            text = path.read_text(encoding="utf-8")
            notes = "\n## " + text.split("\n## ", 1)[1] if "\n## " in text else ""
            if not results_file.exists() and "| experiment |" in text:
                log.warning("%s has a table but no %s (written before it existed): its rows are replaced by this "
                            "run's; re-run stage 10 of the other experiments to list them again", path, results_file)
        for name in self.test_sets:
            out = self.decode_dir(name)
            eff = json.loads((out / "efficiency.json").read_text())
            row = {"experiment": self.exp.name, "test_set": name, "attention": self.attention_type(),
                   "model": eff.get("model", "-"),
                   "scores": json.loads((out / "scores.json").read_text()),
                   **{key: eff.get(key) for key in RESULT_FIELDS},
                   "learning_curves": learning_curves(self.exp, path.resolve().parent)}
            rows = [r for r in rows if (r["experiment"], r["test_set"]) != (self.exp.name, name)] + [row]
        rows.sort(key=lambda r: (r["experiment"], r["test_set"]))
        write_text_atomic(results_file, json.dumps({"rows": rows}, indent=2) + "\n")
        figures = {test_set: figure_path(path, test_set).name for test_set in plot_results(rows, path)}
        write_text_atomic(path, render_results(rows, results_file.name, figures) + notes)
        print(path.read_text())
        for line in comparisons(rows):
            log.info("stage 10: %s", line)

    def attention_type(self) -> Optional[str]:
        """The trained model's attention type (its config.yaml), None for a model without our decoder."""
        import yaml

        config = self.exp / "config.yaml"
        if not config.exists():
            return None
        with open(config, encoding="utf-8") as f:
            return ((yaml.safe_load(f) or {}).get("decoder_conf") or {}).get("attention_type")

    def stage11_pack(self) -> None:
        from espnet_mtla.storage.packed_model import pack, write_safetensors_copy

        model = self.exp / self.args.inference_model
        extras = [p for p in (self.token_dir("tgt") / "bpe.model", self.token_dir("src") / "bpe.model",
                              self.stats_dir / "train" / "feats_stats.npz") if p.exists()]
        if self.args.inference_config:
            extras.append(Path(self.args.inference_config))
        outpath = self.exp / f"{self.exp.name}.zip"
        t = self.task
        # A safetensors copy, which --packed_model loads in preference: it cannot hold code.
        weights = write_safetensors_copy(model, self.exp / f"{model.name.rsplit('.', 1)[0]}.safetensors")
        pack(files={f"{t}_model_file": model}, yaml_files={f"{t}_train_config": self.exp / "config.yaml"},
             outpath=outpath, extras=extras, safetensors_of={f"{t}_model_file": weights})
        log.info("packed: %s (decode with: python -m espnet_mtla.bin.%s_inference --packed_model %s ...)",
                 outpath, t, outpath)



# (options, input files, output files) of a stage
StageSpec = Tuple[Dict[str, object], List[Path], List[Path]]


def describe_model(model: Path) -> str:
    """What a model file is, for RESULTS.md: ESPnet's names are links, e.g. valid.acc.ave.pth ->
    valid.acc.ave_3best.pth (the average of the 3 best epochs), valid.acc.best.pth -> 7epoch.pth."""
    names = [model.name]
    while model.is_symlink() and len(names) < 8:
        model = model.parent / os.readlink(model)
        names.append(model.name)
    return " -> ".join(name[: -len(".pth")] if name.endswith(".pth") else name for name in names)


def merge_efficiency(reports: List[dict]) -> dict:
    """One efficiency report from the decoding jobs' reports."""
    from espnet_mtla.metrics.efficiency import summarize  # imports torch: not at the driver's start-up

    utts = {}
    for report in reports:
        utts.update(report["utterances"])
    first = reports[0] if reports else {}
    merged = summarize(dict(sorted(utts.items())), first.get("device"), first.get("peak_memory_kind"))
    return {"jobs": len(reports), **merged}


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, as data: ``run_stage`` treats every stage alike through these.

    Args:
        number, name: ``--stage N``; the name in logs and records.
        run: the stage itself.
        spec: (options, inputs, outputs) its record covers (see ``Pipeline.spec_*``); None: the
            stage keeps no record and always runs.
        records_under: where its record lives: ``expdir`` (data stages, shared by experiments),
            ``exp`` (the experiment) or ``decode`` (the decode dir of the inference config/model).
        ready: raises StageError when the stage cannot start.
        after: the stages whose interruption stops this one; None: every earlier stage.
        resumes: an interrupted run with the same options and inputs continues where it
            stopped (``Pipeline.resuming`` is set while it runs).
        usable_unfinished: later stages may use its outputs while it is unfinished (training:
            model files are written atomically) with a warning, instead of stopping.
        on_changed: called with the changed options/inputs before a stage that ran before is redone.
        jobs: the option (``cmd``, ``train_cmd``, ``decode_cmd``) whose backend runs its jobs;
            None: they run on this machine.
    """

    number: int
    name: str
    run: Callable[[Pipeline], None]
    spec: Optional[Callable[[Pipeline], StageSpec]] = None
    records_under: str = "expdir"
    ready: Optional[Callable[[Pipeline], None]] = None
    after: Optional[Tuple[int, ...]] = None
    resumes: bool = False
    usable_unfinished: bool = False
    on_changed: Optional[Callable[[Pipeline, List[str]], None]] = None
    jobs: Optional[str] = None


P = Pipeline
STAGES: Dict[int, Stage] = {stage.number: stage for stage in (
    Stage(1, "data", P.stage1_data, P.spec_data, ready=P.ready_data),
    Stage(2, "speed_perturb", P.stage2_speed_perturb, P.spec_speed_perturb),
    Stage(3, "format", P.stage3_format, P.spec_format, jobs="cmd"),
    Stage(4, "filter", P.stage4_filter, P.spec_filter),
    Stage(5, "tokenizer", P.stage5_tokenizer, P.spec_tokenizer, ready=P.ready_tokenizer),
    Stage(6, "stats", P.stage6_stats, P.spec_stats, ready=P.ready_stats, jobs="cmd"),
    Stage(7, "train", P.stage7_train, P.spec_train, "exp", P.ready_train, resumes=True, usable_unfinished=True,
          on_changed=P.refuse_mixed_training, jobs="train_cmd"),
    Stage(8, "decode", P.stage8_decode, P.spec_decode, "decode", P.ready_model, resumes=True, jobs="decode_cmd"),
    Stage(9, "score", P.stage9_score, P.spec_score, "decode"),
    # no record: it merges rows into a RESULTS.md that experiments share, in a second
    Stage(10, "report", P.stage10_report),
    Stage(11, "pack", P.stage11_pack, P.spec_pack, "exp", P.ready_model, after=tuple(range(1, 8))),
)}


def describe_changes(changed: List[str]) -> str:
    return ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")


def run_stage(pipeline: Pipeline, stage: Stage) -> None:
    """Run one stage unless its record says it finished with the same options and inputs."""
    for number in stage.after or range(1, stage.number):
        earlier = STAGES[number]
        record = pipeline.record(earlier) if earlier.spec else None
        if record is None or not record.interrupted:
            continue
        if earlier.usable_unfinished:
            log.warning("stage %d (%s) has not finished (interrupted, or still running; %s): using what it "
                        "has written so far", earlier.number, earlier.name, record.path)
            continue
        raise StageError(f"stage {earlier.number} ({earlier.name}) was interrupted ({record.path}); its outputs are "
                         f"incomplete: re-run from it (--stage {earlier.number})")
    if stage.ready:
        stage.ready(pipeline)
    pipeline.jobs_option = stage.jobs
    if stage.jobs:
        pipeline.check_backend(stage.jobs)
    if stage.spec is None:
        stage.run(pipeline)
        return
    record = pipeline.record(stage)
    options, inputs, outputs = stage.spec(pipeline)
    key = make_key(options, inputs)
    force = pipeline.args.force == "true"
    if record.is_done(key, outputs) and not force:
        log.info("stage %d: finished earlier with the same options and inputs (%s): skipped (--force true "
                 "redoes it)", stage.number, record.path)
        return
    changed = record.changed_since(key)
    if changed:
        log.info("stage %d: options or inputs changed since its last run (%s): redone", stage.number,
                 describe_changes(changed))
        if stage.on_changed:
            stage.on_changed(pipeline, changed)
    pipeline.resuming = stage.resumes and record.interrupted and not changed
    if pipeline.resuming:
        log.info("stage %d: resuming an interrupted run (%s)", stage.number, record.path)
    record.start(key)
    stage.run(pipeline)
    record.finish(key)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    Path(args.expdir).mkdir(parents=True, exist_ok=True)
    # The pipeline's own handlers (not the root logger's), replaced on every call: main() may run
    # several times in one process, each with its own exp dir.
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s pipeline: %(message)s", datefmt="%H:%M:%S")
    for handler in (logging.StreamHandler(), logging.FileHandler(Path(args.expdir) / "pipeline.log")):
        handler.setFormatter(formatter)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info("%s", " ".join(shlex.quote(a) for a in (sys.argv if argv is None else ["pipeline"] + list(argv))))
    pipeline = Pipeline(args)
    for stage in STAGES.values():
        if args.stage <= stage.number <= args.stop_stage:
            log.info("stage %d: %s", stage.number, stage.name)
            start = time.time()
            try:
                run_stage(pipeline, stage)
            except StageError as err:
                print(f"error: stage {stage.number} ({stage.name}): {err}", file=sys.stderr)
                return 1
            log.info("stage %d done in %.0f s", stage.number, time.time() - start)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1)))
    sys.exit(main())
