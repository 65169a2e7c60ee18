"""Peak memory of a block of work: CUDA max-allocated on GPU, RSS high-water mark on CPU."""

import re
import resource
from typing import Optional

import torch

_STATUS = "/proc/self/status"


def _status_kib(field: str) -> Optional[int]:
    try:
        with open(_STATUS) as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process; False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(device) as peak: ...``; then ``peak.bytes`` is the peak above the start.

    ``kind`` says what was measured: ``cuda_max_allocated`` (bytes the caching allocator
    handed out), ``cpu_rss`` (resident set high-water mark, reset at the start through
    /proc/self/clear_refs), or ``cpu_rss_lifetime`` where that reset is not available (the
    peak then includes everything since the process started).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.bytes = 0
        self.kind = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda_max_allocated"
        else:
            self.kind = "cpu_rss" if _reset_rss_peak() else "cpu_rss_lifetime"
            self._start = (_status_kib("VmRSS") or 0) * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            hwm = _status_kib("VmHWM")
            peak = hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.bytes = max(0, peak - self._start)
