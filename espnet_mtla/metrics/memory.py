"""Memory of a block of work: the one meter of the decoding efficiency report
(``metrics/efficiency.py``) and of every benchmark (``espnet_mtla/bench/``).

``with PeakMemory(device) as peak: ...``; then ``peak.bytes`` is the peak above the start:
- on a GPU, bytes the CUDA caching allocator handed out (``max_memory_allocated``);
- on a CPU, ``cpu="rss"`` (the efficiency report): the resident set's high-water mark, reset at
  the start through /proc/self/clear_refs; ``cpu="allocator"`` (the benchmarks): PyTorch's own
  CPU allocations, read from the profiler's allocator events, which is deterministic, unlike
  RSS (glibc's free-list reuse makes it depend on what ran before).
``sample_every=S`` also samples the memory in use every S seconds in a thread (allocated bytes
on a GPU, RSS on a CPU; the paper's average-memory metric): ``samples``, ``average_bytes``.
``peak_allocated_mib(fn, device)`` is the benchmarks' one-call form.
"""

import contextlib
import json
import os
import re
import resource
import tempfile
import threading
import warnings
from typing import Optional

import torch

_STATUS = "/proc/self/status"
CPU_SOURCES = ("rss", "allocator")


def _status_kib(field: str) -> Optional[int]:
    try:
        with open(_STATUS) as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _rss_bytes() -> int:
    """This process' resident set size in bytes (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process; False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _allocator_events(prof) -> tuple:
    """(allocated before the first event, peak allocated) in bytes from a memory profile."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("name") == "[memory]"]
    if not events:
        return 0, 0
    baseline = events[0]["args"]["Total Allocated"] - events[0]["args"]["Bytes"]
    return baseline, max(e["args"]["Total Allocated"] for e in events)


class PeakMemory:
    """``with PeakMemory(device[, cpu, sample_every]) as peak: ...``: see the module doc.

    After the block: ``bytes`` (peak above the start), ``mib`` (the same in MiB),
    ``start_bytes`` (in use at the start; for ``cpu_allocator``, what the profiler counts as
    allocated before its first event), ``total_bytes`` (the peak with ``start_bytes``), ``kind`` (what was measured: ``cuda_max_allocated``, ``cpu_allocator``,
    ``cpu_rss``, or ``cpu_rss_lifetime`` where the RSS peak cannot be reset, so that the peak
    includes everything since the process started), and with ``sample_every``, ``samples``
    (bytes in use, from the start to the end) and ``average_bytes``.
    """

    def __init__(self, device, cpu: str = "rss", sample_every: Optional[float] = None):
        if cpu not in CPU_SOURCES:
            raise ValueError(f"cpu must be one of {', '.join(CPU_SOURCES)}, got {cpu!r}")
        self.device = torch.device(device)
        self.cpu, self.sample_every = cpu, sample_every
        self.bytes = self.start_bytes = 0
        self.kind = None
        self.samples = []
        self._profile = self._thread = None

    @property
    def mib(self) -> float:
        return self.bytes / 2**20

    @property
    def total_bytes(self) -> int:
        return self.start_bytes + self.bytes

    @property
    def average_bytes(self) -> float:
        return sum(self.samples) / len(self.samples)

    def in_use(self) -> int:
        """Bytes in use now: allocated by PyTorch on a GPU, the process' RSS on a CPU."""
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else _rss_bytes()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.in_use())
            self._stop.wait(self.sample_every)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda_max_allocated"
        elif self.cpu == "allocator":
            self.kind = "cpu_allocator"
            self._profile = contextlib.ExitStack()
            self._profile.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")  # the profiler's notes about its own event buffers
            self._profiler = self._profile.enter_context(
                torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True))
        else:
            self.kind = "cpu_rss" if _reset_rss_peak() else "cpu_rss_lifetime"
            self.start_bytes = _rss_bytes()
        if self.sample_every:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.samples.append(self.in_use())
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._profile is not None:
            self._profile.__exit__(*exc)
            self.start_bytes, peak = _allocator_events(self._profiler)
        else:
            hwm = _status_kib("VmHWM")
            peak = hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.bytes = max(0, peak - self.start_bytes)


def peak_allocated_mib(fn, device="cpu") -> float:
    """MiB that PyTorch's allocations during ``fn()`` peak at above what was allocated before:
    ``PeakMemory(device, cpu="allocator")`` (the CUDA allocator's peak on a GPU)."""
    with PeakMemory(device, cpu="allocator") as peak:
        fn()
    return peak.mib
