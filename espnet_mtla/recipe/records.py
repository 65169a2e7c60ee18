"""Stage records: which pipeline stage finished, with which options and inputs.

A stage writes ``<dir>/stage<N>_<name>.json`` twice: ``"status": "started"`` before it
touches anything, ``"status": "done"`` after its last file is in place. Both hold the stage's
*key*: the options it depends on and a SHA-256 of each input file. On a re-run a stage is
skipped when its record is done with the same key and its outputs exist; it is redone when
any option or input changed (the log names what changed). A record left at "started" marks
an interrupted stage: the stage resumes what it can (training from its checkpoint, decoding
from its finished jobs), and later stages refuse to read its half-made outputs.
"""

import hashlib
import json
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from espnet_mtla.storage.fileio import write_text_atomic


def file_digest(path: Path) -> Optional[str]:
    """SHA-256 of a file's bytes (symlinks followed); None when it does not exist."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def table_files(data_dir: Path) -> List[Path]:
    """The tables of a Kaldi data dir (its top-level files; audio and ark files live below)."""
    if not data_dir.is_dir():
        return []
    return sorted(p for p in data_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def make_key(options: Dict[str, object], inputs: Iterable[Path]) -> dict:
    return {"options": {k: options[k] for k in sorted(options)},
            "inputs": {str(p): file_digest(Path(p)) for p in sorted(set(map(str, inputs)))}}


def changes(old: dict, new: dict) -> List[str]:
    """Names of the options and inputs whose values differ between two keys."""
    out = []
    for part in ("options", "inputs"):
        a, b = old.get(part, {}), new.get(part, {})
        out += [name for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]
    return out


class StageRecord:
    def __init__(self, directory: Path, number: int, name: str):
        self.path = Path(directory) / f"stage{number}_{name}.json"
        self.number, self.name = number, name

    def read(self) -> Optional[dict]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent, or unreadable: as if never run
            return None

    @property
    def interrupted(self) -> bool:
        record = self.read()
        return record is not None and record.get("status") == "started"

    def is_done(self, key: dict, outputs: Iterable[Path]) -> bool:
        record = self.read()
        return (record is not None and record.get("status") == "done" and record.get("key") == key
                and all(Path(p).exists() for p in outputs))

    def changed_since(self, key: dict) -> List[str]:
        """What differs from the recorded key ([] when no record or the same key)."""
        record = self.read()
        return changes(record["key"], key) if record and "key" in record else []

    def _write(self, status: str, key: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"stage": self.number, "name": self.name, "status": status,
                  "time": time.strftime("%Y-%m-%d %H:%M:%S"), "key": key}
        write_text_atomic(self.path, json.dumps(record, indent=2) + "\n")

    def start(self, key: dict) -> None:
        self._write("started", key)

    def finish(self, key: dict) -> None:
        self._write("done", key)
