"""What shallow fusion of a language model costs in the multi-utterance search, LMs side by side.

    python -m espnet_mtla.bench.lm_fusion [--quick] [--utts 32] [--beam 10] [--tokens 30] \\
        [--out-dir docs/bench_lm_fusion]

The acoustic model: the paper-size encoder-decoder decoder (``cached_transformer``, 6 layers,
512-d, 8 heads, FFN 2048, 5000 tokens, MTLA s=2 self-attention with a latent source memory)
over random 10 s encoder outputs (250 frames; the encoder's time is the same for every row and
left out). ``--utts`` utterances in one search, beam ``--beam``, <eos> forbidden so that every
search runs exactly ``--tokens`` steps (the same hypotheses count in every row). Fused with
weight 0.3, LMs of one size (6 layers, 512-d, 8 heads, FFN 2048, 5000 tokens, random weights):

- none: the search alone;
- ESPnet's ``TransformerLM`` (``lm: transformer``): no KV cache; at every step it re-projects the
  keys and values of every earlier token from each layer's saved outputs;
- ours, MHA (``lm: decoder_only``): its own KV caches, fed only the newest token;
- ours, MTLA s=2: a cache of merged latents, the paper's latent sizes.

Time: the best of ``--repeats`` searches; added time = the row's minus the search without an LM.
LM cache: the LM's bytes held after the last step (ESPnet's: the layer outputs it keeps).
Peak: PyTorch's CPU allocations during one search. Each row runs in its own subprocess.
``--profile`` instead splits each of our LMs' time into steps and beam reorders and prints
torch.profiler's top operators of one step.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

from espnet_mtla.bench.common import (EMBED, HEADS, PAPER_MLA, VOCAB, NoEosDecoder, machine,  # noqa: E402
                                      parse_or_replot, positive_int, run_in_subprocess, save_report)
from espnet_mtla.metrics.memory import PeakMemory  # noqa: E402

EOS = VOCAB - 1
FRAMES = 250  # 10 s of speech after 4x subsampling
LM_WEIGHT = 0.3
SIZE = dict(attention_heads=HEADS, linear_units=2048, num_blocks=6, dropout_rate=0.0)
LMS = {  # row name -> what builds the LM (None: no LM)
    "no LM": None,
    "ESPnet TransformerLM": ("transformer", None),
    "ours MHA": ("decoder_only", "mha"),
    "ours MTLA s=2": ("decoder_only", "mtla"),
}


def build_lm(kind: str, attention_type):
    if kind == "transformer":
        from espnet2.lm.transformer_lm import TransformerLM

        return TransformerLM(VOCAB, pos_enc="sinusoidal", embed_unit=EMBED, att_unit=EMBED, head=HEADS,
                             unit=SIZE["linear_units"], layer=SIZE["num_blocks"], dropout_rate=0.0,
                             positional_dropout_rate=0.0, attention_dropout_rate=0.0)
    from espnet_mtla.lm import DecoderOnlyLM

    extra = {"mla_conf": PAPER_MLA, "mtla_conf": {"down_rate": 2}} if attention_type == "mtla" else {}
    return DecoderOnlyLM(VOCAB, attention_type=attention_type, model_dim=EMBED, **SIZE, **extra)


def run_config(name, opts, queue):
    from espnet_mtla.decoder.cached_transformer import CachedTransformerDecoder
    from espnet_mtla.search import MultiUtteranceBeamSearch

    torch.set_num_threads(opts["threads"])
    torch.manual_seed(0)
    decoder = CachedTransformerDecoder(VOCAB, EMBED, attention_type="mtla", source_attention="auto",
                                       mla_conf=PAPER_MLA, mtla_conf={"down_rate": 2}, positional_dropout_rate=0.0,
                                       **SIZE).eval()
    lm = None if LMS[name] is None else build_lm(*LMS[name]).eval()
    search = MultiUtteranceBeamSearch(NoEosDecoder(decoder, EOS), EOS, EOS, opts["beam"], lm=lm,
                                      lm_weight=LM_WEIGHT if lm is not None else 0.0)
    enc = torch.randn(opts["utts"], opts["frames"], EMBED, generator=torch.Generator().manual_seed(1))
    lengths = torch.full((opts["utts"],), opts["frames"])
    times = []
    with torch.no_grad():
        search(enc[:1, :8], lengths[:1].clamp(max=8), maxlenratio=-2)  # warm-up: absorbed weights built
        for _ in range(opts["repeats"]):
            start = time.perf_counter()
            result = search(enc, lengths, maxlenratio=-opts["tokens"])
            times.append(time.perf_counter() - start)
        assert all(len(h[0].yseq) == opts["tokens"] + 2 for h in result.hypotheses), "every search runs --tokens steps"
        with PeakMemory("cpu", cpu="allocator") as peak:
            search(enc, lengths, maxlenratio=-opts["tokens"])
    queue.put({"name": name, "search_s": min(times), "lm_cache_bytes": result.lm_cache_bytes_peak,
               "decoder_cache_bytes": result.cache_bytes_peak, "peak_mib": peak.mib,
               "lm_params": sum(p.numel() for p in lm.parameters()) if lm is not None else 0})


def profile_lm_step(name: str, rows: int, tokens: int, utts: int) -> str:
    """Where one LM's time goes in the search: its steps and beam reorders over ``tokens`` steps
    at ``rows`` hypotheses, and torch.profiler's top operators of the last step."""
    from espnet_mtla.search.fusion import fused_language_model

    torch.manual_seed(0)
    lm = build_lm(*LMS[name]).eval()
    ids = torch.randint(0, EOS, (rows, tokens + 2))
    moved = torch.arange(rows).flip(0)  # every row moves, as a beam's parents do

    def fresh():
        fused = fused_language_model(lm, utts, tokens + 2, torch.zeros(utts, 4, EMBED))
        fused.reorder(torch.arange(utts).repeat_interleave(rows // utts))
        return fused

    with torch.no_grad():
        fused = fresh()
        for t in range(3):  # warm-up
            fused(ids, t)
        fused, step_s, reorder_s = fresh(), 0.0, 0.0
        for t in range(tokens):
            start = time.perf_counter()
            fused(ids, t)
            middle = time.perf_counter()
            fused.reorder(moved)
            step_s, reorder_s = step_s + middle - start, reorder_s + time.perf_counter() - middle
        fused = fresh()
        for t in range(tokens - 1):
            fused(ids, t)
            fused.reorder(moved)
        with torch.profiler.profile() as prof:
            fused(ids, tokens - 1)
            fused.reorder(moved)
    return (f"{name}: {tokens} steps at {rows} rows: LM steps {step_s:.2f} s, beam reorders {reorder_s:.2f} s; "
            f"the last step and reorder:\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def markdown(results, opts, machine_name) -> str:
    by = {r["name"]: r for r in results}
    added = {r["name"]: r["search_s"] - by["no LM"]["search_s"] for r in results if r["name"] != "no LM"}
    mha_cache = by["ours MHA"]["lm_cache_bytes"] if "ours MHA" in by else None

    def added_vs(name, other):
        return f"{added[name] / added[other]:.2f}x" if other in added and name != other and added[other] > 0 else "-"

    def cache_vs_mha(name):
        ours = by[name]["lm_cache_bytes"]
        if not mha_cache or not ours or name == "ours MHA":
            return "-"
        return f"{mha_cache / ours:.1f}x smaller" if ours < mha_cache else f"{ours / mha_cache:.2f}x"

    lines = [f"Machine: {machine_name}. {opts['utts']} utterances in one search, beam {opts['beam']} "
             f"({opts['utts'] * opts['beam']} hypotheses per step), {opts['tokens']} tokens each, LM weight "
             f"{LM_WEIGHT}; best of {opts['repeats']}.", "",
             "| language model | search s | time fusion adds (s) | added vs ESPnet's | added vs ours MHA "
             "| LM cache (MiB) | LM cache vs ours MHA | peak MiB |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        name = r["name"]
        if name == "no LM":
            lines.append(f"| {name} | {r['search_s']:.2f} | - | - | - | - | - | {r['peak_mib']:.0f} |")
            continue
        lines.append(f"| {name} | {r['search_s']:.2f} | {added[name]:.2f} | {added_vs(name, 'ESPnet TransformerLM')} "
                     f"| {added_vs(name, 'ours MHA')} | {r['lm_cache_bytes'] / 2**20:.1f} | {cache_vs_mha(name)} "
                     f"| {r['peak_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utts", type=positive_int, default=32, help="utterances in one search")
    parser.add_argument("--beam", type=positive_int, default=10)
    parser.add_argument("--tokens", type=positive_int, default=30, help="steps per search (about 3 per second)")
    parser.add_argument("--frames", type=positive_int, default=FRAMES, help="encoder frames per utterance")
    parser.add_argument("--repeats", type=positive_int, default=2)
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--lms", nargs="+", default=list(LMS), choices=list(LMS))
    parser.add_argument("--quick", action="store_true", help="4 utterances, beam 2, 4 tokens, 20 frames, 1 repeat")
    parser.add_argument("--out-dir", default="docs/bench_lm_fusion")
    parser.add_argument("--profile", action="store_true",
                        help="instead: where each of our LMs' time goes (steps, reorders, torch.profiler's top ops)")
    opts = parse_or_replot(parser, argv, markdown, None)
    if opts is None:
        return
    if "no LM" not in opts.lms:
        parser.error("--lms needs 'no LM': the time fusion adds is measured against it")
    if opts.quick:
        opts.utts, opts.beam, opts.tokens, opts.frames, opts.repeats = 4, 2, 4, 20, 1
    options = {k: getattr(opts, k) for k in ("utts", "beam", "tokens", "frames", "repeats", "threads")}
    torch.set_num_threads(opts.threads)
    if opts.profile:
        for name in (n for n in opts.lms if LMS[n] is not None and LMS[n][0] == "decoder_only"):
            print(profile_lm_step(name, opts.utts * opts.beam, opts.tokens, opts.utts), flush=True)
        return
    results = []
    for name in opts.lms:
        results.append(run_in_subprocess(run_config, name, options))
        print(f"{name}: {results[-1]['search_s']:.2f} s", flush=True)
    print(save_report(Path(opts.out_dir), machine(), options, results, markdown, None))


if __name__ == "__main__":
    main()
