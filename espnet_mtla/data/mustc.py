"""MuST-C (v1/v2) -> Kaldi data dirs for speech translation English -> ``--tgt_lang``.

    python -m espnet_mtla.data.mustc --root $MUSTC --tgt_lang de --out-dir data

Reads the official layout ``<root>/en-<tgt>/data/<split>/{wav/<talk>.wav, txt/<split>.yaml,
txt/<split>.en, txt/<split>.<tgt>}``: the yaml holds one segment per line
(``- {duration: 3.5, offset: 16.73, rW: 17, uW: 0, speaker_id: spk.1, wav: ted_1.wav}``)
and line i of the yaml, of ``.en`` and of ``.<tgt>`` are the same segment (v1 and v2 alike;
v2 adds keys). Writes, per split, ``data/<split>/``: wav.scp (one entry per talk), segments,
utt2spk (speaker = talk), ``text.<tgt>`` (the translation, cased and punctuated as released:
BLEU is computed on it), ``text`` (the same), and ``text.en`` (the transcript lower-cased
without punctuation, the usual ESPnet "lc.rm" source side; ESPnet also Moses-tokenises both
sides, which we leave to the BPE model).

Ids and times as ESPnet's recipe (``egs/must_c/st1/local/data_prep.sh``) makes them: talk
``ted_<speaker number, 5 digits>`` (from ``speaker_id: spk.N``), utterance
``ted_<NNNNN>_<start ms, 7 digits>_<end ms, 7 digits>``; a segment shorter than 0.2 s is widened
to 0.2 s around its centre. Segments whose id repeats (same talk, offset and end) are dropped,
every copy, and counted, as ESPnet drops them; segments with an empty side are skipped and counted.
"""

import argparse
import re
import sys
from pathlib import Path
from collections import Counter
from typing import Dict, List, Optional

import yaml

from espnet_mtla.data.corpus import CorpusError, read_lines
from espnet_mtla.data.kaldi_dir import DataSet, Utterance, write_sets
from espnet_mtla.storage.errors import one_line_errors

SPLITS = ("train", "dev", "tst-COMMON", "tst-HE")
OPTIONAL = ("tst-HE",)  # not in every release: skipped, with a notice, when absent
REQUIRED = ("offset", "duration", "wav")
MIN_SECONDS = 0.2  # ESPnet widens shorter segments to this length rather than drop them


def normalise_source(text: str) -> str:
    """Lower-case, punctuation removed except apostrophes inside words (ESPnet's lc.rm)."""
    text = re.sub(r"[^\w\s']|_", " ", text.lower())
    return " ".join(re.sub(r"(^|\s)'|'(\s|$)", " ", text).split())


_PLAIN_FLOW = re.compile(r"^\s*-\s*\{([^{}\[\]'\"#&*!|>%@`]*)\}\s*$")  # no quotes, nesting or yaml tags


def parse_plain_flow(line: str) -> Optional[Dict[str, str]]:
    """``- {duration: 3.5, offset: 16.73, wav: ted_1.wav}`` -> its keys and values as strings;
    None for anything less plain (then PyYAML reads it). A release's 230k lines are read
    ~50x faster so than by PyYAML, to the same values."""
    match = _PLAIN_FLOW.match(line)
    if not match:
        return None
    entry = {}
    for pair in match.group(1).split(","):
        key, colon, value = pair.partition(":")
        if not colon or not key.strip() or ":" in value:
            return None
        entry[key.strip()] = value.strip()
    return entry


def read_segments(path: Path) -> List[Dict]:
    """The yaml's segments, one per line, each checked for offset, duration and wav."""
    segments = []
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            entry = parse_plain_flow(line)
            if entry is None:
                entry = yaml.safe_load(line.lstrip()[1:] if line.lstrip().startswith("-") else line)
        except yaml.YAMLError as err:
            raise CorpusError(f"{path}:{number}: not a yaml mapping ({str(err).splitlines()[0]})") from None
        if not isinstance(entry, dict):
            raise CorpusError(f"{path}:{number}: expected '- {{duration: ..., offset: ..., wav: ...}}', got {line.strip()[:60]!r}")
        missing = [key for key in REQUIRED if key not in entry]
        if missing:
            raise CorpusError(f"{path}:{number}: segment without {', '.join(missing)}")
        try:
            entry["offset"], entry["duration"] = float(entry["offset"]), float(entry["duration"])
        except (TypeError, ValueError):
            raise CorpusError(f"{path}:{number}: offset/duration are not numbers") from None
        entry["line"] = number
        segments.append(entry)
    return segments


