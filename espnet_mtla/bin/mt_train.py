"""`python -m espnet_mtla.bin.mt_train`: ESPnet's mt_train with the decoder-only classes registered."""

from typing import List, Optional

from espnet_mtla.cli.training import run_training
from espnet_mtla.task_specs import get_task


def main(cmd: Optional[List[str]] = None) -> None:
    run_training(get_task("mt"), cmd)


if __name__ == "__main__":
    main()
