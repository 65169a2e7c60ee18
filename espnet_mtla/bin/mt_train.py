"""`python -m espnet_mtla.bin.mt_train`: ESPnet's mt_train with the decoder-only classes registered."""

from typing import List, Optional

from espnet_mtla.bin.cli import run_training


def main(cmd: Optional[List[str]] = None) -> None:
    run_training("mt", cmd)


if __name__ == "__main__":
    main()
