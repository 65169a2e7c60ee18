"""Model files and packed models from someone else: no code runs, nothing lands outside its folder.

Crafted files (a pickle whose ``__reduce__`` calls ``os.system``, archives with ``../`` or
absolute members, links, devices, a zip bomb, a truncated zip) go through the real CLIs and
the real unpacker; each test asserts the exact one-line error and that the payload's marker
file (or a file outside the target folder) does not appear.
"""

import collections
import io
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from espnet_mtla.storage import safe_load
from espnet_mtla.storage.packed_model import PackedModelError, pack, unpack, unpacked_folder, write_safetensors_copy
from test_cli import write_asr_setup

ROOT = Path(__file__).resolve().parent.parent


class Payload:
    """Unpickling this runs ``touch <marker>``: what a hostile model file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_file(path: Path, marker: Path, state=None) -> Path:
    torch.save({**(state or {}), "extra": Payload(marker)}, path)
    return path


def run(module, args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


TRAIN_DATA = ["--train_data_path_and_name_and_type", "data/wav.scp,speech,sound",
              "--train_data_path_and_name_and_type", "data/text,text,text",
              "--valid_data_path_and_name_and_type", "data/wav.scp,speech,sound",
              "--valid_data_path_and_name_and_type", "data/text,text,text",
              "--train_shape_file", "data/text", "--valid_shape_file", "data/text"]


def train_args(exp, *extra):
    return ["--config", "train.yaml", "--output_dir", exp, "--ngpu", "0", "--token_list", "tokens.txt",
            *TRAIN_DATA, *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ASR model trained by the real CLI for 2 epochs: its folder."""
    root = tmp_path_factory.mktemp("trained")
    write_asr_setup(root)
    result = run("espnet_mtla.bin.asr_train", train_args("exp"), root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def decode_args(config_file, model_file, out="out"):
    return ["--asr_train_config", config_file, "--asr_model_file", model_file, "--data_path_and_name_and_type",
            "data/wav.scp,speech,sound", "--output_dir", out, "--beam_size", "1", "--maxlenratio", "-3"]


def refusal(path, type_name="posix.system") -> str:
    return (f"{path}: refused to load: it needs the pickled type {type_name}, which could run code when "
            f"unpickled; load it only if you trust whoever made it (--trust_model_file true)")


# -- what training writes loads without any flag -------------------------------------------------
def test_files_the_trainer_writes_hold_only_allow_listed_types(trained):
    exp = trained / "exp"
    checkpoint = safe_load.load(exp / "checkpoint.pth")
    assert set(checkpoint) >= {"model", "reporter", "optimizers", "schedulers"}
    assert checkpoint["reporter"]["epoch"] == 2
    state = safe_load.load_state_dict_file(exp / "valid.acc.best.pth")
    reference = torch.load(exp / "valid.acc.best.pth", weights_only=False)
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)


def test_a_hostile_pickle_is_refused_by_the_loader(tmp_path):
    marker = tmp_path / "marker"
    path = hostile_file(tmp_path / "model.pth", marker, {"w": torch.zeros(2)})
    with pytest.raises(safe_load.UnsafeModelFileError) as err:
        safe_load.load(path)
    assert str(err.value) == refusal(path)
    with pytest.raises(safe_load.UnsafeModelFileError), safe_load.safe_loading():
        torch.load(path, weights_only=False)  # what ESPnet calls: overridden inside the block
    assert not marker.exists()


