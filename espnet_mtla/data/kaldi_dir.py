"""Writing a Kaldi data dir from a corpus' utterances (what every ``local/data.sh`` produces).

    write_data_dir(Path("data/train"), utterances, recordings={"ted_1": "/abs/ted_1.wav"})

Writes ``wav.scp`` (per recording with ``segments``, else per utterance; absent for text-only
corpora), ``segments``, ``utt2spk``, ``spk2utt`` and one file per text field (``text``,
``text.en``, ``transcript``, ...), every table sorted by id in byte order. The files go to
``<dir>.partial`` first and the finished dir is renamed into place, so an interrupted data
preparation never leaves a data dir that looks complete.
"""

import os
import shutil
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
    files = {"utt2spk": _lines((u.utt_id, u.speaker) for u in utterances)}
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utterances, key=lambda u: u.utt_id.encode()):
        spk2utt.setdefault(utt.speaker, []).append(utt.utt_id)
    files["spk2utt"] = _lines((spk, " ".join(ids)) for spk, ids in spk2utt.items())
    for name in sorted({name for u in utterances for name in u.texts}):
        files[name] = _lines((u.utt_id, " ".join(u.texts[name].split())) for u in utterances)
    if recordings is not None:
        files["wav.scp"] = _lines(recordings.items())
        files["segments"] = _lines((u.utt_id, f"{u.recording} {u.start:.3f} {u.end:.3f}") for u in utterances)
    elif any(u.audio for u in utterances):
        files["wav.scp"] = _lines((u.utt_id, u.audio) for u in utterances)

    partial = data_dir.with_name(f"{data_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, text in files.items():
        (partial / name).write_text(text, encoding="utf-8")
    shutil.rmtree(data_dir, ignore_errors=True)
    os.replace(partial, data_dir)
