"""Throughput of multi-utterance beam search (``--batch_size N``), every attention type side by side.

    python -m espnet_mtla.bin.bench_batch_decode [--quick] [--utts 64] [--batch_sizes 1 8 32] \\
        [--steps 20] [--out-dir docs/bench_batch_decode]

The paper-size model of ``bench_decode`` (random weights, fp32, 12-layer 512-d encoder,
9-layer 512-d decoder-only stack). ``--utts`` utterances of mixed lengths (2-12 s of fbank
frames, a fixed draw) are decoded in batches of N by ``MultiUtteranceBeamSearch`` (beam 10),
each for exactly ``--steps`` tokens (<eos> is masked, so every attention type does the same
work). Utterances/s counts encoder and search time over all utterances; peak memory is
PyTorch's allocation peak during the search of the batch of the longest utterances, above what
was allocated before it (weights and encoder output excluded). Each attention type runs in its own subprocess.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

from espnet_mtla.bin.bench_common import (machine, peak_allocated_mib, positive_int, run_in_subprocess,
                                          save_figure, save_report)  # noqa: E402
from espnet_mtla.bin.bench_decode import VARIANTS, VOCAB, build_model  # noqa: E402
from espnet_mtla.fileio import write_text_atomic  # noqa: E402


class NoEosDecoder:
    """The decoder with <eos> forbidden: every search runs to its maximum length."""

    def __init__(self, decoder, eos):
        self._decoder, self._eos = decoder, eos

    def __getattr__(self, name):
        return getattr(self._decoder, name)

    def run_tokens(self, caches, ys, mask=None):
        logits = self._decoder.run_tokens(caches, ys, mask)
        logits[..., self._eos] = float("-inf")
        return logits


def utterance_frames(count: int, seed: int = 1):
    """Fbank frame counts of ``count`` utterances, 2-12 s, a fixed draw."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(count, generator=gen) * 1000 + 200).long().tolist()


def run_config(name, opts, queue):
    from espnet_mtla.search import MultiUtteranceBeamSearch

    torch.manual_seed(0)
    torch.set_num_threads(opts["threads"])
    encoder, decoder = build_model(*VARIANTS[name])
    eos = VOCAB - 1
    search = MultiUtteranceBeamSearch(NoEosDecoder(decoder, eos), eos, eos, opts["beam"])
    frames = utterance_frames(opts["utts"])
    gen = torch.Generator().manual_seed(2)
    feats = [torch.randn(n, 80, generator=gen) for n in frames]

    def encode(indices):
        enc, lens = [], []
        for i in indices:  # one encoder pass per utterance (exact; see batch_inference)
            out, out_lens, _ = encoder(feats[i][None], torch.tensor([frames[i]]))
            enc.append(out[0])
            lens.append(int(out_lens[0]))
        return torch.nn.utils.rnn.pad_sequence(enc, batch_first=True), torch.tensor(lens)

    def run_search(enc, lens):
        hyps = search(enc, lens, maxlenratio=-opts["steps"])
        assert all(len(h[0].yseq) == opts["steps"] + 2 for h in hyps), "every search runs exactly --steps steps"

    rows = []
    with torch.no_grad():
        run_search(*encode([0]))  # warm-up
        for batch_size in opts["batch_sizes"]:
            batches = [list(range(i, min(i + batch_size, opts["utts"]))) for i in range(0, opts["utts"], batch_size)]
            start = time.perf_counter()
            for indices in batches:
                run_search(*encode(indices))
            elapsed = time.perf_counter() - start
            enc, lens = encode(sorted(range(opts["utts"]), key=lambda i: -frames[i])[:batch_size])
            peak = peak_allocated_mib(lambda: run_search(enc, lens))
            rows.append({"batch_size": batch_size, "seconds": elapsed, "utts_per_s": opts["utts"] / elapsed,
                         "tokens_per_s": opts["utts"] * opts["steps"] / elapsed, "peak_mib": peak,
                         "cache_bytes_peak": search.decoder.active_caches.peak_nbytes})
    queue.put({"name": name, "rows": rows})


def markdown(results, opts, machine_name) -> str:
    base = {r["batch_size"]: r for r in next(res for res in results if res["name"] == "MHA")["rows"]}
    sizes = opts["batch_sizes"]
    lines = [
        f"Machine: {machine_name}. {opts['utts']} utterances of 2-12 s, beam {opts['beam']}, {opts['steps']} "
        f"tokens each; utterances/s over encoder + search; (x MHA) = ratio to MHA at the same batch size.",
        "",
        "| attention | " + " | ".join(f"utts/s N={n} (x MHA)" for n in sizes) + " | "
        + " | ".join(f"peak MiB N={n} (x MHA)" for n in sizes) + f" | KV cache MB N={sizes[-1]} |",
        "|---|" + "---|" * (2 * len(sizes) + 1),
    ]
    for res in results:
        rows = {r["batch_size"]: r for r in res["rows"]}
        speed = [f"{rows[n]['utts_per_s']:.2f} ({rows[n]['utts_per_s'] / base[n]['utts_per_s']:.2f})" for n in sizes]
        memory = [f"{rows[n]['peak_mib']:.0f} ({rows[n]['peak_mib'] / base[n]['peak_mib']:.2f})" for n in sizes]
        lines.append(f"| {res['name']} | " + " | ".join(speed + memory)
                     + f" | {rows[sizes[-1]]['cache_bytes_peak'] / 1e6:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results, opts, machine_name, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for res in results:
        sizes = [r["batch_size"] for r in res["rows"]]
        axes[0].plot(sizes, [r["utts_per_s"] for r in res["rows"]], marker="o", label=res["name"])
        axes[1].plot(sizes, [r["peak_mib"] for r in res["rows"]], marker="o", label=res["name"])
    for ax, title in zip(axes, ("utterances / s", "peak memory of the search of one batch (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("utterances per batch")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Multi-utterance beam search, beam {opts['beam']}, {opts['steps']} tokens: {machine_name}", fontsize=9)
    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="docs/bench_batch_decode")
    parser.add_argument("--utts", type=positive_int, default=64)
    parser.add_argument("--batch_sizes", type=positive_int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=positive_int, default=20)
    parser.add_argument("--beam", type=positive_int, default=10)
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="4 utterances, batch 1 and 4, 3 steps, MHA and MTLA s=2")
    parser.add_argument("--replot", action="store_true", help="redo the table and plot from --out-dir's results.json")
    opts = parser.parse_args(argv)
    out = Path(opts.out_dir)
    if opts.replot:
        report = json.loads((out / "results.json").read_text())
        write_text_atomic(out / "results.md", markdown(report["results"], report["options"], report["machine"]))
        plot(report["results"], report["options"], report["machine"], out / "results.png")
        return
    if opts.quick:
        opts.utts, opts.batch_sizes, opts.steps, opts.beam, opts.variants = 4, [1, 4], 3, 2, ["MHA", "MTLA s=2"]
    conf = {"utts": opts.utts, "batch_sizes": opts.batch_sizes, "steps": opts.steps, "beam": opts.beam,
            "threads": opts.threads}
    torch.set_num_threads(opts.threads)
    machine_name = machine()
    results = []
    for name in opts.variants:
        result = run_in_subprocess(run_config, name, conf)
        results.append(result)
        print(name, " ".join(f"N={r['batch_size']}: {r['utts_per_s']:.2f} utt/s {r['peak_mib']:.0f} MiB"
                             for r in result["rows"]), flush=True)
    print(save_report(out, machine_name, conf, results, markdown, plot))


if __name__ == "__main__":
    main()
