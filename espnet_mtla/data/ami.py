"""AMI, individual headset microphones (ihm) -> Kaldi data dirs train / dev / eval.

    python -m espnet_mtla.data.ami --root $AMI --out-dir data

``<root>/amicorpus/<meeting>/audio/<meeting>.Headset-<channel>.wav`` is the audio;
``<root>/annotations/`` is the unpacked ``ami_public_manual_1.6.2.zip``:
``corpusResources/meetings.xml`` maps each meeting's speaker letter (``nxt_agent``) to its
headset ``channel`` and ``global_name``; ``segments/<meeting>.<agent>.segments.xml`` lists
the transcriber's segments, each pointing at a range of ``words/<meeting>.<agent>.words.xml``
(``<nite:child href="ES2002a.A.words.xml#id(ES2002a.A.words0)..id(ES2002a.A.words9)"/>``).

A segment's text is its ``<w>`` words (punctuation, vocal sounds, gaps and disfluency markers
dropped), normalised as in the Kaldi/lhotse AMI recipes: upper case, every character other
than A-Z, 0-9 and the apostrophe becomes a space, ``MM HMM``/``UH HUH`` keep their hyphen.
Its times are those of its first and last timed word (the transcriber's times when no word
has times). Segments without words are skipped. Partition: the official full-corpus-ASR
lists (dev 18 meetings, eval 16, train: every other annotated meeting). Ids follow Kaldi's:
speaker ``AMI_<meeting>_H0<channel>_<global name>``, utterance ``<speaker>_<start cs>_<end cs>``.
"""

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from xml.parsers import expat

from espnet_mtla.data.corpus import CorpusError
from espnet_mtla.data.kaldi_dir import Utterance, write_data_dir
from espnet_mtla.storage.errors import one_line_errors

DEV = ("ES2011a ES2011b ES2011c ES2011d IB4001 IB4002 IB4003 IB4004 IB4010 IB4011 "
       "IS1008a IS1008b IS1008c IS1008d TS3004a TS3004b TS3004c TS3004d").split()
EVAL = ("EN2002a EN2002b EN2002c EN2002d ES2004a ES2004b ES2004c ES2004d "
        "IS1009a IS1009b IS1009c IS1009d TS3003a TS3003b TS3003c TS3003d").split()
SPLITS = ("train", "dev", "eval")
_HREF = re.compile(r"^(?P<file>[^#]+)#id\((?P<first>[^)]+)\)(?:\.\.id\((?P<last>[^)]+)\))?$")


def split_of(meeting: str) -> str:
    return "dev" if meeting in DEV else "eval" if meeting in EVAL else "train"


@dataclass
class XmlElement:
    tag: str
    attrs: Dict[str, str]
    line: int
    text: str = ""
    children: List["XmlElement"] = field(default_factory=list)


def read_xml(path: Path) -> XmlElement:
    """The document's root element, every element with the line it starts on."""
    parser = expat.ParserCreate()
    stack: List[XmlElement] = []
    root: List[XmlElement] = []

    def start(tag, attrs):
        element = XmlElement(tag, attrs, parser.CurrentLineNumber)
        (stack[-1].children if stack else root).append(element)
        stack.append(element)

    def chars(data):
        if stack:
            stack[-1].text += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, lambda tag: stack.pop(), chars
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except FileNotFoundError:
        raise CorpusError(f"{path} not found (is the AMI annotation release complete?)") from None
    except expat.ExpatError as err:
        raise CorpusError(f"{path}:{err.lineno}: not well-formed XML ({expat.ErrorString(err.code)})") from None
    return root[0]


def attribute(path: Path, element: XmlElement, name: str) -> str:
    if name not in element.attrs:
        raise CorpusError(f"{path}:{element.line}: <{element.tag}> without the attribute {name}")
    return element.attrs[name]


def normalise(words: List[str]) -> str:
    text = re.sub(r"[^A-Z0-9']+", " ", " ".join(words).upper())
    text = re.sub(r"\bMM HMM\b", "MM-HMM", re.sub(r"\bUH HUH\b", "UH-HUH", text))
    return " ".join(text.split())


def read_speakers(path: Path) -> Dict[Tuple[str, str], Tuple[str, str]]:
    """(meeting, agent) -> (headset channel, global name) from corpusResources/meetings.xml."""
    speakers = {}
    for meeting in read_xml(path).children:
        observation = attribute(path, meeting, "observation")
        for speaker in meeting.children:
            if speaker.tag == "speaker":
                key = (observation, attribute(path, speaker, "nxt_agent"))
                speakers[key] = (attribute(path, speaker, "channel"), attribute(path, speaker, "global_name"))
    return speakers


