"""Decoding efficiency report: per-utterance and total time, peak memory, KV-cache bytes (used at
the peak, and held: with the caches' room to grow and reorder spares), tokens/s.

``EfficiencyRecorder`` wraps an ESPnet inference object's ``__call__`` (Speech2Text, ...) and
the data iterator (for utterance ids); ``write`` saves ``efficiency.json``, with how the run
decoded (``decoding_setup``: search, beam, frame budget, weights, machine).
"""

import json
import logging
import os
import platform
import time
from typing import Dict, Optional

import torch

from espnet_mtla.metrics.memory import PeakMemory
from espnet_mtla.storage.fileio import write_text_atomic
from espnet_mtla.metrics.progress_line import DECODED


def _best(results):
    """The best (text, token, token_int, hyp) of an inference object's results, or None."""
    if isinstance(results, tuple):  # (results, asr_results) or (results, interctc outputs)
        results = results[0]
    return results[0] if results else None


def _result_caches(best):
    """The decoder caches the best hypothesis' state points at (decoder_only models), or None.

    ESPnet's batched search keeps one shared ``DecoderCaches`` for all hypotheses, so this is
    the whole search's; its non-batched search gives each hypothesis a private copy.
    """
    if best is None:
        return None
    states = getattr(best[3], "states", None) or {}
    return getattr(states.get("decoder"), "caches", None)


def machine_name(device: str = "cpu") -> str:
    """The machine a measurement ran on: the GPU's name and SMs, or the CPU's model and cores."""
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.multi_processor_count} SMs)"
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def decoding_setup(args, batched: bool, device: str) -> dict:
    """How an inference run decoded (``efficiency.json``'s ``decoding``): RESULTS rows are
    compared only where this is the same. ``args``: the inference options."""
    lm = bool(getattr(args, "lm_file", None) or getattr(args, "lm_train_config", None))
    return {"search": "batched" if batched else "per-utterance", "beam_size": args.beam_size,
            "batch_frames": args.batch_frames if batched else None,
            "batch_size": args.batch_size if batched else 1, "penalty": getattr(args, "penalty", None),
            "maxlenratio": getattr(args, "maxlenratio", None), "ctc_weight": getattr(args, "ctc_weight", None),
            "lm_weight": getattr(args, "lm_weight", None) if lm else None, "device": torch.device(device).type,
            "machine": machine_name(device), "threads": torch.get_num_threads()}


def summarize(utterances: Dict[str, dict], device: Optional[str], peak_kind: Optional[str],
              decoding: Optional[dict] = None) -> dict:
    """Totals over per-utterance records (one inference job's, or several jobs' merged);
    ``decoding``: how they were decoded (``decoding_setup``)."""
    utts = utterances.values()
    total_time = sum(u["decode_time_s"] for u in utts)
    tokens = sum(u["output_tokens"] for u in utts)
    caches = [u["cache_bytes_peak"] for u in utts if u["cache_bytes_peak"] is not None]
    allocated = [u["cache_bytes_allocated_peak"] for u in utts if u.get("cache_bytes_allocated_peak") is not None]
    lm_caches = [u.get("lm_cache_bytes_peak") or 0 for u in utts]
    return {
        "device": device,
        "num_utterances": len(utterances),
        "total_decode_time_s": round(total_time, 6),
        "mean_decode_time_s": round(total_time / len(utterances), 6) if utterances else None,
        "output_tokens": tokens,
        "tokens_per_s": round(tokens / total_time, 3) if total_time > 0 else None,
        "utterances_per_s": round(len(utterances) / total_time, 3) if total_time > 0 else None,
        "peak_memory_bytes": max((u["peak_memory_bytes"] for u in utts), default=0),
        "peak_memory_kind": peak_kind,
        "cache_bytes_peak": max(caches) if caches else None,
        "cache_bytes_allocated_peak": max(allocated) if allocated else None,
        "lm_cache_bytes_peak": max(lm_caches, default=0),
        "decoding": decoding,
        "utterances": utterances,
    }


class EfficiencyRecorder:
    def __init__(self, device: str = "cpu", total: Optional[int] = None):
        self.device = torch.device(device)
        self.current_key: Optional[str] = None
        self.utterances: Dict[str, dict] = {}
        self.peak_kind: Optional[str] = None
        self.total = total  # utterances this job decodes, for its progress lines (when known)
        self.decoding: Optional[dict] = None  # decoding_setup(), set by the inference CLI

    def _progress(self) -> None:
        if self.total:  # the pipeline sums these lines over its jobs (espnet_mtla.recipe.progress)
            logging.info(DECODED.format(done=len(self.utterances), total=self.total))

    def timed(self, fn):
        """(``fn()``, wall seconds, peak memory bytes) on the recorder's device."""
        with PeakMemory(self.device) as peak:
            start = time.perf_counter()
            result = fn()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - start
        self.peak_kind = peak.kind
        return result, elapsed, peak.bytes

    def measure(self, call, inference_object, *args, **kwargs):
        """Run ``call(inference_object, ...)`` and record it under the current utterance id."""
        results, elapsed, peak_bytes = self.timed(lambda: call(inference_object, *args, **kwargs))
        best = _best(results)
        caches = _result_caches(best)
        key = self.current_key if self.current_key is not None else f"utt{len(self.utterances):06d}"
        self.utterances[key] = {
            "decode_time_s": round(elapsed, 6),
            "output_tokens": len(best[2]) if best is not None else 0,
            "peak_memory_bytes": peak_bytes,
            "cache_bytes": caches.nbytes() if caches is not None else None,
            "cache_bytes_peak": caches.peak_nbytes if caches is not None else None,
            "cache_bytes_allocated_peak": getattr(caches, "peak_allocated_nbytes", None),
            "batch_size": 1,
        }
        self._progress()
        return results

    def record_batch(self, keys, elapsed: float, tokens, peak_bytes: int, cache_bytes_peak,
                     lm_cache_bytes_peak: int = 0, cache_bytes_allocated_peak=None) -> None:
        """A batch decoded together: its time is shared equally by its utterances. Cache bytes:
        the decoder's search state at its largest, what its caches held meanwhile (with their
        room to grow and reorder spares), and apart the fused LM's (0 without one)."""
        for key, count in zip(keys, tokens):
            self.utterances[key] = {
                "decode_time_s": round(elapsed / len(keys), 6),
                "output_tokens": count,
                "peak_memory_bytes": peak_bytes,
                "cache_bytes": None,
                "cache_bytes_peak": cache_bytes_peak,
                "cache_bytes_allocated_peak": cache_bytes_allocated_peak,
                "lm_cache_bytes_peak": lm_cache_bytes_peak,
                "batch_size": len(keys),
            }
        self._progress()

    def summary(self) -> dict:
        return summarize(self.utterances, str(self.device), self.peak_kind, self.decoding)

    def write(self, path: str) -> dict:
        summary = self.summary()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_text_atomic(path, json.dumps(summary, indent=2) + "\n")
        return summary
