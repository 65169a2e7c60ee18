"""SLURP -> Kaldi data dirs for spoken language understanding: train / devel / test.

    python -m espnet_mtla.data.slurp --root $SLURP --out-dir data [--use_synthetic true]

Reads ``<root>/dataset/slurp/{train,train_synthetic,devel,test}.jsonl``, one JSON object per
line with ``slurp_id``, ``sentence``, ``intent`` (``<scenario>_<action>``; else built from
``scenario`` and ``action``) and ``recordings`` (``[{"file": "audio-...flac", ...}, ...]``);
audio is ``<root>/slurp_real/<file>`` (``slurp_synth/`` for train_synthetic). Every recording
is one utterance. ``text`` is ``"<scenario>_<action> <transcript>"`` as in ESPnet's SLURP
recipe and ``transcript`` the transcript alone (lower case, punctuation other than the
apostrophe removed). ``--use_synthetic true`` adds train_synthetic to train.
``<out-dir>/intents.txt`` lists the training set's intents (whole tokens for the BPE model).
SLURP has no speaker labels: each utterance is its own speaker.
"""

import argparse
import re
import sys
from pathlib import Path
from typing import List

from espnet_mtla.data.corpus import CorpusError, read_json_lines
from espnet_mtla.data.kaldi_dir import Utterance, write_data_dir
from espnet_mtla.storage.errors import one_line_errors
from espnet_mtla.storage.fileio import write_text_atomic

SPLITS = {"train": ["train"], "devel": ["devel"], "test": ["test"]}


def normalise(sentence: str) -> str:
    return " ".join(re.sub(r"[^\w\s']|_", " ", sentence.lower()).split())


def read_jsonl(path: Path, audio_dir: Path) -> List[Utterance]:
    utterances = []
    for where, entry in read_json_lines(path):
        intent = entry.get("intent") or (f"{entry['scenario']}_{entry['action']}"
                                         if "scenario" in entry and "action" in entry else None)
        missing = [k for k, v in (("sentence", entry.get("sentence")), ("intent", intent),
                                  ("recordings", entry.get("recordings"))) if not v]
        if missing:
            raise CorpusError(f"{where}: no {', '.join(missing)}")
        transcript = normalise(entry["sentence"])
        for recording in entry["recordings"]:
            if not isinstance(recording, dict) or "file" not in recording:
                raise CorpusError(f"{where}: a recording without 'file'")
            audio = audio_dir / recording["file"]
            if not audio.exists():
                raise CorpusError(f"{where}: {audio} not found")
            utt_id = f"{Path(recording['file']).stem}"
            utterances.append(Utterance(utt_id, utt_id, {"text": f"{intent} {transcript}", "transcript": transcript},
                                        audio=str(audio.resolve()), source=where))
    return utterances


def prepare(root: Path, out: Path, use_synthetic: bool = False) -> None:
    """Every split is read (and checked) before any data dir is written."""
    root = Path(root)
    prepared = {}
    for split, sources in SPLITS.items():
        if split == "train" and use_synthetic:
            sources = sources + ["train_synthetic"]
        prepared[split] = []
        for source in sources:
            audio_dir = root / ("slurp_synth" if source == "train_synthetic" else "slurp_real")
            prepared[split] += read_jsonl(root / "dataset" / "slurp" / f"{source}.jsonl", audio_dir)
    for split, utterances in prepared.items():
        write_data_dir(Path(out) / split, utterances)
        print(f"slurp {split}: {len(utterances)} recordings", file=sys.stderr)
    # Kept whole by the BPE model (pipeline: --user_defined_symbols_file).
    intents = sorted({u.texts["text"].split()[0] for u in prepared["train"]})
    write_text_atomic(Path(out) / "intents.txt", "".join(f"{i}\n" for i in intents))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="SLURP in db.sh: holds dataset/slurp/ and slurp_real/")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--use_synthetic", default="false", choices=("true", "false"))
    args = parser.parse_args(argv)
    return one_line_errors(lambda: prepare(args.root, args.out_dir, args.use_synthetic == "true"), (CorpusError,))


if __name__ == "__main__":
    sys.exit(main())
