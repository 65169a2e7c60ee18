"""Miniature copies of the paper's corpora in their official on-disk layouts, spoken by espeak-ng.

Each writer returns what it wrote (per split: the segments with their ids, times and texts)
so that tests can check the prepared Kaldi data dirs against the source.
"""

import json
import random
from pathlib import Path
from typing import Dict, List
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import soundfile

from espnet_mtla.data.grammar import command, sentence
from espnet_mtla.data.speech_synth import SAMPLE_RATE, VOICES, Voice, speak

GAP = 0.4  # seconds of silence around segments in a long recording


def voice(rng: random.Random) -> Voice:
    language, variant = rng.choice(VOICES)
    return Voice(language, variant, rate=rng.randint(150, 180), pitch=rng.randint(30, 70))


def long_recording(texts: List[str], rng: random.Random, path: Path) -> List[tuple]:
    """Speak ``texts`` one after another with silences into one wav; (start, end) of each, in s."""
    parts, times, position = [np.zeros(int(GAP * SAMPLE_RATE), np.float32)], [], GAP
    speaker = voice(rng)
    for text in texts:
        samples = speak(text, speaker)
        times.append((round(position, 2), round(position + len(samples) / SAMPLE_RATE, 2)))
        parts += [samples, np.zeros(int(GAP * SAMPLE_RATE), np.float32)]
        position += (len(samples) + int(GAP * SAMPLE_RATE)) / SAMPLE_RATE
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")
    return times


# -- MuST-C ---------------------------------------------------------------------------------
MUSTC_TALKS = {"train": [("ted_1", 4), ("ted_2", 4), ("ted_3", 4), ("ted_4", 4)], "dev": [("ted_5", 3)],
               "tst-COMMON": [("ted_6", 3)], "tst-HE": [("ted_7", 2)]}


