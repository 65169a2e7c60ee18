"""Packed models (stage 11's archive): written and read without trusting the archive.

The layout is ESPnet's (``espnet2.main_funcs.pack_funcs``), so either toolkit reads the other's
archives: a ``meta.yaml`` at the top, ``files`` and ``yaml_files`` mapping option names
(``asr_model_file``, ``asr_train_config``) to member names, every member stored under its
path relative to where it was packed. We add ``safetensors``: option name -> a safetensors
copy of that model file, which loading prefers (it cannot hold code).

ESPnet's ``unpack`` joins member names to the output folder as they come (``../`` escapes
it) and rewrites YAML members itself. :func:`unpack` refuses, with one line and before
writing anything, archives whose members are absolute, hold ``..``, are links or devices,
repeat a name, or would unpack beyond a size limit, and a ``meta.yaml`` that is missing,
not a mapping, or lists files the archive does not hold. It unpacks into a temporary folder
renamed into place, so the output folder is either complete or absent.
"""

import hashlib
import io
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterable, List, Optional, Union

import yaml

from espnet_mtla.storage.fileio import write_atomic

META = "meta.yaml"
STAMP = ".unpacked-from"  # sha256 of the archive a folder was unpacked from
DEFAULT_MAX_BYTES = 32 * 2**30
TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz")


class PackedModelError(Exception):
    """A packed model is unsafe or malformed; the message names the archive and what is wrong."""


@dataclass
class Member:
    name: str  # as stored
    size: int  # declared uncompressed size
    read: Callable[[], io.BufferedIOBase]


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    raise PackedModelError(f"{path}: not a packed model (.zip, or .tar with optional .gz/.bz2/.xz)")


def _check_name(archive: Path, name: str) -> str:
    """The member name as a safe relative POSIX path, or an error naming it."""
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise PackedModelError(f"{archive}: member {name!r} has an absolute path; refusing to unpack")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise PackedModelError(f"{archive}: member {name!r} leads out of the unpack folder ('..'); refusing to unpack")
    if not parts:
        raise PackedModelError(f"{archive}: a member has an empty name; refusing to unpack")
    return "/".join(parts)


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> List[Member]:
    members = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            _check_name(archive, info.filename)
            continue
        if mode and not (stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise PackedModelError(f"{archive}: member {info.filename!r} is {what}; refusing to unpack")
        members.append(Member(info.filename, info.file_size, lambda info=info: zf.open(info)))
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile) -> List[Member]:
    members = []
    for info in tf.getmembers():
        if info.isdir():
            _check_name(archive, info.name)
            continue
        if info.issym() or info.islnk():
            link = "a symbolic link" if info.issym() else "a hard link"
            raise PackedModelError(f"{archive}: member {info.name!r} is {link} (to {info.linkname!r}); "
                                   "refusing to unpack")
        if not info.isreg():
            raise PackedModelError(f"{archive}: member {info.name!r} is a device, fifo or other special file; "
                                   "refusing to unpack")
        members.append(Member(info.name, info.size, lambda info=info: tf.extractfile(info)))
    return members


