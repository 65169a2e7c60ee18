"""Corpus preparation (MuST-C, AMI, SLURP, XSum) from miniature copies in the official layouts,
malformed corpus files, and the fairseq-style zip feature storage."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from espnet_mtla.data import datadir
from espnet_mtla.data import ami, corpus, mustc, slurp, xsum, zip_features
from espnet_mtla.data.format_audio import format_dir
from mini_corpora import write_ami, write_mustc, write_slurp, write_xsum_jsonl, write_xsum_original

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make install)")


def table(path: Path):
    return dict(line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines())


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    return {"mustc": (root / "mustc", write_mustc(root / "mustc")), "ami": (root / "ami", write_ami(root / "ami")),
            "slurp": (root / "slurp", write_slurp(root / "slurp"))}


def copy_corpus(corpora, name, tmp_path) -> Path:
    """A writable copy (tests break files in it)."""
    shutil.copytree(corpora[name][0], tmp_path / name)
    return tmp_path / name


def test_mustc_segments_ids_and_texts_match_the_source(corpora, tmp_path):
    root, written = corpora["mustc"]
    mustc.prepare(root, tmp_path / "data")
    for split, segments in written.items():
        data = tmp_path / "data" / split
        assert not datadir.validate(data, check_audio=True, fs=16000)
        seg = table(data / "segments")
        assert sorted(seg) == sorted(s["utt_id"] for s in segments)
        for s in segments:
            recording, start, end = seg[s["utt_id"]].split()
            assert recording == s["talk"] and abs(float(start) - s["start"]) < 1e-3 and abs(float(end) - s["end"]) < 1e-3
            assert table(data / "text.de")[s["utt_id"]] == s["tgt"] == table(data / "text")[s["utt_id"]]
            assert table(data / "text.en")[s["utt_id"]] == s["en"].lower().rstrip(".")
        assert set(table(data / "wav.scp")) == {s["talk"] for s in segments}


def test_mustc_other_language_pair(tmp_path):
    write_mustc(tmp_path / "mustc", tgt_lang="fr")
    mustc.prepare(tmp_path / "mustc", tmp_path / "data", tgt_lang="fr", splits=["dev"])
    assert (tmp_path / "data" / "dev" / "text.fr").exists() and not (tmp_path / "data" / "dev" / "text.de").exists()


def test_ami_partition_segments_and_normalisation(corpora, tmp_path):
    root, written = corpora["ami"]
    ami.prepare(root, tmp_path / "data")
    for split, segments in written.items():
        data = tmp_path / "data" / split
        assert not datadir.validate(data, check_audio=True, fs=16000)
        assert table(data / "text") == {s["utt_id"]: s["text"] for s in segments}  # no "." or vocal sound
        seg = table(data / "segments")
        assert all(seg[s["utt_id"]].split()[0] == s["recording"] for s in segments)
        assert all(table(data / "utt2spk")[s["utt_id"]] == s["speaker"] for s in segments)
    assert {u.split("_")[1] for u in table(tmp_path / "data" / "dev" / "utt2spk")} == {"ES2011a"}  # official dev list
    assert {u.split("_")[1] for u in table(tmp_path / "data" / "eval" / "utt2spk")} == {"ES2004a"}
    assert ami.normalise("MM HMM ,0 IT'S L_C_D_ UH-HUH UM,I ANTI-TRUST") == "MM-HMM IT'S L. C. D. UH-HUH ANTI TRUST"


def test_slurp_targets_intents_and_recordings(corpora, tmp_path):
    root, written = corpora["slurp"]
    slurp.prepare(root, tmp_path / "data")
    for split, utts in written.items():
        data = tmp_path / "data" / split
        assert not datadir.validate(data, check_audio=True, fs=16000)
        assert table(data / "text") == {u["utt_id"]: u["text"] for u in utts}  # labels from scenario/action
        assert table(data / "transcript") == {u["utt_id"]: u["text"].split(" ", 1)[1] for u in utts}
        assert table(data / "utt2spk") == {u["utt_id"]: u["speaker"] for u in utts}  # metadata.json's usrid
    intents = (tmp_path / "data" / "intents.txt").read_text().split()
    assert intents == sorted({u["text"].split()[0] for u in written["train"]})


def test_xsum_original_and_jsonl_releases_give_the_same_data(tmp_path):
    docs = write_xsum_original(tmp_path / "orig")
    write_xsum_jsonl(tmp_path / "jsonl")
    xsum.prepare(tmp_path / "orig", tmp_path / "a")
    xsum.prepare(tmp_path / "jsonl", tmp_path / "b")
    for split, name in xsum.SPLITS.items():
        for file in ("text", "text.doc", "utt2spk", "spk2utt"):
            assert (tmp_path / "a" / split / file).read_text() == (tmp_path / "b" / split / file).read_text()
        assert table(tmp_path / "a" / split / "text") == {d["id"]: d["summary"] for d in docs[name]}
        assert not datadir.validate(tmp_path / "a" / split, needs_audio=False)
    xsum.prepare(tmp_path / "orig", tmp_path / "short", max_doc_words=5)
    assert all(len(v.split()) == 5 for v in table(tmp_path / "short" / "test" / "text.doc").values())


def test_xsum_counts_split_ids_without_a_file_and_articles_with_an_empty_section(tmp_path, capsys):
    docs = write_xsum_original(tmp_path / "orig")
    (tmp_path / "orig" / "bbc-summary-data" / f"{docs['test'][0]['id']}.summary").unlink()
    summary = tmp_path / "orig" / "bbc-summary-data" / f"{docs['train'][3]['id']}.summary"
    summary.write_text(summary.read_text().replace("[SN]FIRST-SENTENCE[SN]", "[SN]FIRST[SN]"))
    xsum.prepare(tmp_path / "orig", tmp_path / "data")
    err = capsys.readouterr().err
    assert f"xsum test: 3 documents -> {tmp_path / 'data' / 'test'} (skipped: 1 ids of the split with no .summary file)" in err
    assert f"xsum train: 23 documents -> {tmp_path / 'data' / 'train'} (skipped: 1 articles with an empty summary or body)" in err


# -- malformed corpus files: one line naming the file and line -----------------------------------
def run_main(main, argv, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_mustc_yaml_entry_without_offset(corpora, tmp_path, capsys):
    root = copy_corpus(corpora, "mustc", tmp_path)
    path = root / "en-de" / "data" / "dev" / "txt" / "dev.yaml"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("offset: ", "offst: ")
    path.write_text("\n".join(lines) + "\n")
    err = run_main(mustc.main, ["--root", str(root), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == f"error: {path}:2: segment without offset"


def test_mustc_misaligned_translation_file(corpora, tmp_path, capsys):
    root = copy_corpus(corpora, "mustc", tmp_path)
    path = root / "en-de" / "data" / "dev" / "txt" / "dev.de"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    err = run_main(mustc.main, ["--root", str(root), "--out-dir", str(tmp_path / "data"), "--splits", "dev"], capsys)
    assert err.startswith(f"error: {path}: 2 lines, but ") and "must be aligned line by line" in err


def test_ami_xml_element_without_an_attribute(corpora, tmp_path, capsys):
    root = copy_corpus(corpora, "ami", tmp_path)
    path = root / "annotations" / "segments" / "ES2011a.B.segments.xml"
    text = path.read_text(encoding="latin-1").replace('transcriber_end="', 'transcriber_stop="', 1)
    path.write_text(text, encoding="latin-1")
    err = run_main(ami.main, ["--root", str(root), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == f"error: {path}:3: <segment> without the attribute transcriber_end"


def test_ami_word_range_that_is_not_in_the_words_file(corpora, tmp_path, capsys):
    root = copy_corpus(corpora, "ami", tmp_path)
    path = root / "annotations" / "segments" / "ES2004a.A.segments.xml"
    path.write_text(path.read_text(encoding="latin-1").replace("words0)", "words900)", 1), encoding="latin-1")
    err = run_main(ami.main, ["--root", str(root), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == (f"error: {path}:4: ES2004a.A.words900 is not in "
                   f"{root / 'annotations' / 'words' / 'ES2004a.A.words.xml'}")


def test_ami_broken_xml_and_missing_headset_audio(corpora, tmp_path, capsys):
    root = copy_corpus(corpora, "ami", tmp_path)
    words = root / "annotations" / "words" / "ES2002a.B.words.xml"
    words.write_text(words.read_text(encoding="latin-1").replace("</w>", "</x>", 1), encoding="latin-1")
    err = run_main(ami.main, ["--root", str(root), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == f"error: {words}:3: not well-formed XML (mismatched tag)"
    shutil.copy(corpora["ami"][0] / "annotations" / "words" / words.name, words)
    # A headset that is not there: its segments are skipped and counted in the summary line ...
    (root / "amicorpus" / "ES2003a" / "audio" / "ES2003a.Headset-2.wav").unlink()
    assert ami.main(["--root", str(root), "--out-dir", str(tmp_path / "data")]) == 0
    train = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("ami ihm train: "))
    assert train.startswith("ami ihm train: 9 utterances, ") and " 3 speakers, 3 recordings -> " in train
    assert train.endswith("(skipped: 3 segments without their ihm recording)")
    # ... but a set that loses most of its segments so is refused, and nothing is written.
    shutil.rmtree(tmp_path / "data")
    (root / "amicorpus" / "ES2002a" / "audio" / "ES2002a.Headset-0.wav").unlink()
    (root / "amicorpus" / "ES2002a" / "audio" / "ES2002a.Headset-1.wav").unlink()
    err = run_main(ami.main, ["--root", str(root), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == f"error: ami train: 9 of 12 segments have no ihm recording under {root}: is the audio download complete?"
    assert not (tmp_path / "data").exists()  # nothing half-written


def test_slurp_jsonl_line_that_is_not_json(corpora, tmp_path, capsys):
    root = copy_corpus(corpora, "slurp", tmp_path)
    path = root / "dataset" / "slurp" / "devel.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-1]  # a truncated line
    path.write_text("\n".join(lines) + "\n")
    err = run_main(slurp.main, ["--root", str(root), "--out-dir", str(tmp_path / "data")], capsys)
    assert err.startswith(f"error: {path}:3: not JSON (")


def test_slurp_entry_without_intent_or_audio(corpora, tmp_path, capsys):
    root = copy_corpus(corpora, "slurp", tmp_path)
    path = root / "dataset" / "slurp" / "test.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    entries[1].pop("scenario")
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    err = run_main(slurp.main, ["--root", str(root), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == f"error: {path}:2: no scenario"
    missing = root / "audio" / "slurp_real" / entries[0]["recordings"][0]["file"]
    missing.unlink()
    path.write_text("".join(json.dumps(e) + "\n" for e in entries[:1]))
    err = run_main(slurp.main, ["--root", str(root), "--out-dir", str(tmp_path / "data")], capsys)
    assert err == f"error: {path}:1: {missing} not found"


def test_xsum_malformed_files(tmp_path, capsys):
    docs = write_xsum_original(tmp_path / "orig")
    summary = tmp_path / "orig" / "bbc-summary-data" / f"{docs['train'][3]['id']}.summary"
    summary.write_text("A line before any section\n" + summary.read_text())
    err = run_main(xsum.main, ["--root", str(tmp_path / "orig"), "--out-dir", str(tmp_path / "d")], capsys)
    assert err == f"error: {summary}:1: text before the first [SN]...[SN] section marker"
    write_xsum_jsonl(tmp_path / "jsonl")
    path = tmp_path / "jsonl" / "validation.jsonl"
    path.write_text(path.read_text() + '{"id": "1", "document": "a b c"}\n')
    err = run_main(xsum.main, ["--root", str(tmp_path / "jsonl"), "--out-dir", str(tmp_path / "d")], capsys)
    assert err == f"error: {path}:5: no summary"


def test_db_sh_corpus_paths(tmp_path, capsys):
    err = run_main(corpus.main, ["MUSTC", "", "the MuST-C root"], capsys)
    assert err == "error: MUSTC is not set in db.sh: set it to the MuST-C root"
    err = run_main(corpus.main, ["SLURP", str(tmp_path), "the SLURP root", "dataset/slurp/train.jsonl"], capsys)
    assert err == (f"error: SLURP={tmp_path} (db.sh): {tmp_path / 'dataset/slurp/train.jsonl'} not found; "
                   f"is it the SLURP root?")


# -- fairseq-style zip storage ----------------------------------------------------------------------
def test_zip_storage_reads_back_what_the_ark_holds(corpora, tmp_path):
    """The same fbank features through ESPnet's dataset from kaldi ark and from the zip."""
    import espnet_mtla.tasks.registration  # noqa: F401  (registers the zip_npy data type)
    from espnet2.train.dataset import ESPnetDataset

    mustc.prepare(corpora["mustc"][0], tmp_path / "data", splits=["dev"])
    src = tmp_path / "data" / "dev"
    format_dir(src, tmp_path / "ark", "flac", 16000, "fbank")
    format_dir(src, tmp_path / "zip", "flac", 16000, "fbank", feats_storage="zip")
    assert (tmp_path / "ark" / "feats_shape").read_text() == (tmp_path / "zip" / "feats_shape").read_text()
    ark = ESPnetDataset([(str(tmp_path / "ark" / "feats.scp"), "speech", "kaldi_ark")])
    zipped = ESPnetDataset([(str(tmp_path / "zip" / "feats.scp"), "speech", "zip_npy")])
    keys = list(table(src / "utt2spk"))
    for key in keys:
        a, z = ark[key][1]["speech"], zipped[key][1]["speech"]
        assert a.shape[1] == 80 and a.dtype == z.dtype == np.float32 and np.array_equal(a, z)
    ref = table(tmp_path / "zip" / "feats.scp")[keys[0]]
    path, offset, length = ref.rsplit(":", 2)
    assert path.endswith("data/feats.zip")
    with open(path, "rb") as f:  # the offset addresses the npy bytes themselves (fairseq's convention)
        f.seek(int(offset))
        assert f.read(6) == b"\x93NUMPY"
    for name in ("text", "utt2spk"):
        shutil.copy(src / name, tmp_path / "zip" / name)
    zip_features.write_manifest(tmp_path / "zip")
    rows = (tmp_path / "zip" / "manifest.tsv").read_text().splitlines()
    assert rows[0] == "id\taudio\tn_frames\ttgt_text\tspeaker" and len(rows) == len(keys) + 1
    first = rows[1].split("\t")
    assert first[:3] == [keys[0], ref, table(tmp_path / "zip" / "feats_shape")[keys[0]].split(",")[0]]


def test_truncated_zip_entry_is_named(tmp_path):
    writer = zip_features.ZipNpyWriter(tmp_path / "feats.zip")
    writer("utt1", np.ones((3, 2), np.float32))
    writer.close()
    ref = (tmp_path / "feats.zip.scp").read_text().split()[1]
    path, offset, length = ref.rsplit(":", 2)
    with pytest.raises(ValueError, match="not an npy entry"):
        zip_features.load(f"{path}:{int(offset) + 1}:{length}")
    np.testing.assert_array_equal(zip_features.load(ref), np.ones((3, 2), np.float32))
