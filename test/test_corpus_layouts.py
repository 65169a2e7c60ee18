"""The paper's corpora in each layout they are distributed or commonly unpacked in, built here from
a few lines following their public descriptions, prepared into the exact Kaldi data dirs that
ESPnet's recipes make from the same input; and the one-line refusals (no layout found, an empty
set, a split whose ids are mostly missing).

Sources of the format facts, per corpus, are in each fixture's docstring. Audio is silence:
only names, lengths and layouts matter here (tests/test_corpora.py and the recipe tests speak).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_mtla.data import ami, mustc, slurp, xsum


def silence(path: Path, seconds: float = 0.5, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.zeros(int(seconds * rate), np.int16), rate,
                    format="FLAC" if path.suffix == ".flac" else "WAV", subtype="PCM_16")


def files(data: Path, *names) -> dict:
    return {name: (data / name).read_text(encoding="utf-8") for name in names}


def error_of(main, argv, capsys) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# -- SLURP ------------------------------------------------------------------------------------------
SLURP_ENTRIES = {
    "train": [{"slurp_id": 1, "sentence": "wake me up at five am, please.", "intent": "alarm_set",
               "scenario": "alarm", "action": "set",
               "recordings": [{"file": "audio-1434542201.flac"}, {"file": "audio-1434542201-headset.flac"}]},
              {"slurp_id": 2, "sentence": "email john@example.com about #ai", "intent": "email_sendemail",
               "scenario": "email", "action": "sendemail", "recordings": [{"file": "audio--1504194195.flac"}]}],
    # An "intent" field that is not <scenario>_<action> (slurp_id 2993 of devel.jsonl carries "music"),
    # and a recording already used by train.
    "devel": [{"slurp_id": 3, "sentence": "play next song", "intent": "music", "scenario": "play", "action": "music",
               "recordings": [{"file": "audio-1490000003.flac"}, {"file": "audio-1434542201.flac"}]}],
    "test": [{"slurp_id": 4, "sentence": "what's the weather", "intent": "weather_query", "scenario": "weather",
              "action": "query", "recordings": [{"file": "audio-1490000004-headset.flac"}]}],
}


def write_slurp(root: Path, audio: str = "audio/slurp_real") -> None:
    """github.com/pswietojanski/slurp: ``dataset/slurp/{train,devel,test}.jsonl`` (README: slurp_id,
    sentence, intent, action, scenario, recordings[{file, ...}]) and ``dataset/slurp/metadata.json``
    (README: ``<slurp_id> -> recordings -> <file> -> usrid``, usrid like ``FO-488``); audio where
    ``scripts/download_audio.sh`` unpacks ``slurp_real.tar.gz`` (``audio/``) or, as some unpack
    it, at the root. The test entry's recording is missing from metadata.json."""
    text_dir = root / "dataset" / "slurp"
    text_dir.mkdir(parents=True)
    for split, entries in SLURP_ENTRIES.items():
        (text_dir / f"{split}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
        for entry in entries:
            for recording in entry["recordings"]:
                silence(root / audio / recording["file"])
    usrids = {"audio-1434542201.flac": "FO-488", "audio-1434542201-headset.flac": "FO-488",
              "audio--1504194195.flac": "ME-101", "audio-1490000003.flac": "UNK-007"}
    metadata = {str(e["slurp_id"]): {"recordings": {r["file"]: {"usrid": usrids[r["file"]], "status": "correct"}
                                                    for r in e["recordings"] if r["file"] in usrids}}
                for entries in SLURP_ENTRIES.values() for e in entries}
    (text_dir / "metadata.json").write_text(json.dumps(metadata))


# What egs2/slurp/asr1/local/prepare_slurp_data.py makes of it: ids slurp_<usrid>_<file[6:-5]>,
# speaker slurp_<usrid>, label <scenario>_<action>, "@" -> " at ", "#" -> " hashtag ", "," and "." removed.
SLURP_EXPECTED = {
    "train": {"text": "slurp_FO-488_1434542201 alarm_set wake me up at five am please\n"
                      "slurp_FO-488_1434542201-headset alarm_set wake me up at five am please\n"
                      "slurp_ME-101_-1504194195 email_sendemail email john at examplecom about hashtag ai\n",
              "utt2spk": "slurp_FO-488_1434542201 slurp_FO-488\nslurp_FO-488_1434542201-headset slurp_FO-488\n"
                         "slurp_ME-101_-1504194195 slurp_ME-101\n"},
    "devel": {"text": "slurp_UNK-007_1490000003 play_music play next song\n",
              "utt2spk": "slurp_UNK-007_1490000003 slurp_UNK-007\n"},
    "test": {"text": "slurp_unknown_1490000004-headset weather_query what's the weather\n",
             "utt2spk": "slurp_unknown_1490000004-headset slurp_unknown\n"},
}


@pytest.mark.parametrize("audio, root_below", [("audio/slurp_real", ""), ("slurp_real", ""), ("audio/slurp_real", "slurp")],
                         ids=["release", "tarballs-at-root", "root-one-level-up"])
def test_slurp_layouts_give_espnets_data_dirs(tmp_path, capsys, audio, root_below):
    write_slurp(tmp_path / "corpus" / root_below, audio)
    assert slurp.main(["--root", str(tmp_path / "corpus"), "--out-dir", str(tmp_path / "data")]) == 0
    for split, expected in SLURP_EXPECTED.items():
        assert files(tmp_path / "data" / split, "text", "utt2spk") == expected
        wav = dict(line.split(" ", 1) for line in (tmp_path / "data" / split / "wav.scp").read_text().splitlines())
        assert set(wav) == set(dict(line.split(" ", 1) for line in expected["utt2spk"].splitlines()))
        assert all(Path(path).parent == (tmp_path / "corpus" / root_below / audio).resolve() for path in wav.values())
    assert (tmp_path / "data" / "intents.txt").read_text() == "alarm_set\nemail_sendemail\n"
    assert (tmp_path / "data" / "train" / "transcript").read_text().splitlines()[0] == \
        "slurp_FO-488_1434542201 wake me up at five am please"
    err = capsys.readouterr().err.splitlines()
    assert f"slurp devel: 1 utterances, 0.00 h, 1 speakers -> {tmp_path / 'data' / 'devel'} " \
           f"(skipped: 1 recordings already in an earlier split)" in err
    assert err[-1].startswith("slurp test: 1 utterances") and \
        err[-1].endswith("(skipped: 1 recordings not in metadata.json: speaker unknown (kept))")


def test_slurp_refusals(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = error_of(slurp.main, ["--root", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == (f"error: {tmp_path / 'empty'}: no file named devel.jsonl anywhere under it (usually "
                   f"{tmp_path / 'empty' / 'dataset/slurp/devel.jsonl'}): is it the SLURP release?")
    write_slurp(tmp_path / "corpus")
    shutil.rmtree(tmp_path / "corpus" / "audio")
    err = error_of(slurp.main, ["--root", str(tmp_path / "corpus"), "--out-dir", str(tmp_path / "data")], capsys)
    assert err.startswith(f"error: {tmp_path / 'corpus'}: no folder named slurp_real anywhere under it (usually ")
    write_slurp(tmp_path / "again")
    (tmp_path / "again" / "dataset" / "slurp" / "test.jsonl").write_text("")
    err = error_of(slurp.main, ["--root", str(tmp_path / "again"), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == (f"error: slurp test: no utterances in {tmp_path / 'again' / 'dataset/slurp/test.jsonl'}: "
                   f"is the corpus complete?")
    assert not (tmp_path / "data").exists()  # nothing written


# -- AMI --------------------------------------------------------------------------------------------
NITE = 'xmlns:nite="http://nite.sourceforge.net/"'
HEADER = '<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>'
# Speaker A of ES2011a (a dev meeting): one segment of three sentences, then an overlapping one.
A_WORDS = [("w", "Okay", "76.50", "76.80"), ("w", ",", "76.80", None), ("w", "so", "76.85", "77.00"),
           ("w", "the", "77.00", "77.10"), ("w", "T_V_", "77.10", "77.50"), ("w", "remote", "77.50", "77.74"),
           ("w", ".", "77.74", None), ("vocalsound", None, "77.74", "78.20"), ("w", "Is", "78.30", "78.40"),
           ("w", "it", "78.40", "78.50"), ("w", "anti-trust", "78.50", "79.10"), ("w", "?", "79.10", None),
           ("w", "Mm", "79.30", "79.50"), ("w", "hmm", "79.50", "79.80"),
           ("w", "Yeah", "79.60", "80.00"), ("w", ".", "80.00", None)]
A_SEGMENTS = [(0, 13), (14, 15)]
# Speaker B: 36 words with commas after the 6th and 18th: more than 30 tokens, cut at the comma nearest the middle.
B_WORDS = []
for i in range(36):
    B_WORDS.append(("w", f"word{i}", f"{20 + 0.25 * i:.2f}", f"{20 + 0.25 * (i + 1):.2f}"))
    if i in (5, 17, 35):
        B_WORDS.append(("w", "." if i == 35 else ",", f"{20 + 0.25 * (i + 1):.2f}", None))
B_SEGMENTS = [(0, len(B_WORDS) - 1)]


def words_xml(meeting, agent, words) -> str:
    lines = [HEADER, f'<nite:root nite:id="{meeting}.{agent}.words" {NITE}>']
    for n, (tag, text, start, end) in enumerate(words):
        attrs = f'nite:id="{meeting}.{agent}.words{n}" starttime="{start}" endtime="{end or start}"'
        if tag != "w":
            lines.append(f'   <{tag} {attrs} type="laugh"/>')
        else:
            punc = ' punc="true"' if text in ".,?" else ""
            lines.append(f"   <w {attrs}{punc}>{text}</w>")
    return "\n".join(lines + ["</nite:root>"]) + "\n"


def segments_xml(meeting, agent, segments, words) -> str:
    lines = [HEADER, f'<nite:root nite:id="{meeting}.{agent}.segs" {NITE}>']
    for n, (first, last) in enumerate(segments):
        href = f"{meeting}.{agent}.words.xml#id({meeting}.{agent}.words{first})..id({meeting}.{agent}.words{last})"
        lines += [f'   <segment nite:id="{meeting}.sync.{n}" transcriber_start="{float(words[first][2]) - 0.3:.3f}" '
                  f'transcriber_end="{float(words[last][2]) + 0.4:.3f}">', f'      <nite:child href="{href}"/>',
                  "   </segment>"]
    return "\n".join(lines + ["</nite:root>"]) + "\n"


def write_ami(root: Path, audio: str, annotations: str = "annotations", mics=("Headset-0", "Headset-1")) -> None:
    """Audio where the AMI website's download (``amicorpus/<m>/audio/``), Kaldi's/ESPnet's
    ami_download.sh (``<root>/<m>/audio/``) or lhotse (``wav_db/<m>/audio/``) puts it
    (``<m>.Headset-<n>.wav``, ``<m>.Array1-01.wav``); the annotation release
    ami_public_manual_1.6.2.zip (NXT: ``corpusResources/meetings.xml`` speakers with nxt_agent,
    channel, global_name; ``words/<m>.<agent>.words.xml`` <w> with starttime/endtime and
    punc="true"; ``segments/<m>.<agent>.segments.xml`` word ranges) unpacked into ``annotations/``
    as Kaldi does, or at the root."""
    meeting, base = "ES2011a", root / annotations
    for sub in ("words", "segments", "corpusResources"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "corpusResources" / "meetings.xml").write_text(
        f'{HEADER}\n<nite:root {NITE}>\n  <meeting observation="{meeting}" type="scenario">\n'
        f'    <speaker nxt_agent="A" channel="0" global_name="MEE001" role="PM"/>\n'
        f'    <speaker nxt_agent="B" channel="1" global_name="FEE002" role="ID"/>\n  </meeting>\n</nite:root>\n')
    for agent, words, segments in (("A", A_WORDS, A_SEGMENTS), ("B", B_WORDS, B_SEGMENTS)):
        (base / "words" / f"{meeting}.{agent}.words.xml").write_text(words_xml(meeting, agent, words), encoding="latin-1")
        (base / "segments" / f"{meeting}.{agent}.segments.xml").write_text(
            segments_xml(meeting, agent, segments, words), encoding="latin-1")
    for mic in mics:
        silence(root / audio.format(m=meeting) / f"{meeting}.{mic}.wav", seconds=1.0)


B_FIRST, B_SECOND = " ".join(f"WORD{i}" for i in range(18)), " ".join(f"WORD{i}" for i in range(18, 36))
# What Kaldi's ami_split_segments.pl + ami_ihm_scoring_data_prep.sh (ESPnet's are the same files)
# make: pieces cut at "." and "?", times truncated to centiseconds (77.74 -> 7773, 79.10 -> 7909),
# the overlapping "Yeah" segment's start moved to the previous end (79.80) in the segments file only.
AMI_DEV = {
    "text": "AMI_ES2011a_H00_MEE001_0007650_0007773 OKAY SO THE T. V. REMOTE\n"
            "AMI_ES2011a_H00_MEE001_0007773_0007909 IS IT ANTI TRUST\n"
            "AMI_ES2011a_H00_MEE001_0007909_0007980 MM-HMM\n"
            "AMI_ES2011a_H00_MEE001_0007959_0008000 YEAH\n"
            f"AMI_ES2011a_H01_FEE002_0002000_0002450 {B_FIRST}\n"
            f"AMI_ES2011a_H01_FEE002_0002450_0002900 {B_SECOND}\n",
    "segments": "AMI_ES2011a_H00_MEE001_0007650_0007773 AMI_ES2011a_H00 76.500 77.730\n"
                "AMI_ES2011a_H00_MEE001_0007773_0007909 AMI_ES2011a_H00 77.730 79.090\n"
                "AMI_ES2011a_H00_MEE001_0007909_0007980 AMI_ES2011a_H00 79.090 79.800\n"
                "AMI_ES2011a_H00_MEE001_0007959_0008000 AMI_ES2011a_H00 79.800 80.000\n"
                "AMI_ES2011a_H01_FEE002_0002000_0002450 AMI_ES2011a_H01 20.000 24.500\n"
                "AMI_ES2011a_H01_FEE002_0002450_0002900 AMI_ES2011a_H01 24.500 29.000\n",
    "utt2spk": "".join(f"{utt} {utt.rsplit('_', 2)[0]}\n" for utt in (
        "AMI_ES2011a_H00_MEE001_0007650_0007773", "AMI_ES2011a_H00_MEE001_0007773_0007909",
        "AMI_ES2011a_H00_MEE001_0007909_0007980", "AMI_ES2011a_H00_MEE001_0007959_0008000",
        "AMI_ES2011a_H01_FEE002_0002000_0002450", "AMI_ES2011a_H01_FEE002_0002450_0002900")),
}


@pytest.mark.parametrize("audio, annotations", [("amicorpus/{m}/audio", "annotations"), ("{m}/audio", "annotations"),
                                                ("wav_db/{m}/audio", "."), ("amicorpus/{m}/audio", "ami_public_manual_1.6.2")],
                         ids=["website", "ami_download.sh", "lhotse-annotations-at-root", "zip-folder"])
def test_ami_layouts_give_kaldis_data_dirs(tmp_path, capsys, audio, annotations):
    write_ami(tmp_path / "AMI", audio, annotations)
    assert ami.main(["--root", str(tmp_path / "AMI"), "--out-dir", str(tmp_path / "data"), "--splits", "dev"]) == 0
    assert files(tmp_path / "data" / "dev", "text", "segments", "utt2spk") == AMI_DEV
    wav = (tmp_path / "data" / "dev" / "wav.scp").read_text().splitlines()
    assert [line.split()[0] for line in wav] == ["AMI_ES2011a_H00", "AMI_ES2011a_H01"]
    assert wav[0].endswith(audio.format(m="ES2011a") + "/ES2011a.Headset-0.wav")
    assert capsys.readouterr().err.strip() == (f"ami ihm dev: 6 utterances, 0.00 h, 2 speakers, 2 recordings -> "
                                               f"{tmp_path / 'data' / 'dev'}")


def test_ami_distant_microphone(tmp_path):
    write_ami(tmp_path / "AMI", "{m}/audio", mics=("Array1-01", "Array1-02"))
    ami.prepare(tmp_path / "AMI", tmp_path / "data", splits=["dev"], mic="sdm")
    text = (tmp_path / "data" / "dev" / "text").read_text()
    expected = AMI_DEV["text"].replace("_H00_", "_SDM_").replace("_H01_", "_SDM_").splitlines(keepends=True)
    assert text == "".join(sorted(expected))
    assert set((tmp_path / "data" / "dev" / "spk2utt").read_text().split()[:1]) == {"AMI_ES2011a"}  # the session
    assert (tmp_path / "data" / "dev" / "wav.scp").read_text().split()[0] == "AMI_ES2011a_SDM"


def test_ami_refusals(tmp_path, capsys):
    write_ami(tmp_path / "AMI", "{m}/audio", mics=())
    err = error_of(ami.main, ["--root", str(tmp_path / "AMI"), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == (f"error: {tmp_path / 'AMI'}: no *.Headset-*.wav anywhere under it (looked for <meeting>/audio/ as "
                   f"ami_download.sh, amicorpus/ and wav_db/ write it): is it the AMI ihm audio?")
    silence(tmp_path / "AMI" / "ES2011a" / "audio" / "ES2011a.Headset-0.wav")
    silence(tmp_path / "AMI" / "amicorpus" / "ES2011a" / "audio" / "ES2011a.Headset-0.wav")
    err = error_of(ami.main, ["--root", str(tmp_path / "AMI"), "--out-dir", str(tmp_path / "data")], capsys)
    assert err.startswith(f"error: {tmp_path / 'AMI'}: two copies of ES2011a.Headset-0.wav (")
    shutil.rmtree(tmp_path / "AMI" / "annotations" / "corpusResources")
    err = error_of(ami.main, ["--root", str(tmp_path / "AMI"), "--out-dir", str(tmp_path / "data")], capsys)
    assert err.startswith(f"error: {tmp_path / 'AMI'}: no file named meetings.xml anywhere under it")
    assert not (tmp_path / "data").exists()


def test_ami_split_segment_follows_the_perl_script():
    # A piece of more than 30 tokens with no comma is kept whole; "!" and ":" are not cut at.
    tokens = [f"w{i}" for i in range(20)] + ["!"] + [f"v{i}" for i in range(15)]
    assert ami.split_segment(tokens, ["5.00"], 0.0, 10.0) == {(0, 1000): " ".join(t.upper() for t in tokens if t != "!")}
    assert ami.split_segment(["a", "."], [], 0.0, 1.0) is None  # a mark without its time: dropped as the script does
    assert ami.split_segment(["um,i", "see", "."], ["1.00"], 0.5, 1.0) == {(50, 100): "SEE"}


# -- MuST-C -------------------------------------------------------------------------------------------
def write_mustc(root: Path, version: int) -> None:
    """MuST-C en-de (v1/v2 README; ESPnet's egs/must_c/st1/local/data_prep.sh reads v1's speaker_id
    as the 7th field, v2's as the 11th: v2 adds ``rW``/``uW`` word counts): ``en-de/data/<split>/
    {wav/ted_<n>.wav, txt/<split>.{yaml,en,de}}``, the yaml one flow mapping per line, aligned
    line by line with the text files. Train repeats one segment (same offset and duration) and
    holds one shorter than 0.2 s."""
    counts = ", rW: 6, uW: 0" if version == 2 else ""
    splits = {"train": [(12.19, 2.72, "Hello, world.", "Hallo, Welt."), (20.0, 0.1, "Yes!", "Ja!"),
                        (30.5, 1.25, "Again.", "Nochmal."), (30.5, 1.25, "Again.", "Nochmal.")],
              "dev": [(1.0, 2.0, "It's fine.", "Es geht.")], "tst-COMMON": [(3.0, 1.5, "Good night.", "Gute Nacht.")]}
    for split, segments in splits.items():
        base = root / "en-de" / "data" / split
        silence(base / "wav" / "ted_767.wav")
        (base / "txt").mkdir(parents=True)
        (base / "txt" / f"{split}.yaml").write_text("".join(
            f"- {{duration: {d:.6f}, offset: {o:.6f}{counts}, speaker_id: spk.767, wav: ted_767.wav}}\n"
            for o, d, _, _ in segments))
        for index, lang in ((2, "en"), (3, "de")):
            (base / "txt" / f"{split}.{lang}").write_text("".join(s[index] + "\n" for s in segments))


@pytest.mark.parametrize("version", [1, 2])
def test_mustc_ids_repeats_and_short_segments_as_espnet(tmp_path, capsys, version):
    write_mustc(tmp_path / "MUSTC", version)
    assert mustc.main(["--root", str(tmp_path / "MUSTC"), "--out-dir", str(tmp_path / "data")]) == 0
    # ted_<spk 5 digits>_<start ms>_<end ms>; the 0.1 s segment widened to 0.2 s; the repeated one gone.
    assert files(tmp_path / "data" / "train", "text", "text.en", "segments", "utt2spk") == {
        "text": "ted_00767_0012190_0014910 Hallo, Welt.\nted_00767_0019950_0020150 Ja!\n",
        "text.en": "ted_00767_0012190_0014910 hello world\nted_00767_0019950_0020150 yes\n",
        "segments": "ted_00767_0012190_0014910 ted_00767 12.190 14.910\n"
                    "ted_00767_0019950_0020150 ted_00767 19.950 20.150\n",
        "utt2spk": "ted_00767_0012190_0014910 ted_00767\nted_00767_0019950_0020150 ted_00767\n"}
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "mustc en-de: no tst-HE in this release: skipped"
    assert err[1] == (f"mustc en-de train: 2 segments, 0.00 h, 1 speakers, 1 recordings -> {tmp_path / 'data' / 'train'} "
                      f"(skipped: 2 segments whose id repeats (every copy, as ESPnet))")


# -- XSum ---------------------------------------------------------------------------------------------
SHARE = "Share this with\nEmail\nFacebook\nMessenger\nTwitter\nPinterest\nWhatsApp\nLinkedIn\nCopy this link\n"
ARTICLES = {"10001": ("A storm closed the bridge.", "The bridge was shut on Monday.\nTraffic was diverted."),
            "10002": ("Prices rose again.", "Inflation went up.\nThese are external links and will open in a new window"),
            "10003": ("A cat won a prize.", "The show was held in York."),
            "10004": ("", "A body with no summary."),  # an empty section: skipped and counted
            }
XSUM_SPLIT = {"train": ["10001", "10004"], "validation": ["10002", "10009"], "test": ["10003"]}


def write_xsum(root: Path, layout: str) -> None:
    """XSum (github.com/EdinburghNLP/XSum): the released archive's ``bbc-summary-data/<id>.summary``
    (``[SN]URL[SN]``, ``[SN]TITLE[SN]``, ``[SN]FIRST-SENTENCE[SN]``, ``[SN]RESTBODY[SN]``: the
    HuggingFace loader's reading), or ``xsum-extracts-from-downloads/<id>.data`` as the dataset's
    parse-bbc-html-data.py writes it (``[XSUM]URL[XSUM]``, ``[XSUM]INTRODUCTION[XSUM]``,
    ``[XSUM]RESTBODY[XSUM]``), with XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json. Bodies start with the
    BBC page's sharing panel (the lines the HuggingFace loader removes). Id 10009 has no file."""
    folder = root / ("bbc-summary-data" if layout == "summary" else "xsum-extracts-from-downloads")
    folder.mkdir(parents=True)
    for doc_id, (summary, body) in ARTICLES.items():
        url = f"http://web.archive.org/web/2016/http://www.bbc.com/news/uk-{doc_id}"
        if layout == "summary":
            text = (f"[SN]URL[SN]\n{url}\n\n[SN]TITLE[SN]\nA title\n\n[SN]FIRST-SENTENCE[SN]\n{summary}\n\n"
                    f"[SN]RESTBODY[SN]\n{SHARE}{body}\n")
        else:
            text = f"[XSUM]URL[XSUM]\n{url}\n\n[XSUM]INTRODUCTION[XSUM]\n{summary}\n\n[XSUM]RESTBODY[XSUM]\n{SHARE}{body}\n"
        (folder / f"{doc_id}.{'summary' if layout == 'summary' else 'data'}").write_text(text)
    (root / "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json").write_text(json.dumps(XSUM_SPLIT))


@pytest.mark.parametrize("layout", ["summary", "extracts"])
def test_xsum_layouts_without_boilerplate(tmp_path, capsys, layout):
    write_xsum(tmp_path / "XSUM" / "unpacked", layout)
    assert xsum.main(["--root", str(tmp_path / "XSUM"), "--out-dir", str(tmp_path / "data")]) == 0
    assert files(tmp_path / "data" / "train", "text", "text.doc") == {
        "text": "10001 A storm closed the bridge.\n",
        "text.doc": "10001 The bridge was shut on Monday. Traffic was diverted.\n"}
    assert (tmp_path / "data" / "dev" / "text.doc").read_text() == "10002 Inflation went up.\n"
    suffix = ".summary" if layout == "summary" else ".data"
    assert capsys.readouterr().err.splitlines() == [
        f"xsum train: 1 documents -> {tmp_path / 'data' / 'train'} (skipped: 1 articles with an empty summary or body)",
        f"xsum dev: 1 documents -> {tmp_path / 'data' / 'dev'} (skipped: 1 ids of the split with no {suffix} file)",
        f"xsum test: 1 documents -> {tmp_path / 'data' / 'test'}"]


def test_xsum_refusals(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = error_of(xsum.main, ["--root", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == (f"error: {tmp_path / 'empty'}: found neither XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json with one of "
                   f"bbc-summary-data/, xsum-extracts-from-downloads/ nor train.jsonl anywhere under it: is it XSum?")
    write_xsum(tmp_path / "XSUM", "summary")
    split = dict(XSUM_SPLIT, test=["10003", "20001", "20002"])  # most test ids have no file
    (tmp_path / "XSUM" / "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json").write_text(json.dumps(split))
    err = error_of(xsum.main, ["--root", str(tmp_path / "XSUM"), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == (f"error: {tmp_path / 'XSUM' / 'XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json'}: 2 of the 3 test ids have "
                   f"no {tmp_path / 'XSUM' / 'bbc-summary-data'}/<id>.summary: is the download complete?")
    split = dict(XSUM_SPLIT, test=["10004"])  # a set left empty
    (tmp_path / "XSUM" / "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json").write_text(json.dumps(split))
    err = error_of(xsum.main, ["--root", str(tmp_path / "XSUM"), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == (f"error: xsum test: no documents in {tmp_path / 'XSUM' / 'XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json'} "
                   f"(skipped: 1 articles with an empty summary or body): is the corpus complete?")
    assert not (tmp_path / "data").exists()


def test_mustc_plain_yaml_lines_read_as_pyyaml_reads_them():
    import yaml

    lines = ["- {duration: 3.500000, offset: 16.730000, rW: 17, uW: 0, speaker_id: spk.1, wav: ted_1.wav}",
             "  - {duration: 0.1, offset: 2, speaker_id: spk.767, wav: ted_767.wav}"]
    for line in lines:
        fast = mustc.parse_plain_flow(line)
        slow = yaml.safe_load(line.strip()[1:])
        assert fast.keys() == slow.keys() and all(str(slow[k]) == fast[k] or float(slow[k]) == float(fast[k]) for k in fast)
    for line in ["- {wav: 'ted 1.wav', offset: 1, duration: 2}", "- {a: {b: 1}}", "- {url: http://x, offset: 1}"]:
        assert mustc.parse_plain_flow(line) is None  # quoted, nested, a colon in a value: left to PyYAML


def test_full_size_benchmark_runs_at_a_thousandth(tmp_path):
    from espnet_mtla.bench import corpora

    assert corpora.main(["--scale", "0.001", "--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["corpus"] for r in report["results"]] == ["mustc", "ami", "slurp", "xsum"]
    for row in report["results"]:
        assert row["seconds"] > 0 and row["peak_mib"] > 0 and len([l for l in row["summary"] if " -> " in l]) >= 3
    assert "| xsum | 0.001 x (226,711 articles) |" in (tmp_path / "out" / "results.md").read_text()
