"""`python -m espnet_mtla.bin.mt_inference`: ESPnet's mt_inference with the decoder-only classes registered."""

from typing import List, Optional

from espnet_mtla.bin.cli import run_inference


def main(cmd: Optional[List[str]] = None) -> None:
    run_inference("mt", cmd)


if __name__ == "__main__":
    main()
