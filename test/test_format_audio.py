"""Stage 3 (audio formatting): formats, segments, pipes, resampling, fbank."""

import shutil

import kaldiio
import numpy as np
import pytest
import soundfile

from espnet_mtla.data.format_audio import format_dir, main


def write_dir(path, rate=16000, segments=False):
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    audio = {"rec1": 0.1 * rng.standard_normal(rate).astype(np.float32),
             "rec2": 0.1 * rng.standard_normal(rate // 2).astype(np.float32)}
    with open(path / "wav.scp", "w") as f:
        for rec, samples in audio.items():
            soundfile.write(path / f"{rec}.wav", samples, rate, subtype="FLOAT")
            f.write(f"{rec} {path / f'{rec}.wav'}\n")
    if segments:
        (path / "segments").write_text("rec1-a rec1 0.00 0.25\nrec1-b rec1 0.50 1.00\nrec2-a rec2 0.10 0.30\n")
    return audio


@pytest.mark.parametrize("audio_format", ["flac", "wav", "flac.ark", "wav.ark"])
def test_formats_round_trip(tmp_path, audio_format):
    audio = write_dir(tmp_path / "src")
    format_dir(tmp_path / "src", tmp_path / "dump", audio_format, 16000, "raw")
    scp = dict(line.split(" ", 1) for line in (tmp_path / "dump" / "wav.scp").read_text().splitlines())
    assert (tmp_path / "dump" / "utt2num_samples").read_text() == "rec1 16000\nrec2 8000\n"
    for rec, samples in audio.items():
        if audio_format.endswith(".ark"):
            rate, data = kaldiio.load_mat(scp[rec])
            data = data / 32767 if data.dtype == np.int16 else data
        else:
            data, rate = soundfile.read(scp[rec])
        assert rate == 16000
        np.testing.assert_allclose(data, samples, atol=1 / 32767 + 1e-6)  # 16-bit PCM


def test_segments_are_cut_and_audio_resampled(tmp_path):
    write_dir(tmp_path / "src", rate=8000, segments=True)
    format_dir(tmp_path / "src", tmp_path / "dump", "flac", 16000, "raw")
    assert (tmp_path / "dump" / "utt2num_samples").read_text() == "rec1-a 4000\nrec1-b 8000\nrec2-a 3200\n"


@pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox")
def test_pipe_entries_speed_perturbation(tmp_path):
    audio = write_dir(tmp_path / "src")
    (tmp_path / "src" / "wav.scp").write_text(
        f"sp0.9-rec1 sox -t wav {tmp_path / 'src' / 'rec1.wav'} -t wav - speed 0.9 |\n")
    format_dir(tmp_path / "src", tmp_path / "dump", "flac", 16000, "raw")
    samples = int((tmp_path / "dump" / "utt2num_samples").read_text().split()[1])
    assert abs(samples - len(audio["rec1"]) / 0.9) < 16


def test_fbank_features(tmp_path):
    write_dir(tmp_path / "src")
    format_dir(tmp_path / "src", tmp_path / "dump", "flac", 16000, "fbank")
    feats = dict(kaldiio.load_scp(str(tmp_path / "dump" / "feats.scp")))
    assert feats["rec1"].shape == (98, 80) and feats["rec2"].shape == (48, 80)
    assert (tmp_path / "dump" / "feats_shape").read_text() == "rec1 98,80\nrec2 48,80\n"


def test_unreadable_audio_is_a_one_line_error(tmp_path, capsys):
    write_dir(tmp_path / "src")
    (tmp_path / "src" / "rec2.wav").write_bytes(b"RIFF0000")
    assert main([str(tmp_path / "src"), str(tmp_path / "dump")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'src' / 'wav.scp'} (rec2): cannot read {tmp_path / 'src' / 'rec2.wav'}")
    assert "\n" not in err
