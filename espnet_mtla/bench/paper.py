"""The paper's efficiency table (MuST-C en-de ST inference), reproduced with our code.

    python -m espnet_mtla.bench.paper                       # GPU: beam 50, 50,000-frame batches
    python -m espnet_mtla.bench.paper --device cpu          # CPU mode: beam 10, fewer utterances

Protocol (Deng & Woodland 2025, Table 1 and its efficiency columns): the ST model of the paper
with random weights (80-d fbank -> conv2d x4 subsampling -> 12-layer 512-d Transformer encoder
-> projector stacking 2 frames -> 9-layer 512-d decoder-only stack, 8 heads, FFN 2048; MLA/MTLA
kv_lora_rank 256, rope 32; GQA 2 kv heads; 8000 output units as fairseq's MuST-C recipe),
a test set shaped like tst-COMMON, beam search with beam 50 over batches of at most 50,000
input frames, and per attention type:
- time: the summed wall time of the inference steps (encoder + search per batch, synchronised);
- average memory: ``torch.cuda.memory_allocated()`` sampled every 0.1 s during inference (the
  paper's metric; it includes the weights), and the peak (``max_memory_allocated``). On CPUs the
  process RSS stands in for it (sampled the same way; noisier, it includes the interpreter);
- the KV caches' peak size (exact bytes, every layer).
<eos> is masked and every utterance decodes exactly its own target length, so every type
emits the same number of tokens. Each type runs in its own process; the paper's numbers are
printed beside ours.

The test set: tst-COMMON has 2,641 segments (about 4 hours of TED talks). Its per-segment
lengths are not redistributable, so utterances are drawn (fixed seed) from a log-normal fit:
median 4.5 s (mean about 5.6 s), clipped to 0.4-30 s; target length 3.5 units per second of
audio with +-25% log-normal spread (German at about 2.6 words/s, 1.3 units per word). A subset
(``--utts``, the first N of the draw) keeps a run within minutes; the draw's batches are
formed over that subset exactly as over the whole set.

Only torch is needed (the encoder is a torch stand-in for ESPnet's, same sizes), so this runs
on offline GPU nodes without ESPnet; matplotlib is used for the figure when it is installed.
"""

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

from espnet_mtla.bench.common import (NoEosDecoder, build_model, decoder_variants, kernel_cell,  # noqa: E402
                                      layer_step_kernels, machine, positive_int, replot, run_in_subprocess,
                                      save_figure, save_report, synchronize)
from espnet_mtla.metrics.memory import PeakMemory  # noqa: E402

VOCAB = 8000
TST_COMMON_SEGMENTS = 2641
VARIANTS = decoder_variants((2, 3, 4), gqa_name="GQA")  # name -> (attention_type, decoder_conf extras)
# The paper's MuST-C en-de inference (one RTX 6000 Ada, fp32 fairseq): seconds, average MiB.
PAPER = {
    "MHA": (281.3, 18646), "MQA": (168.1, 3074), "GQA": (190.6, 5313), "MLA": (97.0, 5065),
    "MTLA s=2": (65.6, 2835), "MTLA s=3": (52.7, 2251), "MTLA s=4": (48.7, 1921),
}
MODES = {  # device -> defaults
    "cuda": {"beam": 50, "batch_frames": 50000, "utts": 1000},
    "cpu": {"beam": 10, "batch_frames": 20000, "utts": 24},
}


def test_set(count: int, seed: int = 0):
    """(fbank frames, target tokens) of ``count`` utterances of the tst-COMMON-shaped draw."""
    gen = torch.Generator().manual_seed(seed)
    seconds = (math.log(4.5) + 0.65 * torch.randn(TST_COMMON_SEGMENTS, generator=gen)).exp().clamp(0.4, 30.0)
    tokens = (3.5 * seconds * (0.25 * torch.randn(TST_COMMON_SEGMENTS, generator=gen)).exp()).round().clamp(min=2)
    frames = (seconds * 100).long()
    return frames[:count].tolist(), tokens[:count].long().tolist()