def write_mustc(root: Path, tgt_lang: str = "de", seed: int = 0) -> Dict[str, List[dict]]:
    """<root>/en-<tgt>/data/<split>/{wav/<talk>.wav, txt/<split>.{yaml,en,<tgt>}} (MuST-C v1's
    layout and yaml keys, as ESPnet's egs/must_c/st1/local/data_prep.sh reads them)."""
    rng = random.Random(seed)
    written = {}
    for split, talks in MUSTC_TALKS.items():
        base = root / f"en-{tgt_lang}" / "data" / split
        yaml_lines, en, tgt, segments = [], [], [], []
        for talk, count in talks:
            pairs = [sentence(rng) for _ in range(count)]
            # Released transcripts are cased and punctuated; the source side is normalised on preparation.
            english = [p.english.capitalize() + "." for p in pairs]
            times = long_recording([p.english for p in pairs], rng, base / "wav" / f"{talk}.wav")
            for (start, end), source, pair in zip(times, english, pairs):
                duration = round(end - start, 2)
                yaml_lines.append(f"- {{duration: {duration:.6f}, offset: {start:.6f}, rW: {len(source.split())}, "
                                  f"uW: 0, speaker_id: spk.{talk[4:]}, wav: {talk}.wav}}")
                en.append(source)
                tgt.append(pair.german.capitalize() + ".")
                start_ms, end_ms = int(1000 * start + 0.5), int(1000 * (start + duration) + 0.5)
                recording = f"ted_{int(talk[4:]):05d}"  # ESPnet's ids: ted_<5 digits>_<start ms>_<end ms>
                segments.append(dict(talk=recording, start=start_ms / 1000, end=end_ms / 1000, en=source,
                                     tgt=tgt[-1], utt_id=f"{recording}_{start_ms:07d}_{end_ms:07d}"))
        (base / "txt").mkdir(parents=True, exist_ok=True)
        for suffix, lines in (("yaml", yaml_lines), ("en", en), (tgt_lang, tgt)):
            (base / "txt" / f"{split}.{suffix}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        written[split] = segments
    return written


# -- AMI ------------------------------------------------------------------------------------
# (meeting, [(agent, channel, global name, number of segments)]): train, train, dev, eval meetings.
AMI_MEETINGS = [("ES2002a", [("A", 0, "MEE006", 3), ("B", 1, "FEE005", 3)]),
                ("ES2003a", [("A", 1, "MEE010", 3), ("C", 2, "FEE011", 3)]),
                ("ES2011a", [("A", 0, "FEE041", 2), ("B", 3, "MEE042", 2)]),
                ("ES2004a", [("A", 0, "MEE014", 2), ("B", 2, "FEE013", 2)])]
NITE = 'xmlns:nite="http://nite.sourceforge.net/"'


AMI_AUDIO = {"website": "amicorpus/{m}/audio", "kaldi": "{m}/audio", "lhotse": "wav_db/{m}/audio"}


def centiseconds(time: str) -> int:
    return int(float(time) * 100)  # ami_split_segments.pl truncates (sprintf "%07d" of t * 100)


def write_ami(root: Path, seed: int = 0, layout: str = "website") -> Dict[str, List[dict]]:
    """Headset audio where the AMI website's download (``amicorpus/``), Kaldi's ami_download.sh
    (``<meeting>/audio/``) or lhotse (``wav_db/``) puts it, and ``annotations/{words,segments,
    corpusResources/meetings.xml}`` in the NXT format of ami_public_manual_1.6.2 (Kaldi unpacks it
    into annotations/). Each segment is one sentence ending in a full stop: one utterance."""
    rng = random.Random(seed)
    annotations = root / "annotations"
    for sub in ("words", "segments", "corpusResources"):
        (annotations / sub).mkdir(parents=True, exist_ok=True)
    meetings_xml = ['<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>', f'<nite:root {NITE}>']
    written: Dict[str, List[dict]] = {"train": [], "dev": [], "eval": []}
    split_of = {"ES2002a": "train", "ES2003a": "train", "ES2011a": "dev", "ES2004a": "eval"}
    for meeting, speakers in AMI_MEETINGS:
        meetings_xml.append(f'  <meeting observation="{meeting}" type="scenario">')
        for agent, channel, name, count in speakers:
            meetings_xml.append(f'    <speaker nxt_agent="{agent}" channel="{channel}" global_name="{name}" role="PM"/>')
            texts = [sentence(rng).english for _ in range(count)]
            audio = root / AMI_AUDIO[layout].format(m=meeting)
            times = long_recording(texts, rng, audio / f"{meeting}.Headset-{channel}.wav")
            words_xml = ['<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>',
                         f'<nite:root nite:id="{meeting}.{agent}.words" {NITE}>']
            segments_xml = ['<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>',
                            f'<nite:root nite:id="{meeting}.{agent}.segs" {NITE}>']
            number = 0
            for index, (text, (start, end)) in enumerate(zip(texts, times)):
                words = text.split()
                first = number
                step = (end - start) / len(words)
                for k, word in enumerate(words):
                    w_start, w_end = start + k * step, start + (k + 1) * step
                    words_xml.append(f'   <w nite:id="{meeting}.{agent}.words{number}" starttime="{w_start:.2f}" '
                                     f'endtime="{w_end:.2f}">{escape(word.capitalize() if k == 0 else word)}</w>')
                    number += 1
                if index == 0:  # what real annotations hold besides words: dropped from the text
                    words_xml.append(f'   <vocalsound nite:id="{meeting}.{agent}.words{number}" starttime="{end:.2f}" '
                                     f'endtime="{end:.2f}" type="laugh"/>')
                    number += 1
                words_xml.append(f'   <w nite:id="{meeting}.{agent}.words{number}" starttime="{end:.2f}" '
                                 f'endtime="{end:.2f}" punc="true">.</w>')
                last = number
                number += 1
                href = f"{meeting}.{agent}.words.xml#id({meeting}.{agent}.words{first})..id({meeting}.{agent}.words{last})"
                segments_xml += [f'   <segment nite:id="{meeting}.sync.{index}" transcriber_start="{start - 0.1:.3f}" '
                                 f'transcriber_end="{end + 0.1:.3f}" channel="{channel}">',
                                 f'      <nite:child href={quoteattr(href)}/>', '   </segment>']
                speaker = f"AMI_{meeting}_H0{channel}_{name}"
                # From the first word's start to the full stop's time, as written.
                first_cs, stop_cs = centiseconds(f"{start:.2f}"), centiseconds(f"{end:.2f}")
                written[split_of[meeting]].append(dict(
                    utt_id=f"{speaker}_{first_cs:07d}_{stop_cs:07d}", speaker=speaker,
                    recording=f"AMI_{meeting}_H0{channel}", start=first_cs / 100, text=text.upper()))
            words_xml.append("</nite:root>")
            segments_xml.append("</nite:root>")
            (annotations / "words" / f"{meeting}.{agent}.words.xml").write_text("\n".join(words_xml) + "\n", encoding="latin-1")
            (annotations / "segments" / f"{meeting}.{agent}.segments.xml").write_text("\n".join(segments_xml) + "\n", encoding="latin-1")
        meetings_xml.append("  </meeting>")
    meetings_xml.append("</nite:root>")
    (annotations / "corpusResources" / "meetings.xml").write_text("\n".join(meetings_xml) + "\n", encoding="latin-1")
    return written


# -- SLURP ----------------------------------------------------------------------------------
SLURP_SIZES = {"train": 16, "devel": 4, "test": 4}


def write_slurp(root: Path, seed: int = 0, layout: str = "release") -> Dict[str, List[dict]]:
    """SLURP's release (github.com/pswietojanski/slurp): ``dataset/slurp/{train,devel,test}.jsonl``
    and ``dataset/slurp/metadata.json`` (README: ``<slurp_id> -> recordings -> <file> -> usrid``),
    audio where ``scripts/download_audio.sh`` unpacks it (``audio/slurp_real/``; ``layout="flat"``:
    ``slurp_real/`` at the root). Sentences are lower case as released; some entries' ``intent``
    is not ``<scenario>_<action>`` (as about 1.5% of devel/test): the label comes from the fields."""
    rng = random.Random(seed)
    (root / "dataset" / "slurp").mkdir(parents=True, exist_ok=True)
    audio_dir = root / ("audio/slurp_real" if layout == "release" else "slurp_real")
    audio_dir.mkdir(parents=True, exist_ok=True)
    written, slurp_id, metadata = {}, 1000, {}
    for split, size in SLURP_SIZES.items():
        lines, utts = [], []
        for _ in range(size):
            slurp_id += 1
            cmd = command(rng)
            scenario, action = cmd.intent.split("_", 1)
            recordings, usrid = [], f"{'FM'[slurp_id % 2]}{'EO'[slurp_id % 3 == 0]}-{100 + slurp_id % 7:03d}"
            metadata[str(slurp_id)] = {"nlub_id": slurp_id, "recordings": {}, "status": "correct"}
            for take in range(2 if slurp_id % 5 == 0 else 1):  # some prompts were recorded twice
                recording_id = f"{1490000000 + slurp_id * 10 + take}{'-headset' if take else ''}"
                name = f"audio-{recording_id}.flac"
                soundfile.write(audio_dir / name, speak(cmd.transcript, voice(rng)), SAMPLE_RATE,
                                format="FLAC", subtype="PCM_16")
                recordings.append({"file": name, "wer": 0.0, "ent_wer": 0.0, "status": "correct"})
                metadata[str(slurp_id)]["recordings"][name] = {"ansid": 1, "recid": 2, "status": "correct", "usrid": usrid}
                utts.append(dict(utt_id=f"slurp_{usrid}_{recording_id}", speaker=f"slurp_{usrid}",
                                 text=f"{cmd.intent} {cmd.transcript}"))
            lines.append(json.dumps({"slurp_id": slurp_id, "sentence": cmd.transcript,
                                     "sentence_annotation": cmd.transcript,
                                     "intent": action if slurp_id % 9 == 0 else cmd.intent,
                                     "action": action, "tokens": [], "scenario": scenario,
                                     "recordings": recordings, "entities": []}))
        (root / "dataset" / "slurp" / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        written[split] = utts
    (root / "dataset" / "slurp" / "metadata.json").write_text(json.dumps(metadata, indent=1), encoding="utf-8")
    return written


# -- XSum -----------------------------------------------------------------------------------
XSUM_SIZES = {"train": 24, "validation": 4, "test": 4}


def xsum_documents(seed: int = 0) -> Dict[str, List[dict]]:
    rng = random.Random(seed)
    docs, doc_id = {}, 30000000
    for split, size in XSUM_SIZES.items():
        docs[split] = []
        for _ in range(size):
            doc_id += 7
            body = [sentence(rng).english.capitalize() + "." for _ in range(3)]
            docs[split].append(dict(id=str(doc_id), summary=body[0], document=" ".join(body),
                                    title=body[1][:30], url=f"http://www.bbc.co.uk/news/uk-{doc_id}"))
    return docs


XSUM_SHARE_PANEL = ["Share this with", "Email", "Facebook", "Messenger", "Twitter", "Pinterest", "WhatsApp",
                    "LinkedIn", "Copy this link", "These are external links and will open in a new window"]


def write_xsum_original(root: Path, seed: int = 0, layout: str = "summary") -> Dict[str, List[dict]]:
    """The released archive, ``bbc-summary-data/<id>.summary`` (``[SN]URL/TITLE/FIRST-SENTENCE/
    RESTBODY[SN]``, as the HuggingFace loader reads it), or ``layout="extracts"``: what the
    dataset's parse-bbc-html-data.py writes, ``xsum-extracts-from-downloads/<id>.data``
    (``[XSUM]URL/INTRODUCTION/RESTBODY[XSUM]``); both with ``XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json``.
    Bodies begin with the BBC page's sharing panel, one line per item, as in the released files."""
    docs = xsum_documents(seed)
    folder, suffix = ("bbc-summary-data", ".summary") if layout == "summary" else ("xsum-extracts-from-downloads", ".data")
    (root / folder).mkdir(parents=True, exist_ok=True)
    for items in docs.values():
        for d in items:
            body = "\n".join(XSUM_SHARE_PANEL + [s.rstrip(".") + "." for s in d["document"].split(". ")])
            if layout == "summary":
                text = (f"[SN]URL[SN]\n{d['url']}\n\n[SN]TITLE[SN]\n{d['title']}\n\n[SN]FIRST-SENTENCE[SN]\n"
                        f"{d['summary']}\n\n[SN]RESTBODY[SN]\n{body}\n")
            else:
                text = f"[XSUM]URL[XSUM]\n{d['url']}\n\n[XSUM]INTRODUCTION[XSUM]\n{d['summary']}\n\n[XSUM]RESTBODY[XSUM]\n{body}\n"
            (root / folder / f"{d['id']}{suffix}").write_text(text, encoding="utf-8")
    split = {name: [d["id"] for d in items] for name, items in docs.items()}
    (root / "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json").write_text(json.dumps(split, indent=1), encoding="utf-8")
    return docs


def write_xsum_jsonl(root: Path, seed: int = 0) -> Dict[str, List[dict]]:
    """<root>/{train,validation,test}.jsonl with document, summary, id."""
    docs = xsum_documents(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, items in docs.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps({k: d[k] for k in ("document", "summary", "id")}) + "\n"
                                                    for d in items), encoding="utf-8")
    return docs
