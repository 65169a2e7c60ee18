"""Data preparation of the paper's corpora at full size: time and peak memory of each preparer.

    python -m espnet_mtla.bench.corpora [--scale 1.0] [--work-dir DIR] [--out-dir docs/bench_corpora] [--profile]

Builds, under ``--work-dir`` (a temporary folder by default), each corpus' metadata at the size
of its release in the layout it is distributed in: MuST-C en-de v1 (229,703 train segments in
2,093 talks, dev, tst-COMMON, tst-HE), AMI (171 meetings, 687 headsets, ~110k transcriber
segments of NXT words and segments XML), SLURP (72,396 real and 69,253 synthetic recordings,
metadata.json) and XSum (226,711 ids of ``.summary`` files of ~430 words each). Audio files
are one tiny file hard-linked under every name (the preparers read names and headers, not
samples). Then it runs each preparer as a subprocess (``python -m espnet_mtla.data.<corpus>``)
and reports its wall time and peak resident memory; ``--profile`` adds the functions that
take most of each run's time (cProfile, in a second run). ``--scale`` shrinks every count
(the tests run it at a thousandth).
"""

import argparse
import cProfile
import errno
import io
import json
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

WORDS = ("the of and to a in that is was he for it with as his on be at by had not are but from or have an they which "
         "one you were her all she there would their we him been has when who will more no if out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now such like our "
         "over man me even most made after also did many before must through back years where much your way well down "
         "should because each just those people how too little state good very make world still own see men work long "
         "get here between both life being under never day same another know while last might us great old year off "
         "come since against go came right used take three meeting remote design button battery price market budget").split()


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def count(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def tiny_audio(path: Path, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.zeros(1600, np.int16), 16000, format=fmt, subtype="PCM_16")
    return path


class Linker:
    """Hard links to one tiny file under many names; a fresh copy of it whenever the file
    system's limit on links per file (65,000 on ext4) is reached."""

    def __init__(self, original: Path):
        self.original, self.source, self.copies = original, original, 0

    def __call__(self, target: Path) -> None:
        try:
            os.link(self.source, target)
        except FileExistsError:
            pass
        except OSError as err:
            if err.errno != errno.EMLINK:
                raise
            self.copies += 1
            self.source = self.original.with_name(f"{self.copies}.{self.original.name}")
            shutil.copyfile(self.original, self.source)
            os.link(self.source, target)


# -- the layouts, at release size ------------------------------------------------------------------------
MUSTC = {"train": (229_703, 2_093), "dev": (1_423, 11), "tst-COMMON": (2_641, 27), "tst-HE": (600, 12)}


def build_mustc(root: Path, scale: float, rng: random.Random) -> None:
    link = Linker(tiny_audio(root / "tiny.wav", "WAV"))
    talk = 0
    for split, (segments, talks) in MUSTC.items():
        segments, talks = count(segments, scale), count(talks, scale)
        base = root / "en-de" / "data" / split
        (base / "wav").mkdir(parents=True, exist_ok=True)
        (base / "txt").mkdir(parents=True, exist_ok=True)
        yaml_lines, en, de = [], [], []
        for t in range(talks):
            talk += 1
            link(base / "wav" / f"ted_{talk}.wav")
            offset = 10.0
            for _ in range(segments // talks + (1 if t < segments % talks else 0)):
                duration = round(rng.uniform(1.0, 12.0), 6)
                yaml_lines.append(f"- {{duration: {duration:.6f}, offset: {offset:.6f}, speaker_id: spk.{talk}, wav: ted_{talk}.wav}}\n")
                en.append(sentence(rng, 5, 30).capitalize() + ".\n")
                de.append(sentence(rng, 5, 30).capitalize() + ".\n")
                offset = round(offset + duration + rng.uniform(0.1, 2.0), 6)
        for suffix, lines in (("yaml", yaml_lines), ("en", en), ("de", de)):
            (base / "txt" / f"{split}.{suffix}").write_text("".join(lines), encoding="utf-8")


AMI_MEETINGS, AMI_SEGMENTS = 171, 110_000
NITE = 'xmlns:nite="http://nite.sourceforge.net/"'


def build_ami(root: Path, scale: float, rng: random.Random) -> None:
    from espnet_mtla.data.ami import DEV, EVAL

    link = Linker(tiny_audio(root / "tiny.wav", "WAV"))
    annotations = root / "annotations"
    for sub in ("words", "segments", "corpusResources"):
        (annotations / sub).mkdir(parents=True, exist_ok=True)
    train = [f"TR{n:04d}a" for n in range(AMI_MEETINGS - len(DEV) - len(EVAL))]
    meetings = [m for group in (train, DEV, EVAL) for m in group[:count(len(group), scale)]]
    per_agent = max(1, count(AMI_SEGMENTS, scale) // (4 * len(meetings)))
    meetings_xml = ['<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>', f"<nite:root {NITE}>"]
    for m, meeting in enumerate(meetings):
        meetings_xml.append(f'  <meeting observation="{meeting}" type="scenario">')
        agents = "ABCDE" if m < 3 else "ABCD"
        (root / meeting / "audio").mkdir(parents=True, exist_ok=True)  # ami_download.sh's layout
        for channel, agent in enumerate(agents):
            meetings_xml.append(f'    <speaker nxt_agent="{agent}" channel="{channel}" global_name="MEE{m:03d}{channel}"/>')
            link(root / meeting / "audio" / f"{meeting}.Headset-{channel}.wav")
            words, segments, n, clock = [], [], 0, 0.0
            for s in range(per_agent):
                first = n
                for k, word in enumerate(sentence(rng, 3, 20).split()):
                    end = clock + rng.uniform(0.15, 0.5)
                    words.append(f'<w nite:id="{meeting}.{agent}.words{n}" starttime="{clock:.2f}" endtime="{end:.2f}">{word}</w>')
                    n, clock = n + 1, end
                    if k % 7 == 6:
                        words.append(f'<w nite:id="{meeting}.{agent}.words{n}" starttime="{clock:.2f}" endtime="{clock:.2f}" punc="true">,</w>')
                        n += 1
                words.append(f'<w nite:id="{meeting}.{agent}.words{n}" starttime="{clock:.2f}" endtime="{clock:.2f}" punc="true">.</w>')
                href = f"{meeting}.{agent}.words.xml#id({meeting}.{agent}.words{first})..id({meeting}.{agent}.words{n})"
                n, clock = n + 1, clock + rng.uniform(0.5, 5.0)
                segments.append(f'<segment nite:id="{meeting}.sync.{s}" transcriber_start="0" transcriber_end="1">'
                                f'<nite:child href="{href}"/></segment>')
            for kind, lines in (("words", words), ("segments", segments)):
                text = "\n".join(['<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>',
                                  f'<nite:root nite:id="{meeting}.{agent}.{kind}" {NITE}>'] + lines + ["</nite:root>\n"])
                (annotations / kind / f"{meeting}.{agent}.{kind}.xml").write_text(text, encoding="latin-1")
        meetings_xml.append("  </meeting>")
    (annotations / "corpusResources" / "meetings.xml").write_text("\n".join(meetings_xml + ["</nite:root>\n"]), encoding="latin-1")


SLURP = {"train": (11_514, 50_628), "devel": (2_033, 8_690), "test": (2_974, 13_078), "train_synthetic": (69_253, 69_253)}


def build_slurp(root: Path, scale: float, rng: random.Random) -> None:
    text_dir = root / "dataset" / "slurp"
    text_dir.mkdir(parents=True, exist_ok=True)
    link = Linker(tiny_audio(root / "tiny.flac", "FLAC"))
    metadata, number = {}, 0
    for split, (entries, recordings) in SLURP.items():
        entries, recordings = count(entries, scale), count(recordings, scale)
        audio = root / "audio" / ("slurp_synth" if split == "train_synthetic" else "slurp_real")
        audio.mkdir(parents=True, exist_ok=True)
        lines = []
        for e in range(entries):
            slurp_id = len(metadata) + 1
            takes = recordings // entries + (1 if e < recordings % entries else 0)
            files = []
            for _ in range(takes):
                number += 1
                files.append(f"audio-{1490000000 + number}{'-headset' if number % 2 else ''}.flac")
                link(audio / files[-1])
            metadata[str(slurp_id)] = {"recordings": {f: {"usrid": f"FO-{number % 177:03d}", "status": "correct"} for f in files}}
            lines.append(json.dumps({"slurp_id": slurp_id, "sentence": sentence(rng, 3, 12), "intent": "alarm_set",
                                     "scenario": "alarm", "action": "set",
                                     "recordings": [{"file": f, "wer": 0.0, "ent_wer": 0.0, "status": "correct"} for f in files]}) + "\n")
        (text_dir / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
    (text_dir / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")


XSUM = {"train": 204_045, "validation": 11_332, "test": 11_334}
SHARE = "Share this with\nEmail\nFacebook\nMessenger\nTwitter\nPinterest\nWhatsApp\nLinkedIn\nCopy this link\n"


def build_xsum(root: Path, scale: float, rng: random.Random) -> None:
    folder = root / "bbc-summary-data"
    folder.mkdir(parents=True, exist_ok=True)
    split, doc_id = {}, 10_000_000
    for name, size in XSUM.items():
        split[name] = []
        for _ in range(count(size, scale)):
            doc_id += 1
            split[name].append(str(doc_id))
            body = "\n".join(sentence(rng, 10, 40).capitalize() + "." for _ in range(18))
            (folder / f"{doc_id}.summary").write_text(
                f"[SN]URL[SN]\nhttp://www.bbc.co.uk/news/{doc_id}\n\n[SN]TITLE[SN]\n{sentence(rng, 4, 9)}\n\n"
                f"[SN]FIRST-SENTENCE[SN]\n{sentence(rng, 15, 30)}.\n\n[SN]RESTBODY[SN]\n{SHARE}{body}\n", encoding="utf-8")
    (root / "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json").write_text(json.dumps(split), encoding="utf-8")


CORPORA = {"mustc": (build_mustc, ["--tgt_lang", "de"], "229,703 + 4,664 segments, 2,143 talks"),
           "ami": (build_ami, [], "171 meetings, 687 headsets, ~110k segments"),
           "slurp": (build_slurp, ["--use_synthetic", "true"], "72,396 real + 69,253 synthetic recordings"),
           "xsum": (build_xsum, [], "226,711 articles")}


# -- the measurement -----------------------------------------------------------------------------------
def run_preparer(corpus: str, root: Path, out: Path, extra) -> dict:
    """Wall seconds and peak RSS (MiB) of one ``python -m espnet_mtla.data.<corpus>`` process."""
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec from this (torch-sized) process.
    command = [sys.executable, "-c", "import runpy, sys; sys.argv = sys.argv[1:]; code = 0\n"
               "try:\n    runpy.run_module(sys.argv[0], run_name='__main__')\n"
               "except SystemExit as e:\n    code = e.code or 0\n"
               "hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
               "print('peak_rss_kib', hwm, file=sys.stderr)\n"
               "sys.exit(code)", f"espnet_mtla.data.{corpus}", "--root", str(root), "--out-dir", str(out), *extra]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = result.stderr.strip().splitlines()
    if result.returncode != 0:
        said = [line for line in lines if not line.startswith("peak_rss_kib")] or ["(nothing on stderr)"]
        raise SystemExit(f"error: {corpus} preparation failed: {said[-1]}")
    peak = int(next(line.split()[1] for line in lines if line.startswith("peak_rss_kib")))
    return {"seconds": round(seconds, 1), "peak_mib": round(peak / 1024), "summary": [l for l in lines if not l.startswith("peak_rss")]}


def profile_preparer(corpus: str, root: Path, out: Path, extra, top: int = 4) -> list:
    """The functions with the most time of their own in one in-process run: [(name, seconds)]."""
    import importlib

    module = importlib.import_module(f"espnet_mtla.data.{corpus}")
    profiler = cProfile.Profile()
    stderr, sys.stderr = sys.stderr, io.StringIO()
    try:
        profiler.runcall(module.main, ["--root", str(root), "--out-dir", str(out), *extra])
    finally:
        sys.stderr = stderr
    stats = pstats.Stats(profiler).stats
    ranked = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
    return [(f"{Path(f).name}:{line}({name})", round(total, 1)) for (f, line, name), (_, _, total, _, _) in ranked]


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']}; scale {report['options']['scale']}.", "",
             "| corpus | size | build s | prepare s | peak MiB | sets |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        sets = "<br>".join(line.split(" -> ")[0] for line in r["summary"] if " -> " in line)
        lines.append(f"| {r['corpus']} | {r['size']} | {r['build_seconds']} | {r['seconds']} | {r['peak_mib']} | {sets} |")
    if any(r.get("profile") for r in report["results"]):
        lines += ["", "Most time of its own (cProfile, a second run):", ""]
        for r in report["results"]:
            lines.append(f"- {r['corpus']}: " + ", ".join(f"{name} {sec} s" for name, sec in r.get("profile", [])))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each release's size (1: full)")
    parser.add_argument("--corpora", default=" ".join(CORPORA), help="which, of: " + " ".join(CORPORA))
    parser.add_argument("--work-dir", type=Path, help="where the layouts are built (default: a temporary folder, removed)")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/bench_corpora"))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    from espnet_mtla.bench.common import write_results_json, write_tables
    from espnet_mtla.metrics.efficiency import machine_name

    temporary = tempfile.TemporaryDirectory() if args.work_dir is None else None
    work = Path(temporary.name if temporary else args.work_dir)
    results = []
    try:
        for corpus in args.corpora.split():
            build, extra, size = CORPORA[corpus]
            root = work / corpus
            start = time.perf_counter()
            if not (root / ".built").exists():
                build(root, args.scale, random.Random(0))
                (root / ".built").touch()
            built = round(time.perf_counter() - start, 1)
            print(f"{corpus}: layout built in {built} s; preparing ...", file=sys.stderr, flush=True)
            row = {"corpus": corpus, "size": size if args.scale == 1.0 else f"{args.scale} x ({size})",
                   "build_seconds": built, **run_preparer(corpus, root, work / f"data_{corpus}", extra)}
            if args.profile:
                row["profile"] = profile_preparer(corpus, root, work / f"data_{corpus}_profile", extra)
            print(f"{corpus}: {row['seconds']} s, peak {row['peak_mib']} MiB", file=sys.stderr, flush=True)
            results.append(row)
    finally:
        if temporary:
            temporary.cleanup()
    report = {"machine": machine_name("cpu"), "options": {"scale": args.scale, "corpora": args.corpora}, "results": results}
    write_results_json(args.out_dir, report)
    print(write_tables(args.out_dir, report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
