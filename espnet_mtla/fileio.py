"""Files are written to a temporary name and renamed, so a killed run never leaves half a file."""

import os
from pathlib import Path
from typing import Callable, Union


def write_atomic(path: Union[str, Path], write: Callable[[Path], None]) -> None:
    """``write(tmp_path)`` then rename onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Union[str, Path], text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
