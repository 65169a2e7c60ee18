"""What a recipe feeds its model, as one object: raw audio, fbank (kaldi ark or zip), or text.

    kind    dump dir          data dir's input       ESPnet data type        lengths (stage 4)
    raw     dump/<format>     wav.scp                sound | kaldi_ark       utt2num_samples / fs
    fbank   dump/fbank        feats.scp              kaldi_ark               feats_shape / 100
    zip     dump/fbank_zip    feats.scp (+ manifest) zip_npy                 feats_shape / 100
    text    dump/text         (source text only)     -                       -
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from espnet_mtla.data import datadir


@dataclass(frozen=True)
class Features:
    """Args:
        kind: ``raw``, ``fbank``, ``zip`` (fbank in a zip) or ``text`` (a task without speech).
        audio_format: ``--audio_format`` (raw audio: flac, wav, flac.ark, wav.ark).
        feats_type, feats_storage: the options as given (stage 3 passes them on).
        fs: ``--fs``, the sampling rate of the dumped audio.
    """

    kind: str
    audio_format: str
    feats_type: str
    feats_storage: str
    fs: int

    @classmethod
    def from_args(cls, args, speech: bool) -> "Features":
        kind = "text" if not speech else (
            "zip" if args.feats_type == "fbank" and args.feats_storage == "zip" else args.feats_type)
        return cls(kind, args.audio_format, args.feats_type, args.feats_storage, args.fs)

    @property
    def speech(self) -> bool:
        return self.kind != "text"

    @property
    def fbank(self) -> bool:
        """Offline fbank features (an ark or a zip) rather than audio."""
        return self.kind in ("fbank", "zip")

    @property
    def stats_name(self) -> str:
        """``<task>_stats_<this>``: the statistics depend on the features, not on how they are stored."""
        return "fbank" if self.fbank else self.kind

    def dump_dir(self, dumpdir: str) -> Path:
        return Path(dumpdir) / {"raw": self.audio_format, "zip": "fbank_zip"}.get(self.kind, self.kind)

    @property
    def scp(self) -> str:
        """The data dir's table of inputs (``utt2spk`` for text: every dir has one)."""
        return "feats.scp" if self.fbank else ("wav.scp" if self.speech else "utt2spk")

    @property
    def shape_file(self) -> str:
        """What stage 3 writes per utterance: frames x dims, or samples."""
        return "feats_shape" if self.fbank else "utt2num_samples"

    @property
    def data_type(self) -> str:
        """ESPnet's data type of the speech input."""
        if self.fbank:
            return "zip_npy" if self.kind == "zip" else "kaldi_ark"
        return "kaldi_ark" if self.audio_format.endswith(".ark") else "sound"

    def train_args(self) -> List[str]:
        return ["--input_size", "80"] if self.fbank else []

    def seconds(self, data_dir: Path) -> Dict[str, float]:
        """Utterance id -> duration, from stage 3's shape file (10 ms frames or samples)."""
        table = datadir.read_table(data_dir / self.shape_file, datadir.Problems())
        if self.fbank:
            return {k: int(v.split(",")[0]) / 100 for k, v in table.items()}
        return {k: int(v) / self.fs for k, v in table.items()}
