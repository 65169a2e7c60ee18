"""`python -m espnet_mtla.bin.lm_perplexity`: ESPnet's lm_calc_perplexity with ``lm: decoder_only`` registered."""

from typing import List, Optional

from espnet_mtla.cli.perplexity import run_perplexity


def main(cmd: Optional[List[str]] = None) -> None:
    run_perplexity(cmd)


if __name__ == "__main__":
    main()
