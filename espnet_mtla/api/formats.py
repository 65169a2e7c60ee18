"""Transcripts written out: plain text, JSON, SRT and WebVTT subtitles, Kaldi ``segments`` +
``text``, and NIST CTM.

- ``txt``: one line per segment.
- ``json``: ``Transcript.to_dict()`` (recording, duration, text, segments with times, scores,
  words); ``read_json`` reads it back.
- ``srt`` / ``vtt``: one cue per segment, lines wrapped at 42 characters (the usual subtitle
  width), times ``HH:MM:SS,mmm`` (SRT) / ``HH:MM:SS.mmm`` (WebVTT).
- ``kaldi``: ``segments`` (``<segment> <recording> <start> <end>``) and ``text`` (``<segment>
  <text>``) over all recordings, with Kaldi's ids ``<recording>-<start cs>-<end cs>`` (7 digits
  of centiseconds, so ids sort in time order); the recipes' scoring reads them.
- ``ctm``: ``<recording> 1 <start> <duration> <word> <confidence>``, one line per word: the CTC
  alignment's times (``word_times=True``), otherwise each segment's duration shared among its
  words in proportion to their length in characters (an approximation, said in a comment line;
  also for a segment too short for its tokens' CTC alignment).
"""

import json
import textwrap
from pathlib import Path
from typing import Dict, List, Sequence

from espnet_mtla.api.long_form import Segment, Transcript, Word
from espnet_mtla.storage.fileio import write_text_atomic

FORMATS = ("txt", "json", "srt", "vtt", "kaldi", "ctm")
LINE_WIDTH = 42


def _clock(seconds: float, separator: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def _cue_text(segment: Segment) -> str:
    return "\n".join(textwrap.wrap(segment.text, LINE_WIDTH)) or segment.text


def as_txt(transcript: Transcript) -> str:
    return "".join(f"{s.text}\n" for s in transcript.segments)


def as_json(transcript: Transcript) -> str:
    return json.dumps(transcript.to_dict(), indent=2, ensure_ascii=False) + "\n"


def read_json(text: str) -> Transcript:
    data = json.loads(text)
    segments = [Segment(**{**s, "words": [Word(**w) for w in s.get("words", [])]}) for s in data["segments"]]
    return Transcript(data["recording"], data["duration"], segments)


def as_srt(transcript: Transcript) -> str:
    return "".join(f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{_cue_text(s)}\n\n"
                   for i, s in enumerate(transcript.segments, 1))


def as_vtt(transcript: Transcript) -> str:
    return "WEBVTT\n\n" + "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{_cue_text(s)}\n\n"
                                  for s in transcript.segments)


def segment_id(recording: str, segment: Segment) -> str:
    return f"{recording}-{int(round(segment.start * 100)):07d}-{int(round(segment.end * 100)):07d}"


def as_kaldi(transcripts: Sequence[Transcript]) -> Dict[str, str]:
    """``segments`` and ``text`` file contents over all recordings, sorted by id (Kaldi's order)."""
    rows = sorted((segment_id(t.recording, s), t.recording, s) for t in transcripts for s in t.segments)
    return {"segments": "".join(f"{sid} {rec} {s.start:.2f} {s.end:.2f}\n" for sid, rec, s in rows),
            "text": "".join(f"{sid} {s.text}\n" for sid, _, s in rows)}


def spread_words(segment: Segment) -> List[Word]:
    """A segment's words with its duration shared in proportion to their characters (untimed words)."""
    words = segment.text.split()
    total = sum(len(w) for w in words) or 1
    out, t = [], segment.start
    for word in words:
        end = t + (segment.end - segment.start) * len(word) / total
        out.append(Word(word, round(t, 3), round(end, 3), float("nan")))
        t = end
    return out


def as_ctm(transcript: Transcript) -> str:
    lines = []
    if not all(s.words for s in transcript.segments):
        lines.append(";; words without CTC times (decoded without word_times, or too short to align): "
                     "their segment's time shared out\n")
    for segment in transcript.segments:
        for w in (segment.words or spread_words(segment)):
            confidence = "" if w.confidence != w.confidence else f" {w.confidence:.4f}"  # NaN: none
            lines.append(f"{transcript.recording} 1 {w.start:.2f} {max(w.end - w.start, 0.01):.2f} {w.text}"
                         f"{confidence}\n")
    return "".join(lines)


WRITERS = {"txt": as_txt, "json": as_json, "srt": as_srt, "vtt": as_vtt, "ctm": as_ctm}


def write(transcripts: Sequence[Transcript], output_dir, formats: Sequence[str] = FORMATS) -> List[Path]:
    """Each recording's ``<output_dir>/<recording>.<format>`` and, for ``kaldi``, ``<output_dir>/kaldi/
    {segments,text}`` over all; each file written whole (temp file, renamed). Returns the paths."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown output format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = [t.recording for t in transcripts]
    if len(set(names)) != len(names):
        raise ValueError(f"two recordings are named {next(n for n in names if names.count(n) > 1)!r}: "
                         "their outputs would overwrite each other; rename one")
    written = []
    for fmt in formats:
        if fmt == "kaldi":
            (output_dir / "kaldi").mkdir(exist_ok=True)
            for name, text in as_kaldi(transcripts).items():
                write_text_atomic(output_dir / "kaldi" / name, text)
                written.append(output_dir / "kaldi" / name)
            continue
        for transcript in transcripts:
            path = output_dir / f"{transcript.recording}.{fmt}"
            write_text_atomic(path, WRITERS[fmt](transcript))
            written.append(path)
    return written
