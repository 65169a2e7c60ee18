"""Beam-search decoding benchmark of the paper-size model, every attention type side by side.

    python -m espnet_mtla.bin.bench_decode [--quick] [--seconds S] [--steps N] [--out-dir docs/bench_decode]

Model (random weights, fp32): 80-d fbank -> conv2d subsampling (x4) -> 12-layer 512-d
Transformer encoder -> projector (stack 2 frames) -> 9-layer 512-d decoder-only stack,
8 heads, FFN 2048; MLA/MTLA with kv_lora_rank 256, qk_nope 64, qk_rope 32, v_head 64.
Each utterance is ``--seconds`` of audio (10 s: 1000 fbank frames -> 250 encoder frames -> 125
prefix positions), decoded with ESPnet's BatchBeamSearch, beam 10, for exactly ``--steps`` tokens
(<eos> is masked, so every attention type does the same work).

Reported per attention type (each in its own subprocess): encoder time, search time per
utterance and per step, peak memory of the search above what was allocated before it
(weights, encoder output: PyTorch allocator events), and KV-cache bytes at the end.
"""

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

from espnet_mtla.bin.bench_common import (machine, peak_allocated_mib, positive_int, run_in_subprocess,
                                          save_figure, save_report)  # noqa: E402
from espnet_mtla.fileio import write_text_atomic  # noqa: E402

