"""SLURP -> Kaldi data dirs for spoken language understanding: train / devel / test.

    python -m espnet_mtla.data.slurp --root $SLURP --out-dir data [--use_synthetic true]

Layouts (files are found by name under ``<root>``, so either works, and so does a root one
level up):
- the release: ``dataset/slurp/{train,train_synthetic,devel,test}.jsonl`` and
  ``dataset/slurp/metadata.json`` from the SLURP repository, audio unpacked by its
  ``scripts/download_audio.sh`` into ``audio/slurp_real/`` and ``audio/slurp_synth/``;
- the audio tarballs unpacked at the root instead: ``slurp_real/``, ``slurp_synth/``.

Each jsonl line holds ``slurp_id``, ``sentence``, ``scenario``, ``action`` and ``recordings``
(``[{"file": "audio-...flac", ...}, ...]``). As in SLURP's own evaluation (``evaluate.py``) and
ESPnet's recipe, the label is ``<scenario>_<action>``: the ``intent`` field is not always that
(about 1.5% of devel and test entries carry e.g. ``music``) and is not read.

What ESPnet's recipe makes (``egs2/slurp/asr1/local/prepare_slurp_data.py``):
- one utterance per recording, close-talk (``-headset``) and far-field alike; a recording
  already taken by an earlier split (train, devel, test in that order) is skipped and counted;
- speaker ``slurp_<usrid>`` (``metadata.json``: ``<slurp_id> -> recordings -> <file> -> usrid``),
  utterance ``slurp_<usrid>_<file without "audio-" and ".flac">``; train_synthetic recordings
  (``--use_synthetic true``, added to train) have the speaker ``slurp_synthetic``;
- ``text``: ``"<scenario>_<action> <sentence>"`` with ``@`` -> `` at ``, ``#`` -> `` hashtag ``,
  commas and full stops removed, case kept (synthetic sentences lower-cased), ``<unk>`` ->
  ``unknown``; ``transcript``: the sentence part alone, for the WER.
``<out-dir>/intents.txt`` lists the training set's labels (whole tokens for the BPE model).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Set

import soundfile

from espnet_mtla.data.corpus import CorpusError, find_one, read_json_lines
from espnet_mtla.data.kaldi_dir import DataSet, Utterance, write_sets
from espnet_mtla.storage.errors import one_line_errors
from espnet_mtla.storage.fileio import write_text_atomic

SPLITS = {"train": ["train"], "devel": ["devel"], "test": ["test"]}
AUDIO = {"train": "slurp_real", "devel": "slurp_real", "test": "slurp_real", "train_synthetic": "slurp_synth"}
UNKNOWN_SPEAKER = "unknown"  # a recording that metadata.json does not list


def normalise(sentence: str, lower: bool = False) -> str:
    """ESPnet's SLURP normalisation (real recordings keep their case; synthetic ones are lower-cased)."""
    text = sentence.replace("@", " at ").replace("#", " hashtag ").replace(",", "").replace(".", "")
    text = " ".join(text.split())
    return text.lower() if lower else text


def label(entry: dict) -> str:
    """``<scenario>_<action>``, as SLURP's evaluate.py and ESPnet build it (not the ``intent`` field)."""
    return f"{entry['scenario']}_{entry['action']}"


def read_speakers(path: Path) -> Dict[str, str]:
    """recording file name -> usrid, from metadata.json (empty, with a notice, when it is absent)."""
    if not path.exists():
        print(f"slurp: {path} not found: every speaker is {UNKNOWN_SPEAKER!r}", file=sys.stderr)
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CorpusError(f"{path}:{err.lineno}: not JSON ({err.msg})") from None
    speakers = {}
    for slurp_id, entry in metadata.items():
        recordings = entry.get("recordings") if isinstance(entry, dict) else None
        if not isinstance(recordings, dict):
            raise CorpusError(f"{path}: entry {slurp_id} has no 'recordings' mapping (file -> {{usrid, ...}})")
        for file, recording in recordings.items():
            if isinstance(recording, dict) and recording.get("usrid"):
                speakers[file] = str(recording["usrid"])
    return speakers


