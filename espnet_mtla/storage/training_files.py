"""Training outputs that survive a kill at any moment.

ESPnet's trainer saves ``checkpoint.pth`` (model, optimisers, schedulers, reporter) at the end
of each epoch, then ``<N>epoch.pth``, then re-points ``latest.pth`` and the ``*.best.pth``
links, and ``--resume true`` restarts from ``checkpoint.pth``. Two things can go wrong when
the process dies in between: a file half-written by ``torch.save`` (a checkpoint that cannot
be loaded, or a model file that loads as garbage), and a checkpoint one epoch ahead of the
model files and links. ``atomic_torch_save`` removes the first (every save goes to a temporary
name, then is renamed); ``repair_before_resume`` removes the second before resuming.
"""

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, List, Sequence

import torch

from espnet_mtla.storage import safe_load
from espnet_mtla.storage.fileio import write_atomic
from espnet_mtla.storage.patches import patched


@contextlib.contextmanager
def atomic_torch_save() -> Iterator[None]:
    """Within the block, ``torch.save(obj, path)`` writes ``path`` atomically."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            write_atomic(f, lambda tmp: original(obj, tmp, *args, **kwargs))
        else:
            original(obj, f, *args, **kwargs)

    with patched(torch, "save", save):
        yield


def _link(output_dir: Path, name: str, target: str) -> bool:
    """Point the symlink ``name`` at ``target`` (atomically); False when it already did."""
    link = output_dir / name
    if link.is_symlink() and os.readlink(link) == target:
        return False
    tmp = output_dir / f".{name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)
    return True


def repair_before_resume(output_dir: Path, best_model_criterion: Sequence[Sequence[str]]) -> List[str]:
    """Bring the model files and links of ``output_dir`` level with its ``checkpoint.pth``.

    Returns what was repaired (also logged). Does nothing without a checkpoint.
    """
    from espnet2.train.reporter import Reporter

    checkpoint = output_dir / "checkpoint.pth"
    if not checkpoint.exists():
        return []
    states = safe_load.load(checkpoint, map_location="cpu")
    reporter = Reporter()
    reporter.load_state_dict(states["reporter"])
    epoch = reporter.get_epoch()
    if epoch < 1:
        return []
    repaired = []
    model_file = output_dir / f"{epoch}epoch.pth"
    if not model_file.exists():
        write_atomic(model_file, lambda tmp: torch.save(states["model"], tmp))
        repaired.append(f"wrote {model_file.name} from checkpoint.pth")
    links = {"latest.pth": f"{epoch}epoch.pth"}
    for phase, key, mode in best_model_criterion:
        if reporter.has(phase, key):
            best = reporter.get_best_epoch(phase, key, mode)
            if (output_dir / f"{best}epoch.pth").exists():
                links[f"{phase}.{key}.best.pth"] = f"{best}epoch.pth"
    for name, target in links.items():
        if _link(output_dir, name, target):
            repaired.append(f"{name} -> {target}")
    if repaired:
        logging.warning("%s: the last run stopped between saving checkpoint.pth (epoch %d) and its model files: %s",
                        output_dir, epoch, "; ".join(repaired))
    return repaired
