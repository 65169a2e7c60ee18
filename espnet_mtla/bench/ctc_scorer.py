"""What the CTC prefix scorer costs inside the batched search, beside the decoder's step.

    python -m espnet_mtla.bench.ctc_scorer [--frames 150 600 1500] [--window_margins 0 32] \\
        [--out-dir docs/bench_ctc_scorer]

The mini recipe's decoder (``egs2/mini_synth/asr1``: decoder-only, 4 layers, 128-d, MTLA s=2,
100 tokens; random weights) searches 8 utterances with beam 10 (80 rows) for exactly ``--steps``
tokens (<eos> forbidden), CTC weight 0.3 and pre-beam 15, over ``--frames`` frames of encoder
output each (150: the mini test set's longest; 1500: a minute of speech at 40 ms). Peaky CTC
posteriors from a random projection. Per search step it reports the tensor operations (top-level
ops that compute something: ``bench.common.kernels_launched``) and the seconds of the decoder's
step and of the CTC scorer (``score`` and ``select``), so that the CTC share of a step is read
off directly, with the CTC window off and on (``--window_margins``).
"""

import argparse
import inspect
import os
import time
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

from espnet_mtla.bench.common import (NoEosDecoder, kernels_launched, machine, parse_or_replot,  # noqa: E402
                                      positive_int, save_report)

