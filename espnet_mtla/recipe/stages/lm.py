"""Stages 12-14: the language model, as ESPnet's asr.sh trains one (``--use_lm true``).

    12 lm_stats       the LM's text (the training transcripts, or --lm_train_text, plus
                      --lm_extra_text) and ESPnet's shape statistics   -> exp/lm_stats_<tokens>/
    13 lm_train       lm_train with --lm_config, resumable after a kill  -> exp/lm_<config>/
    14 lm_perplexity  the LM's perplexity on the dev text                -> exp/lm_<config>/perplexity.json

They run after stage 7 and before stage 8 (their numbers follow the stages that existed before
them, so that older commands and records keep their meaning); stage 8 then fuses the LM with
the decode config's ``lm_weight``, into its own decode dir. With ``--use_lm false`` they are
skipped. The LM uses the model's target token list (stage 5).
"""

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import List

from espnet_mtla.data import datadir
from espnet_mtla.recipe.errors import StageError
from espnet_mtla.recipe.experiment import Experiment, describe_model, read_config
from espnet_mtla.recipe.progress import TrainingProgress
from espnet_mtla.recipe.stage import Cover, Stage, StageRun
from espnet_mtla.recipe.stages.train import max_epoch, refuse_to_mix
from espnet_mtla.storage.fileio import write_text_atomic

log = logging.getLogger("pipeline")


def check_lm_inputs(x: Experiment) -> None:
    """One line for a missing LM config, text file, empty text or token list, before anything is written."""
    a = x.args
    if not a.lm_config:
        raise StageError("--use_lm true needs --lm_config (the LM's training config, e.g. conf/train_lm_{attention}.yaml)")
    if not Path(a.lm_config).is_file():
        raise StageError(f"--lm_config {a.lm_config}: no such file")
    for path in x.lm_train_texts() + x.lm_extra_texts() + [x.lm_dev_text()]:
        if not path.is_file():
            raise StageError(f"{path}: no such LM text file (--lm_train_text, --lm_extra_text, --lm_dev_text; "
                             "the transcripts appear with stages 1-4)")
        if not path.read_text(encoding="utf-8", errors="replace").strip():
            raise StageError(f"{path}: the LM text file is empty")
    tokens = x.token_dir("tgt") / "tokens.txt"
    if not tokens.is_file():
        raise StageError(f"{tokens}: no token list: the LM uses the model's (stage 5)")


def kaldi_lines(path: Path) -> List[str]:
    """'key sentence' lines of a Kaldi text file (lines without a sentence are left out)."""
    table = datadir.read_table(path, datadir.Problems())
    return [f"{key} {text}\n" for key, text in table.items() if text.strip()]


