"""XSum -> text-only Kaldi-style data dirs for summarisation (ESPnet's mt task): train / dev / test.

    python -m espnet_mtla.data.xsum --root $XSUM --out-dir data [--max_doc_words 0]

Layouts, found by name anywhere under ``<root>``:
- the released archive (``XSUM-EMNLP18-Summary-Data-Original.tar.gz``, what the HuggingFace
  and TFDS loaders read): ``bbc-summary-data/<id>.summary`` with sections ``[SN]URL[SN]``,
  ``[SN]TITLE[SN]``, ``[SN]FIRST-SENTENCE[SN]`` (the summary) and ``[SN]RESTBODY[SN]`` (the
  document);
- the dataset's own scripts' output (``parse-bbc-html-data.py``):
  ``xsum-extracts-from-downloads/<id>.data`` with ``[XSUM]URL[XSUM]``,
  ``[XSUM]INTRODUCTION[XSUM]`` (the summary) and ``[XSUM]RESTBODY[XSUM]``;
both with the official split ``XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json`` (``train`` /
``validation`` / ``test`` id lists);
- a jsonl export: ``{train,validation,test}.jsonl``, one ``{"document", "summary", "id"}`` per line.

As the HuggingFace loader does, the web page's boilerplate lines ("Share this with", "Email",
"Facebook", ... exactly, one per line) and blank lines are removed before the sections are
read. Ids of the split with no file, and articles with an empty or missing summary or body
section, are skipped and counted (as TFDS counts missing ids); a split whose ids mostly have
no file is refused. Writes ``text`` (the summary), ``text.doc`` (the document on one line:
the pipeline's ``--src_lang doc``) and ``utt2spk`` (each document its own speaker).
``--max_doc_words N`` keeps the first N words of each document (0: all).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from espnet_mtla.data.corpus import CorpusError, find_under, read_json_lines
from espnet_mtla.data.kaldi_dir import DataSet, Utterance, write_sets
from espnet_mtla.storage.errors import one_line_errors

SPLIT_FILE = "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json"
SPLITS = {"train": "train", "dev": "validation", "test": "test"}  # our name -> the release's
# layout -> (folder, file suffix, section marker, summary section, document section)
LAYOUTS = {"summary": ("bbc-summary-data", ".summary", "[SN]", "FIRST-SENTENCE", "RESTBODY"),
           "extracts": ("xsum-extracts-from-downloads", ".data", "[XSUM]", "INTRODUCTION", "RESTBODY")}
# The HuggingFace/TFDS loaders' list: lines of the BBC page's sharing panel.
BOILERPLATE = frozenset(["Share this with", "Email", "Facebook", "Messenger", "Twitter", "Pinterest", "WhatsApp",
                         "Linkedin", "LinkedIn", "Copy this link",
                         "These are external links and will open in a new window"])


def read_article(path: Path, layout: str) -> Optional[Tuple[str, str]]:
    """(document, summary) of one article file; None when its summary or body is empty or missing."""
    _, _, marker, summary_name, document_name = LAYOUTS[layout]
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CorpusError(f"{path}: not UTF-8 text") from None
    sections, current = {}, None
    for line in raw.splitlines():
        if line in BOILERPLATE or not line.strip():
            continue
        stripped = line.strip()
        if stripped.startswith(marker) and stripped.endswith(marker) and len(stripped) > 2 * len(marker):
            current = stripped[len(marker):-len(marker)]
            sections[current] = []
        elif current is not None:
            sections[current].append(stripped)
        else:
            raise CorpusError(f"{path}:1: text before the first {marker}...{marker} section marker")
    document, summary = (" ".join(sections.get(name, [])) for name in (document_name, summary_name))
    return (document, summary) if document and summary else None


def find_layout(root: Path) -> Tuple[str, Optional[Path], Optional[Path]]:
    """(layout, article folder, split file): "summary" or "extracts" with both, or "jsonl"."""
    names = [folder for folder, *_ in LAYOUTS.values()]
    found = find_under(root, [SPLIT_FILE, "train.jsonl"])
    folders = find_under(root, names, directories=True)
    split_files, jsonl = found[SPLIT_FILE], found["train.jsonl"]
    for layout, (folder, *_) in LAYOUTS.items():
        if folders[folder] and split_files:
            return layout, folders[folder][0], split_files[0]
    if jsonl:
        return "jsonl", jsonl[0].parent, None
    looked = ", ".join(f"{folder}/" for folder in names)
    raise CorpusError(f"{root}: found neither {SPLIT_FILE} with one of {looked} nor train.jsonl anywhere under it: "
                      f"is it XSum?" + (f" ({SPLIT_FILE} found, but no article folder)" if split_files else ""))


def read_split(articles: Path, split_file: Path, layout: str, split: str, data_set: DataSet) -> List[Tuple[str, str, str, str]]:
    try:
        ids = json.loads(split_file.read_text(encoding="utf-8"))[SPLITS[split]]
    except json.JSONDecodeError as err:
        raise CorpusError(f"{split_file}:{err.lineno}: not JSON ({err.msg})") from None
    except KeyError:
        raise CorpusError(f"{split_file}: no {SPLITS[split]!r} id list") from None
    suffix = LAYOUTS[layout][1]
    items, missing, empty = [], 0, 0
    for doc_id in ids:
        path = articles / f"{doc_id}{suffix}"
        if not path.exists():
            missing += 1
            continue
        article = read_article(path, layout)
        if article is None:
            empty += 1
            continue
        items.append((str(doc_id), article[0], article[1], str(path)))
    if ids and missing > len(ids) / 2:
        raise CorpusError(f"{split_file}: {missing:,} of the {len(ids):,} {SPLITS[split]} ids have no {articles}/<id>{suffix}: "
                          f"is the download complete?")
    data_set.skip(f"ids of the split with no {suffix} file", missing)
    data_set.skip("articles with an empty summary or body", empty)
    return items


def read_jsonl(path: Path) -> List[Tuple[str, str, str, str]]:
    items = []
    for where, entry in read_json_lines(path):
        missing = [k for k in ("id", "document", "summary") if not entry.get(k)]
        if missing:
            raise CorpusError(f"{where}: no {', '.join(missing)}")
        items.append((str(entry["id"]), entry["document"], entry["summary"], where))
    return items


def prepare(root: Path, out: Path, max_doc_words: int = 0) -> None:
    layout, articles, split_file = find_layout(Path(root))
    sets = []  # every split is read (and checked) before any data dir is written
    for split, release_name in SPLITS.items():
        data_set = DataSet(split, [], read_from=str(split_file or articles / f"{release_name}.jsonl"))
        items = (read_split(articles, split_file, layout, split, data_set) if split_file
                 else read_jsonl(articles / f"{release_name}.jsonl"))
        for doc_id, document, summary, where in items:
            words = document.split()
            document = " ".join(words[:max_doc_words] if max_doc_words > 0 else words)
            data_set.utterances.append(Utterance(doc_id, doc_id, {"text": summary, "text.doc": document}, source=where))
        sets.append(data_set)
    write_sets("xsum", out, sets, unit="documents")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="XSUM in db.sh")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--max_doc_words", type=int, default=0)
    args = parser.parse_args(argv)
    return one_line_errors(lambda: prepare(args.root, args.out_dir, args.max_doc_words), (CorpusError,))


if __name__ == "__main__":
    sys.exit(main())
