"""Stage 3 of the pipeline: dump a data dir's audio as flac / wav / wav.ark, or as fbank ark.

    python -m espnet_mtla.data.format_audio SRC_DATA_DIR DUMP_DIR --audio_format flac [--fs 16000]
        [--feats_type raw|fbank] [--keys KEY_FILE] [--job N]

Reads wav.scp entries that are files or ``command |`` pipes (speed perturbation), cuts
``segments`` when present, resamples to ``--fs`` if needed, and writes:
- raw: ``DUMP_DIR/data/<utt>.<flac|wav>`` and ``wav.scp`` (or ``data/audio.<job>.ark`` +
  ``wav.scp`` with ark offsets for flac.ark / wav.ark), plus ``utt2num_samples``;
- fbank: 80-d Kaldi-compatible log-mel fbank (25 ms / 10 ms) to ``data/feats.<job>.ark``
  (or, with ``--feats_storage zip``, npy entries in ``data/feats.<job>.zip``), ``feats.scp``
  and ``feats_shape``;
- ``resampled``: how many utterances came at which other rate (the pipeline logs it).
With ``--keys`` only those utterances are done and outputs get a ``.<job>`` suffix (the
pipeline runs one job per split and concatenates).
"""

import argparse
import io
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import soundfile
import soxr
from tqdm import tqdm

from espnet_mtla.data.zip_features import ZipNpyWriter
from espnet_mtla.storage.errors import one_line_errors
from espnet_mtla.storage.fileio import write_atomic, write_text_atomic

AUDIO_FORMATS = ("flac", "wav", "flac.ark", "wav.ark")


def read_scp(path: Path):
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, _, value = line.strip().partition(" ")
            table[key] = value.strip()
    return table


def load_recording(value: str, where: str):
    """(samples float32 (T,) or (T, C), rate) of a wav.scp value: a file or a 'command |' pipe."""
    if value.endswith("|"):
        result = subprocess.run(["bash", "-c", value[:-1]], capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"{where}: command failed: {value[:-1]}: {result.stderr.decode(errors='replace')[:200]}")
        return soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    try:
        return soundfile.read(value, dtype="float32")
    except Exception as err:  # noqa: BLE001
        raise RuntimeError(f"{where}: cannot read {value}: {str(err).splitlines()[0]}") from None


def fbank(samples: np.ndarray, rate: int) -> np.ndarray:
    import torch
    import torchaudio

    wave = torch.from_numpy(samples).float().unsqueeze(0) * 32768  # Kaldi's int16 scale
    return torchaudio.compliance.kaldi.fbank(wave, num_mel_bins=80, sample_frequency=rate, dither=0.0).numpy()


class FlacArkWriter:
    """Like kaldiio.WriteHelper, but stores flac bytes (kaldiio's "AUDIO" entries, which ESPnet's
    kaldi_ark loader reads back): ``writer(utt, (rate, samples))``, then ``close()``."""

    def __init__(self, ark_path: Path):
        self.ark, self.scp = str(ark_path), f"{ark_path}.scp"
        for path in (self.ark, self.scp):  # entries are appended one by one
            Path(path).unlink(missing_ok=True)

    def __call__(self, utt: str, data) -> None:
        import kaldiio

        kaldiio.save_ark(self.ark, {utt: data}, scp=self.scp, append=True, write_function="soundfile",
                         write_kwargs={"format": "flac", "subtype": "PCM_16"})

    def close(self) -> None:
        pass


