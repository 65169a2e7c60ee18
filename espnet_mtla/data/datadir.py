"""Kaldi data directories: validate (all problems in one pass), fix, subset, split.

    python -m espnet_mtla.data.datadir validate data/train [--audio] [--fs 16000]
    python -m espnet_mtla.data.datadir fix data/train            # drops bad utterances, says how many
    python -m espnet_mtla.data.datadir subset data/train data/train_100 --first 100 | --utt-list ids.txt
    python -m espnet_mtla.data.datadir split data/train 4        # data/train/split4/{1..4}

A data dir holds ``wav.scp`` (or ``feats.scp``), ``utt2spk``, ``spk2utt`` and text files
(``text``, ``text.<lang>``, ``transcript``, ...), each "<utt-id> <value>" per line, sorted by
id in C (byte) order; optional ``segments`` ("<utt> <recording> <start> <end>") makes
wav.scp keyed by recording instead.
"""

import argparse
import os
import sys
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Dict, List, Optional

from espnet_mtla.storage.fileio import write_text_atomic

PER_UTT_FILES = ("utt2spk", "feats.scp", "utt2num_frames", "utt2dur", "utt2category")
AUDIO_FILES = ("wav.scp", "feats.scp")


def text_files(data_dir: Path) -> List[str]:
    """The per-utterance text files present: text, text.*, transcript, src_text."""
    names = sorted(p.name for p in data_dir.iterdir() if p.is_file())
    return [n for n in names if n in ("text", "transcript", "src_text") or n.startswith("text.")]


class Problems:
    """Problems grouped by kind, each with the ids and file:line where found."""

    def __init__(self):
        self.by_kind: "OrderedDict[str, List[str]]" = OrderedDict()
        self.bad_utts = set()

    def add(self, kind: str, where: str, utt: Optional[str] = None) -> None:
        self.by_kind.setdefault(kind, []).append(where)
        if utt is not None:
            self.bad_utts.add(utt)

    def __bool__(self) -> bool:
        return bool(self.by_kind)

    def report(self, data_dir, shown: int = 3) -> str:
        lines = [f"{data_dir}: {sum(len(v) for v in self.by_kind.values())} problem(s)"]
        for kind, places in self.by_kind.items():
            more = f" (+{len(places) - shown} more)" if len(places) > shown else ""
            lines.append(f"  {len(places)} x {kind}: {', '.join(places[:shown])}{more}")
        return "\n".join(lines)


def read_table(path: Path, problems: Problems, allow_empty_value: bool = False) -> "OrderedDict[str, str]":
    """'<key> <value>' lines -> ordered dict; records bad encoding, empty values, duplicates, order."""
    table: "OrderedDict[str, str]" = OrderedDict()
    try:
        raw = path.read_bytes()
    except OSError as err:
        problems.add("unreadable file", f"{path} ({err.strerror})")
        return table
    previous = None
    for number, line_bytes in enumerate(raw.splitlines(), 1):
        where = f"{path}:{number}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            key = line_bytes.split(maxsplit=1)[0].decode("utf-8", "replace") if line_bytes.strip() else None
            problems.add("text that is not UTF-8 (re-encode the file as UTF-8)", where, key)
            continue
        if not line.strip():
            problems.add("empty line", where)
            continue
        key, _, value = line.strip().partition(" ")
        value = value.strip()
        if not value and not allow_empty_value:
            problems.add(f"empty value in {path.name}", where, key)
        if key in table:
            problems.add("duplicate utterance id", f"{where} ({key})", key)
            continue
        if previous is not None and key.encode() < previous.encode():
            problems.add("ids not sorted (sort with LC_ALL=C sort)", f"{where} ({key} after {previous})")
        previous = key
        table[key] = value
    return table


def wav_path(value: str) -> Optional[str]:
    """The file a wav.scp value names, or None for a pipe command or an ark offset."""
    if value.endswith("|"):
        return None
    if ":" in value and value.rsplit(":", 1)[1].isdigit():  # ark:offset
        return value.rsplit(":", 1)[0]
    return value


