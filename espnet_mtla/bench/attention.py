"""Benchmark one attention layer of every type, side by side in one run.

    python -m espnet_mtla.bench.attention [--reference] [--quick] [--rounds R] [--variants ...] [--out-dir DIR]

Measures, for a 512-d, 8-head layer in fp32 (paper dims for MLA/MTLA):
- training: forward+backward wall time and peak memory above the pre-step baseline at
  T = 512, 2048, 4096, 8192 with batch 2 (causal, all positions are queries; the reference
  only up to 4096);
- decoding: wall time per incremental step at cache contexts 1024 and 4096 with batch 16
  (4 utterances x beam 4), including a beam reorder of the cache every step; cache bytes.
Every configuration runs in its own subprocess. Peak memory is PyTorch's CPU allocation
peak during one training step above what was allocated before it (profiler allocator events).
``--reference`` adds the reference implementation (pip ``mtla==0.3.2``), installed with
``--no-deps`` into ``.venv-bench/mtla`` (``make bench`` does it) and loaded by file path.
``--device cuda`` times the decode steps on a GPU (``--part decode``; synchronised), where
the reference's layer and ours run on the same shapes.
Writes ``results.json``, ``results.md`` and ``results.png`` to ``--out-dir``.
"""

import argparse
import math
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # silence the profiler backend's GPU probing on CPU machines
import torch  # noqa: E402

from espnet_mtla.interop import reference_package  # noqa: E402
from espnet_mtla.bench.common import (EMBED, HEADS, PAPER_LATENT, machine, positive_int,  # noqa: E402
                                      read_report, run_in_subprocess, save_figure, synchronize, write_results_json,
                                      write_tables)
from espnet_mtla.metrics.memory import peak_allocated_mib  # noqa: E402

# The paper's dims; the latent norm is the library's default (RMSNorm), as in the committed results.
LATENT = PAPER_LATENT
VARIANTS = {
    "MHA": ("mha", {}),
    "MQA": ("mqa", {}),
    "GQA (2 kv heads)": ("gqa", {"num_kv_heads": 2}),
    "MLA": ("mla", LATENT),
    "MTLA s=2": ("mtla", dict(LATENT, down_rate=2)),
    "MTLA s=4": ("mtla", dict(LATENT, down_rate=4)),
    # before the stride-aware attention: the grouped layout through the fused SDPA kernel
    "MTLA s=2 (attn_backend sdpa)": ("mtla", dict(LATENT, down_rate=2, attn_backend="sdpa")),
}
REFERENCE = {"reference MTLA s=2 (mtla 0.3.2)": 2}
REFERENCE_MAX_TRAIN = 4096  # its training pass builds (B, T, T) matrices: 3.6 GiB at T=4096, ~14 GiB at 8192
REFERENCE_DIR = reference_package.DEFAULT_DIR


def measure(fn, repeats: int):
    """Median wall time of ``fn`` (after a warm-up call) and its peak allocation in MiB."""
    fn()  # warm-up: one-time allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_allocated_mib(fn)


# -- layers -------------------------------------------------------------------------------
def load_reference():
    return reference_package.load_layer_module(REFERENCE_DIR)


class ReferenceLayer:
    """Adapter giving the reference layer the benchmark's train/decode calls."""

    def __init__(self, down_rate, device="cpu"):
        module = load_reference()
        self.layer = module.MultiheadTemporalLatentAttention(EMBED, HEADS, down_rate=down_rate, **LATENT).to(device)
        self.down_rate, self.device = down_rate, device

    def train_step(self, x):
        position = torch.arange(x.shape[1], dtype=torch.float).expand(x.shape[0], -1)
        return self.layer(x, x, x, position=position)

    def start_decoding(self, batch, context):
        """A state as after ``context`` tokens (contents random: only the timing matters)."""
        slots = math.ceil(context / self.down_rate)
        state = {}
        self.layer._set_input_buffer(
            state,
            {
                "prev_kv_t": torch.randn(batch, slots, LATENT["kv_lora_rank"], device=self.device),
                "prev_k_pe": torch.randn(batch, slots, LATENT["qk_rope_head_dim"], device=self.device),
                "infer_steps": torch.zeros(batch, device=self.device) + context,
            },
        )
        self.state, self.step_index = state, context
        return lambda: sum(t.numel() * t.element_size() for t in self.layer._get_input_buffer(state).values() if t.dim() > 1)

    def decode_step(self, x, order):
        position = torch.full((x.shape[0], 1), float(self.step_index), device=x.device)
        self.step_index += 1
        out = self.layer(x, x, x, position=position, incremental_state=self.state)
        self.layer.reorder_incremental_state(self.state, order)
        return out


