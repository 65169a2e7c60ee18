"""Execute a notebook in place (outputs filled in), or into ``--out``; fails on the first error.

    python -m espnet_mtla.bin.run_notebook examples/mtla_char_lm.ipynb [--out executed.ipynb] [--timeout 600]
"""

import argparse
import sys
from pathlib import Path


def run_notebook(path: Path, out: Path, timeout: int = 600) -> None:
    import nbformat
    from nbclient import NotebookClient

    from espnet_mtla.storage.fileio import write_atomic

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    write_atomic(out, lambda tmp: nbformat.write(notebook, tmp))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    run_notebook(args.notebook, args.out or args.notebook, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