def validate(data_dir, check_audio: bool = False, fs: Optional[int] = None, needs_audio: bool = True) -> Problems:
    """Every problem of a data dir (``needs_audio=False``: a text-only dir, e.g. summarisation)."""
    data_dir = Path(data_dir)
    problems = Problems()
    if not data_dir.is_dir():
        problems.add("missing data dir", str(data_dir))
        return problems
    audio_name = next((n for n in AUDIO_FILES if (data_dir / n).exists()), None)
    if audio_name is None and needs_audio:
        problems.add("missing wav.scp or feats.scp", str(data_dir))
    for name in ("utt2spk", "spk2utt"):
        if not (data_dir / name).exists():
            problems.add(f"missing {name} (utils: python -m espnet_mtla.data.datadir fix creates spk2utt)", str(data_dir / name))

    utt2spk = read_table(data_dir / "utt2spk", problems) if (data_dir / "utt2spk").exists() else OrderedDict()
    if (data_dir / "utt2spk").exists() and not utt2spk:
        problems.add("no utterances (an empty set: is the corpus complete?)", str(data_dir / "utt2spk"))
    utts = set(utt2spk)
    tables: Dict[str, "OrderedDict[str, str]"] = {}
    for name in text_files(data_dir) + [n for n in PER_UTT_FILES[1:] if (data_dir / n).exists()]:
        tables[name] = read_table(data_dir / name, problems)
    has_segments = (data_dir / "segments").exists()
    audio = read_table(data_dir / audio_name, problems) if audio_name else OrderedDict()
    if has_segments and audio_name == "wav.scp":
        segments = read_table(data_dir / "segments", problems)
        for number, (utt, value) in enumerate(segments.items(), 1):
            fields = value.split()
            where = f"{data_dir / 'segments'} ({utt})"
            if len(fields) != 3:
                problems.add("segments line is not '<utt> <recording> <start> <end>'", where, utt)
                continue
            recording, start, end = fields
            try:
                if not 0 <= float(start) < float(end):
                    problems.add("segment with start >= end or start < 0", where, utt)
            except ValueError:
                problems.add("segment times that are not numbers", where, utt)
            if recording not in audio:
                problems.add("segment whose recording is not in wav.scp", where, utt)
        tables["segments"] = segments
    elif audio_name:
        tables[audio_name] = audio

    for name, table in tables.items():
        for utt in sorted(set(table) - utts):
            problems.add(f"id in {name} but not in utt2spk", f"{data_dir / name} ({utt})", utt)
        for utt in sorted(utts - set(table)):
            problems.add(f"id in utt2spk but not in {name}", f"{data_dir / 'utt2spk'} ({utt})", utt)

    if (data_dir / "spk2utt").exists():
        spk2utt = read_table(data_dir / "spk2utt", problems)
        listed = Counter(u for value in spk2utt.values() for u in value.split())
        expected = {}
        for utt, spk in utt2spk.items():
            expected.setdefault(spk, []).append(utt)
        if set(listed) != utts or any(sorted(spk2utt.get(s, "").split()) != sorted(u) for s, u in expected.items()):
            problems.add("spk2utt does not match utt2spk (fix regenerates it)", str(data_dir / "spk2utt"))

    if audio_name == "wav.scp":
        for rec, value in audio.items():
            path = wav_path(value)
            if path is not None and not os.path.exists(path):
                utt = rec if not has_segments else None
                problems.add("wav.scp entry whose file is missing", f"{data_dir / 'wav.scp'} ({rec}: {path})", utt)
                if has_segments:
                    for seg_utt, seg in tables.get("segments", {}).items():
                        if seg.split()[0] == rec:
                            problems.bad_utts.add(seg_utt)
        if check_audio:
            _check_audio(data_dir, audio, has_segments, fs, problems, tables.get("segments", {}))
    return problems


def _check_wav_length(path: str) -> None:
    """Raise if a RIFF/WAVE file's data chunk is shorter than its header says.

    libsndfile quietly shortens such a file to what is there, so a wav cut off by a full disk
    or a killed copy would otherwise pass as a shorter recording.
    """
    import struct

    with open(path, "rb") as f:
        if f.read(12)[8:12] != b"WAVE":
            return
        size = os.fstat(f.fileno()).st_size
        while True:
            header = f.read(8)
            if len(header) < 8:
                return
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"data":
                if f.tell() + length > size and length != 0xFFFFFFFF:  # 0xFFFFFFFF: streamed, size unknown
                    raise ValueError(f"truncated: the data chunk holds {size - f.tell()} of {length} bytes")
                return
            f.seek(length + (length & 1), 1)


def _check_audio(data_dir, audio, has_segments, fs, problems, segments) -> None:
    import soundfile

    users: Dict[str, List[str]] = {}
    for utt, seg in segments.items():
        users.setdefault(seg.split()[0], []).append(utt)
    for rec, value in audio.items():
        path = wav_path(value)
        if path is None or not os.path.exists(path):
            continue
        where = f"{data_dir / 'wav.scp'} ({rec}: {path})"
        bad = users.get(rec, []) if has_segments else [rec]
        try:
            info = soundfile.info(path)
            frames = info.frames
            with soundfile.SoundFile(path) as f:  # the header alone does not show a cut-off body
                if frames:
                    f.seek(frames - 1)
                    f.read(1)
            _check_wav_length(path)
        except Exception as err:  # noqa: BLE001  (soundfile raises several types)
            problems.add("unreadable or truncated audio", f"{where}: {str(err).splitlines()[0]}", None)
            problems.bad_utts.update(bad)
            continue
        if frames == 0:
            problems.add("zero-length audio", where)
            problems.bad_utts.update(bad)
        if fs is not None and info.samplerate != fs:
            problems.add(f"sample rate different from {fs} Hz (resample, or set --fs {info.samplerate})",
                         f"{where}: {info.samplerate} Hz")
            problems.bad_utts.update(bad)


