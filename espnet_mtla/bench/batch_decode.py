"""Throughput of the multi-utterance beam search (frame budgets, joint CTC), attention types side by side.

    python -m espnet_mtla.bench.batch_decode [--quick] [--utts 64] [--budgets 1 7000 36000] \\
        [--ctc_weights 0 0.3] [--steps 20] [--out-dir docs/bench_batch_decode]

The paper-size model of ``bench.decode`` (random weights, fp32): 12-layer 512-d encoder (ESPnet's
Transformer encoder, or a torch-only one of the same size where ESPnet is not installed),
9-layer 512-d decoder-only stack, a CTC output layer. ``--utts`` utterances of 2-12 s of
fbank frames (a fixed draw), each encoded on its own (the exact default of stage 8), then
searched by ``MultiUtteranceBeamSearch`` (beam 10) in the batches a frame budget gives
(``--batch_frames``: length-sorted, padded frames per batch <= budget; budget 1 = one utterance
per batch), each utterance for exactly ``--steps`` tokens (<eos> masked, so every attention
type does the same work), with CTC weight 0 and 0.3 (pre-beam 15). Reported apart: encoder
time and search time (CTC posteriors included) over all utterances, utterances/s over both,
and the peak memory of the search of the batch of the longest utterances above what was
allocated before it. The per-utterance path of ESPnet (``BatchBeamSearch`` with our decoder
and ESPnet's ``CTCPrefixScorer``, one utterance at a time: what stage 8 ran before) is timed
for ``--baseline_variants``. Each attention type runs in its own subprocess.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

from espnet_mtla.bench.common import (VARIANTS, VOCAB, NoEosDecoder, build_model, espnet_search,  # noqa: E402
                                      machine, positive_int, parse_or_replot, run_in_subprocess, save_figure, save_report)
from espnet_mtla.metrics.memory import peak_allocated_mib  # noqa: E402

DEFAULT_BUDGETS = [1, 7000, 36000]  # about 1, 8 and 32 utterances per batch for the default draw


def utterance_frames(count: int, seed: int = 1):
    """Fbank frame counts of ``count`` utterances, 2-12 s, a fixed draw."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(count, generator=gen) * 1000 + 200).long().tolist()


def espnet_per_utterance(decoder, ctc_layer, encoded, opts, ctc_weight):
    """Seconds of ESPnet's BatchBeamSearch, one utterance at a time (stage 8's former path)."""
    from espnet.nets.scorers.ctc import CTCPrefixScorer
    from espnet2.asr.ctc import CTC

    ctc_scorer = None
    if ctc_weight > 0:
        ctc = CTC(VOCAB, 512).eval()
        ctc.ctc_lo = ctc_layer
        ctc_scorer = CTCPrefixScorer(ctc, VOCAB - 1)
    search = espnet_search(decoder, opts["beam"], ctc_scorer, ctc_weight)
    start = time.perf_counter()
    for enc in encoded:
        hyps = search(enc, maxlenratio=-opts["steps"])
        assert len(hyps[0].yseq) == opts["steps"] + 2
    return time.perf_counter() - start


