"""Running stages ``--stage`` to ``--stop_stage``: each one is skipped when its record says it
finished with the same options and inputs, redone when they changed, resumed when it was
interrupted (stages that resume), and refused while an earlier stage is unfinished."""

import logging
import os
import shlex
import sys
import time
from pathlib import Path

from espnet_mtla.recipe.errors import StageError
from espnet_mtla.recipe.experiment import Experiment
from espnet_mtla.recipe.jobs import Jobs
from espnet_mtla.recipe.options import get_parser
from espnet_mtla.recipe.records import make_key
from espnet_mtla.recipe.stage import Stage, StageRun, describe_changes
from espnet_mtla.recipe.stages import STAGES

log = logging.getLogger("pipeline")


def check_earlier_stages(x: Experiment, stage: Stage) -> None:
    """StageError when an earlier stage was interrupted (unless its outputs are usable unfinished)."""
    for number in stage.after or range(1, stage.number):
        earlier = STAGES[number]
        if earlier.needs_lm and not x.use_lm:
            continue
        record = earlier.record(x)
        if record is None or not record.interrupted:
            continue
        if earlier.usable_unfinished:
            log.warning("stage %d (%s) has not finished (interrupted, or still running; %s): using what it "
                        "has written so far", earlier.number, earlier.name, record.path)
            continue
        raise StageError(f"stage {earlier.number} ({earlier.name}) was interrupted ({record.path}); its outputs are "
                         f"incomplete: re-run from it (--stage {earlier.number})")


def run_stage(x: Experiment, stage: Stage) -> None:
    """Run one stage unless its record says it finished with the same options and inputs."""
    check_earlier_stages(x, stage)
    stage.ready(x)
    jobs = Jobs(x.args, stage.jobs)
    jobs.check()
    record = stage.record(x)
    if record is None:
        stage.run(x, StageRun(jobs))
        return
    options, inputs, outputs = stage.covers(x)
    key = make_key(options, inputs)
    if record.is_done(key, outputs) and x.args.force != "true":
        log.info("stage %d: finished earlier with the same options and inputs (%s): skipped (--force true "
                 "redoes it)", stage.number, record.path)
        return
    changed = record.changed_since(key)
    if changed:
        log.info("stage %d: options or inputs changed since its last run (%s): redone", stage.number,
                 describe_changes(changed))
        stage.on_changed(x, changed)
    resuming = stage.resumes and record.interrupted and not changed
    if resuming:
        log.info("stage %d: resuming an interrupted run (%s)", stage.number, record.path)
    record.start(key)
    stage.run(x, StageRun(jobs, resuming))
    record.finish(key)


def setup_logging(expdir: Path) -> None:
    """The runner's own handlers (not the root logger's), replaced on every call: main() may run
    several times in one process, each with its own exp dir."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s pipeline: %(message)s", datefmt="%H:%M:%S")
    for handler in (logging.StreamHandler(), logging.FileHandler(expdir / "pipeline.log")):
        handler.setFormatter(formatter)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    Path(args.expdir).mkdir(parents=True, exist_ok=True)
    setup_logging(Path(args.expdir))
    log.info("%s", " ".join(shlex.quote(a) for a in (sys.argv if argv is None else ["pipeline"] + list(argv))))
    x = Experiment(args)
    models = x.seed_experiments()
    for stage in STAGES.values():
        if args.stage <= stage.number <= args.stop_stage:
            if stage.needs_lm and not x.use_lm:
                log.info("stage %d: %s skipped (--use_lm false)", stage.number, stage.name)
                continue
            for run in models if stage.per_model else [x]:
                seed = f" ({run.exp.name})" if run is not x else ""
                log.info("stage %d: %s%s", stage.number, stage.name, seed)
                start = time.time()
                try:
                    run_stage(run, stage)
                except StageError as err:
                    print(f"error: stage {stage.number} ({stage.name}){seed}: {err}", file=sys.stderr)
                    return 1
                log.info("stage %d done in %.0f s", stage.number, time.time() - start)
    return 0


def entry_point() -> None:
    """``python -m espnet_mtla.recipe``."""
    os.environ.setdefault("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1)))
    sys.exit(main())