def run_config(name, opts, queue):
    from espnet_mtla.search import MultiUtteranceBeamSearch
    from espnet_mtla.search.batching import budget_batches

    torch.manual_seed(0)
    torch.set_num_threads(opts["threads"])
    device, dtype = torch.device(opts["device"]), getattr(torch, opts["dtype"])
    encoder, decoder, _ = build_model(*VARIANTS[name], vocab=VOCAB, torch_only=True)
    encoder, decoder = encoder.to(device, dtype), decoder.to(device, dtype)
    eos = VOCAB - 1
    search = MultiUtteranceBeamSearch(NoEosDecoder(decoder, eos), eos, eos, opts["beam"], nbest=1,
                                      cuda_graphs=opts["cuda_graphs"])
    frames, tokens = test_set(opts["utts"])
    batches, _ = budget_batches(frames, opts["batch_frames"])
    gen = torch.Generator().manual_seed(1)
    feats = [torch.randn(n, 80, generator=gen).to(device, dtype) for n in frames]

    def infer(indices):
        x = torch.nn.utils.rnn.pad_sequence([feats[i] for i in indices], batch_first=True)
        enc, enc_lens, _ = encoder(x, torch.tensor([frames[i] for i in indices], device=device))
        result = search(enc, enc_lens.clamp(min=1, max=enc.shape[1]),
                        max_length=torch.tensor([tokens[i] for i in indices]))
        emitted = [len(h[0].yseq) - 2 for h in result.hypotheses]
        assert emitted == [tokens[i] for i in indices], "every utterance decodes exactly its target length"
        return result.cache_bytes_peak

    with torch.no_grad():
        infer(batches[-1][:1])  # warm-up (kernels, allocator)
        peak_cache = 0
        elapsed = 0.0
        # Average: memory in use sampled every 0.1 s (the paper's metric); peak: the CUDA
        # allocator's on a GPU, the largest RSS sample on a CPU.
        with PeakMemory(device, sample_every=0.1) as memory:
            for indices in batches:
                start = time.perf_counter()
                cache_bytes_peak = infer(indices)
                synchronize(device)
                elapsed += time.perf_counter() - start
                peak_cache = max(peak_cache, cache_bytes_peak)
        peak = (memory.total_bytes if device.type == "cuda" else max(memory.samples)) / 2**20
        x = feats[0][None]
        enc, _, _ = encoder(x, torch.tensor([x.shape[1]], device=device))
        kernels = layer_step_kernels(decoder, enc)
    queue.put({
        "name": name, "seconds": elapsed, "average_mib": memory.average_bytes / 2**20, "peak_mib": peak,
        "kv_cache_peak_mib": peak_cache / 2**20, "batches": len(batches), "utterances": len(frames),
        "tokens": sum(tokens), "kernels": kernels, "weights_mib": sum(p.numel() * p.element_size() for p in decoder.parameters()) / 2**20,
    })