VOCAB, DIM, UTTS, BEAM = 100, 128, 8, 10
MINI_DECODER = dict(attention_type="mtla", model_dim=DIM, attention_heads=4, linear_units=512, num_blocks=4,
                    dropout_rate=0.0, prefix_stack=1, prefix_hidden=256,
                    mla_conf={"kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32},
                    mtla_conf={"down_rate": 2})


class Meter:
    """Seconds of one part of a search step summed over steps, and the operations of the calls
    numbered ``counted`` (one step's; the profiler is slow, so those calls are not timed)."""

    def __init__(self, counted):
        self.seconds, self.calls, self.counted, self.ops = 0.0, 0, set(counted), []

    def wrap(self, fn):
        def measured(*args, **kwargs):
            self.calls += 1
            if self.calls in self.counted:
                out = []
                self.ops.append(kernels_launched(lambda: out.append(fn(*args, **kwargs))))
                return out[0]
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            return result
        return measured

    @property
    def timed_calls(self) -> int:
        return self.calls - len(self.ops)


def run(frames: int, margin: int, steps: int, count_ops: bool):
    """One search; returns the decoder's and the CTC scorer's meters."""
    from espnet_mtla.decoder.stack import DecoderOnlyStack
    from espnet_mtla.search import MultiUtteranceBeamSearch, beam_search, ctc_prefix

    torch.manual_seed(0)
    decoder = DecoderOnlyStack(VOCAB, DIM, **MINI_DECODER).eval()
    ctc_layer = torch.nn.Linear(DIM, VOCAB)
    with torch.no_grad():
        ctc_layer.weight.mul_(4.0)  # peaky posteriors, as a trained CTC has
    gen = torch.Generator().manual_seed(1)
    enc = torch.randn(UTTS, frames, DIM, generator=gen)
    lens = torch.tensor([frames - 7 * k for k in range(UTTS)])  # a batch of similar lengths
    # the second step's operations: the decoder's 2nd call, the scorer's 3rd and 4th (score, select)
    decoder_meter, ctc_meter = Meter([2] if count_ops else []), Meter([3, 4] if count_ops else [])
    no_eos = NoEosDecoder(decoder, VOCAB - 1)
    no_eos.run_tokens = decoder_meter.wrap(no_eos.run_tokens)

    scorer = ctc_prefix.BatchedCTCPrefixScorer
    static = isinstance(inspect.getattr_static(scorer, "select"), staticmethod)  # (the scorer before 2026-12)

    class MeasuredScorer(scorer):
        score = ctc_meter.wrap(scorer.score)
        select = (staticmethod if static else (lambda f: f))(ctc_meter.wrap(scorer.select))

    options = {}
    if "ctc_window_margin" in inspect.signature(MultiUtteranceBeamSearch).parameters:
        options["ctc_window_margin"] = margin
    elif margin:
        return None
    search = MultiUtteranceBeamSearch(no_eos, VOCAB - 1, VOCAB - 1, BEAM, decoder_weight=0.7, ctc_weight=0.3,
                                      pre_beam_size=15, nbest=1, **options)
    original = beam_search.BatchedCTCPrefixScorer
    beam_search.BatchedCTCPrefixScorer = MeasuredScorer
    try:
        with torch.no_grad():
            ctc_logp = ctc_layer(enc).log_softmax(-1)
            start = time.perf_counter()
            result = search(enc, lens, maxlenratio=-steps, ctc_logp=ctc_logp)
            total = time.perf_counter() - start
    finally:
        beam_search.BatchedCTCPrefixScorer = original
    best = [h[0].yseq.tolist() for h in result.hypotheses]
    return {"frames": frames, "window_margin": margin, "steps": steps, "search_s": total,
            "decoder_s": decoder_meter.seconds, "ctc_s": ctc_meter.seconds, "timed_steps": decoder_meter.timed_calls,
            "decoder_ops": decoder_meter.ops[0] if decoder_meter.ops else None,
            "ctc_ops": sum(ctc_meter.ops) if ctc_meter.ops else None, "best": best}


def markdown(results, opts, machine_name) -> str:
    lines = [f"Machine: {machine_name}. The mini recipe's MTLA s=2 decoder (4 layers, 128-d), {UTTS} utterances x "
             f"beam {BEAM} = {UTTS * BEAM} rows, {opts['steps']} tokens each, CTC weight 0.3, pre-beam 15.", "",
             "| frames | CTC window margin | operations per step: decoder | CTC | CTC / decoder "
             "| seconds per step: decoder | CTC | CTC / decoder |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ops = (f"{r['decoder_ops']} | {r['ctc_ops']} | {r['ctc_ops'] / r['decoder_ops']:.2f}"
               if r["decoder_ops"] else "- | - | -")
        steps = max(r["timed_steps"], 1)
        lines.append(f"| {r['frames']} | {r['window_margin'] or 'off'} | {ops} | {r['decoder_s'] / steps:.4f} "
                     f"| {r['ctc_s'] / steps:.4f} | {r['ctc_s'] / r['decoder_s']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(results, opts, machine_name, path: Path) -> None:
    from espnet_mtla.recipe.figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for margin in sorted({r["window_margin"] for r in results}):
        rows = [r for r in results if r["window_margin"] == margin]
        ax.plot([r["frames"] for r in rows], [r["ctc_s"] / r["decoder_s"] for r in rows], marker="o",
                label=f"CTC window margin {margin or 'off'}")
    ax.axhline(0.5, color="grey", linestyle=":", label="target: 0.5x the decoder")
    ax.set_xlabel("encoder frames per utterance")
    ax.set_ylabel("CTC scorer time / decoder step time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"CTC prefix scorer in the batched search: {machine_name}", fontsize=9)
    from espnet_mtla.bench.common import save_figure

    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="docs/bench_ctc_scorer")
    parser.add_argument("--frames", type=positive_int, nargs="+", default=[150, 600, 1500])
    parser.add_argument("--window_margins", type=int, nargs="+", default=[0, 32])
    parser.add_argument("--steps", type=positive_int, default=30)
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no_ops", action="store_true", help="skip the operation counts (profiler)")
    opts = parse_or_replot(parser, argv, markdown, plot)
    if opts is None:
        return
    torch.set_num_threads(opts.threads)
    results = []
    for frames in opts.frames:
        for margin in opts.window_margins:
            row = run(frames, margin, opts.steps, not opts.no_ops)
            if row is not None:
                results.append(row)
                print(markdown([row], vars(opts), machine()).splitlines()[-1], flush=True)
    options = {"frames": opts.frames, "window_margins": opts.window_margins, "steps": opts.steps,
               "threads": opts.threads}
    print(save_report(Path(opts.out_dir), machine(), options, results, markdown, plot))


if __name__ == "__main__":
    main()
