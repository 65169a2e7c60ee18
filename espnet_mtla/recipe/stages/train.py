"""Stage 7: training through ``<task>_train`` (ESPnet's trainer), resumable after a kill."""

import shlex
from pathlib import Path
from typing import List, Optional

from espnet_mtla.recipe.errors import StageError
from espnet_mtla.recipe.experiment import Experiment, read_config
from espnet_mtla.recipe.progress import TrainingProgress
from espnet_mtla.recipe.stage import Cover, Stage, StageRun, describe_changes, tables
from espnet_mtla.recipe.stages.tokens import check_ssl_checkpoint


class Train(Stage):
    number, name = 7, "train"
    per_model = True
    records_under = "exp"
    resumes = True
    usable_unfinished = True
    jobs = "train_cmd"

    def ready(self, x: Experiment) -> None:
        a = x.args
        if not a.train_config:
            raise StageError("--train_config is required for training")
        check_ssl_checkpoint(x)
        if a.pretrained_asr and not Path(a.pretrained_asr).is_file():
            raise StageError(f"--pretrained_asr {a.pretrained_asr}: no such file (an ASR model file, e.g. "
                             "exp/asr_train_mtla/valid.acc.ave.pth of an ASR recipe on the same audio)")

    def covers(self, x: Experiment) -> Cover:
        a = x.args
        stats = [f for tag in ("train", "valid") for f in sorted((x.stats_dir / tag).glob("*"))]
        distributed = [str(v) for v in x.distributed_args()]
        return Cover({"train_config": a.train_config, "train_args": a.train_args, "ngpu": a.ngpu,
                      **({"distributed": distributed} if distributed else {}),  # older records: no key
                      "ssl_checkpoint": a.ssl_checkpoint, "pretrained_asr": a.pretrained_asr},
                     [Path(a.train_config or "-")] + ([Path(a.pretrained_asr)] if a.pretrained_asr else []) +
                     tables(x.train_valid()) + x.token_files() + stats,
                     [x.exp / "config.yaml", x.exp / "checkpoint.pth"])

    def on_changed(self, x: Experiment, changed: List[str]) -> None:
        refuse_to_mix(x, x.exp, changed, "a training run", "name a new experiment with --tag, ")

    def run(self, x: Experiment, run: StageRun) -> None:
        a = x.args
        x.exp.mkdir(parents=True, exist_ok=True)
        cmd = x.train_command("--ngpu", a.ngpu, "--output_dir", x.exp, "--resume", "true", *x.distributed_args())
        for tag in ("train", "valid"):
            for shape in sorted((x.stats_dir / tag).glob("*_shape*")):
                cmd += [f"--{tag}_shape_file", shape]
        stats = x.stats_dir / "train" / "feats_stats.npz"
        if x.task.speech and stats.exists() and x.config_value("normalize", "global_mvn") == "global_mvn":
            cmd += ["--normalize_conf", f"stats_file={stats}"]
        if a.pretrained_asr:  # ESPnet copies the encoder.* tensors before the first epoch
            cmd += ["--init_param", f"{Path(a.pretrained_asr).resolve()}:encoder:encoder"]
        cmd += shlex.split(a.train_args)
        if a.dist_launcher == "slurm":  # one task per node (ESPnet spawns a process per GPU); the
            cmd = ["srun", "--ntasks-per-node=1"] + cmd  # job asks for the nodes: --train_cmd "slurm --nodes N"
        with TrainingProgress(x.exp / "train.log", max_epoch(a.train_args, a.train_config)):
            run.jobs.launch(cmd, x.exp / "train.log")


def max_epoch(train_args: str, config: Optional[str]) -> int:
    """Epochs a training runs: ``train_args``' --max_epoch, else the config's, else ESPnet's default (40)."""
    words = shlex.split(train_args)
    for i, word in enumerate(words):
        if word.startswith("--max_epoch"):
            value = word.split("=", 1)[1] if "=" in word else (words[i + 1] if i + 1 < len(words) else "")
            if value.isdigit():
                return int(value)
    return int(read_config(config).get("max_epoch", 40)) if config else 40


def refuse_to_mix(x: Experiment, run_dir: Path, changed: List[str], what: str, ways: str = "") -> None:
    """Other options or inputs than the run ``run_dir``'s checkpoint holds: never mix the two
    (``ways``: the stage's other ways out, before --force)."""
    if (run_dir / "checkpoint.pth").exists() and x.args.force != "true":
        raise StageError(f"{run_dir} holds {what} with other options or inputs (changed: "
                         f"{describe_changes(changed)}); resuming it would mix the two: move it away, {ways}"
                         f"or continue it anyway with --force true")