class OurLayer:
    def __init__(self, attention_type, conf, device="cpu"):
        from espnet_mtla.attention import build_attention

        self.layer = build_attention(attention_type, EMBED, HEADS, **conf).to(device)
        self.device = device

    def train_step(self, x):
        return self.layer(x)

    def start_decoding(self, batch, context):
        self.cache = self.layer.new_cache(batch, capacity=context + 64)
        with torch.no_grad():
            for chunk in torch.randn(batch, context, EMBED, device=self.device).split(512, dim=1):
                self.layer.prefill(self.cache, chunk)
        return self.cache.nbytes

    def decode_step(self, x, order):
        out = self.layer(x, cache=self.cache)
        self.cache.reorder(order)
        return out


# -- one configuration per subprocess -------------------------------------------------------
def run_config(config, args, queue):
    name, kind = config
    torch.manual_seed(0)
    torch.set_num_threads(args["threads"])
    device = torch.device(args.get("device", "cpu"))
    layer = ReferenceLayer(REFERENCE[name], device) if kind == "reference" else OurLayer(*VARIANTS[name], device)
    result = {"name": name, "train": {}, "decode": {}}
    for length in args["train_lengths"]:
        if kind == "reference" and length > REFERENCE_MAX_TRAIN:
            continue
        x = torch.randn(2, length, EMBED, requires_grad=True)

        def train():
            layer.layer.zero_grad(set_to_none=True)
            layer.train_step(x).sum().backward()

        seconds, peak = measure(train, args["repeats"] if length <= 2048 else 2)
        result["train"][length] = {"seconds": seconds, "peak_mib": peak}
    beams, utts = 4, 4
    batch = beams * utts
    for context in args["contexts"]:
        with torch.no_grad():
            cache_bytes = layer.start_decoding(batch, context)
            gen = torch.Generator().manual_seed(context)
            tokens = torch.randn(args["steps"] + 1, batch, 1, EMBED).to(device)
            # Each utterance's beams pick random parents among that utterance's beams.
            orders = [
                (torch.randint(0, beams, (utts, beams), generator=gen) + torch.arange(utts).unsqueeze(1) * beams
                 ).flatten().to(device)
                for _ in range(args["steps"] + 1)
            ]
            layer.decode_step(tokens[0], orders[0])  # warm-up step
            synchronize(device)
            start = time.perf_counter()
            for i in range(1, args["steps"] + 1):
                layer.decode_step(tokens[i], orders[i])
            synchronize(device)
            per_step = (time.perf_counter() - start) / args["steps"]
        result["decode"][context] = {"ms_per_step": per_step * 1000, "cache_bytes": cache_bytes()}
    queue.put(result)


def run_all(names, args, rounds: int = 1):
    """Every configuration once per round, round-robin (a noisy machine slows all alike), then
    the median time per configuration; peaks are deterministic (the first round's)."""
    runs = {name: [] for name, _ in names}
    for _ in range(rounds):
        for name, kind in names:
            result = run_in_subprocess(run_config, (name, kind), args)
            runs[name].append(result)
            train = ", ".join(f"T={t}: {v['seconds']:.2f}s/{v['peak_mib']:.0f}MiB" for t, v in result["train"].items())
            decode = ", ".join(f"ctx={c}: {v['ms_per_step']:.2f}ms" for c, v in result["decode"].items())
            print(f"{name:34s} train {train} | decode {decode}", flush=True)
    results = []
    for name, _ in names:
        first = runs[name][0]
        for length, entry in first["train"].items():
            entry["seconds"] = statistics.median(r["train"][length]["seconds"] for r in runs[name])
        for context, entry in first["decode"].items():
            entry["ms_per_step"] = statistics.median(r["decode"][context]["ms_per_step"] for r in runs[name])
        results.append(first)
    return results


