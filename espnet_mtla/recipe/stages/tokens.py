"""Stages 5-6: the tokenisers (target side, and source side for st/mt) and ESPnet's
statistics (feature mean/variance, shape files) over the training and validation sets."""

import logging
import os
import sys
from pathlib import Path
from typing import List

from espnet_mtla.data import datadir
from espnet_mtla.recipe.errors import StageError
from espnet_mtla.recipe.experiment import Experiment
from espnet_mtla.recipe.jobs import split_keys
from espnet_mtla.recipe.stage import Cover, Stage, StageRun, tables
from espnet_mtla.storage.fileio import write_text_atomic

log = logging.getLogger("pipeline")


class Tokenizer(Stage):
    number, name = 5, "tokenizer"

    def ready(self, x: Experiment) -> None:
        symbols = x.args.user_defined_symbols_file
        if symbols and not Path(symbols).is_file():
            raise StageError(f"--user_defined_symbols_file {symbols}: no such file (the recipe's stage 1 writes it)")

    def covers(self, x: Experiment) -> Cover:
        a = x.args
        options = {k: getattr(a, k) for k in ("token_type", "nbpe", "src_token_type", "src_nbpe", "src_lang",
                                              "tgt_lang", "user_defined_symbols", "user_defined_symbols_file")}
        symbols = [Path(a.user_defined_symbols_file)] if a.user_defined_symbols_file else []
        return Cover(options, tables([x.dump / x.train_set]) + symbols, [x.token_dir("tgt") / "tokens.txt"])

    def run(self, x: Experiment, run: StageRun) -> None:
        names = x.text_names()
        train_tokenizer(x, "tgt", x.args.token_type, x.args.nbpe, names["text"])
        if "src_text" in names:
            train_tokenizer(x, "src", x.args.src_token_type, x.args.src_nbpe, names["src_text"])


def user_defined_symbols(args) -> List[str]:
    symbols = args.user_defined_symbols.split()
    if args.user_defined_symbols_file:
        symbols += Path(args.user_defined_symbols_file).read_text(encoding="utf-8").split()
    return symbols


def train_tokenizer(x: Experiment, side: str, token_type: str, nbpe: int, text_file: str) -> None:
    """``tokens.txt`` (and ``bpe.model``) of one side from the training set's text."""
    out = x.token_dir(side)
    out.mkdir(parents=True, exist_ok=True)
    lines = [v for v in datadir.read_table(x.dump / x.train_set / text_file, datadir.Problems()).values()]
    write_text_atomic(out / "train.txt", "".join(line + "\n" for line in lines))
    special = ["<blank>", "<unk>"]
    if token_type == "bpe":
        import sentencepiece as spm

        symbols = user_defined_symbols(x.args) if side == "tgt" else []
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


def check_ssl_checkpoint(x: Experiment) -> None:
    if x.args.ssl_checkpoint and not Path(x.args.ssl_checkpoint).is_file():
        raise StageError(f"--ssl_checkpoint {x.args.ssl_checkpoint}: no such file (a local HuBERT/WavLM "
                         f"checkpoint; recipes take it from SSL_CHECKPOINT in db.sh)")


class Stats(Stage):
    number, name = 6, "stats"
    jobs = "cmd"

    def ready(self, x: Experiment) -> None:
        check_ssl_checkpoint(x)

    def covers(self, x: Experiment) -> Cover:
        a = x.args
        return Cover({"train_config": a.train_config, "ssl_checkpoint": a.ssl_checkpoint},
                     [Path(a.train_config or "-")] + tables(x.train_valid()) + x.token_files(),
                     [x.stats_dir / "train" / "text_shape"])

    def run(self, x: Experiment, run: StageRun) -> None:
        logdir = x.stats_dir / "logdir"
        logdir.mkdir(parents=True, exist_ok=True)
        # Both sets need the same number of jobs: each job reads one train and one valid split.
        sizes = [len(datadir.read_table(x.dump / name / "utt2spk", datadir.Problems()))
                 for name in (x.train_set, x.args.valid_set)]
        jobs = max(1, min([x.args.nj] + sizes))
        for name, tag in ((x.train_set, "train"), (x.args.valid_set, "valid")):
            split_keys(x.dump / name, jobs, logdir / f"{tag}.JOB.scp", "{key} {key}")
        # The statistics are what global_mvn will normalise with (the mt task has no normalize).
        normalize = ["--normalize", "none"] if x.task.speech else []
        cmd = x.train_command(
            "--collect_stats", "true", "--ngpu", "0", "--num_workers", "0", *normalize,
            "--train_shape_file", logdir / "train.JOB.scp", "--valid_shape_file", logdir / "valid.JOB.scp",
            "--output_dir", logdir / "stats.JOB")
        run.jobs.launch(cmd, logdir / "stats.JOB.log", jobs)
        inputs = []
        for j in range(jobs):
            inputs += ["--input_dir", logdir / f"stats.{j + 1}"]
        run.jobs.launch([sys.executable, "-m", "espnet2.bin.aggregate_stats_dirs", *inputs, "--output_dir",
                         x.stats_dir], x.stats_dir / "aggregate.log")
