"""`python -m espnet_mtla.bin.lm_train`: ESPnet's lm_train with ``lm: decoder_only`` registered."""

from typing import List, Optional

from espnet_mtla.cli.training import run_training
from espnet_mtla.task_specs import LM_TASK


def main(cmd: Optional[List[str]] = None) -> None:
    run_training(LM_TASK, cmd)


if __name__ == "__main__":
    main()
