"""AMI meetings -> Kaldi data dirs train / dev / eval, as Kaldi's and ESPnet's AMI recipes make them.

    python -m espnet_mtla.data.ami --root $AMI --out-dir data [--mic ihm|sdm|mdm8]

Layouts: everything is found by name under ``<root>``, as Kaldi finds the audio
(``find $AMI_DIR -iname '*.Headset-*.wav'``), so each of these works:
- Kaldi's/ESPnet's ``ami_download.sh``: ``<root>/<meeting>/audio/<meeting>.Headset-<n>.wav``;
- the AMI website's download: ``<root>/amicorpus/<meeting>/audio/...``;
- lhotse's: ``<root>/wav_db/<meeting>/audio/...``;
and the annotation release ``ami_public_manual_1.6.x.zip`` unpacked anywhere below the root
(``annotations/`` in Kaldi's layout): ``corpusResources/meetings.xml`` maps each meeting's
speaker letter (``nxt_agent``) to its headset ``channel`` and ``global_name``;
``segments/<meeting>.<agent>.segments.xml`` lists the transcriber's segments, each pointing at a
range of ``words/<meeting>.<agent>.words.xml`` (``<w starttime= endtime= [punc="true"]>``).
Microphones: ``ihm`` (headsets, the default), ``sdm`` (``<meeting>.Array1-01.wav``), ``mdm8``
(a beamformed ``<meeting>_MDM8.wav``, as Kaldi's ``ami_beamform.sh`` and lhotse's ``mdm8-bf`` write).

Text and segments as Kaldi's ``ami_split_segments.pl`` (ESPnet's is the same file) makes them
from the annotations: a segment's words with their punctuation, upper case, cut at every
``.`` and ``?`` (each piece running from the previous full stop's time to its own), a piece of
more than 30 tokens cut again at the comma nearest its middle; then ``T_V_`` -> ``T. V.``,
hyphens -> spaces, ``MM HMM`` -> ``MM-HMM``, ``UH HUH`` -> ``UH-HUH``; vocal sounds, gaps and
disfluency markers carry no text. Times are truncated to centiseconds. Ids as Kaldi's:
utterance ``AMI_<meeting>_H0<channel>_<global name>_<start cs>_<end cs>`` (``_SDM_``/``_MDM_``
for the distant microphones), recording ``AMI_<meeting>_H0<channel>`` (``AMI_<meeting>_SDM``),
speaker ``AMI_<meeting>_H0<channel>_<global name>`` (distant: the session, ``AMI_<meeting>``).
In dev and eval a headset segment that starts before the same speaker's previous one ends
starts at that end (Kaldi's ihm scoring preparation). Partition: the official full-corpus-ASR lists (dev 18
meetings, eval 16, train every other annotated meeting). Segments whose recording is absent
from the layout are skipped and counted; a set that loses most of its segments so is refused.
"""

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from xml.parsers import expat

from espnet_mtla.data.corpus import CorpusError, find_one, find_under
from espnet_mtla.data.kaldi_dir import DataSet, Utterance, write_sets
from espnet_mtla.storage.errors import one_line_errors

DEV = ("ES2011a ES2011b ES2011c ES2011d IB4001 IB4002 IB4003 IB4004 IB4010 IB4011 "
       "IS1008a IS1008b IS1008c IS1008d TS3004a TS3004b TS3004c TS3004d").split()
EVAL = ("EN2002a EN2002b EN2002c EN2002d ES2004a ES2004b ES2004c ES2004d "
        "IS1009a IS1009b IS1009c IS1009d TS3003a TS3003b TS3003c TS3003d").split()
SPLITS = ("train", "dev", "eval")
MICS = {"ihm": "*.Headset-*.wav", "sdm": "*.Array1-01.wav", "mdm8": "*_MDM8.wav"}
MAX_WORDS = 30  # ami_split_segments.pl's longest piece before it cuts at a comma
_HREF = re.compile(r"^(?P<file>[^#]+)#id\((?P<first>[^)]+)\)(?:\.\.id\((?P<last>[^)]+)\))?$")
_PUNCTUATION = re.compile(r"^[.,?!:]$")


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