def read_jsonl(path: Path, audio_dir: Path, speakers: Dict[str, str], taken: Set[str], data_set: DataSet,
               synthetic: bool = False) -> None:
    """Adds the utterances of one jsonl file to ``data_set``; ``taken``: recordings already used."""
    for where, entry in read_json_lines(path):
        missing = [key for key in ("sentence", "scenario", "action", "recordings") if not entry.get(key)]
        if missing:
            raise CorpusError(f"{where}: no {', '.join(missing)}")
        transcript = normalise(entry["sentence"], lower=synthetic).replace("<unk>", "unknown")
        text = f"{label(entry)} {transcript}"
        for recording in entry["recordings"]:
            if not isinstance(recording, dict) or "file" not in recording:
                raise CorpusError(f"{where}: a recording without 'file'")
            file = recording["file"]
            record_id = Path(file).name
            record_id = record_id[len("audio-"):] if record_id.startswith("audio-") else record_id
            record_id = record_id[:-len(".flac")] if record_id.endswith(".flac") else Path(record_id).stem
            if record_id in taken:
                data_set.skip("recordings already in an earlier split")
                continue
            taken.add(record_id)
            audio = audio_dir / file
            try:
                duration = soundfile.info(str(audio)).duration
            except RuntimeError:
                raise CorpusError(f"{where}: {audio} " + ("is not readable audio" if audio.exists() else "not found")) from None
            speaker = "slurp_" + ("synthetic" if synthetic else speakers.get(file, UNKNOWN_SPEAKER))
            if not synthetic and file not in speakers:
                data_set.skip("recordings not in metadata.json: speaker unknown (kept)")
            utt_id = f"{speaker}_{record_id}"
            data_set.utterances.append(Utterance(utt_id, speaker, {"text": text, "transcript": transcript},
                                                 audio=str(audio.resolve()), source=where, duration=duration))


def prepare(root: Path, out: Path, use_synthetic: bool = False) -> None:
    """Every split is read (and checked) before any data dir is written."""
    root = Path(root)
    text_dir = find_one(root, "devel.jsonl", "the SLURP release", prefer=["dataset/slurp/devel.jsonl"]).parent
    audio_dirs: Dict[str, Path] = {}
    for name in sorted(set(AUDIO[s] for s in ["train", "devel", "test"] + (["train_synthetic"] if use_synthetic else []))):
        audio_dirs[name] = find_one(root, name, f"SLURP's audio ({name}.tar.gz unpacked)", directory=True,
                                    prefer=[f"audio/{name}", name])
    speakers = read_speakers(text_dir / "metadata.json")
    taken: Set[str] = set()
    sets = []
    for split, sources in SPLITS.items():
        if split == "train" and use_synthetic:
            sources = sources + ["train_synthetic"]
        data_set = DataSet(split, [], read_from=", ".join(str(text_dir / f"{s}.jsonl") for s in sources))
        for source in sources:
            read_jsonl(text_dir / f"{source}.jsonl", audio_dirs[AUDIO[source]], speakers, taken, data_set,
                       synthetic=source == "train_synthetic")
        sets.append(data_set)
    write_sets("slurp", out, sets)
    # Kept whole by the BPE model (pipeline: --user_defined_symbols_file).
    intents = sorted({u.texts["text"].split()[0] for u in sets[0].utterances})
    write_text_atomic(Path(out) / "intents.txt", "".join(f"{i}\n" for i in intents))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path,
                        help="SLURP in db.sh: holds dataset/slurp/*.jsonl and audio/slurp_real/ (or slurp_real/)")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--use_synthetic", default="false", choices=("true", "false"))
    args = parser.parse_args(argv)
    return one_line_errors(lambda: prepare(args.root, args.out_dir, args.use_synthetic == "true"), (CorpusError,))


if __name__ == "__main__":
    sys.exit(main())
