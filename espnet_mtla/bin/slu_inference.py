"""`python -m espnet_mtla.bin.slu_inference`: ESPnet's slu_inference with the decoder-only classes registered."""

from typing import List, Optional

from espnet_mtla.bin.cli import run_inference


def main(cmd: Optional[List[str]] = None) -> None:
    run_inference("slu", cmd)


if __name__ == "__main__":
    main()
