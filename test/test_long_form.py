"""Long-form decoding (espnet_mtla.api.long_form, bin.transcribe): a generated 5-minute recording of
espeak-ng speech, segmented by Silero and by energy, decoded in one batched search; the outputs
in every format, parsed back."""

import importlib.util
import json
import random

import numpy as np
import pytest
import soundfile

from test_api import make_exp
from espnet_mtla.api import load_model
from espnet_mtla.api import formats
from espnet_mtla.api.long_form import Segment, Transcript, Word
from espnet_mtla.cli import transcribe as cli
from espnet_mtla.data.long_form import make_long_form, read_table
from espnet_mtla.data.speech_synth import VOICES, Voice, check_espeak, speak

SENTENCES = ["the cat sees the red ball", "my brother cleans a new book on sunday", "a tall woman finds the big house",
             "our teacher paints the white door", "the farmer needs a warm coat at home", "his friend carries an old chair",
             "the young girl sells the big house", "her sister likes the yellow bag every day"]
OPTIONS = dict(beam_size=3, maxlenratio=-6, minlenratio=-1, ctc_weight=0.3)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 5-minute recording (pauses, level changes, babble) from espeak-ng utterances, with its oracle segments."""
    check_espeak()
    root = tmp_path_factory.mktemp("long")
    rng = random.Random(0)
    (root / "utts").mkdir()
    wavs, texts = [], []
    for i, text in enumerate(SENTENCES):
        language, variant = VOICES[i % len(VOICES)]
        path = root / "utts" / f"u{i}.flac"
        soundfile.write(path, speak(text, Voice(language, variant, rng.randint(140, 190), 50)), 16000)
        wavs.append(f"u{i} {path}\n")
        texts.append(f"u{i} {text}\n")
    (root / "utts" / "wav.scp").write_text("".join(wavs))
    (root / "utts" / "text").write_text("".join(texts))
    make_long_form(root / "utts", root / "long", [5.0])
    return root / "long"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(make_exp(tmp_path_factory.mktemp("model"), "asr"), **OPTIONS)


def oracle(recording):
    rows = read_table(recording / "oracle_segments")
    return sorted((float(v.split()[1]), float(v.split()[2])) for v in rows.values())


@pytest.mark.parametrize("vad, block_s", [("silero", 600), ("energy", 600), ("silero", 25)])
def test_segments_cover_the_speech_in_time_order_and_decode_as_the_segments_alone(recording, model, vad, block_s):
    """block_s 25: read, segmented and decoded 25 s at a time (speech at a block's end waits for the next)."""
    path = read_table(recording / "wav.scp")["long01_00300s"]
    samples, rate = soundfile.read(path, dtype="float32")
    timing = {}
    transcript = model.transcribe_long(path, vad=vad, max_segment_s=6.0, timing=timing, block_s=block_s)
    assert transcript.recording == "long01_00300s" and transcript.duration == pytest.approx(len(samples) / rate)
    assert 290 < transcript.duration < 310 and timing["audio_s"] == pytest.approx(transcript.duration, abs=1e-3)
    segments = transcript.segments
    assert segments and all(0 <= s.start < s.end <= transcript.duration + 1e-3 for s in segments)
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))  # in time order, not overlapping
    assert all(s.end - s.start <= 6.0 + 1e-3 for s in segments)
    # the speech of every utterance placed in the recording (the 10 ms frames of its source file
    # within 30 dB of their loudest: espeak's own lead-in and tail silences are not speech) lies
    # inside the VAD's segments. Segments that decode to nothing are left out of the transcript:
    # the cover is checked on the VAD's own.
    from espnet_mtla.api.vad import frame_energy_db, speech_regions

    inside = np.zeros(len(samples) // 160 + 1, dtype=bool)
    regions = speech_regions(samples, rate, vad, 6.0) if block_s == 600 else \
        [(int(s.start * rate), int(s.end * rate)) for s in segments]  # (a random model decodes all speech to text)
    for s, e in regions:
        inside[s // 160: -(-e // 160)] = True
    sources = read_table(recording.parent / "utts" / "wav.scp")
    for segment, value in read_table(recording / "oracle_segments").items():
        energy = frame_energy_db(soundfile.read(sources[segment.split("-")[-1]], dtype="float32")[0], rate)
        speech = np.flatnonzero(energy > energy.max() - 30) + int(round(float(value.split()[1]) * 100))
        assert inside[speech].mean() >= 0.97, (segment, inside[speech].mean())
    # the text is each segment decoded on its own
    alone = model([samples[int(round(s.start * rate)): int(round(s.end * rate))] for s in segments])
    assert [s.text for s in segments] == [r.text for r in alone]
    assert transcript.text == " ".join(r.text for r in alone)


@pytest.mark.skipif(importlib.util.find_spec("ctc_segmentation") is None, reason="ctc-segmentation did not build")
def test_word_times_lie_inside_their_segment_in_order(recording, model):
    path = read_table(recording / "wav.scp")["long01_00300s"]
    transcript = model.transcribe_long(path, vad="energy", max_segment_s=6.0, word_times=True)
    timed = [s for s in transcript.segments if s.words]
    assert len(timed) >= 0.8 * len(transcript.segments)
    for segment in timed:
        assert [w.text for w in segment.words] == segment.text.split()
        assert all(segment.start - 1e-3 <= w.start <= w.end <= segment.end + 1e-3 for w in segment.words)
        assert all(a.end <= b.start + 1e-3 for a, b in zip(segment.words, segment.words[1:]))


def example():
    words = [Word("hello", 1.0, 1.4, -0.1), Word("world", 1.5, 2.0, -0.3)]
    return [Transcript("talk", 3725.5, [Segment(1.0, 2.25, "hello world", -3.0, words),
                                        Segment(3723.5, 3725.125, "a longer line of text that a subtitle "
                                                "would have to wrap over two lines", -9.0)])]


def test_every_format_parses_back(tmp_path):
    import srt
    import webvtt

    transcripts = example()
    written = formats.write(transcripts, tmp_path, formats.FORMATS)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "kaldi/segments", "kaldi/text", "talk.ctm", "talk.json", "talk.srt", "talk.txt", "talk.vtt"]
    cues = list(srt.parse((tmp_path / "talk.srt").read_text()))
    assert [(c.start.total_seconds(), c.end.total_seconds()) for c in cues] == [(1.0, 2.25), (3723.5, 3725.125)]
    assert cues[1].content == "a longer line of text that a subtitle\nwould have to wrap over two lines"
    assert "01:02:03,500 --> 01:02:05,125" in (tmp_path / "talk.srt").read_text()
    vtt = webvtt.from_string((tmp_path / "talk.vtt").read_text())
    assert [(c.start, c.end, c.text) for c in vtt][0] == ("00:00:01.000", "00:00:02.250", "hello world")
    assert formats.read_json((tmp_path / "talk.json").read_text()) == transcripts[0]
    assert (tmp_path / "talk.txt").read_text().splitlines()[0] == "hello world"
    assert (tmp_path / "kaldi" / "segments").read_text().splitlines() == [
        "talk-0000100-0000225 talk 1.00 2.25", "talk-0372350-0372512 talk 3723.50 3725.12"]
    assert (tmp_path / "kaldi" / "text").read_text().splitlines()[0] == "talk-0000100-0000225 hello world"
    ctm = (tmp_path / "talk.ctm").read_text().splitlines()
    assert ctm[0].startswith(";;") and ctm[1:3] == ["talk 1 1.00 0.40 hello -0.1000", "talk 1 1.50 0.50 world -0.3000"]
    fields = [line.split() for line in ctm[3:]]
    assert [f[4] for f in fields] == transcripts[0].segments[1].text.split() and all(len(f) == 5 for f in fields)
    starts = [float(f[2]) for f in fields]
    assert starts == sorted(starts) and starts[0] == 3723.5
    assert float(fields[-1][2]) + float(fields[-1][3]) == pytest.approx(3725.125, abs=0.01)


def test_two_recordings_of_one_name_are_refused(tmp_path):
    with pytest.raises(ValueError, match="two recordings are named 'talk'"):
        formats.write(example() * 2, tmp_path, ["txt"])


def test_the_cli_decodes_given_segments_and_writes_text_and_efficiency(recording, model, tmp_path):
    exp = model.files.model_file.parent
    out = tmp_path / "out"
    cli.main(["--wav_scp", str(recording / "wav.scp"), "--segments", str(recording / "oracle_segments"),
              "--model", str(exp), "--output_dir", str(out), "--formats", "kaldi", "json", "--beam_size", "3",
              "--maxlenratio", "-6", "--minlenratio", "-1", "--ctc_weight", "0.3", "--progress", "false"])
    samples, rate = soundfile.read(read_table(recording / "wav.scp")["long01_00300s"], dtype="float32")
    alone = model([samples[int(round(s * rate)): int(round(e * rate))] for s, e in oracle(recording)])
    text = " ".join(r.text for r in alone if r.text)
    assert (out / "text").read_text() == f"long01_00300s {text}\n"
    report = json.loads((out / "efficiency.json").read_text())
    assert report["num_utterances"] == len(alone) and report["long_form"]["vad"] == "given"
    assert report["long_form"]["recordings"] == 1 and report["long_form"]["decode_s"] > 0
    assert json.loads((out / "long01_00300s.json").read_text())["text"] == text


@pytest.mark.parametrize("line, message", [
    ("rec sox a.wav -t wav - |\n", "line 1: expected '<name> <audio file>' (commands with '|' are not read"),
    ("rec /no/such.flac\n", "/no/such.flac: cannot read it as audio"),
])
def test_the_cli_says_what_is_wrong_in_one_line(recording, model, tmp_path, capsys, line, message):
    (tmp_path / "wav.scp").write_text(line)
    with pytest.raises(SystemExit):
        cli.main(["--wav_scp", str(tmp_path / "wav.scp"), "--model", str(model.files.model_file.parent)])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path / "wav.scp"), "--model", str(tmp_path / "nothing")])
    assert "nothing: no such model" in capsys.readouterr().err


