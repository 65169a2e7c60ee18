"""Long recordings, end to end: our long-form path against ESPnet's ``Speech2Text``, MTLA against MHA.

    python -m espnet_mtla.bench.long_form --recipe egs2/mini_synth/asr1 --minutes 10 30 60 \\
        --models mtla mha --espnet_minutes 10 --out docs/bench_long_form

Recordings of each length are made from the recipe's test utterances (``espnet_mtla.data.long_form``:
pauses, levels, babble) and decoded by the recipe's trained models (``exp/asr_train_<model>``,
its ``conf/decode.yaml``) in a fresh process each, so that peak memory is the process' own:

- ``ours``: ``transcribe_long`` (all segments in batched searches), with each VAD of ``--vads``;
- ``oracle``: the same search on the true utterance times (the WER to be within 1 point of);
- ``espnet loop``: ESPnet's ``Speech2Text`` (its per-utterance beam search, same model and
  options) called on each of our VAD segments in turn: the usual "cut it with a VAD first" recipe;
- ``espnet whole``: ``Speech2Text`` on the whole recording at once (stopped after
  ``--espnet_timeout`` seconds).

The ESPnet rows run on the recordings of ``--espnet_minutes`` only (their time per audio second
does not fall with length). Reported per row: WER (jiwer, per recording), real-time factor
(wall time / audio time: model loading excluded, reading and segmenting included), the seconds
spent segmenting and searching, and peak RSS of the process (``VmHWM``) with the RSS it had
before the recording was read. Results: ``<out>/results.json`` and a Markdown table on stdout.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

KINDS = ("ours", "oracle", "espnet_loop", "espnet_whole")


def memory_mib(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, MiB. Not ``ru_maxrss``:
    a child process started by fork + exec keeps its parent's peak there."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def wer(ref: str, hyp: str) -> float:
    import jiwer

    return round(100 * jiwer.wer(ref, hyp), 2) if hyp.strip() else 100.0


def worker(job: Dict) -> Dict:
    """One measurement in this process (see the module docstring); a JSON-able dict."""
    import soundfile

    from espnet_mtla.api import load_model
    from espnet_mtla.api.vad import speech_regions
    from espnet_mtla.data.long_form import read_table

    recipe, data = Path(job["recipe"]), Path(job["data"])
    os.chdir(recipe)
    model = load_model(f"exp/asr_train_{job['model']}")
    wav, ref = read_table(data / "wav.scp")[job["recording"]], read_table(data / "text")[job["recording"]]
    before = memory_mib("VmRSS")
    started = time.perf_counter()
    timing: Dict = {}
    if job["kind"] in ("ours", "oracle"):
        segments = None
        if job["kind"] == "oracle":
            rows = read_table(data / "oracle_segments").values()
            segments = {job["recording"]: sorted((float(r.split()[1]), float(r.split()[2])) for r in rows
                                                 if r.split()[0] == job["recording"])}
        transcript = model.transcribe_long(wav, vad=job["vad"], segments=segments, timing=timing)
        hyp = transcript.text
        audio_s = transcript.duration
    else:
        samples, rate = soundfile.read(wav, dtype="float32")
        audio_s = len(samples) / rate
        if job["kind"] == "espnet_whole":
            hyp = model.inference(samples)[0][0] or ""
            timing["search_s"] = time.perf_counter() - started
        else:
            regions = speech_regions(samples, rate, job["vad"], 20.0)
            timing["vad_s"] = time.perf_counter() - started
            hyps = []
            for s, e in regions:
                text = model.inference(samples[s:e])[0][0]
                hyps.append(text or "")
            hyp = " ".join(h for h in hyps if h.strip())
            timing["search_s"] = time.perf_counter() - started - timing["vad_s"]
    wall = time.perf_counter() - started
    return {**job, "audio_s": round(audio_s, 1), "wall_s": round(wall, 2), "rtf": round(wall / audio_s, 5),
            "vad_s": round(timing.get("vad_s", 0.0), 2),
            "search_s": round(timing.get("decode_s", timing.get("search_s", 0.0)), 2),
            "encode_s": timing.get("encode_s"), "beam_search_s": timing.get("search_s"),
            "segments": timing.get("segments"), "wer": wer(ref, hyp), "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(memory_mib("VmHWM"), 1)}


def run_job(job: Dict, timeout: float) -> Dict:
    cmd = [sys.executable, "-m", "espnet_mtla.bench.long_form", "--worker", json.dumps(job)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**job, "stopped": f"not finished in {timeout:.0f} s"}
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["?"])[-1]
        return {**job, "stopped": "out of memory" if "memory" in tail.lower() else f"failed: {tail}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: List[Dict]) -> str:
    out = ["| model | minutes | path | WER | RTF | segmenting (s) | decoding (s) | of which encoder (s) | "
           "peak RSS (MiB) | RSS before (MiB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "stopped" in r:
            out.append(f"| {r['model']} | {r['minutes']:g} | {r['kind']} | {r['stopped']} | | | | | | |")
            continue
        kind = f"{r['kind']} ({r['vad']})" if r["kind"] in ("ours", "espnet_loop") else r["kind"]
        out.append(f"| {r['model']} | {r['minutes']:g} | {kind} | {r['wer']:.2f} | {r['rtf']:.4f} | "
                   f"{r['vad_s']:.1f} | {r['search_s']:.1f} | "
                   f"{r['encode_s'] if r.get('encode_s') is not None else '-'} | {r['peak_rss_mib']:.0f} | "
                   f"{r['rss_before_mib']:.0f} |")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m espnet_mtla.bench.long_form", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", type=Path, default=Path("egs2/mini_synth/asr1"))
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 30, 60])
    p.add_argument("--models", nargs="+", default=["mtla", "mha"])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--espnet_minutes", type=float, nargs="*", default=[10])
    p.add_argument("--espnet_timeout", type=float, default=300)
    p.add_argument("--vads", nargs="+", default=["silero", "energy"], choices=["silero", "energy"],
                   help="the VADs of the 'ours' rows (the ESPnet loop uses the first)")
    p.add_argument("--out", type=Path, default=Path("bench_out/long_form"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    from espnet_mtla.data.long_form import make_long_form

    recipe = args.recipe.resolve()
    data = (args.out / "data").resolve()
    names = make_long_form(recipe / "data" / "test", data, args.minutes)
    rows = []
    for minutes, recording in zip(args.minutes, names):
        for model in args.models:
            for kind in args.kinds:
                if kind.startswith("espnet") and minutes not in args.espnet_minutes:
                    continue
                for vad in (args.vads if kind == "ours" else args.vads[:1]):
                    job = dict(recipe=str(recipe), data=str(data), recording=recording, minutes=minutes, model=model,
                               kind=kind, vad=vad)
                    timeout = args.espnet_timeout if kind == "espnet_whole" else 3600
                    rows.append(run_job(job, timeout))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or None}
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