def normalise(text: str) -> str:
    """ami_split_segments.pl's normalisation of one (upper-cased) piece of a segment."""
    text = re.sub(r"[.,?!:][0-9]+", "", text)  # the comma labels of split_segment
    text = re.sub(r"[A-Z']+,[A-Z']+", " ", text)  # stray punctuation inside a token ("UM,I"): both words go
    text = " ".join(text.replace("-", " ").replace("_", ". ").split())
    return text.replace("MM HMM", "MM-HMM").replace("UH HUH", "UH-HUH")


def centiseconds(seconds: float) -> int:
    return int(seconds * 100)  # truncated, as Perl's sprintf("%07d", t * 100)


def _perl_split(pattern: str, text: str) -> List[str]:
    """re.split without the trailing empty fields, as Perl's split drops them."""
    parts = re.split(pattern, text)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def _cut_at_comma(text: str, commas: Dict[str, str], start: float, end: float) -> Dict[Tuple[int, int], str]:
    """A piece longer than MAX_WORDS cut at the comma nearest its middle, recursively."""
    middle, best, best_time = (start + end) / 2, "", start
    for label in sorted(commas, key=lambda k: (commas[k], k)):  # the script visits them in string order
        time = float(commas[label])
        if time == start:
            continue
        if time == end:
            break
        if abs(middle - time) < abs(middle - best_time):
            best, best_time = label, time
    if not best.startswith(","):
        return {(centiseconds(start), centiseconds(end)): text}
    pieces: Dict[Tuple[int, int], str] = {}
    for index, part in enumerate(_perl_split(re.escape(best) + r"\s+", text)):
        part_start, part_end = (start, best_time) if index == 0 else (best_time, end)
        cut = ({(centiseconds(part_start), centiseconds(part_end)): part} if len(part.split()) <= MAX_WORDS
               else _cut_at_comma(part, commas, part_start, part_end))
        for key, value in cut.items():
            pieces.setdefault(key, value)
    return pieces


def split_segment(tokens: List[str], punctuation_times: List[str], start: float, end: float
                  ) -> Optional[Dict[Tuple[int, int], str]]:
    """(start cs, end cs) -> normalised text of the pieces of one segment, as ami_split_segments.pl
    cuts it; None where the punctuation and its times disagree (the script drops the segment).

    ``tokens``: the segment's words and punctuation marks in order; ``punctuation_times``: the
    start time, as written in the words file, of each punctuation mark."""
    marks = [i for i, token in enumerate(tokens) if _PUNCTUATION.match(token)]
    if len(marks) != len(punctuation_times):
        return None
    tokens = list(tokens)
    stops = [start] + [float(punctuation_times[k]) for k, i in enumerate(marks) if tokens[i] in ".?"] + [end]
    commas: Dict[str, str] = {}
    for k, i in enumerate(marks):
        if tokens[i] not in ".?":
            tokens[i] = f"{tokens[i]}{len(commas)}"
            commas[tokens[i]] = punctuation_times[k]
    text = " ".join(tokens).translate(_ASCII_UPPER)
    pieces: Dict[Tuple[int, int], str] = {}
    for index, piece in enumerate(_perl_split(r"[.?]", text)):
        piece_start = stops[index] if index < len(stops) else 0.0
        piece_end = stops[index + 1] if index + 1 < len(stops) else 0.0
        if len(piece.split()) <= MAX_WORDS:
            pieces[(centiseconds(piece_start), centiseconds(piece_end))] = piece
        else:
            for key, value in _cut_at_comma(piece, commas, piece_start, piece_end).items():
                pieces.setdefault(key, value)
    return {key: normalise(value) for key, value in pieces.items()}


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # Perl's uc on bytes


@dataclass
class Element:
    """One element of a words file: a word, a punctuation mark, or a timed non-word."""

    word: Optional[str]  # the text of a spoken word; None otherwise
    punctuation: Optional[str]  # the mark of a punc="true" word; None otherwise
    start: Optional[str]  # times as written in the file (the script orders commas by them)
    end: Optional[str]