def plain_lines(path: Path, prefix: str) -> List[str]:
    """The sentences of a plain text file, keyed ``<prefix>-<line number>``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [f"{prefix}-{n:07d} {line.strip()}\n" for n, line in enumerate(lines, 1) if line.strip()]


class LmStats(Stage):
    number, name = 12, "lm_stats"
    after = (1, 2, 3, 4, 5)
    needs_lm = True
    jobs = "cmd"

    def ready(self, x: Experiment) -> None:
        check_lm_inputs(x)

    def covers(self, x: Experiment) -> Cover:
        a = x.args
        return Cover({"lm_config": a.lm_config, "lm_train_text": a.lm_train_text, "lm_extra_text": a.lm_extra_text,
                      "lm_dev_text": a.lm_dev_text},
                     [Path(a.lm_config)] + x.lm_train_texts() + x.lm_extra_texts() + [x.lm_dev_text()] + x.token_files(),
                     x.lm_shape_files)

    def run(self, x: Experiment, run: StageRun) -> None:
        out = x.lm_stats_dir
        out.mkdir(parents=True, exist_ok=True)
        train = [line for path in x.lm_train_texts() for line in kaldi_lines(path)]
        for i, path in enumerate(x.lm_extra_texts(), 1):
            train += plain_lines(path, f"lm_extra{i}")
        dev = kaldi_lines(x.lm_dev_text())
        write_text_atomic(out / "train.txt", "".join(train))
        write_text_atomic(out / "dev.txt", "".join(dev))
        log.info("LM text: %d training sentences (%d files), %d dev sentences -> %s", len(train),
                 len(x.lm_train_texts()) + len(x.lm_extra_texts()), len(dev), out)
        cmd = x.lm_command("--collect_stats", "true", "--ngpu", "0", "--num_workers", "0",
                           "--train_shape_file", out / "train.txt", "--valid_shape_file", out / "dev.txt",
                           "--output_dir", out)
        run.jobs.launch(cmd, out / "stats.log")


class LmTrain(Stage):
    number, name = 13, "lm_train"
    records_under = "lm_exp"
    after = (12,)
    needs_lm = True
    resumes = True
    usable_unfinished = True
    jobs = "train_cmd"

    def ready(self, x: Experiment) -> None:
        check_lm_inputs(x)

    def covers(self, x: Experiment) -> Cover:
        a = x.args
        return Cover({"lm_config": a.lm_config, "lm_args": a.lm_args, "ngpu": a.ngpu},
                     [Path(a.lm_config), x.lm_stats_dir / "train.txt", x.lm_stats_dir / "dev.txt"] +
                     x.token_files() + x.lm_shape_files,
                     [x.lm_exp / "config.yaml", x.lm_exp / "checkpoint.pth"])

    def on_changed(self, x: Experiment, changed: List[str]) -> None:
        refuse_to_mix(x, x.lm_exp, changed, "an LM training run")

    def run(self, x: Experiment, run: StageRun) -> None:
        a = x.args
        x.lm_exp.mkdir(parents=True, exist_ok=True)
        train_shape, valid_shape = x.lm_shape_files
        cmd = x.lm_command("--ngpu", a.ngpu, "--output_dir", x.lm_exp, "--resume", "true",
                           "--train_shape_file", train_shape, "--valid_shape_file", valid_shape)
        cmd += shlex.split(a.lm_args)
        with TrainingProgress(x.lm_exp / "train.log", max_epoch(a.lm_args, a.lm_config), stage=self.number):
            run.jobs.launch(cmd, x.lm_exp / "train.log")


class LmPerplexity(Stage):
    number, name = 14, "lm_perplexity"
    records_under = "lm_exp"
    after = (12, 13)
    needs_lm = True

    def ready(self, x: Experiment) -> None:
        x.check_lm_model()

    def covers(self, x: Experiment) -> Cover:
        return Cover({"lm_inference_model": x.args.lm_inference_model},
                     [x.lm_exp / "config.yaml", x.lm_model(), x.lm_stats_dir / "dev.txt"],
                     [x.lm_exp / "perplexity.json"])

    def run(self, x: Experiment, run: StageRun) -> None:
        out = x.lm_exp / f"perplexity_{x.lm_model().stem}"
        cmd = [sys.executable, "-m", "espnet_mtla.bin.lm_perplexity", "--ngpu", x.args.ngpu,
               "--data_path_and_name_and_type", f"{x.lm_stats_dir / 'dev.txt'},text,text",
               "--train_config", x.lm_exp / "config.yaml", "--model_file", x.lm_model(), "--output_dir", out]
        run.jobs.launch(cmd, x.lm_exp / "perplexity.log")
        ppl = float((out / "ppl").read_text(encoding="utf-8").split()[0])
        tokens = sum(int(line.split()[1]) for line in (out / "utt2ntokens").read_text(encoding="utf-8").splitlines())
        report = {"lm": x.lm_exp.name, "attention": lm_attention(x.lm_exp), "model": describe_model(x.lm_model()),
                  "text": str(x.lm_dev_text()), "tokens": tokens, "perplexity": round(ppl, 3)}
        write_text_atomic(x.lm_exp / "perplexity.json", json.dumps(report, indent=2) + "\n")
        log.info("%s: perplexity %.3f on %s (%d tokens, <eos> included)", x.lm_exp.name, ppl, x.lm_dev_text(), tokens)


def lm_attention(lm_exp: Path):
    """The LM's attention type (``lm_conf.attention_type``), or its ``lm`` class name (ESPnet's own)."""
    config = read_config(lm_exp / "config.yaml")
    return (config.get("lm_conf") or {}).get("attention_type") or config.get("lm")
