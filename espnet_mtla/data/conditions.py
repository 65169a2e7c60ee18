"""Acoustic conditions for the synthetic corpus: clean espeak-ng speech, or a harder version of it.

``hard`` changes every utterance, from its own random draw, in three ways:
- tempo (sox ``tempo``, pitch kept) 0.8x to 1.25x;
- room reverberation (sox ``reverb``: reverberance, HF damping and room scale drawn);
- additive noise at an SNR drawn from ``SNR_RANGE_DB``, where SNR is the power of the whole
  (reverberant) utterance over the power of the noise added to it. Half the utterances get
  babble (a segment of ``babble_track``: four other talkers at once, the hardest kind for a
  recogniser, since it sounds like speech), the others white, pink or brown noise.
The draw is a ``Degradation``; ``apply`` is a pure function of the samples, the draw and the
babble track (sox, espeak-ng and the noise generator are deterministic), so a seed fixes the
audio bytes.
"""

import subprocess
from typing import NamedTuple, Optional, Tuple

import numpy as np

CONDITIONS = ("clean", "hard")
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f^exponent
NOISES = ("babble",) * 3 + tuple(sorted(NOISE_COLOURS))  # half babble
SNR_RANGE_DB = (-5.0, 10.0)
BABBLE_TALKERS, BABBLE_SECONDS = 4, 60
PEAK = 0.95  # mixtures are scaled below full scale so 16-bit files never clip


class Degradation(NamedTuple):
    tempo: float
    reverberance: int  # sox reverb, 0-100
    hf_damping: int  # 0-100
    room_scale: int  # 0-100
    noise: str  # "babble" or a NOISE_COLOURS key
    snr_db: float
    noise_seed: int  # coloured noise: the generator's seed; babble: where in the track the segment starts

    def describe(self) -> str:
        return (f"tempo={self.tempo:.3f} reverb={self.reverberance}/{self.hf_damping}/{self.room_scale} "
                f"noise={self.noise} snr_db={self.snr_db:.2f}")


def draw(rng) -> Degradation:
    """One utterance's condition from a ``random.Random``."""
    return Degradation(
        tempo=round(rng.uniform(0.8, 1.25), 3),
        reverberance=rng.randint(10, 70),
        hf_damping=rng.randint(20, 80),
        room_scale=rng.randint(20, 100),
        noise=rng.choice(NOISES),
        snr_db=round(rng.uniform(*SNR_RANGE_DB), 2),
        noise_seed=rng.getrandbits(32),
    )


def sox_effects(samples: np.ndarray, rate: int, effects) -> np.ndarray:
    """Run float32 mono ``samples`` through a sox effects chain (raw float in, raw float out)."""
    raw = ["-t", "raw", "-r", str(rate), "-e", "floating-point", "-b", "32", "-c", "1"]
    cmd = ["sox", "-V1", *raw, "-", *raw, "-", *effects]
    result = subprocess.run(cmd, input=np.ascontiguousarray(samples, dtype="<f4").tobytes(), capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"sox failed ({' '.join(cmd)}): {result.stderr.decode().strip()}; install it with 'apt-get install sox'")
    return np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)


def coloured_noise(length: int, colour: str, seed: int) -> np.ndarray:
    """Unit-power noise whose power spectrum falls as 1 / f^exponent of ``colour``."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(length))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0  # keep DC finite; it is removed below
    spectrum = spectrum / freqs ** (NOISE_COLOURS[colour] / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=length)
    return noise / np.sqrt(np.mean(noise**2) + 1e-20)


def babble_track(rng, speak, voices, sentence, rate: int) -> np.ndarray:
    """BABBLE_SECONDS of BABBLE_TALKERS simultaneous talkers, unit power.

    ``speak(text, voice)`` synthesises; ``voices(rng)`` and ``sentence(rng)`` draw a voice and a
    text. Each talker reads random sentences back to back from a random start.
    """
    length = BABBLE_SECONDS * rate
    track = np.zeros(length, dtype=np.float64)
    for _ in range(BABBLE_TALKERS):
        position = -rng.randint(0, 2 * rate)
        while position < length:
            speech = speak(sentence(rng), voices(rng)).astype(np.float64)
            speech /= np.sqrt(np.mean(speech**2)) + 1e-9
            start, end = max(position, 0), min(position + len(speech), length)
            track[start:end] += speech[start - position : end - position]
            position += len(speech)
    return (track / np.sqrt(np.mean(track**2))).astype(np.float32)


def noise_for(condition: Degradation, length: int, babble: Optional[np.ndarray]) -> np.ndarray:
    """Unit-power noise of ``condition`` for ``length`` samples."""
    if condition.noise != "babble":
        return coloured_noise(length, condition.noise, condition.noise_seed)
    if babble is None:
        raise ValueError("babble noise needs the split's babble track (babble_track)")
    start = condition.noise_seed % len(babble)
    segment = np.resize(np.roll(babble, -start), length).astype(np.float64)  # wraps around for long utterances
    return segment / np.sqrt(np.mean(segment**2) + 1e-20)


def apply(samples: np.ndarray, rate: int, condition: Degradation,
          babble: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Degrade ``samples``; returns (mixture, its speech component), both float32 and scaled alike."""
    speech = sox_effects(samples, rate, ["tempo", "-s", f"{condition.tempo}",
                                         "reverb", str(condition.reverberance), str(condition.hf_damping),
                                         str(condition.room_scale)])
    power = float(np.mean(speech.astype(np.float64) ** 2))
    noise = noise_for(condition, len(speech), babble) * np.sqrt(power / 10 ** (condition.snr_db / 10))
    mixture = speech + noise
    scale = PEAK / max(float(np.abs(mixture).max()), 1e-9)
    return (mixture * scale).astype(np.float32), (speech * scale).astype(np.float32)


def snr_db(mixture: np.ndarray, speech: np.ndarray) -> float:
    """Measured SNR of a mixture whose speech component is known."""
    noise = mixture.astype(np.float64) - speech.astype(np.float64)
    return float(10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise**2)))