def read_words(path: Path) -> Tuple[Dict[str, int], List[Element]]:
    """(nite:id -> index, elements in file order) of a words file."""
    index, elements = {}, []
    for element in read_xml(path).children:
        index[attribute(path, element, "nite:id")] = len(elements)
        start, end = (element.attrs.get(name) or None for name in ("starttime", "endtime"))
        for value in (start, end):
            if value is not None:
                try:
                    float(value)
                except ValueError:
                    raise CorpusError(f"{path}:{element.line}: starttime/endtime are not numbers") from None
        is_word = element.tag == "w" and element.text.strip()
        punctuation = element.attrs.get("punc") == "true"
        elements.append(Element(element.text.strip() if is_word and not punctuation else None,
                                element.text.strip() if is_word and punctuation else None, start, end))
    return index, elements


def read_segments(annotations: Path, meeting: str, agent: str, data_set: DataSet) -> List[Tuple[int, int, str, str]]:
    """(start cs, end cs, text, where) of every piece of one speaker's segments."""
    path = annotations / "segments" / f"{meeting}.{agent}.segments.xml"
    cache: Dict[str, Tuple[Dict[str, int], List[Element]]] = {}
    pieces = []
    for segment in read_xml(path).children:
        if segment.tag != "segment":
            continue
        for side in ("start", "end"):  # not used (the words' times are), but a segment without them is malformed
            attribute(path, segment, f"transcriber_{side}")
        child = next((c for c in segment.children if c.tag == "nite:child"), None)
        if child is None:
            raise CorpusError(f"{path}:{segment.line}: <segment> without a <nite:child href=...> word range")
        match = _HREF.match(attribute(path, child, "href"))
        if not match:
            raise CorpusError(f"{path}:{child.line}: href is not 'FILE#id(FIRST)..id(LAST)': {child.attrs['href']}")
        words_file = annotations / "words" / match["file"]
        if match["file"] not in cache:
            cache[match["file"]] = read_words(words_file)
        index, elements = cache[match["file"]]
        ids = [match["first"], match["last"] or match["first"]]
        for word_id in ids:
            if word_id not in index:
                raise CorpusError(f"{path}:{child.line}: {word_id} is not in {words_file}")
        chosen = elements[index[ids[0]]: index[ids[1]] + 1]
        tokens = [e.word or e.punctuation for e in chosen if e.word or e.punctuation]
        if not tokens:
            continue
        # A segment's times are its timed elements' (NXT derives them from the children).
        starts = [float(e.start) for e in chosen if e.start is not None]
        ends = [float(e.end) for e in chosen if e.end is not None]
        if not starts or not ends:
            data_set.skip("segments without timed words")
            continue
        split = split_segment(tokens, [e.start or "" for e in chosen if e.punctuation], min(starts), max(ends))
        if split is None:
            data_set.skip("segments whose punctuation has no times")
            continue
        where = f"{path}:{segment.line}"
        pieces += [(s, e, text, where) for (s, e), text in split.items() if text and s < e]
    return pieces


def find_audio(root: Path, mic: str) -> Dict[str, Path]:
    """recording id -> wav of every ``mic`` recording under ``root``."""
    recordings: Dict[str, Path] = {}
    for path in find_under(root, [MICS[mic]])[MICS[mic]]:
        name = path.name[:-len(".wav")]
        if mic == "ihm":
            meeting, channel = name.split(".")[0], name.rsplit("-", 1)[-1]
            if not channel.isdigit():
                continue
            recording = f"AMI_{meeting}_H0{channel}"
        else:
            recording = f"AMI_{name.split('.')[0].split('_')[0]}_{'SDM' if mic == 'sdm' else 'MDM'}"
        if recording in recordings and recordings[recording].resolve() != path.resolve():
            raise CorpusError(f"{root}: two copies of {path.name} ({recordings[recording]}, {path}): "
                              f"point AMI at a folder that holds one")
        recordings[recording] = path
    return recordings


