"""MuST-C (v1/v2) -> Kaldi data dirs for speech translation English -> ``--tgt_lang``.

    python -m espnet_mtla.data.mustc --root $MUSTC --tgt_lang de --out-dir data

Reads the official layout ``<root>/en-<tgt>/data/<split>/{wav/<talk>.wav, txt/<split>.yaml,
txt/<split>.en, txt/<split>.<tgt>}``: the yaml holds one segment per line
(``- {duration: 3.5, offset: 16.73, rW: 17, uW: 0, speaker_id: spk.1, wav: ted_1.wav}``)
and line i of the yaml, of ``.en`` and of ``.<tgt>`` are the same segment. Writes, per split,
``data/<split>/``: wav.scp (one entry per talk), segments, utt2spk (speaker = talk),
``text.<tgt>`` (the translation, cased and punctuated as released: BLEU is computed on it),
``text`` (the same), and ``text.en`` (the transcript lower-cased without punctuation, the
usual ESPnet "lc.rm" source side). Utterance ids: ``<talk>_<start ms>_<end ms>``.
"""

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List

import yaml

from espnet_mtla.data.corpus import CorpusError, read_lines
from espnet_mtla.data.kaldi_dir import Utterance, write_data_dir
from espnet_mtla.storage.errors import one_line_errors

SPLITS = ("train", "dev", "tst-COMMON", "tst-HE")
OPTIONAL = ("tst-HE",)  # not in every release: skipped, with a notice, when absent
REQUIRED = ("offset", "duration", "wav")


def normalise_source(text: str) -> str:
    """Lower-case, punctuation removed except apostrophes inside words (ESPnet's lc.rm)."""
    text = re.sub(r"[^\w\s']|_", " ", text.lower())
    return " ".join(re.sub(r"(^|\s)'|'(\s|$)", " ", text).split())


def read_segments(path: Path) -> List[Dict]:
    """The yaml's segments, one per line, each checked for offset, duration and wav."""
    segments = []
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
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


def read_split(root: Path, tgt_lang: str, split: str):
    """(utterances, recordings) of one split."""
    base = root / f"en-{tgt_lang}" / "data" / split
    txt = base / "txt"
    segments = read_segments(txt / f"{split}.yaml")
    sides = {lang: [line for _, line in read_lines(txt / f"{split}.{lang}")] for lang in ("en", tgt_lang)}
    for lang, lines in sides.items():
        if len(lines) != len(segments):
            raise CorpusError(f"{txt / f'{split}.{lang}'}: {len(lines)} lines, but {txt / f'{split}.yaml'} has "
                              f"{len(segments)} segments; they must be aligned line by line")
    recordings, utterances = {}, []
    for index, seg in enumerate(segments):
        talk = Path(str(seg["wav"])).stem
        wav = base / "wav" / str(seg["wav"])
        if talk not in recordings:
            if not wav.exists():
                raise CorpusError(f"{txt / f'{split}.yaml'}:{seg['line']}: {wav} not found")
            recordings[talk] = str(wav.resolve())
        start, end = seg["offset"], seg["offset"] + seg["duration"]
        source, target = normalise_source(sides["en"][index]), " ".join(sides[tgt_lang][index].split())
        if not source or not target:  # nothing to learn from (or score) in an empty side
            continue
        utterances.append(Utterance(
            f"{talk}_{round(start * 1000):08d}_{round(end * 1000):08d}", talk,
            {"text": target, f"text.{tgt_lang}": target, "text.en": source},
            recording=talk, start=start, end=end, source=f"{txt / f'{split}.yaml'}:{seg['line']}"))
    return utterances, recordings


def prepare(root: Path, out: Path, tgt_lang: str = "de", splits=SPLITS) -> None:
    """Every split is read (and checked) before any data dir is written."""
    prepared = {}
    for split in splits:
        if split in OPTIONAL and not (Path(root) / f"en-{tgt_lang}" / "data" / split).exists():
            print(f"mustc en-{tgt_lang}: no {split} in this release: skipped", file=sys.stderr)
            continue
        prepared[split] = read_split(Path(root), tgt_lang, split)
    for split, (utterances, recordings) in prepared.items():
        write_data_dir(Path(out) / split, utterances, recordings)
        print(f"mustc en-{tgt_lang} {split}: {len(utterances)} segments -> {Path(out) / split}", file=sys.stderr)


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
