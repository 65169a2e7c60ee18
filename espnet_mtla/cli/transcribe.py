"""``python -m espnet_mtla.bin.transcribe``: transcribe or translate recordings of any length with a trained model.

    python -m espnet_mtla.bin.transcribe meeting.flac talk.wav --model exp/asr_train_mtla \\
        --output_dir out --formats txt json srt vtt kaldi ctm [--word_times true] [--device cuda]

Each recording is split by voice activity (``--vad auto``: Silero where installed, else
energy), all segments of all recordings are decoded in one batched search, and the results are
written per recording (``out/<name>.<format>``) and, for ``kaldi``, as ``out/kaldi/{segments,
text}``. Without ``--output_dir`` the text is printed, one line per segment with its times.
See ``espnet_mtla.api`` for the same from Python.
"""

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from espnet_mtla.api.formats import FORMATS
from espnet_mtla.api.vad import PAD_AFTER_S, PAD_BEFORE_S, VADS


def str2bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return value.lower() == "true"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m espnet_mtla.bin.transcribe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("audio", nargs="*", help="recordings (any format soundfile reads: wav, flac, ...), named by "
                   "their file names")
    p.add_argument("--wav_scp", default=None, help="a Kaldi wav.scp of recordings (<name> <file>), instead of or "
                   "besides the positional files")
    p.add_argument("--segments", default=None, help="a Kaldi segments file (<segment> <recording> <start> <end>): "
                   "decode these segments instead of the VAD's")
    p.add_argument("--model", required=True, help="an exp dir (config.yaml + model file) or a packed model (.zip)")
    p.add_argument("--task", default=None, help="asr, st or slu (default: from the exp dir's name or the archive)")
    p.add_argument("--model_file", default=None, help="the exp dir's model file (default: valid.acc.ave.pth)")
    p.add_argument("--decode_config", default=None,
                   help="decoding defaults (default: the packed model's, or the recipe's conf/decode.yaml)")
    p.add_argument("--output_dir", default=None,
                   help="where to write the outputs, with text (<recording> <transcript>, Kaldi style) and "
                        "efficiency.json (default: print the text)")
    p.add_argument("--formats", nargs="+", default=["txt", "json", "srt"], choices=FORMATS)
    p.add_argument("--vad", default="auto", choices=VADS)
    p.add_argument("--max_segment_s", type=float, default=None,
                   help="longest segment (default: the longest training utterance, else 20)")
    p.add_argument("--min_silence_s", type=float, default=0.3, help="pauses longer than this end a segment")
    p.add_argument("--pad_before_s", type=float, default=PAD_BEFORE_S, help="audio kept before detected speech")
    p.add_argument("--pad_after_s", type=float, default=PAD_AFTER_S, help="audio kept after detected speech")
    p.add_argument("--word_times", type=str2bool, default=False, help="time words by CTC alignment")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--trust_model_file", type=str2bool, default=False,
                   help="load a model file that needs pickled code (it can run code)")
    for name, kind in (("beam_size", int), ("ctc_weight", float), ("penalty", float), ("lm_weight", float),
                       ("batch_frames", int), ("nbest", int), ("maxlenratio", float), ("minlenratio", float)):
        p.add_argument(f"--{name}", type=kind, default=None, help="default: the recipe's decode config")
    p.add_argument("--lm_train_config", default=None)
    p.add_argument("--lm_file", default=None)
    p.add_argument("--progress", type=str2bool, default=sys.stderr.isatty())
    p.add_argument("--log_level", default="INFO")
    return p


def read_recordings(args) -> Tuple[List[str], List[str]]:
    """(names, files) of the recordings: the positional files (named by their stems), then wav.scp's."""
    names, files = [Path(f).stem for f in args.audio], list(args.audio)
    if args.wav_scp:
        with open(args.wav_scp, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split(maxsplit=1)
                if not parts:
                    continue
                if len(parts) < 2 or parts[1].rstrip().endswith("|"):
                    raise ValueError(f"{args.wav_scp}: line {n}: expected '<name> <audio file>' (commands with "
                                     "'|' are not read: write the audio to files first)")
                names.append(parts[0])
                files.append(parts[1].strip())
    if not files:
        raise ValueError("no recordings: give audio files, or --wav_scp")
    return names, files


def read_segments(path: str) -> Dict[str, List[Tuple[float, float]]]:
    """Kaldi segments -> recording -> [(start, end)] seconds, in file order."""
    out: Dict[str, List[Tuple[float, float]]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                _, recording, start, end = parts
                out.setdefault(recording, []).append((float(start), float(end)))
            except ValueError:
                raise ValueError(f"{path}: line {n}: expected '<segment> <recording> <start> <end>'") from None
    return out


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s: %(message)s")
    from espnet_mtla.api import formats
    from espnet_mtla.api.model import DECODE_OPTIONS, ModelLoadError, load_model
    from espnet_mtla.metrics.efficiency import EfficiencyRecorder
    from espnet_mtla.cli.options import fail
    from espnet_mtla.storage.errors import BatchDecodingError
    from espnet_mtla.storage.fileio import write_text_atomic
    from espnet_mtla.storage.packed_model import PackedModelError
    from espnet_mtla.storage.safe_load import UnsafeModelFileError

    decoding = {k: v for k, v in vars(args).items() if k in DECODE_OPTIONS and v is not None}
    try:
        names, files = read_recordings(args)
        segments = read_segments(args.segments) if args.segments else None
        model = load_model(args.model, task=args.task, model_file=args.model_file, decode_config=args.decode_config,
                           device=args.device, dtype=args.dtype, trust=args.trust_model_file, progress=args.progress,
                           lm_train_config=args.lm_train_config, lm_file=args.lm_file, **decoding)
        recorder, timing = EfficiencyRecorder(args.device), {}
        transcripts = model.transcribe_long(files, vad=args.vad, max_segment_s=args.max_segment_s,
                                            min_silence_s=args.min_silence_s, pad_before_s=args.pad_before_s,
                                            pad_after_s=args.pad_after_s, word_times=args.word_times,
                                            names=names, segments=segments, recorder=recorder, timing=timing)
        seconds = sum(timing[k] for k in ("vad_s", "decode_s", "align_s"))
        logging.info("%.1f s of audio in %.1f s (RTF %.4f): segmenting %.1f s, decoding %.1f s, aligning %.1f s",
                     timing["audio_s"], seconds, seconds / max(timing["audio_s"], 1e-9), timing["vad_s"],
                     timing["decode_s"], timing["align_s"])
        if args.output_dir:
            out = Path(args.output_dir)
            written = formats.write(transcripts, out, args.formats)
            write_text_atomic(out / "text", "".join(f"{t.recording} {t.text}\n" for t in sorted(
                transcripts, key=lambda t: t.recording)))
            summary = recorder.summary()
            summary["long_form"] = dict(timing, recordings=len(transcripts), vad="given" if segments else args.vad)
            write_text_atomic(out / "efficiency.json", json.dumps(summary, indent=2) + "\n")  # last: complete
            logging.info("wrote %d files under %s", len(written) + 2, out)
        else:
            for t in transcripts:
                for s in t.segments:
                    print(f"{t.recording} {s.start:.2f} {s.end:.2f} {s.text}")
    except (ModelLoadError, UnsafeModelFileError, PackedModelError, BatchDecodingError, ValueError, OSError) as err:
        fail(err)
