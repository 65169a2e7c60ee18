"""``--init_param`` that names what does not fit, instead of a traceback or silence.

ESPnet's ``load_pretrained_model`` copies ``<file>:<src_key>:<dst_key>:<excludes>`` into the
model: tensors the file lacks keep their random initialisation without a word, and a tensor of
another shape or an unknown name ends the run with torch's multi-line ``load_state_dict``
error. ``checked_init_param`` compares first: a shape mismatch or an unknown name is a
ConfigError naming the key (unless ``--ignore_init_mismatch true``, where ESPnet drops them and
we log them), and tensors left at their initialisation are logged by name. The recipes'
``--pretrained_asr`` (the ST encoder from an ASR model, as the paper does) goes through it.
"""

import contextlib
import logging
from typing import Dict, Iterator, List, Tuple

import torch

from espnet_mtla.storage import safe_load
from espnet_mtla.storage.errors import ConfigError
from espnet_mtla.storage.patches import patched

log = logging.getLogger(__name__)


def _named(keys: List[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def parse_init_param(init_param: str) -> Tuple[str, str, str, str]:
    """``<file>:<src_key>:<dst_key>:<excludes>`` (trailing parts optional, as ESPnet reads it)."""
    path, src_key, dst_key, excludes = (init_param.split(":", 3) + ["", "", ""])[:4]
    return path, src_key, dst_key, excludes


def source_tensors(init_param: str) -> Dict[str, torch.Tensor]:
    """The tensors ``init_param`` would copy, keyed as in the destination module (ESPnet's parsing)."""
    path, src_key, _, excludes = parse_init_param(init_param)
    state = safe_load.load(path, map_location="cpu")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.get("module", state).values()):
        raise ConfigError(f"--init_param {path}: not a model file (a state dict of tensors)")
    state = state.get("module", state)
    for prefix in excludes.split(",") if excludes else []:
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    if src_key:
        state = {k[len(src_key) + 1:]: v for k, v in state.items() if k.startswith(src_key + ".")}
        if not state:
            raise ConfigError(f"--init_param {path}: the file has no tensors under {src_key!r}")
    return state


def check_init_param(init_param: str, model: torch.nn.Module, ignore_init_mismatch: bool) -> None:
    """Raise ConfigError (or log, with ``ignore_init_mismatch``) what of ``init_param`` does not fit ``model``."""
    path, _, dst_key, _ = parse_init_param(init_param)
    dst = model
    for name in filter(None, dst_key.split(".")):
        dst = getattr(dst, name, None)
        if dst is None:
            raise ConfigError(f"--init_param {init_param}: the model has no module {dst_key!r}")
    target = dst.state_dict()
    source = source_tensors(init_param)
    where = f"{dst_key}." if dst_key else ""
    unknown = [where + k for k in source if k not in target]
    shapes = [f"{where}{k} {tuple(v.shape)} in the file, {tuple(target[k].shape)} in the model"
              for k, v in source.items() if k in target and v.shape != target[k].shape]
    untouched = [where + k for k in target if k not in source]
    problems = ([f"shape mismatch: {_named(shapes, 1)}"] if shapes else []) + (
        [f"not in the model: {_named(unknown)}"] if unknown else [])
    if problems and not ignore_init_mismatch:
        raise ConfigError(f"--init_param {path}: does not fit the model: {'; '.join(problems)} (a model of another "
                          f"configuration? --ignore_init_mismatch true copies only what fits)")
    if problems:
        log.warning("--init_param %s: not copied (--ignore_init_mismatch): %s", path, "; ".join(problems))
    if untouched:
        log.warning("--init_param %s: %d tensor(s) not in the file keep their initialisation: %s", path,
                    len(untouched), _named(untouched, 10))
    log.info("--init_param %s: %d tensor(s) copied into %s", path, len(source) - len(unknown) - len(shapes),
             dst_key or "the model")


@contextlib.contextmanager
def checked_init_param() -> Iterator[None]:
    """Within the block, ESPnet's trainer checks every ``--init_param`` before loading it."""
    import espnet2.tasks.abs_task as abs_task

    original = abs_task.load_pretrained_model

    def load(init_param, model, ignore_init_mismatch, map_location="cpu"):
        check_init_param(init_param, model, ignore_init_mismatch)
        return original(init_param, model, ignore_init_mismatch, map_location)

    with patched(abs_task, "load_pretrained_model", load):
        yield