def format_dir(src: Path, dump: Path, audio_format: str, fs: int, feats_type: str, keys=None, job=None,
               feats_storage: str = "ark") -> None:
    import kaldiio

    wav_scp = read_scp(src / "wav.scp")
    segments = read_scp(src / "segments") if (src / "segments").exists() else None
    utts = sorted(segments) if segments is not None else sorted(wav_scp)
    if keys is not None:
        wanted = set(keys)
        utts = [u for u in utts if u in wanted]
    suffix = f".{job}" if job is not None else ""
    out_data = dump / "data"
    out_data.mkdir(parents=True, exist_ok=True)
    cache = {}
    scp_lines, shape_lines = [], []
    resampled: Dict[int, int] = {}  # source rate -> utterances
    ark_path = out_data / (f"feats{suffix}.ark" if feats_type == "fbank" else f"audio{suffix}.ark")
    use_ark = feats_type == "fbank" or audio_format.endswith(".ark")
    flac_ark = feats_type == "raw" and audio_format == "flac.ark"
    zipped = feats_type == "fbank" and feats_storage == "zip"
    if zipped:
        ark_path = ark_path.with_suffix(".zip")
        writer = ZipNpyWriter(ark_path)
    elif flac_ark:
        writer = FlacArkWriter(ark_path)
    else:
        writer = kaldiio.WriteHelper(f"ark,scp:{ark_path},{ark_path}.scp") if use_ark else None
    try:
        for utt in tqdm(utts, desc=f"format {src.name}{suffix}", unit="utt", disable=not sys.stderr.isatty()):
            if segments is not None:
                recording, start, end = segments[utt].split()
                if recording not in cache:
                    cache = {recording: load_recording(wav_scp[recording], f"{src / 'wav.scp'} ({recording})")}
                samples, rate = cache[recording]
                samples = samples[int(float(start) * rate): int(float(end) * rate)]
            else:
                samples, rate = load_recording(wav_scp[utt], f"{src / 'wav.scp'} ({utt})")
            if samples.ndim > 1:
                samples = samples.mean(axis=1)
            if rate != fs:
                resampled[rate] = resampled.get(rate, 0) + 1
                samples, rate = soxr.resample(samples, rate, fs).astype(np.float32), fs
            if len(samples) == 0:
                raise RuntimeError(f"{src / 'wav.scp'} ({utt}): zero-length audio; drop it with "
                                   f"python -m espnet_mtla.data.datadir fix {src} --audio")
            if feats_type == "fbank":
                feats = fbank(samples, rate)
                writer(utt, feats)
                shape_lines.append(f"{utt} {feats.shape[0]},{feats.shape[1]}")
                continue
            shape_lines.append(f"{utt} {len(samples)}")
            if flac_ark:
                writer(utt, (rate, np.clip(samples, -1, 1)))  # soundfile makes the 16-bit PCM
            elif writer is not None:
                writer(utt, (rate, (np.clip(samples, -1, 1) * 32767).astype(np.int16)))
            else:
                ext = audio_format
                path = out_data / f"{utt}.{ext}"
                write_atomic(path, lambda tmp: soundfile.write(tmp, samples, rate, format=ext.upper(), subtype="PCM_16"))
                scp_lines.append(f"{utt} {path.resolve()}")
    finally:
        if writer is not None:
            writer.close()
    scp_name = "feats.scp" if feats_type == "fbank" else "wav.scp"
    if use_ark:
        lines = Path(f"{ark_path}.scp").read_text().splitlines()
        scp_lines = lines if zipped else [f"{k} {Path(v.rsplit(':', 1)[0]).resolve()}:{v.rsplit(':', 1)[1]}"
                                          for k, v in (line.split(" ", 1) for line in lines)]
        Path(f"{ark_path}.scp").unlink()
    write_text_atomic(dump / f"{scp_name}{suffix}", "".join(line + "\n" for line in scp_lines))
    shape_name = "feats_shape" if feats_type == "fbank" else "utt2num_samples"
    write_text_atomic(dump / f"{shape_name}{suffix}", "".join(line + "\n" for line in shape_lines))
    # "<source rate> <utterances>" per rate that differed from --fs, plus the job's total ("all")
    write_text_atomic(dump / f"resampled{suffix}", "".join(f"{r} {n}\n" for r, n in sorted(resampled.items()))
                      + f"all {len(utts)}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src")
    parser.add_argument("dump")
    parser.add_argument("--audio_format", choices=AUDIO_FORMATS, default="flac")
    parser.add_argument("--feats_type", choices=("raw", "fbank"), default="raw")
    parser.add_argument("--feats_storage", choices=("ark", "zip"), default="ark",
                        help="fbank: kaldi ark, or npy entries in a zip (espnet_mtla.data.zip_features)")
    parser.add_argument("--fs", type=int, default=16000)
    parser.add_argument("--keys", help="file whose first column lists the utterances to do")
    parser.add_argument("--job", type=int)
    args = parser.parse_args(argv)
    keys = [line.split()[0] for line in Path(args.keys).read_text().splitlines() if line.strip()] if args.keys else None
    return one_line_errors(lambda: format_dir(Path(args.src), Path(args.dump), args.audio_format, args.fs,
                                              args.feats_type, keys, args.job, args.feats_storage), (RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
