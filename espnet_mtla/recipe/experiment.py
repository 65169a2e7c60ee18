"""What one recipe run derives from its options: the task, the features, the sets, the
directories, and the command lines of our ESPnet CLIs. Stages read it; none writes to it."""

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

from espnet_mtla.recipe.errors import StageError
from espnet_mtla.recipe.features import Features
from espnet_mtla.task_specs import get_task


def read_config(path) -> dict:
    """A YAML config's top-level mapping ({} when empty): training, LM and model configs."""
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


LONG_FORM, ORACLE = "_long", "_oracle"  # long-form sets: <test>_long, <test>_long_oracle


class Experiment:
    """Args:
        args: the parsed options (``espnet_mtla.recipe.options.get_parser``).

    Attributes: ``task`` (the TaskSpec), ``features``, ``metrics``, ``dump`` (the dump dir of
    the features), ``train_set`` (``_sp`` when speed-perturbed), ``test_sets``, ``exp``
    (``<expdir>/<task>_<tag>``), ``stats_dir``.
    """

    def __init__(self, args: argparse.Namespace):
        if args.train_config:
            args.train_config = args.train_config.replace("{attention}", args.attention)
        self.args = args
        self.task = get_task(args.task)
        self.features = Features.from_args(args, self.task.speech)
        self.metrics = list(self.task.metrics) if args.metrics == "auto" else args.metrics
        self.dump = self.features.dump_dir(args.dumpdir)
        self.test_sets = args.test_sets.split()
        self.tag = args.tag or (Path(args.train_config).stem if args.train_config else "default")
        self.exp = Path(args.expdir) / f"{self.task.name}_{self.tag}"
        self.seed_group: Optional[str] = None  # with --seeds: the experiment name all seeds share
        self.stats_dir = Path(args.expdir) / f"{self.task.name}_stats_{self.features.stats_name}"
        self.train_set = args.train_set + ("_sp" if args.speed_perturb_factors.strip() else "")
        self.use_lm = args.use_lm == "true"
        if args.lm_config:
            args.lm_config = args.lm_config.replace("{attention}", args.lm_attention or args.attention)
        self.lm_exp = Path(args.expdir) / f"lm_{Path(args.lm_config).stem if args.lm_config else 'default'}"
        self.lm_stats_dir = Path(args.expdir) / f"lm_stats_{self.token_dir('tgt').name}"
        # ESPnet's shape statistics of the LM's text: stage 12 writes them, stage 13 trains on them
        self.lm_shape_files = [self.lm_stats_dir / tag / "text_shape" for tag in ("train", "valid")]

    # -- data and tokens -------------------------------------------------------------------------
    def text_names(self) -> Dict[str, str]:
        """ESPnet data name -> file in a data dir."""
        return self.task.text_names(self.args.src_lang, self.args.tgt_lang)

    def token_dir(self, side: str) -> Path:
        a = self.args
        token_type, nbpe = (a.src_token_type, a.src_nbpe) if side == "src" else (a.token_type, a.nbpe)
        return Path("data") / "token_list" / f"{'src_' if side == 'src' else ''}{token_type}{nbpe if token_type == 'bpe' else ''}"

    def token_files(self) -> List[Path]:
        sides = ("tgt", "src") if self.task.source_text else ("tgt",)
        return [self.token_dir(side) / f for side in sides for f in ("tokens.txt", "bpe.model")]

    def token_args(self) -> List:
        tgt = self.token_dir("tgt")
        out = ["--token_type", self.args.token_type, "--token_list", tgt / "tokens.txt"]
        if self.args.token_type == "bpe":
            out += ["--bpemodel", tgt / "bpe.model"]
        if self.task.source_text:
            src = self.token_dir("src")
            out += ["--src_token_type", self.args.src_token_type, "--src_token_list", src / "tokens.txt"]
            if self.args.src_token_type == "bpe":
                out += ["--src_bpemodel", src / "bpe.model"]
        return out

    def data_args(self, flag: str, data_dir: Path, only: Optional[str] = None) -> List[str]:
        """``flag path,name,type`` for each input of a data dir (or only the input ``only``)."""
        inputs = [("speech", self.features.scp, self.features.data_type)] if self.features.speech else []
        inputs += [(name, file, "text") for name, file in self.text_names().items()]
        return [arg for name, file, kind in inputs if only in (None, name)
                for arg in (flag, f"{data_dir / file},{name},{kind}")]

    def train_valid(self) -> List[Path]:
        return [self.dump / self.train_set, self.dump / self.args.valid_set]

    # -- training --------------------------------------------------------------------------------
    def train_command(self, *options) -> List:
        """``<task>_train`` with the recipe's config, tokens, features and train/valid data."""
        cmd = [sys.executable, "-m", f"espnet_mtla.bin.{self.task.name}_train"]
        if self.args.train_config:
            cmd += ["--config", self.args.train_config]
        cmd += ["--use_preprocessor", "true", *options] + self.token_args() + self.features.train_args()
        if self.args.ssl_checkpoint:
            cmd += ["--frontend_conf", f"frontend_conf.path_or_url={Path(self.args.ssl_checkpoint).resolve()}"]
        cmd += self.data_args("--train_data_path_and_name_and_type", self.dump / self.train_set)
        return cmd + self.data_args("--valid_data_path_and_name_and_type", self.dump / self.args.valid_set)

    def distributed_args(self) -> List:
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

    def config_value(self, key: str, default=None):
        """A top-level value of the training config (ESPnet's default when the config omits it)."""
        return read_config(self.args.train_config).get(key, default)

    def seed_experiments(self) -> List["Experiment"]:
        """This experiment once per --seeds seed (exp/<task>_<tag>_seed<N>, trained with ESPnet's
        --seed N); itself alone without --seeds."""
        seeds = self.args.seeds.split()
        if not seeds:
            return [self]
        runs = []
        for seed in seeds:  # integers, as options.seed_list checked
            args = argparse.Namespace(**vars(self.args))
            args.tag, args.seeds = f"{self.tag}_seed{seed}", ""
            args.train_args = f"{self.args.train_args} --seed {seed}".strip()
            run = Experiment(args)
            run.seed_group = self.exp.name
            runs.append(run)
        return runs

    # -- decoding --------------------------------------------------------------------------------
    def decode_dir(self, test_set: str) -> Path:
        """exp/<experiment>/<decode config>[_<LM experiment>]_<model>/<test set>."""
        tag = Path(self.args.inference_config).stem if self.args.inference_config else "decode"
        if self.use_lm:
            tag += f"_{self.lm_exp.name}"
        return self.exp / f"{tag}_{Path(self.args.inference_model).stem}" / test_set

    # -- language model ------------------------------------------------------------------------
    def lm_model(self) -> Path:
        return self.lm_exp / self.args.lm_inference_model

    def check_lm_model(self) -> None:
        """One line when the LM that stages 8 and 14 need is not there."""
        model = self.lm_model()
        if not model.exists():
            raise StageError(f"{model} not found: train the LM first (stages 12-13), or set --lm_inference_model")

    def lm_train_texts(self) -> List[Path]:
        """The LM's training text files (Kaldi text): --lm_train_text, else the training transcripts."""
        text = self.text_names()["text"]
        return [Path(f) for f in self.args.lm_train_text.split()] or [self.dump / self.train_set / text]

    def lm_extra_texts(self) -> List[Path]:
        """--lm_extra_text: plain text files, one sentence per line."""
        return [Path(f) for f in self.args.lm_extra_text.split()]

    def lm_dev_text(self) -> Path:
        text = self.text_names()["text"]
        return Path(self.args.lm_dev_text) if self.args.lm_dev_text else self.dump / self.args.valid_set / text

    def lm_command(self, *options) -> List:
        """``lm_train`` with the LM config, the target token list, and the LM's text."""
        cmd = [sys.executable, "-m", "espnet_mtla.bin.lm_train"]
        if self.args.lm_config:
            cmd += ["--config", self.args.lm_config]
        tgt = self.token_dir("tgt")
        cmd += ["--use_preprocessor", "true", "--token_type", self.args.token_type, "--token_list", tgt / "tokens.txt"]
        if self.args.token_type == "bpe":
            cmd += ["--bpemodel", tgt / "bpe.model"]
        cmd += list(options)
        return cmd + ["--train_data_path_and_name_and_type", f"{self.lm_stats_dir / 'train.txt'},text,text",
                      "--valid_data_path_and_name_and_type", f"{self.lm_stats_dir / 'dev.txt'},text,text"]

    def long_form_sets(self) -> List[str]:
        """With ``--long_form_minutes``: ``<first test set>_long`` (segmented by voice activity) and
        ``<first test set>_long_oracle`` (the same recordings cut at the true utterance times)."""
        if not self.args.long_form_minutes.split():
            return []
        name = f"{self.test_sets[0]}{LONG_FORM}"
        return [name, f"{name}{ORACLE}"]

    @property
    def decode_sets(self) -> List[str]:
        """What stages 8-10 decode, score and report: the test sets, then the long-form sets."""
        return self.test_sets + self.long_form_sets()

    def reference_dir(self, name: str) -> Path:
        """The data dir holding a decoded set's references (the oracle set shares its recordings')."""
        return self.dump / name.removesuffix(ORACLE)

    def decode_dirs(self) -> List[Path]:
        return [self.decode_dir(name) for name in self.decode_sets]


def describe_model(model: Path) -> str:
    """What a model file is, for RESULTS.md: ESPnet's names are links, e.g. valid.acc.ave.pth ->
    valid.acc.ave_3best.pth (the average of the 3 best epochs), valid.acc.best.pth -> 7epoch.pth."""
    names = [model.name]
    while model.is_symlink() and len(names) < 8:
        model = model.parent / os.readlink(model)
        names.append(model.name)
    return " -> ".join(name[: -len(".pth")] if name.endswith(".pth") else name for name in names)