def test_energy_vad_finds_bursts_and_cuts_long_ones_at_their_quietest_frame():
    from espnet_mtla.api.vad import energy_regions, split_long

    rate = 16000
    rng = np.random.default_rng(0)
    samples = 0.001 * rng.standard_normal(rate * 12).astype(np.float32)
    for start, end in [(1.0, 3.0), (5.0, 11.0)]:
        samples[int(start * rate): int(end * rate)] += 0.3 * rng.standard_normal(int((end - start) * rate))
    samples[int(8.0 * rate): int(8.05 * rate)] *= 0.01  # a short dip inside the second burst
    regions = energy_regions(samples, rate)
    assert [(round(s / rate, 1), round(e / rate, 1)) for s, e in regions] == [(1.0, 3.0), (5.0, 11.0)]
    cut = split_long(regions, samples, rate, 4.0)
    assert len(cut) == 3 and cut[1][1] == cut[2][0] and abs(cut[1][1] / rate - 8.0) < 0.06



def test_the_benchmark_measures_each_path_in_its_own_process(recording, model, tmp_path, capsys):
    """bench.long_form on a recipe dir of the tiny model, 30 s of the test utterances: one row per
    path with WER, RTF, times and peak memory, in results.json and the printed table."""
    import shutil

    from espnet_mtla.bench import long_form as bench

    recipe = tmp_path / "recipe"
    (recipe / "data").mkdir(parents=True)
    shutil.copytree(recording.parent / "utts", recipe / "data" / "test")
    shutil.copytree(model.files.model_file.parent, recipe / "exp" / "asr_train_tiny")
    bench.main(["--recipe", str(recipe), "--minutes", "0.5", "--models", "tiny", "--kinds", "ours", "oracle",
                "espnet_loop", "--espnet_minutes", "0.5", "--vads", "energy", "--out", str(tmp_path / "out")])
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["ours", "oracle", "espnet_loop"]
    for row in rows:
        assert 0 <= row["wer"] and 25 < row["audio_s"] < 35 and row["rtf"] > 0, row
        assert row["peak_rss_mib"] >= row["rss_before_mib"] > 100
    assert rows[0]["encode_s"] > 0 and rows[0]["segments"] >= 1
    printed = capsys.readouterr().out
    assert "| tiny | 0.5 | ours (energy) |" in printed and "| tiny | 0.5 | espnet_loop (energy) |" in printed


