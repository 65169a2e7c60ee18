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

from espnet_mtla.recipe.figures import save_figure  # noqa: F401  (the benchmarks' figures)

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


# Ops that only re-describe a tensor (no kernel, no data written).
VIEW_OPS = {"aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::view", "aten::expand",
            "aten::alias", "aten::transpose", "aten::permute", "aten::t", "aten::split", "aten::split_with_sizes",
            "aten::chunk", "aten::narrow", "aten::as_strided", "aten::detach", "aten::view_as_real",
            "aten::view_as_complex", "aten::unflatten", "aten::flatten"}
# Ops that are views or no-ops unless they had to copy (then a child op did the work).
MAYBE_COPY_OPS = {"aten::to", "aten::reshape", "aten::contiguous", "aten::type_as"}


def kernels_launched(fn, device: str = "cpu") -> int:
    """Kernels ``fn()`` launches: CUDA kernels on a GPU; on a CPU, the top-level tensor ops that
    compute something (views and no-op casts excluded), each of which is one kernel there."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.profiler.profile(activities=activities) as prof:
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
    events = prof.events()
    if device == "cuda":
        return sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(1 for e in events if e.cpu_parent is None and e.name.startswith("aten::") and e.name not in VIEW_OPS
               and not (e.name in MAYBE_COPY_OPS and not e.cpu_children))


# MLA/MTLA sizes of the paper's experiments (kv_lora_rank 256, rope 32, 64-d heads).
PAPER_MLA = {"kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64,
             "latent_norm": "layer_norm"}


def decoder_variants(down_rates, gqa_name: str = "GQA (2 kv heads)") -> dict:
    """name -> (attention_type, decoder_conf extras): MHA, MQA, GQA (2 kv heads), MLA and MTLA
    at each of ``down_rates``, with the paper's sizes."""
    variants = {"MHA": ("mha", {}), "MQA": ("mqa", {}), gqa_name: ("gqa", {"gqa_conf": {"num_kv_heads": 2}}),
                "MLA": ("mla", {"mla_conf": PAPER_MLA})}
    for s in down_rates:
        variants[f"MTLA s={s}"] = ("mtla", {"mla_conf": PAPER_MLA, "mtla_conf": {"down_rate": s}})
    return variants


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


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPUs): wall-clock timing of GPU work needs it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def replot(parser, out, markdown, plot) -> None:
    """``--replot``: redo ``out``'s results.md and results.png from its results.json."""
    from pathlib import Path

    from espnet_mtla.storage.fileio import write_text_atomic

    out = Path(out)
    if not (out / "results.json").is_file():
        parser.error(f"--replot needs {out / 'results.json'}: run the benchmark with --out-dir {out} first")
    report = json.loads((out / "results.json").read_text())
    write_text_atomic(out / "results.md", markdown(report["results"], report["options"], report["machine"]))
    plot(report["results"], report["options"], report["machine"], out / "results.png")


def save_report(out, machine_name: str, options: dict, results: list, markdown, plot) -> str:
    """Write ``results.json``, ``results.md`` (``markdown(results, options, machine)``) and
    ``results.png`` (``plot(...)``) to ``out``; returns the table."""
    from pathlib import Path

    from espnet_mtla.storage.fileio import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_name, "options": options, "results": results}
    write_text_atomic(out / "results.json", json.dumps(report, indent=2) + "\n")
    table = markdown(results, options, machine_name)
    write_text_atomic(out / "results.md", table)
    plot(results, options, machine_name, out / "results.png")
    return table
