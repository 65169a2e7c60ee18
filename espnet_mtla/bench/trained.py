"""Trained models decoding one test set in turns: which search is faster, and where the time goes.

    cd egs2/mini_synth/asr1
    python -m espnet_mtla.bench.trained --exps exp/asr_train_mha_seed0 exp/asr_train_mtla_seed0 \\
        [--inputs dump/flac/test/wav.scp] [--rounds 3] [--threads 1] [--out-dir exp/bench_trained]

Stage 8 decodes each experiment when it finishes training, so two rows of RESULTS.md may be
decoded hours apart, on a machine whose speed drifts (other jobs, a shared VM): their speed
ratio carries that drift. Here every round decodes the whole set with each model in turn, in one
process (the API's batched search with the recipe's ``conf/decode.yaml``), so a machine that
slows down slows every model alike, and the rounds show how far one measurement moves.

Per model: utterances/s of each round and their median; the median's ratio to the first
model's; the decoder steps of one pass over the set (a model whose hypotheses end later takes
more); and where the search's time goes per step: the decoder step, the CTC prefix scorer, and
the rest (candidate selection, cache reorders, bookkeeping); and the time outside the search
(features, encoder, CTC posteriors). Speech models read ``--inputs`` as a wav.scp; MT models as
a text file of source sentences (``key sentence`` lines).
"""

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

from espnet_mtla.bench.common import machine, parse_or_replot, positive_int, save_report

PARTS = ("decoder step", "CTC scorer", "search")


@contextlib.contextmanager
def stopwatches(totals: dict):
    """Within: the time and calls of every decoder step, CTC prefix score and whole search are
    added to ``totals[part] = [seconds, calls]`` (the methods are wrapped, then restored)."""
    from espnet_mtla.search import beam_search
    from espnet_mtla.search.ctc_prefix import BatchedCTCPrefixScorer

    targets = {"decoder step": (beam_search.DecodeStep, "__call__"),
               "CTC scorer": (BatchedCTCPrefixScorer, "score"),
               "search": (beam_search.MultiUtteranceBeamSearch, "__call__")}
    originals = {part: getattr(owner, name) for part, (owner, name) in targets.items()}

    def timed(part):
        original = originals[part]

        def wrapper(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                totals[part][0] += time.perf_counter() - start
                totals[part][1] += 1
        return wrapper

    for part, (owner, name) in targets.items():
        setattr(owner, name, timed(part))
    try:
        yield
    finally:
        for part, (owner, name) in targets.items():
            setattr(owner, name, originals[part])


def read_inputs(model, path: Path, limit: int = 0) -> list:
    """``path``'s entries as the model takes them: (samples, rate) for speech, str for MT."""
    lines = [line.split(maxsplit=1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if any(len(parts) != 2 for parts in lines):
        raise SystemExit(f"error: --inputs {path}: every line must be '<key> <value>'")
    lines = lines[:limit] if limit else lines
    if not model.task.speech:
        return [text for _, text in lines]
    from espnet2.fileio.sound_scp import SoundScpReader

    reader = SoundScpReader(str(path), dtype="float32")
    return [tuple(reversed(reader[key])) for key, _ in lines]  # (rate, samples) -> (samples, rate)


def measure(exps, inputs_path: Path, rounds: int, limit: int, decode_config) -> list:
    from espnet_mtla.api import load_model

    models = {str(exp): load_model(exp, decode_config=decode_config) for exp in exps}
    inputs = read_inputs(next(iter(models.values())), inputs_path, limit)
    totals = {name: {part: [0.0, 0] for part in PARTS} for name in models}
    elapsed = {name: [] for name in models}  # seconds of each round
    for _ in range(rounds):
        for name, model in models.items():
            with stopwatches(totals[name]):
                start = time.perf_counter()
                model(inputs)
                elapsed[name].append(time.perf_counter() - start)
    results = []
    for name in models:
        part = totals[name]
        steps = part["decoder step"][1]
        search_s = part["search"][0]
        speeds = [len(inputs) / seconds for seconds in elapsed[name]]
        results.append({
            "model": name, "utterances": len(inputs), "utterances_per_s": [round(s, 2) for s in speeds],
            "median_utterances_per_s": round(statistics.median(speeds), 2),
            "steps_per_pass": steps // rounds, "searches_per_pass": part["search"][1] // rounds,
            "decoder_ms_per_step": round(1e3 * part["decoder step"][0] / max(steps, 1), 3),
            "ctc_ms_per_step": round(1e3 * part["CTC scorer"][0] / max(steps, 1), 3),
            "rest_of_search_ms_per_step": round(1e3 * (search_s - part["decoder step"][0] - part["CTC scorer"][0])
                                                / max(steps, 1), 3),
            "outside_search_s_per_pass": round((sum(elapsed[name]) - search_s) / rounds, 3)})
    return results


def markdown(results, options, machine_name) -> str:
    base = results[0]["median_utterances_per_s"]
    lines = [f"{machine_name}; {options['utterances']} utterances of `{options['inputs']}`, "
             f"{options['rounds']} rounds, each model in turn; the recipe's decode config", "",
             "| model | utterances/s per round | median | vs the first | decoder steps per pass | "
             "decoder step (ms/step) | CTC scorer (ms/step) | rest of the search (ms/step) | "
             "outside the search (s/pass) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = r["median_utterances_per_s"] / base if base else float("nan")
        lines.append(f"| {r['model']} | {', '.join(f'{s:.1f}' for s in r['utterances_per_s'])} | "
                     f"{r['median_utterances_per_s']:.1f} | {ratio:.2f}x | {r['steps_per_pass']} | "
                     f"{r['decoder_ms_per_step']:.2f} | {r['ctc_ms_per_step']:.2f} | "
                     f"{r['rest_of_search_ms_per_step']:.2f} | {r['outside_search_s_per_pass']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exps", nargs="+", default=[], help="exp dirs (or packed models); ratios are to the first")
    parser.add_argument("--inputs", default="dump/flac/test/wav.scp",
                        help="a wav.scp (speech models) or a text file of source sentences (MT)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N entries (0: all)")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (stage 8 decodes with 1)")
    parser.add_argument("--decode_config", default=None, help="default: each model's recipe conf/decode.yaml")
    parser.add_argument("--out-dir", default="exp/bench_trained")
    opts = parse_or_replot(parser, argv, markdown, None)
    if opts is None:
        return
    if not opts.exps:
        parser.error("--exps: name at least one exp dir")
    for exp in opts.exps:
        if not Path(exp).exists():
            parser.error(f"--exps: {exp} does not exist")
    inputs = Path(opts.inputs)
    if not inputs.is_file():
        parser.error(f"--inputs {inputs} is not a file")
    torch.set_num_threads(opts.threads)
    results = measure(opts.exps, inputs, opts.rounds, opts.limit, opts.decode_config)
    options = {"inputs": str(inputs), "utterances": results[0]["utterances"], "rounds": opts.rounds,
               "threads": opts.threads}
    print(save_report(Path(opts.out_dir), machine(), options, results, markdown, None))


if __name__ == "__main__":
    main()