def prepare(root: Path, out: Path, splits=SPLITS, mic: str = "ihm") -> None:
    root = Path(root)
    meetings_xml = find_one(root, "meetings.xml", "the AMI annotations (ami_public_manual_1.6.x.zip unpacked)",
                            prefer=["annotations/corpusResources/meetings.xml", "corpusResources/meetings.xml"])
    annotations = meetings_xml.parent.parent
    speakers = read_speakers(meetings_xml)
    audio = find_audio(root, mic)
    if not audio:
        raise CorpusError(f"{root}: no {MICS[mic]} anywhere under it (looked for <meeting>/audio/ as "
                          f"ami_download.sh, amicorpus/ and wav_db/ write it): is it the AMI {mic} audio?")
    segment_files = sorted((annotations / "segments").glob("*.segments.xml"))
    if not segment_files:
        raise CorpusError(f"{annotations / 'segments'}: no <meeting>.<agent>.segments.xml files")
    sets = {split: DataSet(split, [], {}, read_from=f"{annotations / 'segments'} ({split} meetings)") for split in splits}
    no_audio = f"segments without their {mic} recording"
    for path in segment_files:
        meeting, agent = path.name.split(".")[:2]
        data_set = sets.get(split_of(meeting))
        if data_set is None:
            continue
        if (meeting, agent) not in speakers:
            raise CorpusError(f"{path}: speaker {agent} of {meeting} is not in {meetings_xml}")
        channel, name = speakers[(meeting, agent)]
        pieces = read_segments(annotations, meeting, agent, data_set)
        if mic == "ihm":
            recording = f"AMI_{meeting}_H0{channel}"
            speaker = prefix = f"{recording}_{name}"
        else:
            recording = f"AMI_{meeting}_{'SDM' if mic == 'sdm' else 'MDM'}"
            speaker, prefix = f"AMI_{meeting}", f"{recording}_{name}"
        if recording not in audio:
            data_set.skip(no_audio, len(pieces))
            continue
        data_set.recordings[recording] = str(audio[recording].resolve())
        for start, end, text, where in pieces:
            data_set.utterances.append(Utterance(f"{prefix}_{start:07d}_{end:07d}", speaker, {"text": text},
                                                 recording=recording, start=start / 100, end=end / 100, source=where))
    for data_set in sets.values():
        data_set.utterances = dedupe_and_fix(data_set, fix_overlaps=mic == "ihm")
        lost = data_set.skipped.get(no_audio, 0)
        if lost > len(data_set.utterances):
            raise CorpusError(f"ami {data_set.name}: {lost:,} of {lost + len(data_set.utterances):,} segments have no "
                              f"{mic} recording under {root}: is the audio download complete?")
    write_sets(f"ami {mic}", out, list(sets.values()))


def dedupe_and_fix(data_set: DataSet, fix_overlaps: bool) -> List[Utterance]:
    """Kaldi's ``sort | uniq`` (a repeated id keeps its first text in sorted order) and, in dev
    and eval with headsets, its fix of a speaker's overlapping segments (start moved to the
    previous end; the id keeps the original times, as in Kaldi)."""
    by_id: Dict[str, Utterance] = {}
    for utt in sorted(data_set.utterances, key=lambda u: (u.utt_id + " " + u.texts["text"]).encode()):
        if utt.utt_id in by_id:
            if by_id[utt.utt_id].texts != utt.texts:
                data_set.skip("repeated segment ids")
            continue
        by_id[utt.utt_id] = utt
    kept = list(by_id.values())
    if fix_overlaps and data_set.name in ("dev", "eval"):
        previous_speaker, previous_end = None, 0.0
        for utt in kept:
            end = utt.end
            if utt.speaker == previous_speaker and previous_end > utt.start:
                utt.start = previous_end
            previous_speaker, previous_end = utt.speaker, end
        overlapping = [u for u in kept if u.start >= u.end]
        if overlapping:
            data_set.skip("segments inside the previous one", len(overlapping))
            kept = [u for u in kept if u.start < u.end]
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path,
                        help="AMI in db.sh: holds the <meeting>/audio/ folders (anywhere below) and the annotations")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--splits", default=" ".join(SPLITS))
    parser.add_argument("--mic", default="ihm", choices=sorted(MICS))
    args = parser.parse_args(argv)
    return one_line_errors(lambda: prepare(args.root, args.out_dir, args.splits.split(), args.mic), (CorpusError,))


if __name__ == "__main__":
    sys.exit(main())