@dataclass
class Word:
    text: Optional[str]  # None: not a spoken word (punctuation, vocal sound, gap, ...)
    start: Optional[float]
    end: Optional[float]


def read_words(path: Path) -> Tuple[Dict[str, int], List[Word]]:
    """(nite:id -> index, words in file order) of a words file."""
    index, words = {}, []
    for element in read_xml(path).children:
        index[attribute(path, element, "nite:id")] = len(words)
        spoken = element.tag == "w" and element.attrs.get("punc") != "true"
        times = [element.attrs.get(name) for name in ("starttime", "endtime")]
        try:
            start, end = (float(t) if t else None for t in times)
        except ValueError:
            raise CorpusError(f"{path}:{element.line}: starttime/endtime are not numbers") from None
        words.append(Word(element.text.strip() if spoken else None, start, end))
    return index, words


def read_segments(root: Path, meeting: str, agent: str, channel: str, speaker: str) -> List[Utterance]:
    annotations = root / "annotations"
    path = annotations / "segments" / f"{meeting}.{agent}.segments.xml"
    cache: Dict[str, Tuple[Dict[str, int], List[Word]]] = {}
    utterances = []
    for segment in read_xml(path).children:
        if segment.tag != "segment":
            continue
        start, end = (float(attribute(path, segment, f"transcriber_{side}")) for side in ("start", "end"))
        child = next((c for c in segment.children if c.tag == "nite:child"), None)
        if child is None:
            raise CorpusError(f"{path}:{segment.line}: <segment> without a <nite:child href=...> word range")
        match = _HREF.match(attribute(path, child, "href"))
        if not match:
            raise CorpusError(f"{path}:{child.line}: href is not 'FILE#id(FIRST)..id(LAST)': {child.attrs['href']}")
        words_file = annotations / "words" / match["file"]
        if match["file"] not in cache:
            cache[match["file"]] = read_words(words_file)
        index, words = cache[match["file"]]
        ids = [match["first"], match["last"] or match["first"]]
        for word_id in ids:
            if word_id not in index:
                raise CorpusError(f"{path}:{child.line}: {word_id} is not in {words_file}")
        chosen = [w for w in words[index[ids[0]]: index[ids[1]] + 1] if w.text]
        text = normalise([w.text for w in chosen])
        if not text:
            continue
        timed = [w for w in chosen if w.start is not None and w.end is not None]
        if timed:
            start, end = timed[0].start, max(w.end for w in timed)
        if end <= start:
            continue
        utterances.append(Utterance(f"{speaker}_{round(start * 100):07d}_{round(end * 100):07d}", speaker,
                                    {"text": text}, recording=f"AMI_{meeting}_H0{channel}", start=start, end=end,
                                    source=f"{path}:{segment.line}"))
    return utterances


def prepare(root: Path, out: Path, splits=SPLITS) -> None:
    root = Path(root)
    speakers = read_speakers(root / "annotations" / "corpusResources" / "meetings.xml")
    data = {split: ([], {}) for split in splits}
    segment_files = sorted((root / "annotations" / "segments").glob("*.segments.xml"))
    if not segment_files:
        raise CorpusError(f"{root / 'annotations' / 'segments'}: no <meeting>.<agent>.segments.xml files")
    for path in segment_files:
        meeting, agent = path.name.split(".")[:2]
        split = split_of(meeting)
        if split not in data:
            continue
        if (meeting, agent) not in speakers:
            raise CorpusError(f"{path}: speaker {agent} of {meeting} is not in corpusResources/meetings.xml")
        channel, name = speakers[(meeting, agent)]
        wav = root / "amicorpus" / meeting / "audio" / f"{meeting}.Headset-{channel}.wav"
        if not wav.exists():
            raise CorpusError(f"{wav} not found (headset {channel} of {meeting}, speaker {agent}): "
                              f"download the ihm audio of every annotated meeting")
        utterances, recordings = data[split]
        utterances += read_segments(root, meeting, agent, channel, f"AMI_{meeting}_H0{channel}_{name}")
        recordings[f"AMI_{meeting}_H0{channel}"] = str(wav.resolve())
    for split, (utterances, recordings) in data.items():
        write_data_dir(Path(out) / split, utterances, recordings)
        print(f"ami ihm {split}: {len(utterances)} segments, {len(recordings)} headset recordings", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="AMI in db.sh: holds amicorpus/ and annotations/")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--splits", default=" ".join(SPLITS))
    args = parser.parse_args(argv)
    return one_line_errors(lambda: prepare(args.root, args.out_dir, args.splits.split()), (CorpusError,))


if __name__ == "__main__":
    sys.exit(main())
