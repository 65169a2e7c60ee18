"""Kaldi data-dir tools: every problem reported in one pass, fix drops bad utterances, subset/split."""

import numpy as np
import pytest
import soundfile

from espnet_mtla.data import datadir


def make_dir(path, n=4, fs=16000):
    path.mkdir(parents=True)
    lines = {"wav.scp": [], "text": [], "utt2spk": []}
    for i in range(n):
        utt, spk = f"spk{i % 2}-utt{i}", f"spk{i % 2}"
        wav = path / f"{utt}.flac"
        soundfile.write(wav, np.zeros(1600, dtype=np.float32) + 0.01, fs)
        lines["wav.scp"].append(f"{utt} {wav}")
        lines["text"].append(f"{utt} hello {i}")
        lines["utt2spk"].append(f"{utt} {spk}")
    for name, content in lines.items():
        (path / name).write_text("\n".join(sorted(content)) + "\n")
    datadir.fix(path)  # writes spk2utt
    return path


def test_clean_dir_validates(tmp_path):
    d = make_dir(tmp_path / "d")
    assert not datadir.validate(d, check_audio=True, fs=16000)
    assert (d / "spk2utt").read_text() == "spk0 spk0-utt0 spk0-utt2\nspk1 spk1-utt1 spk1-utt3\n"


def test_all_problems_in_one_pass_then_fix(tmp_path, capsys):
    d = make_dir(tmp_path / "d", n=6)
    (d / "spk0-utt0.flac").unlink()                                    # missing audio file
    (d / "spk1-utt1.flac").write_bytes(b"RIFF\x00\x00")               # unreadable audio
    soundfile.write(d / "spk0-utt2.flac", np.zeros(1600, dtype=np.float32), 8000)  # wrong rate
    text = (d / "text").read_text().replace("spk1-utt3 hello 3", "spk1-utt3")      # empty transcript
    (d / "text").write_bytes(text.replace("spk1-utt5 hello 5", "spk1-utt5 caf\udce9").encode("utf-8", "surrogateescape"))
    problems = datadir.validate(d, check_audio=True, fs=16000)
    report = problems.report(d)
    for expected in ["1 x wav.scp entry whose file is missing", "1 x unreadable or truncated audio",
                     "1 x sample rate different from 16000 Hz", "1 x empty value in text",
                     "1 x text that is not UTF-8"]:
        assert expected in report, report
    assert problems.bad_utts == {"spk0-utt0", "spk1-utt1", "spk0-utt2", "spk1-utt3", "spk1-utt5"}

    assert datadir.main(["validate", str(d), "--audio", "--fs", "16000"]) == 1
    assert f"python -m espnet_mtla.data.datadir fix {d} --audio --fs 16000" in capsys.readouterr().err
    assert datadir.fix(d, check_audio=True, fs=16000) == 5
    problems = datadir.validate(d, check_audio=True, fs=16000)
    assert not problems, problems.report(d)
    assert (d / "utt2spk").read_text() == "spk0-utt4 spk0\n"
    assert (d / "spk2utt").read_text() == "spk0 spk0-utt4\n"


@pytest.mark.parametrize("ext", ["flac", "wav"])
def test_truncated_and_zero_length_audio(tmp_path, ext):
    d = make_dir(tmp_path / "d", n=3)
    wav_scp = (d / "wav.scp").read_text().replace(".flac", f".{ext}")
    (d / "wav.scp").write_text(wav_scp)
    rng = np.random.default_rng(0)
    for i in range(3):
        soundfile.write(d / f"spk{i % 2}-utt{i}.{ext}", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
    cut = d / f"spk1-utt1.{ext}"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a copy killed half-way
    # A header and no samples (wav: a flac encoder writes no readable file for zero samples).
    soundfile.write(d / "spk0-utt2.wav", np.zeros(0, dtype=np.float32), 16000)
    (d / "wav.scp").write_text(wav_scp.replace(f"spk0-utt2.{ext}", "spk0-utt2.wav"))
    problems = datadir.validate(d, check_audio=True, fs=16000)
    report = problems.report(d)
    assert "1 x unreadable or truncated audio" in report and f"spk1-utt1.{ext}" in report, report
    assert "1 x zero-length audio" in report, report
    assert problems.bad_utts == {"spk1-utt1", "spk0-utt2"}


def test_mismatched_and_unsorted_ids(tmp_path):
    d = make_dir(tmp_path / "d")
    (d / "text").write_text("spk1-utt1 b\nspk0-utt0 a\nspk0-utt2 c\nextra-utt9 z\n")
    report = datadir.validate(d).report(d)
    assert "ids not sorted" in report
    assert "1 x id in text but not in utt2spk" in report
    assert "1 x id in utt2spk but not in text" in report  # spk1-utt3


def test_duplicate_ids(tmp_path):
    d = make_dir(tmp_path / "d")
    (d / "text").write_text((d / "text").read_text() + "spk1-utt3 again\n")
    report = datadir.validate(d).report(d)
    assert "duplicate utterance id" in report


def test_subset_and_split(tmp_path):
    d = make_dir(tmp_path / "d", n=5)
    parts = datadir.split(d, 2)
    ids = [[line.split()[0] for line in (p / "utt2spk").read_text().splitlines()] for p in parts]
    assert sum(ids, []) == sorted(sum(ids, [])) and len(sum(ids, [])) == 5 and [len(i) for i in ids] == [2, 3]
    for p in parts:
        assert not datadir.validate(p)
    with pytest.raises(ValueError, match="cannot split 5 utterances"):
        datadir.split(d, 6)


def test_an_empty_set_is_a_problem(tmp_path):
    """Stage 1 checks every set with validate: a corpus that yielded nothing stops it."""
    for name in ("utt2spk", "spk2utt", "text"):
        (tmp_path / name).write_text("")
    problems = datadir.validate(tmp_path, needs_audio=False)
    assert problems.report(tmp_path).splitlines()[1] == \
        f"  1 x no utterances (an empty set: is the corpus complete?): {tmp_path / 'utt2spk'}"
