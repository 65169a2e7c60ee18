"""Writing figures: headless (Agg), PNG, atomic; no torch, so the recipe driver can draw."""

from pathlib import Path
from typing import Union

from espnet_mtla.storage.fileio import write_atomic


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Union[str, Path]) -> None:
    """Lay out ``fig``, write it to ``path`` as PNG atomically, and close it."""
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    pyplot().close(fig)
