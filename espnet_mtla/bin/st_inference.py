"""`python -m espnet_mtla.bin.st_inference`: ESPnet's st_inference with the decoder-only classes registered."""

from typing import List, Optional

from espnet_mtla.cli.inference import run_inference
from espnet_mtla.task_specs import get_task


def main(cmd: Optional[List[str]] = None) -> None:
    run_inference(get_task("st"), cmd)


if __name__ == "__main__":
    main()
