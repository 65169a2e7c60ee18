"""Loading model and checkpoint files without running code from them.

``torch.load(..., weights_only=False)`` unpickles arbitrary objects, and unpickling can call
any function (``os.system`` included): a model file from someone else would run their code.
ESPnet loads that way everywhere (``build_model_from_file``, ``Trainer.resume``,
``load_pretrained_model`` for ``--init_param``, ``average_nbest_models``). Inside
:func:`safe_loading`, every ``torch.load`` (ours and ESPnet's) unpickles only tensors, plain
containers and the few types in :data:`SAFE_GLOBALS`; a file that needs anything else is
refused with one line naming the file and the type, unless the user trusts it
(``--trust_model_file true``), which logs a warning. ``.safetensors`` files are read with
safetensors, which has no code path at all.
"""

import contextlib
import datetime
import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from espnet_mtla.storage.errors import first_line
from espnet_mtla.storage.patches import patched

log = logging.getLogger(__name__)

TRUST_OPTION = "--trust_model_file"

# What ESPnet's own training files hold besides tensors and containers: the reporter's
# statistics in checkpoint.pth are NumPy scalars (with their dtypes) and timedeltas (elapsed
# time). None of these can call anything when unpickled.
SAFE_GLOBALS = [
    np._core.multiarray.scalar,
    np.dtype,
    *(type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_)),
    datetime.timedelta,
]

# torch's two wordings: "... GLOBAL posix.system ...", "... but got <class 'numpy.dtypes.X'>".
_UNSUPPORTED = re.compile(r"GLOBAL (\S+)|but got <class '([^']+)'>")


class UnsafeModelFileError(Exception):
    """A model file needs arbitrary pickled objects, or is not what it claims to be."""


def _describe(f) -> str:
    return str(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", repr(f))


def _refusal(f, err: pickle.UnpicklingError) -> UnsafeModelFileError:
    found = _UNSUPPORTED.search(str(err))
    if found:
        return UnsafeModelFileError(
            f"{_describe(f)}: refused to load: it needs the pickled type {found.group(1) or found.group(2)}, "
            f"which could run code when unpickled; load it only if you trust whoever made it ({TRUST_OPTION} true)"
        )
    detail = str(err).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
    return UnsafeModelFileError(f"{_describe(f)}: not a readable PyTorch file ({' '.join(detail.split())})")


def load(f, map_location=None, *, trust: bool = False) -> Any:
    """``torch.load`` that unpickles only tensors, containers and :data:`SAFE_GLOBALS`.

    ``f``: a path or a binary file object. A ``.safetensors`` path is read with safetensors.
    ``trust=True`` loads anything pickle can (with a warning): for files the user vouches for.
    """
    if isinstance(f, (str, os.PathLike)) and str(f).endswith(".safetensors"):
        return load_safetensors(f, map_location)
    if trust:
        log.warning("%s: loading with arbitrary unpickling (%s true): it can run code", _describe(f), TRUST_OPTION)
        return _original_load(f, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return _original_load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(f, err) from None
    except (RuntimeError, EOFError, ValueError) as err:
        if isinstance(f, (str, os.PathLike)) and not Path(f).is_file():
            raise
        raise UnsafeModelFileError(f"{_describe(f)}: not a readable PyTorch file ({first_line(err)})") from None


def load_safetensors(path, map_location=None) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    device = map_location if isinstance(map_location, str) else "cpu"
    try:
        tensors = load_file(str(path), device=device)
    except SafetensorError as err:
        raise UnsafeModelFileError(f"{path}: not a readable safetensors file ({err})") from None
    if isinstance(map_location, torch.device):
        tensors = {k: v.to(map_location) for k, v in tensors.items()}
    return tensors


def check_state_dict(obj, where: str) -> Dict[str, torch.Tensor]:
    """``obj`` as a model state dict (str -> Tensor), or a one-line error naming ``where``."""
    if isinstance(obj, Mapping) and "module" in obj and isinstance(obj["module"], Mapping):
        obj = obj["module"]  # a DeepSpeed checkpoint, as ESPnet accepts
    if not isinstance(obj, Mapping):
        raise UnsafeModelFileError(f"{where}: not a model state dict (a mapping of names to tensors): "
                                   f"it holds a {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UnsafeModelFileError(f"{where}: not a model state dict: entry {key!r} is a "
                                       f"{type(value).__name__}, not a tensor")
    return dict(obj)


def load_state_dict_file(path, *, trust: bool = False) -> Dict[str, torch.Tensor]:
    """A model file (``*.pth`` or ``*.safetensors``) as a checked state dict on the CPU."""
    return check_state_dict(load(path, map_location="cpu", trust=trust), str(path))


_original_load = torch.load


@contextlib.contextmanager
def safe_loading(trust: bool = False, preloaded: Optional[Dict[str, Any]] = None) -> Iterator[None]:
    """Within the block every ``torch.load`` call goes through :func:`load`, whatever
    ``weights_only`` its caller asked for (ESPnet asks for False).

    ``preloaded``: path -> what :func:`load` already returned for it; the first load of that
    path inside the block gets it instead of reading the file again.
    """
    waiting = {os.path.realpath(p): obj for p, obj in (preloaded or {}).items()}

    def guarded_load(f, map_location=None, pickle_module=None, *, weights_only: Optional[bool] = None, **kwargs):
        if isinstance(f, (str, os.PathLike)) and os.path.realpath(f) in waiting:
            return waiting.pop(os.path.realpath(f))
        return load(f, map_location=map_location, trust=trust)

    with patched(torch, "load", guarded_load):
        yield
