"""Learning curves of several experiments side by side: one figure, one Markdown table.

    python -m espnet_mtla.bin.compare_curves exp/mt_train_mha exp/mt_train_mtla --metric acc \
        --figure curves.png [--names MHA MTLA] [--section valid]

ESPnet draws each experiment's curves on their own (``exp/<name>/images/``); an ablation wants
them on one axis. The values are read from each experiment's ``train.log`` (the trainer's
``Nepoch results: [train] ... [valid] ...`` lines, the last one of each epoch where a run was
resumed), so nothing needs loading from checkpoints.
"""

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

from espnet_mtla.recipe.progress import EPOCH_RE, parse_epoch_results


class CurveError(ValueError):
    """A one-line error about an experiment dir or a metric."""


def read_curve(exp: Path, metric: str, section: str = "valid") -> Dict[int, float]:
    """{epoch: value} of ``[section] metric=`` in ``exp/train.log``."""
    log = exp / "train.log"
    if not log.exists():
        raise CurveError(f"{log} not found: give experiment dirs that stage 7 trained (exp/<name>)")
    curve: Dict[int, float] = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        match = EPOCH_RE.search(line)
        if match:
            value = parse_epoch_results(match.group(2)).get(section, {}).get(metric)
            if value is not None:
                curve[int(match.group(1))] = float(value)
    if not curve:
        raise CurveError(f"{log}: no epoch reports [{section}] {metric}")
    return curve


def markdown_table(curves: Dict[str, Dict[int, float]], metric: str, section: str) -> str:
    """One row per experiment, one column per epoch; '-' where an experiment has no such epoch."""
    epochs = sorted({e for curve in curves.values() for e in curve})
    lines = ["| experiment | " + " | ".join(f"{section} {metric} ep {e}" for e in epochs) + " |",
             "|---|" + "---|" * len(epochs)]
    for name, curve in curves.items():
        cells = [f"{curve[e]:.3f}" if e in curve else "-" for e in epochs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(curves: Dict[str, Dict[int, float]], metric: str, section: str, path: Path) -> None:
    from espnet_mtla.recipe.figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 4.2))
    for name, curve in curves.items():
        epochs = sorted(curve)
        ax.plot(epochs, [curve[e] for e in epochs], marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{section} {metric}")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exps", nargs="+", type=Path, help="experiment dirs (exp/<name>, with train.log)")
    parser.add_argument("--metric", default="acc", help="a value of the epoch reports, e.g. acc, loss, bleu")
    parser.add_argument("--section", default="valid", help="train or valid")
    parser.add_argument("--names", nargs="*", help="a label per experiment (default: the dir names)")
    parser.add_argument("--figure", type=Path, help="write the curves to this PNG")
    args = parser.parse_args(argv)
    names = args.names or [exp.name for exp in args.exps]
    if len(names) != len(args.exps):
        parser.error(f"--names gives {len(names)} labels for {len(args.exps)} experiments")
    try:
        curves = {name: read_curve(exp, args.metric, args.section) for name, exp in zip(names, args.exps)}
    except CurveError as err:
        sys.exit(f"compare_curves: {err}")
    sys.stdout.write(markdown_table(curves, args.metric, args.section))
    if args.figure:
        plot_curves(curves, args.metric, args.section, args.figure)