VOCAB = 5000
MLA = {"kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64}
VARIANTS = {  # name -> (attention_type, extra decoder_conf)
    "MHA": ("mha", {}),
    "MQA": ("mqa", {}),
    "GQA (2 kv heads)": ("gqa", {"gqa_conf": {"num_kv_heads": 2}}),
    "MLA": ("mla", {"mla_conf": MLA}),
    "MTLA s=2": ("mtla", {"mla_conf": MLA, "mtla_conf": {"down_rate": 2}}),
    "MTLA s=4": ("mtla", {"mla_conf": MLA, "mtla_conf": {"down_rate": 4}}),
}


def build_model(attention_type, extra):
    from espnet2.asr.encoder.transformer_encoder import TransformerEncoder

    from espnet_mtla.decoder import DecoderOnlyDecoder

    encoder = TransformerEncoder(80, output_size=512, attention_heads=8, linear_units=2048, num_blocks=12,
                                 dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0,
                                 input_layer="conv2d")
    decoder = DecoderOnlyDecoder(VOCAB, 512, attention_type=attention_type, model_dim=512, attention_heads=8,
                                 linear_units=2048, num_blocks=9, dropout_rate=0.0, prefix_stack=2,
                                 prefix_hidden=256, **extra)
    return encoder.eval(), decoder.eval()


class NoEos:
    """Full scorer that forbids <eos>: the search then runs to its maximum length (ESPnet
    appends <eos> after the last step), so every attention type does the same work."""

    def __init__(self, eos):
        self.eos = eos

    def init_state(self, x):
        return None

    def batch_init_state(self, x):
        return None

    def select_state(self, state, i, new_id=None):
        return None

    def batch_score(self, ys, states, xs):
        scores = torch.zeros(ys.shape[0], VOCAB)
        scores[:, self.eos] = -math.inf
        return scores, [None] * ys.shape[0]


def run_config(name, opts, queue):
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.scorer_interface import BatchScorerInterface

    torch.manual_seed(0)
    torch.set_num_threads(opts["threads"])
    encoder, decoder = build_model(*VARIANTS[name])
    eos = VOCAB - 1
    no_eos = type("NoEosScorer", (NoEos, BatchScorerInterface), {})(eos)
    search = BatchBeamSearch(scorers={"decoder": decoder, "no_eos": no_eos}, weights={"decoder": 1.0, "no_eos": 1.0},
                             beam_size=opts["beam"], vocab_size=VOCAB, sos=eos, eos=eos, pre_beam_score_key="full")
    gen = torch.Generator().manual_seed(1)
    frames = opts["seconds"] * 100  # 10 ms fbank hop
    feats = torch.randn(opts["utts"] + 1, 1, frames, 80, generator=gen)
    encode_s, search_s = [], []
    with torch.no_grad():
        for i in range(opts["utts"] + 1):  # the first utterance warms up
            start = time.perf_counter()
            enc, _, _ = encoder(feats[i], torch.tensor([frames]))
            mid = time.perf_counter()
            hyps = search(enc[0], maxlenratio=-opts["steps"])
            end = time.perf_counter()
            assert len(hyps[0].yseq) == opts["steps"] + 2, "every search must run exactly --steps steps"
            if i:
                encode_s.append(mid - start)
                search_s.append(end - mid)
        peak = peak_allocated_mib(lambda: search(enc[0], maxlenratio=-opts["steps"]))
    caches = decoder.active_caches
    queue.put({
        "name": name,
        "encode_s": statistics.median(encode_s),
        "search_s": statistics.median(search_s),
        "ms_per_step": statistics.median(search_s) / opts["steps"] * 1000,
        "peak_mib": peak,
        "cache_bytes": caches.nbytes(),
        "weights_mib": sum(p.numel() * p.element_size() for p in decoder.parameters()) / 2**20,
    })


def run_all(names, opts):
    results = []
    for name in names:
        result = run_in_subprocess(run_config, name, opts)
        results.append(result)
        print(f"{name:18s} encode {result['encode_s']:.2f}s  search {result['search_s']:.2f}s "
              f"({result['ms_per_step']:.1f} ms/step)  peak {result['peak_mib']:.1f} MiB  "
              f"cache {result['cache_bytes'] / 1e6:.2f} MB", flush=True)
    return results


def markdown(results, opts, machine_name) -> str:
    base = next(r for r in results if r["name"] == "MHA")
    lines = [
        f"Machine: {machine_name}. Beam {opts['beam']}, {opts['steps']} decoding steps, {opts['seconds']} s "
        f"utterances ({opts['seconds'] * 25 // 2} prefix positions), median of {opts['utts']} utterances.",
        "",
        "| attention | search s/utt (x MHA) | speed-up vs MHA | ms/step | peak MiB above weights (x MHA) | "
        "KV cache MB at end (x MHA) | cache reduction vs MHA | encoder s/utt |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['search_s']:.3f} ({r['search_s'] / base['search_s']:.2f}) | "
            f"{base['search_s'] / r['search_s']:.2f}x | {r['ms_per_step']:.1f} | "
            f"{r['peak_mib']:.1f} ({r['peak_mib'] / base['peak_mib']:.2f}) | "
            f"{r['cache_bytes'] / 1e6:.2f} ({r['cache_bytes'] / base['cache_bytes']:.3f}) | "
            f"{base['cache_bytes'] / r['cache_bytes']:.1f}x | {r['encode_s']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(results, opts, machine_name, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in results]
    panels = [
        ("search time per step (ms)", [r["ms_per_step"] for r in results]),
        ("peak memory of the search above weights (MiB)", [r["peak_mib"] for r in results]),
        ("KV cache at the end of the search (MB)", [r["cache_bytes"] / 1e6 for r in results]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (title, values) in zip(axes, panels):
        bars = ax.bar(range(len(names)), values, color=["#888888"] * 3 + ["#4477aa"] + ["#cc6677"] * (len(names) - 4))
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
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="10 steps, 1 utterance, MHA and MTLA s=2 only")
    parser.add_argument("--replot", action="store_true", help="redo the table and plot from --out-dir's results.json")
    opts = parser.parse_args(argv)
    out = Path(opts.out_dir)
    if opts.replot:
        if not (out / "results.json").is_file():
            parser.error(f"--replot needs {out / 'results.json'}: run the benchmark with --out-dir {out} first")
        report = json.loads((out / "results.json").read_text())
        write_text_atomic(out / "results.md", markdown(report["results"], report["options"], report["machine"]))
        plot(report["results"], report["options"], report["machine"], out / "results.png")
        return
    names = list(VARIANTS)
    if opts.quick:
        opts.steps, opts.utts, names = 10, 1, ["MHA", "MTLA s=2"]
    conf = {"steps": opts.steps, "beam": opts.beam, "utts": opts.utts, "threads": opts.threads,
            "seconds": opts.seconds}
    torch.set_num_threads(opts.threads)
    machine_name = machine()
    results = run_all(names, conf)
    print(save_report(out, machine_name, conf, results, markdown, plot))


if __name__ == "__main__":
    main()
