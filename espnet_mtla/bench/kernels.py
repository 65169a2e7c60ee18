"""Benchmark the attention backends (eager, sdpa, triton) side by side in one run.

    python -m espnet_mtla.bench.kernels [--device cpu|cuda] [--quick] [--out-dir DIR]

For a 512-d, 8-head layer of each attention type (MLA/MTLA with the paper's dims and latent
norm: kv_lora_rank 256, qk_nope 64, qk_rope 32, v_head 64, LayerNorm) and each backend:
- decode: one incremental step, ``layer(x_t, cache=cache)``, batch 64, over a cache holding
  1k/4k/16k tokens of random content (filled directly: no prefill pass), median wall time.
  For MLA/MTLA also the attention core alone (``mla_paths.latent_slot_attention``: the absorbed attention of
  the 8 heads over the shared latent slots), where the backends differ.
- training: forward+backward of the layer at T=4096 (on a GPU also 16384), batch 2: median
  time and peak memory above the step's baseline (the CUDA allocator's peak on a GPU, profiler
  allocator events on a CPU), with ratios to MHA on sdpa. Backends: eager, sdpa, auto (MLA/MTLA:
  the stride-aware attention in PyTorch ops) and on a GPU triton (MLA/MTLA: FlexAttention's
  Triton kernels, ``stride_flex.py``; MHA: sdpa).
``--part decode|train`` runs one half, ``--variants`` some of the types (MHA first).
On a GPU it also measures the device-to-device copy bandwidth and reports each MLA/MTLA
core time against the time to read that cache once at that bandwidth. Backends the device
cannot run (triton on a CPU) are left out. Writes ``results.json``, ``results.md`` and
``results.png`` to ``--out-dir``.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

from espnet_mtla.bench.common import (EMBED, HEADS, PAPER_MLA, layer_variants, machine, positive_int,  # noqa: E402
                                      read_report, save_figure, write_results_json, write_tables)
from espnet_mtla.attention.mla_paths import latent_slot_attention  # noqa: E402
from espnet_mtla.metrics.memory import peak_allocated_mib  # noqa: E402
from espnet_mtla.storage.fileio import write_text_atomic  # noqa: E402

VARIANTS = layer_variants((2, 4), types=("mha", "mla", "mtla"))  # MHA, MLA, MTLA s=2, MTLA s=4


def train_backends(device) -> list:
    """Training backends: triton (FlexAttention for MLA/MTLA's parallel pass) only on a GPU."""
    return ["eager", "sdpa", "auto"] + (["triton"] if device == "cuda" else [])


def decode_backends(name, backends):
    return [b for b in backends if b != "triton" or VARIANTS[name][0] in ("mla", "mtla")]


class Timer:
    """Median time of a callable: host clock on a CPU, CUDA events on a GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, repeats: int, warmup: int = 2) -> float:
        """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        return statistics.median(times)


def build(name, backend, device, dtype):
    from espnet_mtla.attention import build_attention

    attention_type, conf = VARIANTS[name]
    torch.manual_seed(0)
    return build_attention(attention_type, EMBED, HEADS, attn_backend=backend, **conf).eval().to(device, dtype)


def filled_cache(layer, batch, context, extra):
    """A cache whose rows hold ``context`` tokens of random content, room for ``extra`` more."""
    cache = layer.new_cache(batch, capacity=context + extra)
    for buf in cache.buffers.values():
        buf.normal_()
    cache.advance(torch.full((batch,), context, device=cache.lengths.device), context)
    return cache


def copy_bandwidth(device, timer) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read and written (1 GiB)."""
    src = torch.randn(2**28, device=device)
    dst = torch.empty_like(src)
    seconds = timer(lambda: dst.copy_(src), repeats=20, warmup=3)
    return 2 * src.numel() * src.element_size() / seconds


def bench_decode(name, backend, context, opts, device, dtype, timer):
    layer = build(name, backend, device, dtype)
    steps = opts["decode_repeats"] + 2
    cache = filled_cache(layer, opts["batch"], context, steps + 8)
    x = torch.randn(opts["batch"], 1, EMBED, device=device, dtype=dtype)
    result = {}
    with torch.no_grad():
        # Each step appends one token: the context drifts by ``steps`` tokens, far below 1k.
        result["step_ms"] = 1000 * timer(lambda: layer(x, cache=cache), repeats=opts["decode_repeats"])
        result["cache_bytes"] = cache.nbytes()
        if VARIANTS[name][0] in ("mla", "mtla"):
            slots = cache.view("kv")
            query = torch.randn(opts["batch"], 1, HEADS, slots.shape[-1], device=device, dtype=dtype)
            completed = (cache.lengths - 1).div(layer.down_rate, rounding_mode="floor").unsqueeze(1)
            result["core_ms"] = 1000 * timer(lambda: latent_slot_attention(layer, query, slots, completed), repeats=opts["core_repeats"])
    return result


def bench_train(name, backend, length, opts, device, dtype, timer):
    layer = build(name, backend, device, dtype).train()
    x = torch.randn(2, length, EMBED, device=device, dtype=dtype, requires_grad=True)

    def step():
        layer.zero_grad(set_to_none=True)
        layer(x).float().sum().backward()

    seconds = timer(step, repeats=opts["train_repeats"], warmup=1)
    return {"seconds": seconds, "peak_mib": peak_allocated_mib(step, device)}


def run(opts, save=lambda report: None) -> dict:
    """Every row of the benchmark; ``save(report)`` after each (a run cut off keeps what finished)."""
    from espnet_mtla.attention.backends import triton_installed

    device = torch.device(opts["device"])
    dtype = getattr(torch, opts["dtype"])
    timer = Timer(device)
    backends = ["eager", "sdpa"] + (["triton"] if device.type == "cuda" and triton_installed() else [])
    report = {"machine": machine(device, str(dtype).replace("torch.", "")), "options": opts, "backends": backends,
              "decode": [], "train": []}
    if device.type == "cuda":
        report["copy_bandwidth"] = copy_bandwidth(device, timer)
        print(f"device-to-device copy: {report['copy_bandwidth'] / 1e12:.2f} TB/s (read + write)", flush=True)
    for name in opts["variants"]:
        for context in (opts["contexts"] if opts["part"] in ("decode", "both") else []):
            for backend in decode_backends(name, backends):
                row = {"name": name, "backend": backend, "context": context}
                row.update(bench_decode(name, backend, context, opts, device, dtype, timer))
                report["decode"].append(row)
                save(report)
                core = f", core {row['core_ms']:.3f} ms" if "core_ms" in row else ""
                print(f"decode {name:9s} ctx={context:6d} {backend:6s} step {row['step_ms']:.3f} ms{core}", flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        for length in (opts["train_lengths"] if opts["part"] in ("train", "both") else []):
            for backend in train_backends(device.type):
                row = {"name": name, "backend": backend, "length": length}
                row.update(bench_train(name, backend, length, opts, device, dtype, timer))
                report["train"].append(row)
                save(report)
                print(f"train  {name:9s} T={length} {backend:6s} {row['seconds']:.4f} s, peak {row['peak_mib']:.0f} MiB",
                      flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return report


def tune(opts, out: Path) -> None:
    """Time the Triton decode kernel's tuning knobs at batch 64, MTLA s=2 at the longest context."""
    import itertools

    from espnet_mtla.attention.triton_decode import latent_decode

    device, dtype = torch.device("cuda"), getattr(torch, opts["dtype"])
    timer = Timer(device)
    slots_count = opts["contexts"][-1] // 2
    width = PAPER_MLA["kv_lora_rank"] + PAPER_MLA["qk_rope_head_dim"]
    slots = torch.randn(opts["batch"], slots_count, width, device=device, dtype=dtype)
    query = torch.randn(opts["batch"], HEADS, width, device=device, dtype=dtype)
    visible = torch.full((opts["batch"],), slots_count, device=device)
    read_ms = 1000 * 2 * slots.numel() * slots.element_size() / copy_bandwidth(device, timer)
    default_splits = -(-2 * torch.cuda.get_device_properties(device).multi_processor_count // opts["batch"])
    rows = []
    for block_s, warps, stages, split_scale in itertools.product((32, 64, 128), (4, 8), (2, 3), (1, 2)):
        splits = split_scale * default_splits
        try:
            ms = 1000 * timer(lambda: latent_decode(query, slots, visible, 0.06, 256, num_splits=splits, block_s=block_s,
                                                    num_warps=warps, num_stages=stages), repeats=50, warmup=3)
        except Exception as err:  # out of shared memory / registers for this combination
            print(f"block_s={block_s} warps={warps} stages={stages} splits={splits}: {type(err).__name__}", flush=True)
            continue
        rows.append((ms, block_s, warps, stages, splits))
        print(f"block_s={block_s:3d} warps={warps} stages={stages} splits={splits:2d}: {ms:.4f} ms "
              f"({ms / read_ms:.2f}x the cache read)", flush=True)
    rows.sort()
    lines = [f"cache read at copy bandwidth: {read_ms:.4f} ms", "| ms | x read | block_s | warps | stages | splits |", "|---|---|---|---|---|---|"]
    lines += [f"| {ms:.4f} | {ms / read_ms:.2f} | {b} | {w} | {st} | {sp} |" for ms, b, w, st, sp in rows]
    write_text_atomic(out / "tune.md", "\n".join(lines) + "\n")
    print("\n".join(lines[:8]))


# -- report -------------------------------------------------------------------------------
def markdown(report) -> str:
    opts = report["options"]
    names = [n for n in VARIANTS if n in opts.get("variants", VARIANTS)]
    lengths = opts.get("train_lengths", [opts.get("train_length")])
    lines = [f"Machine: {report['machine']}."]
    if report["decode"]:
        lines[0] += (f" Decode: batch {opts['batch']}, one layer, median ms per step (core = the absorbed MLA/MTLA "
                     "attention alone).")
        lines += ["", *decode_table(report, names)]
    if report["train"]:
        train = {(r["name"], r["backend"], r["length"]): r for r in report["train"]}
        used = list(dict.fromkeys(r["backend"] for r in report["train"]))
        lines += ["", f"Training: batch 2, forward+backward of one layer; ratios to MHA on sdpa (triton: FlexAttention "
                      "for MLA/MTLA, sdpa for MHA; auto: the stride-aware attention in PyTorch ops for MLA/MTLA).", ""]
        head = ["attention", "backend"] + [f"train s T={t} (x MHA sdpa)" for t in lengths]
        head += [f"peak MiB T={t} (x MHA sdpa)" for t in lengths]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in names:
            for backend in used:
                cells = [name, backend]
                for key, fmt in (("seconds", "{:.3f}"), ("peak_mib", "{:.0f}")):
                    for t in lengths:
                        r, base = train.get((name, backend, t)), train.get(("MHA", "sdpa", t))
                        cells.append("-" if r is None else fmt.format(r[key]) + (
                            "" if base is None else f" ({r[key] / max(base[key], 1e-9):.2f}x)"))
                lines.append("| " + " | ".join(cells) + " |")
    bandwidth = report.get("copy_bandwidth")
    if bandwidth:
        lines += ["", f"Device-to-device copy bandwidth: {bandwidth / 1e12:.2f} TB/s (bytes read + written)."]
    return "\n".join(lines) + "\n"


def decode_table(report, names) -> list:
    opts, backends = report["options"], report["backends"]
    decode = {(r["name"], r["backend"], r["context"]): r for r in report["decode"]}
    head = ["attention", "backend"] + [f"step ms ctx={c} (x eager)" for c in opts["contexts"]]
    head += [f"core ms ctx={c} (x eager)" for c in opts["contexts"]] + ["cache MB ctx=" + str(opts["contexts"][-1])]
    bandwidth = report.get("copy_bandwidth")
    if bandwidth:
        head += [f"core / cache read ctx={c}" for c in opts["contexts"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        for backend in decode_backends(name, backends):
            row = [name, backend]
            for key in ("step_ms", "core_ms"):
                for c in opts["contexts"]:
                    r, base = decode[(name, backend, c)], decode[(name, "eager", c)]
                    row.append(f"{r[key]:.3f} ({base[key] / r[key]:.2f}x)" if key in r else "-")
            last = decode[(name, backend, opts["contexts"][-1])]
            row.append(f"{last['cache_bytes'] / 1e6:.1f}")
            if bandwidth:
                for c in opts["contexts"]:
                    r = decode[(name, backend, c)]
                    # Reading the cache once: bytes / (copy bandwidth / 2), the copy counting read + write.
                    row.append(f"{r['core_ms'] / (1000 * 2 * r['cache_bytes'] / bandwidth):.2f}" if "core_ms" in r else "-")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def plot(report, path: Path) -> None:
    from espnet_mtla.recipe.figures import pyplot

    plt = pyplot()

    if not report["decode"]:
        return
    contexts = report["options"]["contexts"]
    names = [n for n in VARIANTS if n in report["options"].get("variants", VARIANTS)]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), sharey=True, squeeze=False)
    axes = axes[0]
    decode = {(r["name"], r["backend"], r["context"]): r for r in report["decode"]}
    colors = {"eager": "tab:blue", "sdpa": "tab:orange", "triton": "tab:green"}
    for ax, name in zip(axes, names):
        for backend in decode_backends(name, report["backends"]):
            color = colors[backend]
            ax.plot(contexts, [decode[(name, backend, c)]["step_ms"] for c in contexts], color=color, marker="o",
                    label=f"{backend}: layer step")
            if "core_ms" in decode[(name, backend, contexts[0])]:
                ax.plot(contexts, [decode[(name, backend, c)]["core_ms"] for c in contexts], "--", color=color,
                        marker=".", label=f"{backend}: attention core")
        ax.set_title(name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("cache context (tokens)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("ms per decode step")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"Decode step, batch {report['options']['batch']}: {report['machine']}", fontsize=9)
    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on a GPU, float32 on a CPU")
    parser.add_argument("--out-dir", help="where results.{json,md,png} go (default docs/bench_kernels_<device>)")
    parser.add_argument("--quick", action="store_true", help="batch 8, contexts 1k/4k, T=512, fewer repeats")
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--tune", action="store_true", help="GPU: time the Triton kernel's tuning knobs first (tune.md)")
    parser.add_argument("--replot", action="store_true", help="redo the table and plot from --out-dir's results.json")
    parser.add_argument("--part", choices=["decode", "train", "both"], default="both")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    opts = parser.parse_args(argv)
    if opts.replot:
        out = Path(opts.out_dir or f"docs/bench_kernels_{opts.device}")
        write_tables(out, read_report(parser, out), markdown, plot)
        return
    if opts.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if "MHA" not in opts.variants:
        parser.error("--variants must include MHA (the ratios are to MHA)")
    torch.set_num_threads(opts.threads)
    cuda = opts.device == "cuda"
    settings = {
        "device": opts.device,
        "dtype": opts.dtype or ("bfloat16" if cuda else "float32"),
        "batch": 8 if opts.quick else 64,
        "contexts": [1024, 4096] if opts.quick else [1024, 4096, 16384],
        "train_lengths": [512] if opts.quick else ([4096, 16384] if cuda else [4096]),
        "part": opts.part,
        "variants": [n for n in VARIANTS if n in opts.variants],
        "decode_repeats": 3 if opts.quick else (50 if cuda else 5),
        "core_repeats": 3 if opts.quick else (100 if cuda else 5),
        "train_repeats": 1 if opts.quick else (10 if cuda else 2),
    }
    out = Path(opts.out_dir or f"docs/bench_kernels_{opts.device}")
    if opts.tune and not cuda:
        parser.error("--tune times the Triton kernel: it needs --device cuda")
    out.mkdir(parents=True, exist_ok=True)
    if opts.tune:
        tune(settings, out)
    print(f"benchmarking attention backends on {opts.device}", flush=True)
    report = run(settings, lambda report: write_results_json(out, report))
    write_results_json(out, report)
    print("\n" + write_tables(out, report, markdown, plot))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")


if __name__ == "__main__":
    main()