@pytest.mark.parametrize("task", ["st", "slu"])
def test_translation_and_slu_models_take_long_recordings_too(recording, tmp_path, task):
    """A talk translated segment by segment; an SLU model's segments carry their intents."""
    st = load_model(make_exp(tmp_path, task), beam_size=2, maxlenratio=-4, minlenratio=-1)
    path = read_table(recording / "wav.scp")["long01_00300s"]
    samples, rate = soundfile.read(path, dtype="float32")
    transcript = st.transcribe_long(path, vad="energy", max_segment_s=6.0)
    alone = st([samples[int(round(s.start * rate)): int(round(s.end * rate))] for s in transcript.segments])
    assert transcript.segments and [s.text for s in transcript.segments] == [r.text for r in alone]
    assert [s.intent for s in transcript.segments] == [r.intent for r in alone]
    assert all((s.intent is not None) == (task == "slu") for s in transcript.segments)


def test_silero_leaves_torch_s_threads_as_they_were():
    """Importing silero_vad sets torch's threads to 1 for the process; decoding after the VAD keeps its threads."""
    import subprocess
    import sys

    code = ("import torch, numpy as np; torch.set_num_threads(2); "
            "from espnet_mtla.api.vad import silero_regions; silero_regions(np.zeros(16000, np.float32), 16000); "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2"]


@pytest.mark.parametrize("option, content, message", [
    ("--segments", "seg1 long01_00300s 1.0\n", "line 1: expected '<segment> <recording> <start> <end>'"),
    ("--decode_config", None, "no_such_decode.yaml: no such decode config"),
])
def test_the_cli_says_what_is_wrong_with_segments_or_a_decode_config_in_one_line(recording, model, tmp_path, capsys,
                                                                                 option, content, message):
    path = tmp_path / ("segments" if content is not None else "no_such_decode.yaml")
    if content is not None:
        path.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        cli.main(["--wav_scp", str(recording / "wav.scp"), "--model", str(model.files.model_file.parent),
                  option, str(path), "--output_dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()  # nothing written
