"""Beam-search decoding benchmark of the paper-size model, every attention type side by side.

    python -m espnet_mtla.bench.decode [--quick] [--seconds S] [--steps N] [--out-dir docs/bench_decode]

Model (random weights, fp32): 80-d fbank -> conv2d subsampling (x4) -> 12-layer 512-d
Transformer encoder -> projector (stack 2 frames) -> 9-layer 512-d decoder-only stack,
8 heads, FFN 2048; MLA/MTLA with kv_lora_rank 256, qk_nope 64, qk_rope 32, v_head 64.
Each utterance is ``--seconds`` of audio (10 s: 1000 fbank frames -> 250 encoder frames -> 125
prefix positions), decoded one utterance at a time, beam 10, for exactly ``--steps`` tokens
(<eos> is masked, so every attention type does the same work), by the search stage 8 runs
(``espnet_mtla.search``; ``--search espnet``: ESPnet's BatchBeamSearch, the ``--batch_size 1``
path).

Reported per attention type (each in its own subprocess): encoder time, search time per
utterance and per step, peak memory of the search above what was allocated before it
(weights, encoder output: PyTorch allocator events), KV-cache bytes at the end, and the
kernels one decoder layer launches per decode step, on the inference path (autograd off:
MLA/MTLA on absorbed weights) and on the training code's path (autograd on).
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

from espnet_mtla.bench.common import (VARIANTS, VOCAB, NoEosDecoder, build_model, espnet_search,  # noqa: E402
                                      kernel_cell, layer_step_kernels, machine, positive_int, parse_or_replot,
                                      run_in_subprocess, save_figure, save_report)
from espnet_mtla.metrics.memory import peak_allocated_mib  # noqa: E402

# "MTLA s=2 (training path)": the type with its decode steps on the training code's path
TRAINING_PATH = " (training path)"


def make_search(decoder, opts):
    """search(enc (T, D)) -> (yseq length, the caches' peak bytes), by ``opts["search"]``: ours
    (stage 8) or ESPnet's."""
    eos = VOCAB - 1
    if opts["search"] == "espnet":
        search = espnet_search(decoder, opts["beam"])

        def espnet(enc):
            best = search(enc, maxlenratio=-opts["steps"])[0]
            return len(best.yseq), best.states["decoder"].caches.peak_nbytes  # the search's shared caches

        return espnet
    from espnet_mtla.search import MultiUtteranceBeamSearch

    search = MultiUtteranceBeamSearch(NoEosDecoder(decoder, eos), eos, eos, opts["beam"], nbest=1)

    def ours(enc):
        result = search(enc[None], torch.tensor([enc.shape[0]]), maxlenratio=-opts["steps"])
        return len(result.hypotheses[0][0].yseq), result.cache_bytes_peak

    return ours


def run_config(name, opts, queue):
    from espnet_mtla.attention import MultiHeadLatentAttention

    torch.manual_seed(0)
    torch.set_num_threads(opts["threads"])
    base = name.removesuffix(TRAINING_PATH)
    encoder, decoder, _ = build_model(*VARIANTS[base])
    for layer in decoder.modules():
        if isinstance(layer, MultiHeadLatentAttention):
            layer.absorbed_decode = not (opts.get("training_path", False) or base != name)
    search = make_search(decoder, opts)
    gen = torch.Generator().manual_seed(1)
    frames = opts["seconds"] * 100  # 10 ms fbank hop
    feats = torch.randn(opts["utts"] + 1, 1, frames, 80, generator=gen)
    encode_s, search_s = [], []
    with torch.no_grad():
        for i in range(opts["utts"] + 1):  # the first utterance warms up
            start = time.perf_counter()
            enc, _, _ = encoder(feats[i], torch.tensor([frames]))
            mid = time.perf_counter()
            length, cache_bytes = search(enc[0])
            end = time.perf_counter()
            assert length == opts["steps"] + 2, "every search must run exactly --steps steps"
            if i:
                encode_s.append(mid - start)
                search_s.append(end - mid)
        peak = peak_allocated_mib(lambda: search(enc[0]))
        kernels = layer_step_kernels(decoder, enc[:1])
    queue.put({
        "name": name,
        "encode_s": statistics.median(encode_s),
        "search_s": statistics.median(search_s),
        "ms_per_step": statistics.median(search_s) / opts["steps"] * 1000,
        "peak_mib": peak,
        "cache_bytes": cache_bytes,
        "weights_mib": sum(p.numel() * p.element_size() for p in decoder.parameters()) / 2**20,
        "kernels": kernels,
    })


def run_all(names, opts):
    """Every type once per round, rounds interleaved (a shared machine's speed drifts over
    minutes: interleaving spreads the drift over all types); times are medians over rounds."""
    rounds = {name: [] for name in names}
    for round_index in range(opts.get("rounds", 1)):
        for name in names:
            result = run_in_subprocess(run_config, name, opts)
            rounds[name].append(result)
            print(f"round {round_index + 1}: {name:18s} encode {result['encode_s']:.2f}s  search "
                  f"{result['search_s']:.2f}s ({result['ms_per_step']:.1f} ms/step)  peak {result['peak_mib']:.1f} MiB  "
                  f"cache {result['cache_bytes'] / 1e6:.2f} MB", flush=True)
    results = []
    for name, runs in rounds.items():
        result = dict(runs[0])
        for key in ("encode_s", "search_s", "ms_per_step"):
            result[key] = statistics.median(r[key] for r in runs)
        result["search_s_rounds"] = [r["search_s"] for r in runs]
        results.append(result)
    return results


def markdown(results, opts, machine_name) -> str:
    base = next(r for r in results if r["name"] == "MHA")
    lines = [
        f"Machine: {machine_name}. Beam {opts['beam']}, {opts['steps']} decoding steps, {opts['seconds']} s "
        f"utterances ({opts['seconds'] * 25 // 2} prefix positions), median of {opts['utts']} utterances "
        f"x {opts.get('rounds', 1)} interleaved rounds; "
        f"search: {SEARCHES[opts.get('search', 'espnet')]}"
        f"{'; MLA/MTLA decode steps on the training path (no absorbed weights)' if opts.get('training_path') else ''}. Kernels: launched by one decoder layer "
        "(attention / whole layer) per decode step, inference path (training code's path in brackets).",
        "",
        "| attention | search s/utt (x MHA) | speed-up vs MHA | ms/step | peak MiB above weights (x MHA) | "
        "KV cache MB at end (x MHA) | cache reduction vs MHA | encoder s/utt | kernels per layer step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['search_s']:.3f} ({r['search_s'] / base['search_s']:.2f}) | "
            f"{base['search_s'] / r['search_s']:.2f}x | {r['ms_per_step']:.1f} | "
            f"{r['peak_mib']:.1f} ({r['peak_mib'] / base['peak_mib']:.2f}) | "
            f"{r['cache_bytes'] / 1e6:.2f} ({r['cache_bytes'] / base['cache_bytes']:.3f}) | "
            f"{base['cache_bytes'] / r['cache_bytes']:.1f}x | {r['encode_s']:.3f} | {kernel_cell(r)} |"
        )
    return "\n".join(lines) + "\n"


SEARCHES = {"ours": "espnet_mtla.search (stage 8)", "espnet": "ESPnet BatchBeamSearch (--batch_size 1)"}


def bar_color(name: str) -> str:
    """MHA family grey, MLA blue, MTLA red; the training-path runs of MLA/MTLA lighter."""
    light = name.endswith(TRAINING_PATH)
    if name.startswith("MTLA"):
        return "#e8aab8" if light else "#cc6677"
    if name.startswith("MLA"):
        return "#99bbdd" if light else "#4477aa"
    return "#888888"


def plot(results, opts, machine_name, path: Path) -> None:
    from espnet_mtla.recipe.figures import pyplot

    plt = pyplot()

    names = [r["name"] for r in results]
    panels = [
        ("search time per step (ms)", [r["ms_per_step"] for r in results]),
        ("peak memory of the search above weights (MiB)", [r["peak_mib"] for r in results]),
        ("KV cache at the end of the search (MB)", [r["cache_bytes"] / 1e6 for r in results]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (title, values) in zip(axes, panels):
        bars = ax.bar(range(len(names)), values, color=[bar_color(n) for n in names])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Beam search, beam {opts['beam']}, {opts['seconds']} s audio, {opts['steps']} steps: {machine_name}",
                 fontsize=9)
    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="docs/bench_decode", help="where results.{json,md} go")
    parser.add_argument("--steps", type=positive_int, default=60, help="output tokens per utterance")
    parser.add_argument("--beam", type=positive_int, default=10)
    parser.add_argument("--seconds", type=positive_int, default=10, help="audio length of each utterance")
    parser.add_argument("--utts", type=positive_int, default=3, help="timed utterances per attention type")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="runs of every type, interleaved; times are medians over them")
    parser.add_argument("--search", choices=list(SEARCHES), default="ours",
                        help="ours: espnet_mtla.search, as stage 8; espnet: ESPnet's BatchBeamSearch")
    parser.add_argument("--training-path", action="store_true",
                        help="MLA/MTLA decode steps on the training code's path (no absorbed weights): the 'before'")
    parser.add_argument("--compare-training-path", nargs="*", default=[], choices=[n for n in VARIANTS if "LA" in n],
                        help="also run these MLA/MTLA types on the training code's path, side by side")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: every type")
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="10 steps, 1 utterance, MHA and MTLA s=2 only")
    opts = parse_or_replot(parser, argv, markdown, plot)
    if opts is None:
        return
    out = Path(opts.out_dir)
    names = opts.variants or list(VARIANTS)
    if "MHA" not in names:
        parser.error("--variants must include MHA (every ratio is to MHA)")
    if opts.quick:
        opts.steps, opts.utts, opts.rounds, names = 10, 1, 1, ["MHA", "MTLA s=2"]
    names += [n + TRAINING_PATH for n in opts.compare_training_path]
    conf = {"steps": opts.steps, "beam": opts.beam, "utts": opts.utts, "threads": opts.threads,
            "seconds": opts.seconds, "search": opts.search, "rounds": opts.rounds,
            "training_path": opts.training_path}
    torch.set_num_threads(opts.threads)
    machine_name = machine()
    results = run_all(names, conf)
    print(save_report(out, machine_name, conf, results, markdown, plot))


if __name__ == "__main__":
    main()