def run_config(name, opts, queue):
    from espnet_mtla.search import MultiUtteranceBeamSearch
    from espnet_mtla.search.batching import budget_batches

    torch.manual_seed(0)
    torch.set_num_threads(opts["threads"])
    encoder, decoder, ctc_layer = build_model(*VARIANTS[name])
    eos = VOCAB - 1
    frames = utterance_frames(opts["utts"])
    gen = torch.Generator().manual_seed(2)
    feats = [torch.randn(n, 80, generator=gen) for n in frames]
    rows = []
    with torch.no_grad():
        encoder(feats[0][None], torch.tensor([frames[0]]))  # warm-up
        start = time.perf_counter()
        encoded = [encoder(f[None], torch.tensor([len(f)]))[0][0] for f in feats]  # each on its own, as stage 8
        encode_s = time.perf_counter() - start

        def run_search(search, ctc_weight, indices):
            enc = torch.nn.utils.rnn.pad_sequence([encoded[i] for i in indices], batch_first=True)
            lens = torch.tensor([len(encoded[i]) for i in indices])
            ctc_logp = ctc_layer(enc).log_softmax(-1) if ctc_weight > 0 else None
            result = search(enc, lens, maxlenratio=-opts["steps"], ctc_logp=ctc_logp)
            assert all(len(h[0].yseq) == opts["steps"] + 2 for h in result.hypotheses), \
                "every search runs exactly --steps steps"
            return result.cache_bytes_peak, getattr(result, "cache_bytes_allocated_peak", None)

        for ctc_weight in opts["ctc_weights"]:
            search = MultiUtteranceBeamSearch(NoEosDecoder(decoder, eos), eos, eos, opts["beam"],
                                              decoder_weight=1.0 - ctc_weight, ctc_weight=ctc_weight,
                                              pre_beam_size=int(1.5 * opts["beam"]), nbest=1)
            run_search(search, ctc_weight, [0])  # warm-up
            for budget in opts["budgets"]:
                batches, _ = budget_batches(frames, budget)
                start = time.perf_counter()
                for indices in batches:
                    run_search(search, ctc_weight, indices)
                search_s = time.perf_counter() - start
                cache_bytes_peak = []
                peak = peak_allocated_mib(lambda: cache_bytes_peak.append(run_search(search, ctc_weight, batches[0])))
                rows.append({"ctc_weight": ctc_weight, "budget": budget, "batches": len(batches),
                             "utts_per_batch": opts["utts"] / len(batches), "encode_s": encode_s,
                             "search_s": search_s, "utts_per_s": opts["utts"] / (encode_s + search_s),
                             "peak_mib": peak, "cache_bytes_peak": cache_bytes_peak[0][0],
                             "cache_bytes_allocated_peak": cache_bytes_peak[0][1]})
        baselines = []
        if name in opts["baseline_variants"]:
            for ctc_weight in opts["ctc_weights"]:
                search_s = espnet_per_utterance(decoder, ctc_layer, encoded, opts, ctc_weight)
                baselines.append({"ctc_weight": ctc_weight, "search_s": search_s,
                                  "utts_per_s": opts["utts"] / (encode_s + search_s)})
    queue.put({"name": name, "rows": rows, "espnet_per_utterance": baselines})


def _rows(result, ctc_weight):
    return {r["budget"]: r for r in result["rows"] if r["ctc_weight"] == ctc_weight}


def markdown(results, opts, machine_name) -> str:
    budgets, lines = opts["budgets"], []
    base = next(res for res in results if res["name"] == "MHA")
    lines.append(f"Machine: {machine_name}. {opts['utts']} utterances of 2-12 s, each encoded on its own, beam "
                 f"{opts['beam']}, {opts['steps']} tokens each; (x MHA) = ratio to MHA at the same budget and CTC "
                 f"weight; utterances per batch in the column heads.")
    for ctc_weight in opts["ctc_weights"]:
        counts = {b: r["utts_per_batch"] for b, r in _rows(base, ctc_weight).items()}
        lines += ["", f"**CTC weight {ctc_weight}**", "",
                  "| attention | encoder s | " + " | ".join(f"search s, {counts[b]:.1f}/batch (x MHA)" for b in budgets)
                  + " | " + " | ".join(f"utts/s, {counts[b]:.1f}/batch (x MHA)" for b in budgets)
                  + f" | peak MiB, {counts[budgets[-1]]:.1f}/batch (x MHA) | KV cache MiB used / held |",
                  "|---|---|" + "---|" * (2 * len(budgets) + 2)]
        ref = _rows(base, ctc_weight)
        for res in results:
            rows = _rows(res, ctc_weight)
            search = [f"{rows[b]['search_s']:.1f} ({ref[b]['search_s'] / rows[b]['search_s']:.2f}x faster)"
                      for b in budgets]
            speed = [f"{rows[b]['utts_per_s']:.2f} ({rows[b]['utts_per_s'] / ref[b]['utts_per_s']:.2f})" for b in budgets]
            last = budgets[-1]
            held = rows[last].get("cache_bytes_allocated_peak")
            cache = f"{rows[last]['cache_bytes_peak'] / 2**20:.0f} / {'-' if held is None else f'{held / 2**20:.0f}'}"
            lines.append(f"| {res['name']} | {rows[last]['encode_s']:.1f} | " + " | ".join(search + speed)
                         + f" | {rows[last]['peak_mib']:.0f} ({rows[last]['peak_mib'] / ref[last]['peak_mib']:.2f}) | {cache} |")
    baselines = [(res["name"], b) for res in results for b in res.get("espnet_per_utterance", [])]
    if baselines:
        lines += ["", "**ESPnet's per-utterance search** (`BatchBeamSearch`, one utterance at a time: stage 8 before)",
                  "", "| attention | CTC weight | search s | utts/s | our batched utts/s at "
                  f"{_rows(base, opts['ctc_weights'][0])[budgets[-1]]['utts_per_batch']:.1f}/batch (x per-utterance) |",
                  "|---|---|---|---|---|"]
        for name, b in baselines:
            ours = _rows(next(r for r in results if r["name"] == name), b["ctc_weight"])[budgets[-1]]
            lines.append(f"| {name} | {b['ctc_weight']} | {b['search_s']:.1f} | {b['utts_per_s']:.2f} | "
                         f"{ours['utts_per_s']:.2f} ({ours['utts_per_s'] / b['utts_per_s']:.2f}x) |")
    return "\n".join(lines) + "\n"


