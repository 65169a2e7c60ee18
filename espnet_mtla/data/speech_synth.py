"""Speak text with espeak-ng and store it as 16 kHz audio."""

import os
import shutil
import subprocess
import tempfile
from typing import NamedTuple

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000
# espeak-ng voice + variant: accents and male/female variants.
VOICES = [
    ("en-us", "m3"), ("en-us", "f2"), ("en-gb", "m1"), ("en-gb", "f4"),
    ("en-gb-scotland", "m7"), ("en-us", "f5"), ("en-gb-x-rp", "m2"), ("en-us", "m6"),
]


class Voice(NamedTuple):
    language: str
    variant: str
    rate: int  # words per minute
    pitch: int  # 0-99

    @property
    def speaker_id(self) -> str:
        """Kaldi speaker id: accent + variant (rate and pitch vary within a speaker)."""
        return (self.language.replace("-", "") + self.variant)


def check_espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError("espeak-ng not found; install it with 'apt-get install espeak-ng' (make install does it as root)")
    return path


def speak(text: str, voice: Voice) -> np.ndarray:
    """Synthesise ``text``; returns float32 samples at 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "utt.wav")
        cmd = ["espeak-ng", "-v", f"{voice.language}+{voice.variant}", "-s", str(voice.rate), "-p", str(voice.pitch),
               "-w", wav, text]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not os.path.exists(wav):
            raise RuntimeError(f"espeak-ng failed for {text!r} ({' '.join(cmd[:7])}): {result.stderr.strip()}")
        samples, rate = soundfile.read(wav, dtype="float32")
    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)
