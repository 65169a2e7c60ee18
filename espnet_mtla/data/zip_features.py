"""fairseq-style feature storage: one ``.npy`` entry per utterance in an uncompressed zip,
addressed by byte offset, so that a reader seeks straight to an utterance.

    feats.scp    <utt> /abs/dump/fbank_zip/train/data/feats.1.zip:<offset>:<length>
    manifest.tsv id  audio  n_frames  tgt_text  speaker      (fairseq's speech-to-text manifest)

``python -m espnet_mtla.data.format_audio ... --feats_type fbank --feats_storage zip`` writes
them (pipeline: ``--feats_type fbank --feats_storage zip``); training and decoding read them
through the ESPnet data type ``zip_npy``, registered by ``import espnet_mtla.tasks.registration``.
"""

import io
import os
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Dict, List

import numpy as np

DATA_TYPE = "zip_npy"
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # a zip local file header: 30 bytes, then name and extra field


class ZipNpyWriter:
    """``writer(utt, array)`` adds ``<utt>.npy`` (stored, not compressed); ``close()`` renames the
    finished zip into place and writes ``<zip>.scp`` with each entry's byte range."""

    def __init__(self, zip_path: Path):
        self.path = Path(zip_path)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.zip = zipfile.ZipFile(self.partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def __call__(self, utt: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.float32))
        self.zip.writestr(f"{utt}.npy", buffer.getvalue())

    def close(self) -> None:
        self.zip.close()
        lines = [f"{Path(info.filename).stem} {self.path.resolve()}:{offset}:{info.file_size}\n"
                 for info, offset in zip(*entry_offsets(self.partial))]
        os.replace(self.partial, self.path)
        Path(f"{self.path}.scp").write_text("".join(lines), encoding="utf-8")


def entry_offsets(zip_path: Path):
    """(entries, byte offset of each entry's data) of a stored (uncompressed) zip."""
    with zipfile.ZipFile(zip_path) as archive, open(zip_path, "rb") as raw:
        infos = archive.infolist()
        offsets = []
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{zip_path}: {info.filename} is compressed; entries must be stored")
            raw.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            name_length, extra_length = fields[-2], fields[-1]
            offsets.append(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
    return infos, offsets


def load(ref: str) -> np.ndarray:
    """The array at ``<zip path>:<offset>:<length>``."""
    path, offset, length = ref.rsplit(":", 2)
    with open(path, "rb") as f:
        f.seek(int(offset))
        data = f.read(int(length))
    if len(data) != int(length) or not data.startswith(b"\x93NUMPY"):
        raise ValueError(f"{ref}: not an npy entry (is the zip complete, and the offset from its feats.scp?)")
    return np.load(io.BytesIO(data))


class ZipNpyReader(Mapping):
    """An ESPnet loader: utterance id -> (frames, dims) float32 array, from a feats.scp of zip refs."""

    def __init__(self, scp_path):
        self.refs: Dict[str, str] = {}
        with open(scp_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    key, ref = line.split(maxsplit=1)
                    self.refs[key] = ref.strip()

    def __getitem__(self, key: str) -> np.ndarray:
        return load(self.refs[key])

    def __iter__(self):
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)


def register_data_type() -> None:
    """Make ``path,name,zip_npy`` usable in ESPnet's ``--*_data_path_and_name_and_type``."""
    from espnet2.train import dataset

    dataset.DATA_TYPES.setdefault(DATA_TYPE, dict(
        func=ZipNpyReader, kwargs=[],
        help="fairseq-style npy entries in an uncompressed zip:\n\n   utterance_id_a /some/feats.zip:1234:5678\n"))


def write_manifest(dump_dir: Path, text_file: str = "text") -> None:
    """fairseq's speech-to-text manifest (``manifest.tsv``) of a dump dir with zip features."""
    from espnet_mtla.data import datadir
    from espnet_mtla.storage.fileio import write_text_atomic

    problems = datadir.Problems()
    feats = datadir.read_table(dump_dir / "feats.scp", problems)
    shapes = datadir.read_table(dump_dir / "feats_shape", problems)
    texts = datadir.read_table(dump_dir / text_file, problems, True) if (dump_dir / text_file).exists() else {}
    speakers = datadir.read_table(dump_dir / "utt2spk", problems)
    rows: List[str] = ["id\taudio\tn_frames\ttgt_text\tspeaker\n"]
    for utt, ref in feats.items():
        rows.append(f"{utt}\t{ref}\t{shapes[utt].split(',')[0]}\t{texts.get(utt, '')}\t{speakers.get(utt, '')}\n")
    write_text_atomic(dump_dir / "manifest.tsv", "".join(rows))