def markdown(results, opts, machine_name) -> str:
    base = next(r for r in results if r["name"] == "MHA")
    memory = "average allocated MiB" if opts["device"] == "cuda" else "average RSS MiB"
    lines = [
        f"Machine: {machine_name}; {opts['device']}, {opts['dtype']}. {base['utterances']} utterances of the "
        f"tst-COMMON-shaped draw ({base['tokens']} output tokens), beam {opts['beam']}, batches of <= "
        f"{opts['batch_frames']} input frames ({base['batches']} batches); decode steps "
        f"{'replayed from CUDA graphs' if opts.get('cuda_graphs') else 'eager'}. Kernels: launched by one decoder layer "
        "(attention / whole layer) per decode step, inference path (training code's path in brackets).",
        "",
        f"| attention | time s | speed-up vs MHA | paper speed-up | {memory} | memory reduction vs MHA | "
        "paper reduction | peak MiB | KV cache peak MiB (x MHA) | kernels per layer step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    paper_time, paper_mem = PAPER["MHA"]
    for r in results:
        t, m = PAPER[r["name"]]
        lines.append(
            f"| {r['name']} | {r['seconds']:.1f} | {base['seconds'] / r['seconds']:.2f}x | {paper_time / t:.2f}x | "
            f"{r['average_mib']:.0f} | {base['average_mib'] / r['average_mib']:.2f}x | {paper_mem / m:.2f}x | "
            f"{r['peak_mib']:.0f} | {r['kv_cache_peak_mib']:.1f} ({r['kv_cache_peak_mib'] / base['kv_cache_peak_mib']:.3f}) | "
            f"{kernel_cell(r)} |"
        )
    return "\n".join(lines) + "\n"


def plot(results, opts, machine_name, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # offline GPU nodes: the table and JSON are the result
        print(f"matplotlib is not installed: no {path.name}")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in results]
    base = next(r for r in results if r["name"] == "MHA")
    ours = [[base["seconds"] / r["seconds"] for r in results], [base["average_mib"] / r["average_mib"] for r in results]]
    paper = [[PAPER["MHA"][0] / PAPER[n][0] for n in names], [PAPER["MHA"][1] / PAPER[n][1] for n in names]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.4
    for ax, title, mine, theirs in zip(axes, ["speed-up vs MHA", "average memory reduction vs MHA"], ours, paper):
        xs = range(len(names))
        bars = ax.bar([x - width / 2 for x in xs], mine, width, label="ours", color="#cc6677")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        bars = ax.bar([x + width / 2 for x in xs], theirs, width, label="paper (RTX 6000 Ada)", color="#888888")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"MuST-C-shaped ST inference, beam {opts['beam']}, {opts['device']} {opts['dtype']}: {machine_name}",
                 fontsize=9)
    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--beam", type=positive_int, help="default: 50 on cuda (the paper's), 10 on cpu")
    parser.add_argument("--batch_frames", type=positive_int, help="input frames per batch (default 50000 on cuda)")
    parser.add_argument("--utts", type=positive_int, help=f"the first N utterances of the draw (of {TST_COMMON_SEGMENTS})")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--cuda_graphs", action=argparse.BooleanOptionalAction, default=None,
                        help="replay decode steps from CUDA graphs (default on cuda; --no-cuda_graphs: eager)")
    parser.add_argument("--out-dir", help="default: docs/bench_paper (cuda) or docs/bench_paper_cpu")
    parser.add_argument("--replot", action="store_true", help="redo the table and figure from --out-dir's results.json")
    opts = parser.parse_args(argv)
    if opts.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here; use --device cpu for the CPU mode")
    out = Path(opts.out_dir or ("docs/bench_paper" if opts.device == "cuda" else "docs/bench_paper_cpu"))
    if opts.replot:
        replot(parser, out, markdown, plot)
        return
    if "MHA" not in opts.variants:
        parser.error("--variants must include MHA (every ratio is to MHA)")
    if opts.cuda_graphs and opts.device != "cuda":
        parser.error("--cuda_graphs needs --device cuda")
    mode = MODES[opts.device]
    conf = {"device": opts.device, "dtype": opts.dtype, "threads": opts.threads,
            "beam": opts.beam or mode["beam"], "batch_frames": opts.batch_frames or mode["batch_frames"],
            "utts": min(opts.utts or mode["utts"], TST_COMMON_SEGMENTS),
            "cuda_graphs": opts.device == "cuda" and opts.cuda_graphs is not False}
    torch.set_num_threads(opts.threads)
    machine_name = machine(conf["device"], "fp32" if conf["dtype"] == "float32" else conf["dtype"])
    results = []
    for name in ["MHA"] + [v for v in opts.variants if v != "MHA"]:
        result = run_in_subprocess(run_config, name, conf)
        results.append(result)
        print(f"{name:9s} {result['seconds']:8.1f} s  avg {result['average_mib']:8.0f} MiB  "
              f"peak {result['peak_mib']:8.0f} MiB  KV cache peak {result['kv_cache_peak_mib']:8.1f} MiB", flush=True)
        # the report so far after every type: a run cut off by a time limit keeps what finished
        table = save_report(out, machine_name, conf, results, markdown, plot)
    print(table)


if __name__ == "__main__":
    main()