def fix(data_dir, check_audio: bool = False, fs: Optional[int] = None) -> int:
    """Drop every utterance with a problem from every file, sort, regenerate spk2utt; returns how many."""
    data_dir = Path(data_dir)
    problems = validate(data_dir, check_audio, fs)
    scratch = Problems()
    utt2spk = read_table(data_dir / "utt2spk", scratch)
    names = [n for n in text_files(data_dir) + list(PER_UTT_FILES) if (data_dir / n).exists()]
    names += ["segments"] if (data_dir / "segments").exists() else []
    audio_name = next((n for n in AUDIO_FILES if (data_dir / n).exists()), None)
    if audio_name and not (data_dir / "segments").exists():
        names.append(audio_name)
    tables = {name: read_table(data_dir / name, scratch) for name in set(names)}
    keep = set(utt2spk) - problems.bad_utts
    for table in tables.values():
        keep &= set(table)
    dropped = len(set(utt2spk) | set().union(*[set(t) for t in tables.values()])) - len(keep)
    for name, table in tables.items():
        lines = [f"{utt} {table[utt]}" for utt in sorted(keep, key=str.encode)]
        write_text_atomic(data_dir / name, "".join(line + "\n" for line in lines))
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(keep, key=str.encode):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    write_text_atomic(data_dir / "spk2utt", "".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))
    return dropped


def subset(src, dst, utts: List[str]) -> None:
    """Copy the lines of ``utts`` (and their recordings and speakers) into a new data dir."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    wanted = set(utts)
    scratch = Problems()
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        if path.name == "spk2utt":
            continue
        table = read_table(path, scratch, allow_empty_value=True)
        if path.name == "wav.scp" and (src / "segments").exists():
            recordings = {v.split()[0] for k, v in read_table(src / "segments", scratch).items() if k in wanted}
            keys = [k for k in table if k in recordings]
        elif path.name in ("spk2gender",):
            speakers = {v for k, v in read_table(src / "utt2spk", scratch).items() if k in wanted}
            keys = [k for k in table if k in speakers]
        else:
            keys = [k for k in table if k in wanted]
        write_text_atomic(dst / path.name, "".join(f"{k} {table[k]}\n" for k in keys))
    utt2spk = read_table(dst / "utt2spk", scratch)
    spk2utt: Dict[str, List[str]] = {}
    for utt, spk in utt2spk.items():
        spk2utt.setdefault(spk, []).append(utt)
    write_text_atomic(dst / "spk2utt", "".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))


def partition(ids: List[str], parts: int) -> List[List[str]]:
    """``ids`` cut into ``parts`` consecutive pieces whose sizes differ by at most one."""
    return [ids[i * len(ids) // parts: (i + 1) * len(ids) // parts] for i in range(parts)]


def split(src, parts: int) -> List[Path]:
    """Split by utterance into ``src/split<parts>/{1..parts}`` of near-equal size, in id order."""
    src = Path(src)
    ids = list(read_table(src / "utt2spk", Problems()))
    if parts < 1 or parts > len(ids):
        raise ValueError(f"cannot split {len(ids)} utterances of {src} into {parts} parts")
    out = []
    for index, piece in enumerate(partition(ids, parts), 1):
        dst = src / f"split{parts}" / str(index)
        subset(src, dst, piece)
        out.append(dst)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="report every problem, with counts; exit 1 if any")
    p.add_argument("data_dir")
    p.add_argument("--audio", action="store_true", help="also open every audio file")
    p.add_argument("--fs", type=int, help="expected sample rate (with --audio)")
    p = sub.add_parser("fix", help="drop the utterances with problems")
    p.add_argument("data_dir")
    p.add_argument("--audio", action="store_true", help="also drop utterances whose audio is bad")
    p.add_argument("--fs", type=int, help="expected sample rate (with --audio)")
    p = sub.add_parser("subset")
    p.add_argument("src")
    p.add_argument("dst")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--first", type=int)
    group.add_argument("--utt-list")
    p = sub.add_parser("split")
    p.add_argument("src")
    p.add_argument("parts", type=int)
    args = parser.parse_args(argv)
    if args.command == "validate":
        problems = validate(args.data_dir, args.audio, args.fs)
        if problems:
            print(problems.report(args.data_dir), file=sys.stderr)
            audio = f" --audio{f' --fs {args.fs}' if args.fs else ''}" if args.audio else ""
            print(f"to drop the {len(problems.bad_utts)} affected utterance(s): "
                  f"python -m espnet_mtla.data.datadir fix {args.data_dir}{audio}", file=sys.stderr)
            return 1
        print(f"{args.data_dir}: OK")
    elif args.command == "fix":
        dropped = fix(args.data_dir, args.audio, args.fs)
        print(f"{args.data_dir}: dropped {dropped} utterance(s)")
    elif args.command == "subset":
        ids = list(read_table(Path(args.src) / "utt2spk", Problems()))
        utts = ids[: args.first] if args.first is not None else Path(args.utt_list).read_text().split()
        subset(args.src, args.dst, utts)
    elif args.command == "split":
        for path in split(args.src, args.parts):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
