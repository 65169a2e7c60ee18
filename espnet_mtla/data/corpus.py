"""Where a corpus is (db.sh), checked before data preparation reads it; the error that every
corpus reader (mustc, ami, slurp, xsum) raises, naming the file and line; and the search for a
corpus' files under its root, in whichever layout it was unpacked (``find_under``).

    python -m espnet_mtla.data.corpus MUSTC "$MUSTC" "the MuST-C v1/v2 root" en-de/data/train/txt/train.yaml ...

exits 1 with one line naming the db.sh variable, the path and the first expected file that is
missing, so an unset or mistyped corpus path never surfaces as a traceback deep in a parser.
"""

import argparse
import fnmatch
import os
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

from espnet_mtla.storage.errors import one_line_errors


class CorpusError(RuntimeError):
    pass


def read_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, line without its newline) of a UTF-8 corpus file."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path} not found (is the corpus complete?)") from None
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            yield number, line.decode("utf-8")
        except UnicodeDecodeError:
            raise CorpusError(f"{path}:{number}: not UTF-8 text") from None


def read_json_lines(path: Path) -> Iterator[Tuple[str, dict]]:
    """("file:line", object) for each non-empty line of a jsonl corpus file."""
    import json

    for number, line in read_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"{where}: not JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(entry, dict):
            raise CorpusError(f"{where}: expected a JSON object, got {line.strip()[:40]!r}")
        yield where, entry


def find_under(root: Path, patterns: Sequence[str], directories: bool = False, max_depth: int = 6) -> Dict[str, List[Path]]:
    """pattern -> the files (``directories``: the folders) under ``root`` whose name matches it,
    case-insensitively as ``find -iname`` does, sorted; one walk of the tree for all patterns.

    Corpora are unpacked in several layouts (a download script's, a website's, a toolkit's),
    so their files are found by name, not at one fixed path. Folders whose name starts with a
    dot are not entered; symbolic links to folders are followed (corpora are often linked in)."""
    root = Path(root)
    lowered = [(pattern, pattern.lower()) for pattern in patterns]
    found: Dict[str, List[Path]] = {pattern: [] for pattern in patterns}
    base_depth = str(root).rstrip(os.sep).count(os.sep)
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        if folder.count(os.sep) - base_depth >= max_depth:
            subfolders[:] = []
        for name in (subfolders if directories else files):
            low = name.lower()
            for pattern, low_pattern in lowered:
                if fnmatch.fnmatchcase(low, low_pattern):
                    found[pattern].append(Path(folder) / name)
    return {pattern: sorted(paths) for pattern, paths in found.items()}


def find_one(root: Path, name: str, what: str, directory: bool = False, prefer: Sequence[str] = ()) -> Path:
    """The file (or folder) called ``name`` under ``root``: the first of ``prefer`` (paths relative
    to the root, the usual layouts) that exists, else the only one found by searching; one line
    listing what was looked for when there is none, or several with none preferred."""
    root = Path(root)
    for relative in prefer:
        if (root / relative).exists():
            return root / relative
    hits = find_under(root, [name], directories=directory)[name]
    if len(hits) == 1:
        return hits[0]
    kind = "folder" if directory else "file"
    if not hits:
        usual = f" (usually {' or '.join(str(root / p) for p in prefer)})" if prefer else ""
        raise CorpusError(f"{root}: no {kind} named {name} anywhere under it{usual}: is it {what}?")
    raise CorpusError(f"{root}: {len(hits)} {kind}s named {name} ({hits[0]}, {hits[1]}, ...): "
                      f"point the root at the one copy of {what}")


def require_corpus(variable: str, path: str, what: str, expected: Sequence[str] = ()) -> Path:
    """The corpus root ``path`` (from db.sh's ``variable``), holding every relative path in ``expected``."""
    if not path:
        raise CorpusError(f"{variable} is not set in db.sh: set it to {what}")
    root = Path(path)
    if not root.is_dir():
        raise CorpusError(f"{variable}={path} (db.sh): no such directory; set it to {what}")
    for relative in expected:
        if not (root / relative).exists():
            raise CorpusError(f"{variable}={path} (db.sh): {root / relative} not found; is it {what}?")
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variable")
    parser.add_argument("path")
    parser.add_argument("what", help="what the path should be, for the message")
    parser.add_argument("expected", nargs="*", help="paths relative to the root that must exist")
    args = parser.parse_args(argv)
    return one_line_errors(lambda: require_corpus(args.variable, args.path, args.what, args.expected), (CorpusError,))


if __name__ == "__main__":
    sys.exit(main())