class _Archive:
    """The regular-file members of a zip or tar archive, checked; a context manager."""

    def __init__(self, path: Path):
        self.path = path
        try:
            if _kind(path) == "zip":
                self._handle = zipfile.ZipFile(path)
                members = _zip_members(path, self._handle)
            else:
                self._handle = tarfile.open(path)
                members = _tar_members(path, self._handle)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
            if isinstance(err, OSError) and not path.is_file():
                raise PackedModelError(f"{path}: no such file") from None
            raise PackedModelError(f"{path}: not a readable {_kind(path)} archive or truncated ({err})") from None
        self.members: Dict[str, Member] = {}
        for member in members:
            name = _check_name(path, member.name)
            if name in self.members:
                raise PackedModelError(f"{path}: member {name!r} appears twice; refusing to unpack")
            self.members[name] = member
        for name in self.members:  # "a" and "a/b": one would have to be both a file and a folder
            parts = name.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in self.members:
                    raise PackedModelError(f"{path}: member {name!r} lies under the file {'/'.join(parts[:i])!r}; "
                                           "refusing to unpack")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def read(self, name: str, limit: int) -> bytes:
        with self.members[name].read() as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise PackedModelError(f"{self.path}: member {name!r} is larger than it declares; refusing to unpack")
        return data

    def copy_to(self, name: str, dst: Path) -> None:
        """Stream one member to ``dst``; never more bytes than it declares."""
        declared = self.members[name].size
        written = 0
        with self.members[name].read() as src, open(dst, "wb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                written += len(chunk)
                if written > declared:
                    raise PackedModelError(f"{self.path}: member {name!r} is larger than it declares; "
                                           "refusing to unpack")
                out.write(chunk)


def _mapping_of_names(archive: Path, meta: dict, key: str) -> Dict[str, str]:
    value = meta.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PackedModelError(f"{archive}: {META}: '{key}' must map option names to file names")
    return value


def read_meta(archive: Path, arc: "_Archive") -> Dict[str, Dict[str, str]]:
    """meta.yaml's ``files``, ``yaml_files`` and ``safetensors``, each listed file checked to be a member."""
    if META not in arc.members:
        raise PackedModelError(f"{archive}: no {META} at the top of the archive: not a packed model")
    try:
        meta = yaml.safe_load(arc.read(META, 1 << 20).decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise PackedModelError(f"{archive}: {META} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise PackedModelError(f"{archive}: {META} is not a mapping (got {type(meta).__name__})")
    sections = {key: _mapping_of_names(archive, meta, key) for key in ("files", "yaml_files", "safetensors")}
    for section, entries in sections.items():
        for option, name in entries.items():
            try:
                clean = _check_name(archive, name)
            except PackedModelError:
                raise PackedModelError(f"{archive}: {META}: {section}.{option} = {name!r} is outside the archive") \
                    from None
            if clean not in arc.members:
                raise PackedModelError(f"{archive}: {META}: {section}.{option} = {name!r} is not in the archive")
            entries[option] = clean
    return sections


def _rewrite_paths(value, members: Iterable[str], root: Path):
    """Paths in an unpacked YAML that name archive members -> the unpacked files (as ESPnet's unpack)."""
    if isinstance(value, dict):
        return {k: _rewrite_paths(v, members, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite_paths(v, members, root) for v in value]
    if isinstance(value, str) and value in members:
        return str(root / value)
    return value


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _result(root: Path, meta: Dict[str, Dict[str, str]], prefer_safetensors: bool) -> Dict[str, str]:
    out = {option: str(root / name) for option, name in {**meta["yaml_files"], **meta["files"]}.items()}
    if prefer_safetensors:
        out.update({option: str(root / name) for option, name in meta["safetensors"].items() if option in out})
    return out


def unpack(archive: Union[str, Path], outdir: Union[str, Path], max_bytes: int = DEFAULT_MAX_BYTES,
           prefer_safetensors: bool = True) -> Dict[str, str]:
    """Unpack ``archive`` into ``outdir`` (complete, or not at all): option name -> unpacked path.

    A folder already unpacked from the same archive (same sha256) is reused. With
    ``prefer_safetensors`` a model file with a safetensors copy is returned as that copy.
    """
    archive, outdir = Path(archive), Path(outdir)
    digest = _sha256(archive) if archive.is_file() else ""
    with _Archive(archive) as arc:
        meta = read_meta(archive, arc)
        root = outdir.resolve()
        if (outdir / STAMP).is_file() and (outdir / STAMP).read_text().strip() == digest:
            return _result(root, meta, prefer_safetensors)
        total = sum(m.size for m in arc.members.values())
        outdir.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(outdir.parent).free
        if total > min(max_bytes, free):
            raise PackedModelError(
                f"{archive}: would unpack to {_size(total)}, more than the "
                f"{'limit' if max_bytes <= free else 'free disk space'} of {_size(min(max_bytes, free))}; "
                "refusing to unpack")
        yaml_members = set(meta["yaml_files"].values())
        tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.partial-", dir=outdir.parent))
        try:
            for name in arc.members:
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if name in yaml_members:
                    text = arc.read(name, arc.members[name].size).decode("utf-8")
                    try:
                        config = yaml.safe_load(text)
                    except yaml.YAMLError as err:
                        raise PackedModelError(f"{archive}: {name} is not valid YAML "
                                               f"({str(err).splitlines()[0]})") from None
                    if not isinstance(config, dict):
                        raise PackedModelError(f"{archive}: {name} is not a YAML mapping (got "
                                               f"{type(config).__name__})")
                    dst.write_text(yaml.safe_dump(_rewrite_paths(config, arc.members, root)), encoding="utf-8")
                else:
                    arc.copy_to(name, dst)
            (tmp / STAMP).write_text(digest + "\n")
            if outdir.exists():
                shutil.rmtree(outdir)
            os.replace(tmp, outdir)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as err:
            raise PackedModelError(f"{archive}: damaged or truncated archive ({err})") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return _result(root, meta, prefer_safetensors)


def unpacked_folder(archive: Union[str, Path]) -> Path:
    """Where ``--packed_model`` unpacks an archive: next to it, named without the suffix."""
    archive = Path(archive)
    name = archive.name
    for suffix in (".zip",) + TAR_SUFFIXES:
        if name.lower().endswith(suffix):
            return archive.with_name(name[: -len(suffix)])
    return archive.with_name(name + ".unpacked")


def _relative_or_absolute(path: Path) -> str:
    """Archive name of a file: its path relative to the working directory, as ESPnet packs."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix().lstrip("/")


def pack(files: Dict[str, Path], yaml_files: Dict[str, Path], outpath: Path, extras: Iterable[Path] = (),
         safetensors_of: Optional[Dict[str, Path]] = None) -> None:
    """Write a zip packed model at ``outpath`` (atomically).

    ``safetensors_of``: option name -> a safetensors copy of that option's model file.
    """
    import torch

    import espnet

    sections = {"files": files, "yaml_files": yaml_files, "safetensors": safetensors_of or {}}
    paths = [Path(p) for section in sections.values() for p in section.values()] + [Path(p) for p in extras]
    for path in paths:
        if not path.is_file():
            raise PackedModelError(f"cannot pack {outpath}: no such file: {path}")
    name = {path: _relative_or_absolute(path) for path in paths}
    meta = dict({key: {option: name[Path(p)] for option, p in section.items()} for key, section in sections.items()},
                timestamp=datetime.now().timestamp(), python=sys.version, torch=str(torch.__version__),
                espnet=espnet.__version__)
    stored = {arcname: path for path, arcname in name.items()}  # a file listed twice is stored once

    def write_zip(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as zf:
            zf.writestr(META, yaml.safe_dump(meta))
            for arcname, path in stored.items():
                zf.write(path, arcname)

    write_atomic(outpath, write_zip)


def write_safetensors_copy(model_file: Path, out: Path) -> Path:
    """``out``: the state dict of ``model_file`` in safetensors format (for :func:`pack`)."""
    from safetensors.torch import save_file

    from espnet_mtla.storage.safe_load import load_state_dict_file

    # Clones: safetensors refuses tensors that share storage (tied embeddings).
    state = {k: v.clone().contiguous() for k, v in load_state_dict_file(model_file).items()}
    write_atomic(out, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    return out
