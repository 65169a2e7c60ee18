"""``python -m espnet_mtla.bin.<task>_train``: ESPnet's ``<task>_train`` main with our classes
registered, model files loaded safely, checkpoints written atomically, ``--init_param`` checked."""

import importlib
import sys
from pathlib import Path
from typing import List, Optional, Union

from espnet_mtla.cli.options import check_input_files, fail, pop_option
from espnet_mtla.storage.safe_load import TRUST_OPTION
from espnet_mtla.task_specs import LM_TASK, TaskSpec, get_task


def run_training(task: Union[str, TaskSpec], cmd: Optional[List[str]] = None) -> None:
    """``task``: a task of the task table (or its name), or ``"lm"`` (ESPnet's lm task)."""
    name = task if isinstance(task, str) else task.name
    if name != LM_TASK:
        get_task(name)
    import espnet_mtla.tasks.registration  # noqa: F401  (registers)
    from espnet_mtla.storage.errors import ConfigError
    from espnet_mtla.storage.init_param import checked_init_param
    from espnet_mtla.storage.training_files import atomic_torch_save, repair_before_resume

    from espnet_mtla.storage.safe_load import UnsafeModelFileError, safe_loading

    module = importlib.import_module(f"espnet2.bin.{name}_train")
    cmd, trust = pop_option(list(sys.argv[1:] if cmd is None else cmd), TRUST_OPTION, "false", ("true", "false"))
    trust = trust == "true"
    args = module.get_parser().parse_args(cmd)
    check_input_files(args)
    try:
        # Resuming, --init_param and averaging all load files: none may run code from them.
        with safe_loading(trust), atomic_torch_save(), checked_init_param():
            if args.resume and args.output_dir and not args.collect_stats:
                repair_before_resume(Path(args.output_dir), args.best_model_criterion)
            module.main(cmd)
    except (ConfigError, UnsafeModelFileError) as err:
        fail(err)
