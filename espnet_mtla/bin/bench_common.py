"""Helpers shared by the benchmark scripts: allocator peak memory, machine line, CLI types."""

import argparse
import json
import multiprocessing as mp
import queue as queue_module
import os
import platform
import tempfile
import warnings

import torch


def peak_allocated_mib(fn) -> float:
    """Peak of PyTorch's CPU allocations during ``fn`` above what was allocated before, MiB.

    Read from the profiler's allocator events: deterministic, unlike process RSS, which
    glibc's free-list reuse makes depend on what ran before.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the profiler's notes about its own event buffers
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    deltas = [e["args"]["Bytes"] for e in events if e.get("name") == "[memory]"]
    if not totals:
        return 0.0
    baseline = totals[0] - deltas[0]
    return (max(totals) - baseline) / 2**20


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, fp32"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def run_in_subprocess(target, name, opts):
    """``target(name, opts, queue)`` in a fresh spawned process; returns what it put on the queue.

    Polls so that a child that dies (its traceback is on stderr) ends the benchmark at once
    instead of leaving the parent waiting on the queue.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(name, opts, queue))
    proc.start()
    result = None
    while result is None:
        try:
            result = queue.get(timeout=1.0)  # read before joining: put() blocks until consumed
        except queue_module.Empty:
            if not proc.is_alive():
                break
    proc.join()
    if proc.exitcode != 0 or result is None:
        raise SystemExit(f"benchmark of {name} failed (exit {proc.exitcode}); its traceback is above")
    return result


def save_figure(fig, path) -> None:
    """Lay out ``fig``, write it to ``path`` as PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    from espnet_mtla.fileio import write_atomic

    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def save_report(out, machine_name: str, options: dict, results: list, markdown, plot) -> str:
    """Write ``results.json``, ``results.md`` (``markdown(results, options, machine)``) and
    ``results.png`` (``plot(...)``) to ``out``; returns the table."""
    from pathlib import Path

    from espnet_mtla.fileio import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_name, "options": options, "results": results}
    write_text_atomic(out / "results.json", json.dumps(report, indent=2) + "\n")
    table = markdown(results, options, machine_name)
    write_text_atomic(out / "results.md", table)
    plot(results, options, machine_name, out / "results.png")
    return table