def talk_number(segment: Dict, where: str) -> int:
    """The talk's number: ``speaker_id: spk.N`` (what ESPnet reads), else the wav's ``ted_N``."""
    for value in (str(segment.get("speaker_id", "")).replace("spk.", ""), Path(str(segment["wav"])).stem.replace("ted_", "")):
        if value.isdigit():
            return int(value)
    raise CorpusError(f"{where}: neither speaker_id 'spk.N' nor wav 'ted_N.wav' names the talk's number")


def segment_times(offset: float, duration: float):
    """(start, end) in seconds, widened to MIN_SECONDS as ESPnet does (its times rounded to 7 decimals)."""
    offset, duration = round(offset, 7), round(duration, 7)
    widen = round((MIN_SECONDS - duration) / 2, 7) if duration < MIN_SECONDS else 0.0
    return offset - widen, offset + duration + widen


def read_split(root: Path, tgt_lang: str, split: str) -> DataSet:
    base = root / f"en-{tgt_lang}" / "data" / split
    txt = base / "txt"
    segments = read_segments(txt / f"{split}.yaml")
    sides = {lang: [line for _, line in read_lines(txt / f"{split}.{lang}")] for lang in ("en", tgt_lang)}
    for lang, lines in sides.items():
        if len(lines) != len(segments):
            raise CorpusError(f"{txt / f'{split}.{lang}'}: {len(lines)} lines, but {txt / f'{split}.yaml'} has "
                              f"{len(segments)} segments; they must be aligned line by line")
    data_set = DataSet(split, [], {}, read_from=str(txt / f"{split}.yaml"))
    utterances = []
    yaml_path = txt / f"{split}.yaml"
    for index, seg in enumerate(segments):
        where = f"{yaml_path}:{seg['line']}"
        talk = f"ted_{talk_number(seg, where):05d}"
        if talk not in data_set.recordings:
            wav = base / "wav" / str(seg["wav"])
            if not wav.exists():
                raise CorpusError(f"{where}: {wav} not found")
            data_set.recordings[talk] = str(wav.resolve())
        start, end = segment_times(seg["offset"], seg["duration"])
        source, target = normalise_source(sides["en"][index]), " ".join(sides[tgt_lang][index].split())
        if not source or not target:  # nothing to learn from (or score) in an empty side
            data_set.skip("segments with an empty side")
            continue
        start_ms, end_ms = int(1000 * start + 0.5), int(1000 * end + 0.5)
        utterances.append(Utterance(
            f"{talk}_{start_ms:07d}_{end_ms:07d}", talk, {"text": target, f"text.{tgt_lang}": target, "text.en": source},
            recording=talk, start=start_ms / 1000, end=end_ms / 1000, source=where))
    counts = Counter(u.utt_id for u in utterances)
    data_set.utterances = [u for u in utterances if counts[u.utt_id] == 1]
    data_set.skip("segments whose id repeats (every copy, as ESPnet)", len(utterances) - len(data_set.utterances))
    return data_set


def prepare(root: Path, out: Path, tgt_lang: str = "de", splits=SPLITS) -> None:
    """Every split is read (and checked) before any data dir is written."""
    sets = []
    for split in splits:
        if split in OPTIONAL and not (Path(root) / f"en-{tgt_lang}" / "data" / split).exists():
            print(f"mustc en-{tgt_lang}: no {split} in this release: skipped", file=sys.stderr)
            continue
        sets.append(read_split(Path(root), tgt_lang, split))
    write_sets(f"mustc en-{tgt_lang}", out, sets, unit="segments")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="MUSTC in db.sh: holds en-<tgt>/data/")
    parser.add_argument("--tgt_lang", default="de")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--splits", default=" ".join(SPLITS))
    args = parser.parse_args(argv)
    return one_line_errors(lambda: prepare(args.root, args.out_dir, args.tgt_lang, args.splits.split()), (CorpusError,))


if __name__ == "__main__":
    sys.exit(main())
