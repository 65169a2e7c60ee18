"""Progress of long stages, read from the logs their jobs write (any job backend writes them).

    with TrainingProgress(exp / "train.log", max_epoch):     # stage 7: one line per epoch
        run(...)
    with DecodingProgress(job_logs, total, done, "test"):    # stage 8: utterances decoded, all jobs
        run(...)

A background thread follows the growing logs from where they ended when the stage started
(logs are appended to across runs), so what a run prints is about that run. Decoding jobs
write ``decoded N/M utterances`` lines (``metrics.progress_line``) to their logs; ESPnet's trainer writes
``Nepoch results: [train] ... [valid] ...``. On a terminal decoding progress is one tqdm
line updated in place; otherwise a plain line at most every ``PLAIN_EVERY_S`` seconds.
"""

import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from espnet_mtla.metrics.progress_line import DECODED, DECODED_RE  # noqa: F401  (DECODED: its earlier home)

log = logging.getLogger("pipeline")

EPOCH_RE = re.compile(r"(\d+)epoch results: (.*)")
RESUMED_RE = re.compile(r"The training was resumed using")
POLL_S = 1.0
PLAIN_EVERY_S = 10.0
# Validation numbers shown when ESPnet reports them, in this order.
VALID_KEYS = ("loss", "acc", "cer", "wer", "cer_ctc", "bleu")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LogFollower:
    """The complete lines appended to a file since this object was made."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self.pending = ""

    def earlier_text(self) -> str:
        """What the file held when following started."""
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as f:
            return f.read(self.offset).decode("utf-8", errors="replace")

    def new_lines(self) -> List[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.pending + data.decode("utf-8", errors="replace")).split("\n")
        self.pending = lines.pop()
        return lines


class _Watcher:
    """Calls ``poll()`` every POLL_S seconds in a thread while the ``with`` block runs, and once at its end."""

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(POLL_S):
            self.poll()

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.poll()
        self.close()
        return False

    def poll(self):
        raise NotImplementedError

    def close(self):
        pass


def parse_epoch_results(text: str) -> Dict[str, Dict[str, str]]:
    """``[train] a=1, b=2, [valid] ...`` -> {"train": {"a": "1", ...}, "valid": {...}}."""
    sections: Dict[str, Dict[str, str]] = {}
    for name, body in re.findall(r"\[(\w+)\]\s*(.*?)(?=,?\s*\[\w+\]|$)", text):
        pairs = (item.split("=", 1) for item in body.split(", ") if "=" in item)
        sections[name] = {key.strip(): value.strip().rstrip(",") for key, value in pairs}
    return sections


def _number(value: Optional[str]) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return "-"


class TrainingProgress(_Watcher):
    """Stage 7 (or 13, the LM's): ``epoch k/N: train loss, valid loss/acc (cer/wer when reported),
    s/epoch, ETA``."""

    def __init__(self, train_log: Path, max_epoch: int, stage: int = 7):
        self.follower = LogFollower(train_log)
        self.stage = stage
        self.max_epoch = max_epoch
        earlier = [int(m.group(1)) for m in EPOCH_RE.finditer(self.follower.earlier_text())]
        self.done_before = earlier[-1] if earlier else 0
        self.last = time.monotonic()
        self.epoch_seconds: List[float] = []

    def poll(self):
        for line in self.follower.new_lines():
            if RESUMED_RE.search(line):
                log.info("stage %d: resumed from the checkpoint after epoch %d of %d", self.stage, self.done_before,
                         self.max_epoch)
                continue
            match = EPOCH_RE.search(line)
            if match:
                self.report(int(match.group(1)), parse_epoch_results(match.group(2)))

    def report(self, epoch: int, results: Dict[str, Dict[str, str]]) -> None:
        now = time.monotonic()
        self.epoch_seconds.append(now - self.last)
        self.last = now
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        train, valid = results.get("train", {}), results.get("valid", {})
        # only numbers that exist: ESPnet's ST model reports cer/wer as nan for a decoder it does not run
        shown = ", ".join(f"{key} {_number(valid[key])}" for key in VALID_KEYS
                          if key in valid and _number(valid[key]) not in ("nan", "-"))
        left = max(0, self.max_epoch - epoch)
        log.info("stage %d: epoch %d/%d: train loss %s | valid %s | %s/epoch, ETA %s", self.stage, epoch, self.max_epoch,
                 _number(train.get("loss")), shown or "-", duration(self.epoch_seconds[-1]),
                 duration(mean * left) if left else "done")


class DecodingProgress(_Watcher):
    """Stage 8: utterances decoded over all jobs of one test set, with rate and ETA."""

    def __init__(self, job_logs: List[Path], total: int, done_before: int, name: str, stream=None):
        self.followers = [LogFollower(path) for path in job_logs]
        self.counts = [0] * len(job_logs)
        self.total, self.done_before, self.name = total, done_before, name
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.last_plain = 0.0
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done_before, desc=f"stage 8: {name}", unit="utt",
                            file=self.stream, dynamic_ncols=True)

    @property
    def done(self) -> int:
        return self.done_before + sum(self.counts)

    def poll(self):
        before = self.done
        for job, follower in enumerate(self.followers):
            for line in follower.new_lines():
                match = DECODED_RE.search(line)
                if match:
                    self.counts[job] = int(match.group(1))
        if self.bar is not None:
            self.bar.update(self.done - before)
        elif self.done > before and (time.monotonic() - self.last_plain >= PLAIN_EVERY_S or self.done >= self.total):
            self.last_plain = time.monotonic()
            log.info("stage 8: %s", self.describe())

    def describe(self) -> str:
        elapsed = time.monotonic() - self.started
        new = self.done - self.done_before
        rate = new / elapsed if elapsed > 0 else 0.0
        eta = duration((self.total - self.done) / rate) if rate > 0 and self.done < self.total else "done"
        return f"{self.name}: {self.done}/{self.total} utterances decoded ({rate:.2f} utt/s, ETA {eta})"

    def close(self):
        if self.bar is not None:
            self.bar.close()