def test_not_a_state_dict_and_not_a_torch_file(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(safe_load.UnsafeModelFileError) as err:
        safe_load.load_state_dict_file(tmp_path / "list.pth")
    assert str(err.value) == (f"{tmp_path / 'list.pth'}: not a model state dict (a mapping of names to tensors): "
                              "it holds a list")
    torch.save({"w": torch.zeros(2), "step": 3}, tmp_path / "mixed.pth")
    with pytest.raises(safe_load.UnsafeModelFileError, match=r"entry 'step' is a int, not a tensor$"):
        safe_load.load_state_dict_file(tmp_path / "mixed.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file at all")
    with pytest.raises(safe_load.UnsafeModelFileError, match=r"^.*junk.pth: not a readable PyTorch file \("):
        safe_load.load(tmp_path / "junk.pth")


# -- through the CLIs -----------------------------------------------------------------------------
def test_inference_refuses_a_hostile_model_file(trained, tmp_path):
    marker = tmp_path / "marker"
    state = torch.load(trained / "exp" / "valid.acc.best.pth")
    model = hostile_file(tmp_path / "valid.acc.best.pth", marker, state)
    result = run("espnet_mtla.bin.asr_inference", decode_args(trained / "exp" / "config.yaml", model,
                                                              tmp_path / "out"), trained)
    assert result.returncode == 1
    assert last_line(result) == f"error: --asr_model_file: {refusal(model)}"
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_trust_model_file_loads_a_legacy_pickle_and_warns(trained, tmp_path):
    # A state dict pickled as a defaultdict: harmless, but not a type weights_only admits.
    state = collections.defaultdict(list, torch.load(trained / "exp" / "valid.acc.best.pth"))
    torch.save(state, tmp_path / "legacy.pth")
    args = decode_args(trained / "exp" / "config.yaml", tmp_path / "legacy.pth", tmp_path / "out")
    refused = run("espnet_mtla.bin.asr_inference", args, trained)
    assert refused.returncode == 1
    assert last_line(refused) == f"error: --asr_model_file: {refusal(tmp_path / 'legacy.pth', 'collections.defaultdict')}"
    trusted = run("espnet_mtla.bin.asr_inference", args + ["--trust_model_file", "true"], trained)
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert (f"{tmp_path / 'legacy.pth'}: loading with arbitrary unpickling (--trust_model_file true): "
            "it can run code") in trusted.stderr
    assert len((tmp_path / "out" / "1best_recog" / "token").read_text().splitlines()) == 6


def test_resume_refuses_a_hostile_checkpoint(trained, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(trained / "exp", exp, symlinks=True)
    marker = tmp_path / "marker"
    hostile_file(exp / "checkpoint.pth", marker, {"model": {}})
    result = run("espnet_mtla.bin.asr_train", train_args(exp, "--resume", "true", "--max_epoch", "3"), trained)
    assert result.returncode == 1
    assert last_line(result) == f"error: {refusal(exp / 'checkpoint.pth')}"
    assert not marker.exists() and not (exp / "3epoch.pth").exists()


def test_init_param_refuses_a_hostile_model_file(trained, tmp_path):
    marker = tmp_path / "marker"
    model = hostile_file(tmp_path / "pretrained.pth", marker, torch.load(trained / "exp" / "valid.acc.best.pth"))
    result = run("espnet_mtla.bin.asr_train", train_args(tmp_path / "exp", "--init_param", model), trained)
    assert result.returncode == 1
    assert last_line(result) == f"error: {refusal(model)}"
    assert not marker.exists()


# -- packed models ---------------------------------------------------------------------------------
def packed(trained, tmp_path, name="model.zip") -> Path:
    """Stage 11's archive of the trained model, packed from the training folder."""
    exp = trained / "exp"
    weights = write_safetensors_copy(exp / "valid.acc.best.pth", tmp_path / "valid.acc.best.safetensors")
    cwd = os.getcwd()
    os.chdir(trained)
    try:
        pack({"asr_model_file": exp / "valid.acc.best.pth"}, {"asr_train_config": exp / "config.yaml"},
             tmp_path / name, safetensors_of={"asr_model_file": weights})
    finally:
        os.chdir(cwd)
    return tmp_path / name


def test_packed_model_prefers_its_safetensors_copy_and_decodes_the_same(trained, tmp_path):
    archive = packed(trained, tmp_path)
    names = zipfile.ZipFile(archive).namelist()
    best = os.readlink(trained / "exp" / "valid.acc.best.pth")  # packed under its real name, as ESPnet does
    assert "meta.yaml" in names and "exp/config.yaml" in names and f"exp/{best}" in names
    files = unpack(archive, tmp_path / "model")
    assert files["asr_model_file"] == str((tmp_path / "model" / tmp_path.relative_to("/") /
                                           "valid.acc.best.safetensors").resolve())
    from_pth = torch.load(trained / "exp" / "valid.acc.best.pth")
    from_st = safe_load.load_state_dict_file(files["asr_model_file"])
    assert from_st.keys() == from_pth.keys() and all(torch.equal(from_st[k], from_pth[k]) for k in from_st)
    assert unpack(archive, tmp_path / "model", prefer_safetensors=False)["asr_model_file"].endswith(best)
    outputs = {}
    for kind, args in (("packed", ["--packed_model", archive]),
                       ("files", decode_args(trained / "exp" / "config.yaml", trained / "exp" / "valid.acc.best.pth")[:4])):
        out = tmp_path / f"out_{kind}"
        result = run("espnet_mtla.bin.asr_inference", [*args, "--data_path_and_name_and_type",
                                                       "data/wav.scp,speech,sound", "--output_dir", out,
                                                       "--beam_size", "2", "--maxlenratio", "-3"], trained)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[kind] = (out / "1best_recog" / "token").read_text()
    assert outputs["packed"] == outputs["files"]


def test_unpacking_again_reuses_the_folder_unless_the_archive_changed(trained, tmp_path):
    archive = packed(trained, tmp_path)
    out = unpacked_folder(archive)
    assert out == tmp_path / "model"
    unpack(archive, out)
    config_file = next(out.rglob("config.yaml"))
    config_file.write_text("edited\n")
    unpack(archive, out)
    assert config_file.read_text() == "edited\n"  # same archive: the folder is reused
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("notes.txt", "changed")
    unpack(archive, out)
    assert config_file.read_text() != "edited\n" and (out / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no partial folders left


def test_packed_model_with_a_hostile_model_file_runs_nothing(trained, tmp_path):
    marker = tmp_path / "marker"
    exp = trained / "exp"
    model = hostile_file(tmp_path / "model.pth", marker, torch.load(exp / "valid.acc.best.pth"))
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("meta.yaml", yaml.safe_dump({"files": {"asr_model_file": "model.pth"},
                                                 "yaml_files": {"asr_train_config": "config.yaml"}}))
        zf.write(model, "model.pth")
        zf.write(exp / "config.yaml", "config.yaml")
    result = run("espnet_mtla.bin.asr_inference", ["--packed_model", archive, "--data_path_and_name_and_type",
                                                   "data/wav.scp,speech,sound", "--output_dir", tmp_path / "out"],
                 trained)
    assert result.returncode == 1
    assert last_line(result) == f"error: --asr_model_file: {refusal(tmp_path / 'evil' / 'model.pth')}"
    assert not marker.exists()


def write_zip(path: Path, members, meta=None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        if meta is not None:
            zf.writestr("meta.yaml", meta if isinstance(meta, str) else yaml.safe_dump(meta))
        for name, data in members:
            zf.writestr(name, data)
    return path


META = {"files": {"asr_model_file": "m.pth"}, "yaml_files": {"asr_train_config": "c.yaml"}}


def assert_refused(tmp_path, archive, message):
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(PackedModelError) as err:
        unpack(archive, tmp_path / "out")
    assert str(err.value) == f"{archive}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, not even the folder


@pytest.mark.parametrize("name, why", [
    ("../../../../../tmp/x.yaml", "leads out of the unpack folder ('..')"),
    ("a/../../x.yaml", "leads out of the unpack folder ('..')"),
    ("/tmp/x.yaml", "has an absolute path"),
])
def test_zip_members_outside_the_folder_are_refused(tmp_path, name, why):
    archive = write_zip(tmp_path / "bad.zip", [("m.pth", b"x"), ("c.yaml", "a: 1"), (name, "token_list: []")],
                        {**META, "yaml_files": {"asr_train_config": name}})
    assert_refused(tmp_path, archive, f"member {name!r} {why}; refusing to unpack")
    assert not Path("/tmp/x.yaml").exists() or Path("/tmp/x.yaml").read_text() != "token_list: []"


def test_zip_symlinks_and_duplicates_are_refused(tmp_path):
    link = zipfile.ZipInfo("c.yaml")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("meta.yaml", yaml.safe_dump(META))
        zf.writestr("m.pth", b"x")
        zf.writestr(link, "/etc/passwd")
    assert_refused(tmp_path, archive, "member 'c.yaml' is a symbolic link; refusing to unpack")
    archive.unlink()
    archive = tmp_path / "dup.zip"
    with pytest.warns(UserWarning, match="Duplicate name"):
        write_zip(archive, [("m.pth", b"x"), ("c.yaml", "a: 1"), ("m.pth", b"y")], META)
    assert_refused(tmp_path, archive, "member 'm.pth' appears twice; refusing to unpack")
    archive.unlink()
    archive = write_zip(tmp_path / "nested.zip", [("m.pth", b"x"), ("c.yaml", "a: 1"), ("m.pth/inner", b"y")], META)
    assert_refused(tmp_path, archive, "member 'm.pth/inner' lies under the file 'm.pth'; refusing to unpack")


def tar_with(path: Path, *infos) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in infos:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def regular(name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


@pytest.mark.parametrize("member, why", [
    (regular("../escape.txt", b"x"), "'../escape.txt' leads out of the unpack folder ('..')"),
    (regular("/tmp/escape.txt", b"x"), "'/tmp/escape.txt' has an absolute path"),
    (special("c2.yaml", tarfile.SYMTYPE, "/etc/passwd"), "'c2.yaml' is a symbolic link (to '/etc/passwd')"),
    (special("c2.yaml", tarfile.LNKTYPE, "/etc/passwd"), "'c2.yaml' is a hard link (to '/etc/passwd')"),
    (special("dev", tarfile.CHRTYPE), "'dev' is a device, fifo or other special file"),
    (special("fifo", tarfile.FIFOTYPE), "'fifo' is a device, fifo or other special file"),
])
def test_tar_members_that_are_unsafe_are_refused(tmp_path, member, why):
    archive = tar_with(tmp_path / "bad.tar.gz", regular("meta.yaml", yaml.safe_dump(META).encode()),
                       regular("m.pth", b"x"), regular("c.yaml", b"a: 1"), member)
    assert_refused(tmp_path, archive, f"member {why}; refusing to unpack")
    assert not (tmp_path.parent / "escape.txt").exists()


def test_tar_packed_models_unpack_like_zips(tmp_path):
    archive = tar_with(tmp_path / "ok.tar.gz", regular("meta.yaml", yaml.safe_dump(META).encode()),
                       regular("m.pth", b"x"), regular("c.yaml", b"stats: m.pth\n"))
    assert unpacked_folder(archive) == tmp_path / "ok"
    files = unpack(archive, unpacked_folder(archive))
    root = (tmp_path / "ok").resolve()
    assert files == {"asr_model_file": str(root / "m.pth"), "asr_train_config": str(root / "c.yaml")}
    assert yaml.safe_load((root / "c.yaml").read_text()) == {"stats": str(root / "m.pth")}  # paths rewritten


@pytest.mark.parametrize("meta, message", [
    (None, "no meta.yaml at the top of the archive: not a packed model"),
    ("- a list\n", "meta.yaml is not a mapping (got list)"),
    ("files: [1, 2]\n", "meta.yaml: 'files' must map option names to file names"),
    ({**META, "files": {"asr_model_file": "missing.pth"}}, "meta.yaml: files.asr_model_file = 'missing.pth' is not in "
                                                           "the archive"),
    ({**META, "yaml_files": {"asr_train_config": "../../../../../tmp/x.yaml"}},
     "meta.yaml: yaml_files.asr_train_config = '../../../../../tmp/x.yaml' is outside the archive"),
])
def test_malformed_meta_yaml_is_one_line(tmp_path, meta, message):
    archive = write_zip(tmp_path / "bad.zip", [("m.pth", b"x"), ("c.yaml", "a: 1")], meta)
    assert_refused(tmp_path, archive, message)


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", [(f"part{i}", b"0" * 64) for i in range(12)] +
                        [("m.pth", b"x"), ("c.yaml", "a: 1")], META)
    # Declare each part as 4 GiB in the central directory: 48 GiB from a 2 KB archive.
    data = bytearray(archive.read_bytes())
    offset = data.find(b"PK\x01\x02")
    while offset != -1:
        name_len = struct.unpack_from("<H", data, offset + 28)[0]
        if data[offset + 46: offset + 46 + name_len].startswith(b"part"):
            struct.pack_into("<I", data, offset + 24, 0xFFFFFFFE)
        offset = data.find(b"PK\x01\x02", offset + 4)
    archive.write_bytes(bytes(data))
    assert archive.stat().st_size < 4096
    with pytest.raises(PackedModelError, match=r"^.*bomb.zip: would unpack to 48.0 GiB, more than the "
                                               r"(limit of 32.0 GiB|free disk space of [0-9.]+ GiB); refusing to unpack$"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(PackedModelError, match=r"would unpack to 2.[0-9] KiB, more than the limit of 1.0 KiB; refusing to unpack$"):
        unpack(write_zip(tmp_path / "small.zip", [("m.pth", b"x" * 2048), ("c.yaml", "a: 1")], META),
               tmp_path / "out", max_bytes=1024)


def test_truncated_and_damaged_archives_are_one_line(tmp_path):
    archive = write_zip(tmp_path / "whole.zip", [("m.pth", os.urandom(4096)), ("c.yaml", "a: 1")], META)
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    assert_refused(tmp_path, truncated, "not a readable zip archive or truncated (File is not a zip file)")
    damaged = tmp_path / "damaged.zip"
    start = data.find(b"PK\x03\x04", 10)  # m.pth's local header: corrupt its payload
    damaged.write_bytes(data[: start + 100] + bytes(b ^ 0xFF for b in data[start + 100: start + 200]) +
                        data[start + 200:])
    with pytest.raises(PackedModelError, match=r"damaged.zip: damaged or truncated archive \(Bad CRC-32"):
        unpack(damaged, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(PackedModelError, match=r"x.rar: not a packed model \(.zip, or .tar"):
        unpack(tmp_path / "x.rar", tmp_path / "out")


def test_packed_model_errors_through_the_cli_are_one_line(trained, tmp_path):
    exp = trained / "exp"
    decode = ["--data_path_and_name_and_type", "data/wav.scp,speech,sound", "--output_dir", tmp_path / "out"]

    def cli_error(archive):
        result = run("espnet_mtla.bin.asr_inference", ["--packed_model", archive, *decode], trained)
        assert result.returncode == 1 and not (tmp_path / "out").exists()
        return last_line(result)

    escape = write_zip(tmp_path / "escape.zip", [("m.pth", b"x"), ("../../../../../tmp/x.yaml", "a: 1")],
                       {**META, "yaml_files": {"asr_train_config": "../../../../../tmp/x.yaml"}})
    assert cli_error(escape) == (f"error: --packed_model: {escape}: member '../../../../../tmp/x.yaml' leads out "
                                 "of the unpack folder ('..'); refusing to unpack")
    state = torch.load(exp / "valid.acc.best.pth")
    config_text = (exp / "config.yaml").read_text()
    torch.save(list(state.values()), tmp_path / "list.pth")
    not_dict = write_zip(tmp_path / "notdict.zip", [("m.pth", (tmp_path / "list.pth").read_bytes()),
                                                    ("c.yaml", config_text)], META)
    assert cli_error(not_dict) == (f"error: --asr_model_file: {tmp_path / 'notdict' / 'm.pth'}: not a model state "
                                   "dict (a mapping of names to tensors): it holds a list")
    no_tokens = yaml.safe_load(config_text)
    no_tokens.pop("token_list")
    missing = write_zip(tmp_path / "missing.zip", [("m.pth", (exp / "valid.acc.best.pth").read_bytes()),
                                                   ("c.yaml", yaml.safe_dump(no_tokens))], META)
    assert cli_error(missing) == (f"error: --asr_train_config: {(tmp_path / 'missing' / 'c.yaml').resolve()}: missing "
                                  "key 'token_list' (decode with the config.yaml that training wrote)")
    no_model = write_zip(tmp_path / "nomodel.zip", [("c.yaml", config_text)],
                         {"files": {}, "yaml_files": {"asr_train_config": "c.yaml"}})
    assert cli_error(no_model) == (f"error: --packed_model: {no_model}: meta.yaml lists no asr_model_file: "
                                   "not a packed asr model")
