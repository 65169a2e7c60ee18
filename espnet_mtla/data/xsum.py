"""XSum -> text-only Kaldi-style data dirs for summarisation (ESPnet's mt task): train / dev / test.

    python -m espnet_mtla.data.xsum --root $XSUM --out-dir data [--max_doc_words 0]

Either release layout under ``<root>``:
- original: ``bbc-summary-data/<id>.summary`` (sections ``[SN]URL[SN]``, ``[SN]TITLE[SN]``,
  ``[SN]FIRST-SENTENCE[SN]``: the summary, ``[SN]RESTBODY[SN]``: the document) and the
  official split ``XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json`` (``train``/``validation``/``test``
  id lists; ids of the split with no .summary file are skipped and counted, as in every
  published XSum loader);
- jsonl export: ``{train,validation,test}.jsonl``, one ``{"document", "summary", "id"}`` per line.
Writes ``text`` (the summary), ``text.doc`` (the document on one line: the pipeline's
``--src_lang doc``) and ``utt2spk`` (each document its own speaker). ``--max_doc_words N``
keeps the first N words of each document (0: all).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from espnet_mtla.data.corpus import CorpusError, read_json_lines, read_lines
from espnet_mtla.data.kaldi_dir import Utterance, write_data_dir
from espnet_mtla.storage.errors import one_line_errors

SPLIT_FILE = "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json"
SPLITS = {"train": "train", "dev": "validation", "test": "test"}  # our name -> the release's
SECTIONS = ("URL", "TITLE", "FIRST-SENTENCE", "RESTBODY")


def read_summary_file(path: Path) -> Tuple[str, str]:
    """(document, summary) of a bbc-summary-data/<id>.summary file."""
    sections: Dict[str, List[str]] = {}
    current = None
    for _, line in read_lines(path):
        marker = line.strip()
        if marker.startswith("[SN]") and marker.endswith("[SN]") and len(marker) > 8:
            current = marker[4:-4]
            sections[current] = []
        elif current is not None:
            sections[current].append(line.strip())
        elif marker:
            raise CorpusError(f"{path}:1: text before the first [SN]...[SN] section marker")
    for name in ("FIRST-SENTENCE", "RESTBODY"):
        if not " ".join(sections.get(name, [])).strip():
            raise CorpusError(f"{path}: no (or an empty) [SN]{name}[SN] section")
    return " ".join(sections["RESTBODY"]), " ".join(sections["FIRST-SENTENCE"])


def read_original(root: Path, split: str) -> Tuple[List[Tuple[str, str, str, str]], int]:
    split_path = root / SPLIT_FILE
    try:
        ids = json.loads(split_path.read_text(encoding="utf-8"))[SPLITS[split]]
    except json.JSONDecodeError as err:
        raise CorpusError(f"{split_path}:{err.lineno}: not JSON ({err.msg})") from None
    except KeyError:
        raise CorpusError(f"{split_path}: no {SPLITS[split]!r} id list") from None
    items, missing = [], 0
    for doc_id in ids:
        path = root / "bbc-summary-data" / f"{doc_id}.summary"
        if not path.exists():
            missing += 1
            continue
        document, summary = read_summary_file(path)
        items.append((str(doc_id), document, summary, str(path)))
    return items, missing


def read_jsonl(path: Path) -> List[Tuple[str, str, str, str]]:
    items = []
    for where, entry in read_json_lines(path):
        missing = [k for k in ("id", "document", "summary") if not entry.get(k)]
        if missing:
            raise CorpusError(f"{where}: no {', '.join(missing)}")
        items.append((str(entry["id"]), entry["document"], entry["summary"], where))
    return items


def prepare(root: Path, out: Path, max_doc_words: int = 0) -> None:
    root = Path(root)
    original = (root / SPLIT_FILE).exists()
    if not original and not (root / "train.jsonl").exists():
        raise CorpusError(f"{root}: neither {SPLIT_FILE} (with bbc-summary-data/) nor train.jsonl found")
    prepared = {}  # every split is read (and checked) before any data dir is written
    for split, release_name in SPLITS.items():
        items, missing = read_original(root, split) if original else (read_jsonl(root / f"{release_name}.jsonl"), 0)
        utterances = []
        for doc_id, document, summary, where in items:
            words = document.split()
            document = " ".join(words[:max_doc_words] if max_doc_words > 0 else words)
            utterances.append(Utterance(doc_id, doc_id, {"text": summary, "text.doc": document}, source=where))
        prepared[split] = utterances, missing
    for split, (utterances, missing) in prepared.items():
        write_data_dir(Path(out) / split, utterances)
        skipped = f" ({missing} ids of the split have no .summary file: skipped)" if missing else ""
        print(f"xsum {split}: {len(utterances)} documents{skipped}", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="XSUM in db.sh")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--max_doc_words", type=int, default=0)
    args = parser.parse_args(argv)
    return one_line_errors(lambda: prepare(args.root, args.out_dir, args.max_doc_words), (CorpusError,))


if __name__ == "__main__":
    sys.exit(main())
