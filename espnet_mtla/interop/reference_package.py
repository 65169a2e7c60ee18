"""The reference implementation (pip ``mtla==0.3.2``), kept beside our code, never in the venv.

Its wheel also installs top-level ``experiments`` and ``assets`` packages and its ``__init__``
imports ``transformers``, so it goes ``--no-deps`` into a folder of its own (``make bench``
and the parity tests use ``.venv-bench/mtla``) and its layer is loaded from ``MTLA.py`` by
file path.
"""

import contextlib
import fcntl
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

REQUIREMENT = "mtla==0.3.2"
DEFAULT_DIR = Path(".venv-bench/mtla")


def layer_file(directory: Path = DEFAULT_DIR) -> Path:
    return Path(directory) / "mtla" / "MTLA.py"


def install(directory: Path = DEFAULT_DIR, timeout: float = 300) -> None:
    """``pip install --no-deps --target directory``, once, safe against concurrent callers.

    Raises RuntimeError (pip's last line) when it cannot be installed (e.g. no network).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if layer_file(directory).exists():
            return
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                               str(directory), REQUIREMENT], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not layer_file(directory).exists():
            lines = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
            raise RuntimeError(f"pip install {REQUIREMENT} failed: {lines[-1] if lines else done.returncode}")


def load_layer_module(directory: Path = DEFAULT_DIR):
    """The reference's ``MTLA.py`` as a module (its flash-attn warning on stdout swallowed)."""
    path = layer_file(directory)
    if not path.exists():
        raise SystemExit(f"reference not installed: {path} missing; run 'make bench' "
                         f"(pip install --no-deps --target {directory} {REQUIREMENT})")
    spec = importlib.util.spec_from_file_location("reference_mtla", path)
    module = importlib.util.module_from_spec(spec)
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(module)
    return module
