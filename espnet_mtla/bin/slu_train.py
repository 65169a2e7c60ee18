"""`python -m espnet_mtla.bin.slu_train`: ESPnet's slu_train with the decoder-only classes registered."""

from typing import List, Optional

from espnet_mtla.bin.cli import run_training


def main(cmd: Optional[List[str]] = None) -> None:
    run_training("slu", cmd)


if __name__ == "__main__":
    main()
