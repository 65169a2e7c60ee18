"""The encoder-decoder decoder in beam search: ESPnet's ``TransformerDecoder`` against
``decoder: cached_transformer``, side by side in one run.

    python -m espnet_mtla.bench.encdec [--quick] [--seconds 10 60] [--out-dir docs/bench_encdec]

A paper-size decoder (6 layers, 512-d, 8 heads, FFN 2048, 5000 tokens), random weights, fp32,
beam 10, <eos> forbidden so that every search emits the same number of tokens (``--tokens``
per utterance length), over the encoder output of 10 s and 60 s utterances (a 12-layer 512-d
encoder with 4x subsampling gives 25 frames per second; the encoder's own time is the same for
every decoder and is left out: the searches start from its output, random here):

    ESPnet         ESPnet's TransformerDecoder through ESPnet's BatchBeamSearch, one utterance at
                   a time (re-projects every earlier token and the whole encoder output per step)
    ours MHA       cached_transformer on ESPnet's weights (MHA self-attention, per-head source
                   memory): same hypotheses; one at a time, and 32 utterances per search
    ours MTLA s=2  MTLA self-attention (s=2) and a latent source memory merged over 2 frames

Columns: search time per utterance, peak memory of the search (PyTorch's allocations, above the
encoder output; measured in the timed runs themselves, whose profiler costs every decoder alike),
and bytes held per utterance (decoder state: ESPnet's layer outputs of every
hypothesis; ours: self-attention caches of its hypotheses + its source memory). ESPnet decodes one
utterance at a time in any case: its per-utterance time is measured on ``--espnet_utts``
utterances and stands for its 32-utterance row.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from espnet_mtla.bench.common import (EMBED, HEADS, PAPER_MLA, VOCAB, NoEosDecoder, espnet_search,  # noqa: E402
                                      machine, parse_or_replot, positive_int, save_report)
from espnet_mtla.metrics.memory import PeakMemory  # noqa: E402

FRAMES_PER_SECOND = 25  # 10 ms frames, 4x subsampled
DECODER = dict(attention_heads=HEADS, linear_units=2048, num_blocks=6, dropout_rate=0.0, positional_dropout_rate=0.0)
EOS = VOCAB - 1


def build_decoders():
    """(ESPnet's decoder, ours with MHA on its weights, ours with MTLA s=2 and a latent source)."""
    from espnet2.asr.decoder.transformer_decoder import TransformerDecoder

    from espnet_mtla.decoder.cached_transformer import CachedTransformerDecoder

    torch.manual_seed(0)
    espnet = TransformerDecoder(VOCAB, EMBED, **DECODER).eval()
    mha = CachedTransformerDecoder(VOCAB, EMBED, attention_type="mha", **DECODER).eval()
    mha.load_state_dict(espnet.state_dict())
    mtla = CachedTransformerDecoder(VOCAB, EMBED, attention_type="mtla", source_attention="auto",
                                    mla_conf=PAPER_MLA, mtla_conf={"down_rate": 2}, **DECODER).eval()
    return espnet, mha, mtla


def encoder_outputs(num_utts: int, seconds: float, seed: int = 1) -> torch.Tensor:
    frames = int(seconds * FRAMES_PER_SECOND)
    return torch.randn(num_utts, frames, EMBED, generator=torch.Generator().manual_seed(seed))


def espnet_rows(decoder, enc, tokens, beam):
    """ESPnet's search, one utterance at a time: (seconds per utterance, best token ids, peak MiB)."""
    search = espnet_search(decoder, beam)
    times, best, peaks = [], [], []
    with torch.no_grad():
        for x in enc:
            with PeakMemory("cpu", cpu="allocator") as peak:  # its profiler costs the same for every decoder
                start = time.perf_counter()
                hyps = search(x, maxlenratio=-tokens, minlenratio=0.0)
                times.append(time.perf_counter() - start)
            peaks.append(peak.mib)
            best.append(hyps[0].yseq[1:-1].tolist())
    return statistics.mean(times), best, max(peaks)


def espnet_state_bytes(enc, tokens, beam) -> int:
    """What ESPnet's search holds per utterance: every layer's outputs for every earlier token of
    every hypothesis (its 'cache'), and the encoder output."""
    return 4 * (beam * tokens * EMBED * DECODER["num_blocks"] + enc.shape[1] * EMBED)


def our_rows(decoder, enc, tokens, beam, batch):
    """Our search over ``batch`` utterances at a time: (seconds per utterance, best token ids, peak
    MiB of one search, bytes held per utterance)."""
    from espnet_mtla.search import MultiUtteranceBeamSearch

    search = MultiUtteranceBeamSearch(NoEosDecoder(decoder, EOS), EOS, EOS, beam)
    lengths = torch.full((enc.shape[0],), enc.shape[1])
    times, best, held, peaks = [], [], 0, []
    with torch.no_grad():
        search(enc[:1, :8], lengths[:1].clamp(max=8), maxlenratio=-2)  # warm-up: absorbed weights built
        for start in range(0, enc.shape[0], batch):
            part = enc[start: start + batch]
            with PeakMemory("cpu", cpu="allocator") as peak:
                begin = time.perf_counter()
                result = search(part, lengths[: len(part)], maxlenratio=-tokens)
                times.append((time.perf_counter() - begin) / len(part))
            peaks.append(peak.mib)
            best += [hyps[0].yseq[1:-1].tolist() for hyps in result.hypotheses]
            held = result.cache_bytes_peak // len(part)
    return statistics.mean(times), best, max(peaks), held


def markdown(results, options, machine_name) -> str:
    lines = [f"Machine: {machine_name}. Beam {options['beam']}, <eos> forbidden; "
             f"{options['utts']} utterances per length ({options['espnet_utts']} for ESPnet, one at a time).", "",
             "| utterance | tokens | decoder | utterances per search | time per utterance (s) | speed vs ESPnet "
             "| peak memory (MiB) | bytes held per utterance | vs ours MHA (time, bytes) | same hypotheses as ESPnet |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = next(b for b in results if b["seconds"] == r["seconds"] and b["decoder"] == "ESPnet")
        ours_mha = next((b for b in results if b["seconds"] == r["seconds"] and b["decoder"] == "ours MHA"
                         and b["batch"] == r["batch"]), None)
        versus = "-" if ours_mha is None or r is ours_mha or r["decoder"] == "ESPnet" else (
            f"{ours_mha['time_per_utt'] / r['time_per_utt']:.2f}x, {ours_mha['held_bytes'] / r['held_bytes']:.1f}x fewer")
        same = {True: "yes", False: "no", None: "-"}[r.get("same_as_espnet")]
        lines.append(f"| {r['seconds']:g} s | {r['tokens']} | {r['decoder']} | {r['batch']} | {r['time_per_utt']:.3f} "
                     f"| {base['time_per_utt'] / r['time_per_utt']:.1f}x | {r['peak_mib']:.1f} "
                     f"| {r['held_bytes'] / 2**20:.2f} MiB | {versus} | {same} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--tokens", type=positive_int, nargs="+", default=[30, 180],
                        help="tokens per utterance, one per --seconds (about 3 per second of speech)")
    parser.add_argument("--utts", type=positive_int, default=32, help="utterances per length (ours)")
    parser.add_argument("--espnet_utts", type=positive_int, default=1,
                        help="utterances ESPnet decodes (slow: 0.1 s per step at 10 s, 0.6 s at 60 s)")
    parser.add_argument("--beam", type=positive_int, default=10)
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="2 s and 4 s, 4 tokens, 4 utterances, beam 2")
    parser.add_argument("--out-dir", default="docs/bench_encdec")
    opts = parse_or_replot(parser, argv, markdown, None)
    if opts is None:
        return
    if len(opts.tokens) != len(opts.seconds):
        parser.error("--tokens needs one value per --seconds")
    if opts.quick:
        opts.seconds, opts.tokens, opts.utts, opts.espnet_utts, opts.beam = [2.0, 4.0], [4, 4], 4, 1, 2
    torch.set_num_threads(opts.threads)
    espnet, mha, mtla = build_decoders()
    results = []
    for seconds, tokens in zip(opts.seconds, opts.tokens):
        enc = encoder_outputs(opts.utts, seconds)
        row = dict(seconds=seconds, tokens=tokens)
        spent, espnet_best, peak = espnet_rows(espnet, enc[: opts.espnet_utts], tokens, opts.beam)
        results.append(dict(row, decoder="ESPnet", batch=1, time_per_utt=spent, peak_mib=peak,
                            held_bytes=espnet_state_bytes(enc, tokens, opts.beam), same_as_espnet=None))
        print(f"{seconds:g} s: ESPnet {spent:.2f} s per utterance", flush=True)
        for name, decoder in (("ours MHA", mha), ("ours MTLA s=2", mtla)):
            for batch in (1, opts.utts):
                utts = enc[: opts.espnet_utts] if batch == 1 else enc
                spent, best, peak, held = our_rows(decoder, utts, tokens, opts.beam, batch)
                same = best[: opts.espnet_utts] == espnet_best if name == "ours MHA" else None
                results.append(dict(row, decoder=name, batch=batch, time_per_utt=spent, peak_mib=peak,
                                    held_bytes=held, same_as_espnet=same))
                print(f"{seconds:g} s: {name}, {batch} per search: {spent:.3f} s per utterance", flush=True)
    options = {k: getattr(opts, k) for k in ("seconds", "tokens", "utts", "espnet_utts", "beam", "threads")}
    print(save_report(Path(opts.out_dir), machine(), options, results, markdown, None))


if __name__ == "__main__":
    main()