# -- report -------------------------------------------------------------------------------
def markdown(results, args, machine_name=None) -> str:
    base = next((r for r in results if r["name"] == "MHA"), results[0])
    rounds = args.get("rounds", 1)
    medians = f" Times: medians of {rounds} interleaved rounds." if rounds > 1 else ""
    parts = (["batch 2 for training"] if args["train_lengths"] else []) + (
        ["batch 16 (4 utterances x beam 4) for decoding"] if args["contexts"] else [])
    lines = [f"Machine: {machine_name or machine()}. {'; '.join(parts).capitalize()}.{medians}", ""]
    head = ["attention"] + [f"train T={t} s (x MHA)" for t in args["train_lengths"]]
    head += [f"peak MiB T={t} (x MHA)" for t in args["train_lengths"]]
    head += [f"decode ms/step ctx={c} (x MHA)" for c in args["contexts"]]
    head += [f"cache MB ctx={args['contexts'][-1]}"] if args["contexts"] else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r["name"]]
        row += [f"{r['train'][t]['seconds']:.3f} ({r['train'][t]['seconds'] / base['train'][t]['seconds']:.2f})"
                if t in r["train"] else "-" for t in args["train_lengths"]]
        row += [f"{r['train'][t]['peak_mib']:.0f} ({r['train'][t]['peak_mib'] / max(base['train'][t]['peak_mib'], 1e-9):.2f})"
                if t in r["train"] else "-" for t in args["train_lengths"]]
        row += [f"{r['decode'][c]['ms_per_step']:.2f} ({r['decode'][c]['ms_per_step'] / base['decode'][c]['ms_per_step']:.2f})" for c in args["contexts"]]
        row += [f"{r['decode'][args['contexts'][-1]]['cache_bytes'] / 1e6:.2f}"] if args["contexts"] else []
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(results, args, path: Path, machine_name=None) -> None:
    from espnet_mtla.recipe.figures import pyplot

    plt = pyplot()

    panels = []  # (title, ylabel, xlabel, x values, y of a result at x)
    if args["train_lengths"]:
        panels += [("training forward+backward (B=2)", "seconds", "sequence length T", args["train_lengths"],
                    lambda r, x: r["train"][x]["seconds"] if x in r["train"] else None),
                   ("training peak allocation above baseline", "MiB", "sequence length T", args["train_lengths"],
                    lambda r, x: r["train"][x]["peak_mib"] if x in r["train"] else None)]
    if args["contexts"]:
        panels += [("decode step incl. beam reorder (B=16)", "ms / step", "cache context", args["contexts"],
                    lambda r, x: r["decode"][x]["ms_per_step"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.3 * len(panels), 4.5), squeeze=False)
    axes = axes[0]
    for ax, (title, ylabel, xlabel, xs, value) in zip(axes, panels):
        for r in results:
            points = [(x, value(r, x)) for x in xs if value(r, x) is not None]
            ax.plot([x for x, _ in points], [y for _, y in points], "--" if "reference" in r["name"] else "-",
                    marker="o", label=r["name"])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel(xlabel)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # the reference is an order of magnitude above the rest
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"One attention layer, 512-d, 8 heads: {machine_name or machine()}", fontsize=9)
    save_figure(fig, path)


def report_table(report) -> str:
    return markdown(report["results"], report["settings"], report["machine"])


def report_plot(report, path: Path) -> None:
    plot(report["results"], report["settings"], path, report["machine"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="docs/bench", help="where results.{json,md,png} go")
    parser.add_argument("--reference", action="store_true", help="include pip mtla==0.3.2 (see module doc)")
    parser.add_argument("--quick", action="store_true", help="T=512 and context 1024 only, fewer repeats")
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--steps", type=positive_int, help="decode steps timed per context (default 50; 10 with --quick)")
    parser.add_argument("--replot", action="store_true", help="redo the table and plot from --out-dir's results.json")
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="run every configuration this many times, round-robin, and report median times")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="only these of our variants (MHA first)")
    parser.add_argument("--part", choices=["train", "decode", "both"], default="both",
                        help="only the training or the decoding measurements")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: decode steps on a GPU (with --part decode)")
    opts = parser.parse_args(argv)
    out = Path(opts.out_dir)
    if opts.replot:
        report = read_report(parser, out)
        for r in report["results"]:  # JSON keys are strings
            r["train"] = {int(k): v for k, v in r["train"].items()}
            r["decode"] = {int(k): v for k, v in r["decode"].items()}
        write_tables(out, report, report_table, report_plot)
        return
    if opts.device == "cuda" and not opts.replot:
        if opts.part != "decode":
            parser.error("--device cuda times decode steps only: add --part decode")
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is visible")
    args = {
        "device": opts.device,
        "train_lengths": [] if opts.part == "decode" else ([512] if opts.quick else [512, 2048, 4096, 8192]),
        "contexts": [] if opts.part == "train" else ([1024] if opts.quick else [1024, 4096]),
        "repeats": 2 if opts.quick else 3,
        "steps": opts.steps or (10 if opts.quick else 50),
        "threads": opts.threads,
    }
    names = [(n, "ours") for n in (opts.variants or VARIANTS)]
    if opts.reference:
        names += [(n, "reference") for n in REFERENCE]
    host = machine(opts.device)
    print(f"benchmarking on {host}", flush=True)
    args["rounds"] = opts.rounds
    results = run_all(names, args, opts.rounds)
    report = {"machine": host, "settings": args, "results": results}
    write_results_json(out, report)
    print("\n" + write_tables(out, report, report_table, report_plot))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")


if __name__ == "__main__":
    main()
