"""Writing a Kaldi data dir from a corpus' utterances (what every ``local/data.sh`` produces).

    write_data_dir(Path("data/train"), utterances, recordings={"ted_1": "/abs/ted_1.wav"})

Writes ``wav.scp`` (per recording with ``segments``, else per utterance; absent for text-only
corpora), ``segments``, ``utt2spk``, ``spk2utt`` and one file per text field (``text``,
``text.en``, ``transcript``, ...), every table sorted by id in byte order. The files go to
``<dir>.partial`` first and the finished dir is renamed into place, so an interrupted data
preparation never leaves a data dir that looks complete.

``write_sets`` writes all the sets of one corpus: it refuses, in one line and before anything
is written, a set with no entries, then prints one summary line per set (utterances or
documents, hours of audio, speakers, and what was skipped and why).
"""

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from espnet_mtla.data.corpus import CorpusError


@dataclass
class Utterance:
    """One utterance: ``audio`` is a file (whole-file utterance) or None; segmented utterances
    name their ``recording`` and ``start``/``end`` in seconds instead."""

    utt_id: str
    speaker: str
    texts: Dict[str, str]  # data-dir file name -> text, e.g. {"text": ..., "text.en": ...}
    audio: Optional[str] = None
    recording: Optional[str] = None
    start: float = 0.0
    end: float = 0.0
    source: str = field(default="", compare=False)  # "file:line" it came from, for messages
    duration: Optional[float] = field(default=None, compare=False)  # seconds of a whole-file utterance

    def seconds(self) -> float:
        return self.end - self.start if self.recording is not None else (self.duration or 0.0)


@dataclass
class DataSet:
    """One prepared set of a corpus: what ``write_sets`` writes to ``<out>/<name>``."""

    name: str
    utterances: List[Utterance]
    recordings: Optional[Dict[str, str]] = None  # recording id -> audio path (segmented corpora)
    read_from: str = ""  # where its entries come from, for the refusal of an empty set
    skipped: Dict[str, int] = field(default_factory=dict)  # why -> how many entries were left out

    def skip(self, why: str, count: int = 1) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + count

    def skipped_note(self) -> str:
        """`` (skipped: N why; ...)``, or "" when nothing was left out."""
        skipped = "; ".join(f"{count:,} {why}" for why, count in self.skipped.items() if count)
        return f" (skipped: {skipped})" if skipped else ""

    def summary(self, corpus: str, out: Path, unit: str = "utterances") -> str:
        parts = [f"{len(self.utterances):,} {unit}"]
        if unit != "documents":
            hours = sum(u.seconds() for u in self.utterances) / 3600
            parts += [f"{hours:.2f} h", f"{len({u.speaker for u in self.utterances}):,} speakers"]
        if self.recordings is not None:
            parts.append(f"{len(self.recordings):,} recordings")
        return f"{corpus} {self.name}: {', '.join(parts)} -> {Path(out) / self.name}{self.skipped_note()}"


def _lines(pairs) -> str:
    return "".join(f"{key} {value}\n" for key, value in sorted(pairs, key=lambda kv: kv[0].encode()))


def write_data_dir(data_dir: Path, utterances: List[Utterance], recordings: Optional[Dict[str, str]] = None) -> None:
    data_dir = Path(data_dir)
    seen: Dict[str, str] = {}
    for utt in utterances:
        if utt.utt_id in seen:
            raise CorpusError(f"{utt.source or data_dir}: utterance id {utt.utt_id} repeats {seen[utt.utt_id]}")
        if not utt.utt_id.startswith(utt.speaker):  # Kaldi: sorting by utterance must also sort by speaker
            raise ValueError(f"utterance id {utt.utt_id} does not start with its speaker id {utt.speaker}")
        seen[utt.utt_id] = utt.source or "an earlier entry"
    ordered = sorted(utterances, key=lambda u: u.utt_id.encode())
    spk2utt: Dict[str, List[str]] = {}
    for utt in ordered:
        spk2utt.setdefault(utt.speaker, []).append(utt.utt_id)
    # file name -> its value for one utterance; tables keyed by something else are written whole.
    per_utterance = {name: (lambda u, name=name: " ".join(u.texts[name].split()))
                     for name in sorted({name for u in utterances for name in u.texts})}
    per_utterance["utt2spk"] = lambda u: u.speaker
    whole = {"spk2utt": _lines((spk, " ".join(ids)) for spk, ids in spk2utt.items())}
    if recordings is not None:
        per_utterance["segments"] = lambda u: f"{u.recording} {u.start:.3f} {u.end:.3f}"
        whole["wav.scp"] = _lines(recordings.items())
    elif any(u.audio for u in utterances):
        per_utterance["wav.scp"] = lambda u: u.audio

    partial = data_dir.with_name(f"{data_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # Line by line from the sorted utterances: a corpus' documents are not copied into whole-file strings.
    for name, value in per_utterance.items():
        with open(partial / name, "w", encoding="utf-8") as f:
            for utt in ordered:
                f.write(f"{utt.utt_id} {value(utt)}\n")
    for name, text in whole.items():
        (partial / name).write_text(text, encoding="utf-8")
    shutil.rmtree(data_dir, ignore_errors=True)
    os.replace(partial, data_dir)


def write_sets(corpus: str, out: Path, sets: List[DataSet], unit: str = "utterances") -> None:
    """Write every set to ``<out>/<name>`` (each atomically) with one summary line per set on
    stderr; a set with no entries stops everything, in one line, before anything is written."""
    for data_set in sets:
        if not data_set.utterances:
            raise CorpusError(f"{corpus} {data_set.name}: no {unit} in {data_set.read_from or 'the corpus'}"
                              f"{data_set.skipped_note()}: is the corpus complete?")
    for data_set in sets:
        write_data_dir(Path(out) / data_set.name, data_set.utterances, data_set.recordings)
        print(data_set.summary(corpus, out, unit), file=sys.stderr)
