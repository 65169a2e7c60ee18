"""What every stage is: a class with its number and name, what it needs before it starts
(``ready``), what its record covers (``covers``), and what it does (``run``), side by side.
``espnet_mtla.recipe.runner.run_stage`` treats every stage alike through these."""

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Dict, List, NamedTuple, Optional, Tuple

from espnet_mtla.recipe.experiment import Experiment
from espnet_mtla.recipe.jobs import Jobs
from espnet_mtla.recipe.records import StageRecord, table_files


class Cover(NamedTuple):
    """What a stage's record covers: its options and input files make its key (a change redoes
    the stage); its output files must still exist for a finished stage to be skipped."""

    options: Dict[str, object]
    inputs: List[Path]
    outputs: List[Path]


@dataclass
class StageRun:
    """What ``run_stage`` hands a stage that runs: its jobs' backend, and whether it resumes an
    interrupted run with the same options and inputs."""

    jobs: Jobs
    resuming: bool = False


class Stage:
    """One stage. Class attributes:

        number, name: ``--stage N``; the name in logs and records.
        records_under: where its record lives: ``expdir`` (data stages, shared by experiments),
            ``exp`` (the experiment), ``decode`` (the decode dir of the inference config and
            model), ``lm_exp`` (the language model's experiment); None: the stage keeps no
            record and always runs.
        after: the stages whose interruption stops this one; None: every earlier stage.
        resumes: an interrupted run with the same options and inputs continues where it stopped.
        usable_unfinished: later stages may use its outputs while it is unfinished (training:
            model files are written atomically), with a warning instead of stopping.
        jobs: the option (``cmd``, ``train_cmd``, ``decode_cmd``) whose backend runs its jobs;
            None: they run on this machine.
        needs_lm: a language-model stage, skipped with ``--use_lm false``.
        per_model: runs once per trained model (each ``--seeds`` seed's experiment).
    """

    number: ClassVar[int]
    name: ClassVar[str]
    records_under: ClassVar[Optional[str]] = "expdir"
    after: ClassVar[Optional[Tuple[int, ...]]] = None
    resumes: ClassVar[bool] = False
    usable_unfinished: ClassVar[bool] = False
    jobs: ClassVar[Optional[str]] = None
    needs_lm: ClassVar[bool] = False
    per_model: ClassVar[bool] = False

    def ready(self, x: Experiment) -> None:
        """Raise StageError when the stage cannot start (nothing is created before)."""

    def covers(self, x: Experiment) -> Cover:
        raise NotImplementedError

    def on_changed(self, x: Experiment, changed: List[str]) -> None:
        """Called with the changed options and inputs before a stage that ran before is redone."""

    def run(self, x: Experiment, run: StageRun) -> None:
        raise NotImplementedError

    def record(self, x: Experiment) -> Optional[StageRecord]:
        """Where this stage records that it finished; None for a stage without a record."""
        if self.records_under is None:
            return None
        where = {"expdir": Path(x.args.expdir), "exp": x.exp, "decode": x.decode_dir("-").parent,
                 "lm_exp": x.lm_exp}
        return StageRecord(where[self.records_under] / "stages", self.number, self.name)


def tables(dirs: List[Path]) -> List[Path]:
    """The table files of data dirs (a record's inputs)."""
    return [f for d in dirs for f in table_files(d)]


def describe_changes(changed: List[str]) -> str:
    return ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
