"""`python -m espnet_mtla.bin.slu_inference`: ESPnet's slu_inference with the decoder-only classes registered."""

from typing import List, Optional

from espnet_mtla.cli.inference import run_inference
from espnet_mtla.task_specs import get_task


def main(cmd: Optional[List[str]] = None) -> None:
    run_inference(get_task("slu"), cmd)


if __name__ == "__main__":
    main()