def plot(results, opts, machine_name, path: Path) -> None:
    from espnet_mtla.recipe.figures import pyplot

    plt = pyplot()

    weights = opts["ctc_weights"]
    fig, axes = plt.subplots(1, len(weights), figsize=(6 * len(weights), 4), squeeze=False)
    for ax, ctc_weight in zip(axes[0], weights):
        for res in results:
            rows = [r for r in res["rows"] if r["ctc_weight"] == ctc_weight]
            ax.plot([r["utts_per_batch"] for r in rows], [r["search_s"] for r in rows], marker="o", label=res["name"])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("utterances per batch (frame budget)")
        ax.set_title(f"search time for {opts['utts']} utterances (s), CTC weight {ctc_weight}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Multi-utterance beam search, beam {opts['beam']}, {opts['steps']} tokens: {machine_name}", fontsize=9)
    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="docs/bench_batch_decode")
    parser.add_argument("--utts", type=positive_int, default=64)
    parser.add_argument("--budgets", type=positive_int, nargs="+", default=DEFAULT_BUDGETS,
                        help="padded fbank frames per batch (--batch_frames)")
    parser.add_argument("--ctc_weights", type=float, nargs="+", default=[0.0, 0.3])
    parser.add_argument("--steps", type=positive_int, default=20)
    parser.add_argument("--beam", type=positive_int, default=10)
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--baseline_variants", nargs="*", default=["MHA", "MTLA s=2"], choices=list(VARIANTS),
                        help="also time ESPnet's per-utterance search for these (needs ESPnet)")
    parser.add_argument("--quick", action="store_true", help="4 utterances, 2 budgets, 3 steps, MHA and MTLA s=2")
    opts = parse_or_replot(parser, argv, markdown, plot)
    if opts is None:
        return
    out = Path(opts.out_dir)
    if opts.quick:
        opts.utts, opts.budgets, opts.steps, opts.beam, opts.variants = 4, [1, 4000], 3, 2, ["MHA", "MTLA s=2"]
    try:
        import espnet  # noqa: F401
    except ImportError:
        opts.baseline_variants = []
    conf = {"utts": opts.utts, "budgets": opts.budgets, "ctc_weights": opts.ctc_weights, "steps": opts.steps,
            "beam": opts.beam, "threads": opts.threads, "baseline_variants": opts.baseline_variants}
    torch.set_num_threads(opts.threads)
    machine_name = machine()
    results = []
    for name in opts.variants:
        result = run_in_subprocess(run_config, name, conf)
        results.append(result)
        for r in result["rows"]:
            print(f"{name:18s} ctc {r['ctc_weight']} budget {r['budget']:6d} ({r['utts_per_batch']:.1f}/batch): "
                  f"encoder {r['encode_s']:.1f} s, search {r['search_s']:.1f} s, {r['utts_per_s']:.2f} utt/s, "
                  f"peak {r['peak_mib']:.0f} MiB", flush=True)
        for b in result["espnet_per_utterance"]:
            print(f"{name:18s} ctc {b['ctc_weight']} ESPnet per utterance: search {b['search_s']:.1f} s, "
                  f"{b['utts_per_s']:.2f} utt/s", flush=True)
    print(save_report(out, machine_name, conf, results, markdown, plot))


if __name__ == "__main__":
    main()
