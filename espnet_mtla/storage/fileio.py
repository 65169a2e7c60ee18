"""Files are written to a temporary name and renamed, so a killed run never leaves half a file."""

import os
import shutil
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


def write_directory_atomic(path: Union[str, Path], write: Callable[[Path], None]) -> None:
    """``write(tmp_dir)``, then rename it onto ``path`` (replacing an earlier one): never half a directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
