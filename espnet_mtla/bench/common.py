"""What the benchmarks (``python -m espnet_mtla.bench.<name>``) share; no benchmark imports another.

- the paper's attention variants (``decoder_variants`` for the decoder-only stack,
  ``layer_variants`` for one layer) and model (``build_model``: encoder, 9-layer decoder-only
  stack, CTC layer), the decoder with <eos> forbidden (``NoEosDecoder``) and ESPnet's search
  over it (``espnet_search``), as ``bench.decode``, ``bench.batch_decode`` and ``bench.paper``
  run them;
- kernel counts (``kernels_launched``, ``layer_step_kernels``, ``kernel_cell``);
- the machine line, the report files (``results.json``, ``results.md``, ``results.png``:
  ``save_report``, ``replot``, ``write_results_json``, ``write_tables``, ``read_report``,
  ``save_figure``) and CLI/process helpers (``positive_int``, ``run_in_subprocess``,
  ``synchronize``).
Memory is measured by ``espnet_mtla.metrics.memory`` (``PeakMemory``, ``peak_allocated_mib``),
the efficiency report's meter.
"""

import argparse
import json
import math
import multiprocessing as mp
import queue as queue_module
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from espnet_mtla.recipe.figures import save_figure  # noqa: F401  (the benchmarks' figures)
from espnet_mtla.storage.fileio import write_text_atomic

EMBED, HEADS = 512, 8  # the paper's model dimension and attention heads
# MLA/MTLA sizes of the paper's experiments (kv_lora_rank 256, rope 32, 64-d heads) and its
# latent norm (LayerNorm, as the reference; the library's default is RMSNorm).
PAPER_LATENT = {"kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64}
PAPER_MLA = dict(PAPER_LATENT, latent_norm="layer_norm")


def decoder_variants(down_rates, gqa_name: str = "GQA (2 kv heads)") -> dict:
    """name -> (attention_type, decoder_conf extras): MHA, MQA, GQA (2 kv heads), MLA and MTLA
    at each of ``down_rates``, with the paper's sizes."""
    variants = {"MHA": ("mha", {}), "MQA": ("mqa", {}), gqa_name: ("gqa", {"gqa_conf": {"num_kv_heads": 2}}),
                "MLA": ("mla", {"mla_conf": PAPER_MLA})}
    for s in down_rates:
        variants[f"MTLA s={s}"] = ("mtla", {"mla_conf": PAPER_MLA, "mtla_conf": {"down_rate": s}})
    return variants


def layer_variants(down_rates, types=None) -> dict:
    """name -> (attention_type, ``build_attention`` options): ``decoder_variants``' types (only
    ``types`` where given) as options of one layer."""
    return {name: (kind, {key: value for conf in extras.values() for key, value in conf.items()})
            for name, (kind, extras) in decoder_variants(down_rates).items() if types is None or kind in types}


# -- the paper-size model of bench.decode, bench.batch_decode and bench.paper --------------
VOCAB = 5000  # output units of bench.decode and bench.batch_decode (bench.paper: 8000, the paper's)
VARIANTS = decoder_variants((2, 4))  # bench.decode's and bench.batch_decode's types


class TorchEncoder(nn.Module):
    """Torch-only stand-in of ESPnet's 12-layer 512-d Transformer encoder (conv2d x4 subsampling)."""

    def __init__(self, idim=80, dim=EMBED, heads=HEADS, units=2048, layers=12):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, dim, 3, 2), nn.ReLU(), nn.Conv2d(dim, dim, 3, 2), nn.ReLU())
        self.out = nn.Linear(dim * (((idim - 1) // 2 - 1) // 2), dim)
        layer = nn.TransformerEncoderLayer(dim, heads, units, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x, lens):
        h = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        h = self.out(h.transpose(1, 2).flatten(2))
        out_lens = ((lens - 1) // 2 - 1) // 2
        return self.layers(h), out_lens, None


def build_model(attention_type, extra, vocab: int = VOCAB, torch_only: bool = False):
    """(encoder, decoder-only stack, CTC output layer) of the paper's sizes, random weights, eval
    mode: ESPnet's encoder and the stack as its ESPnet adapter (for the per-utterance baseline)
    where ESPnet is installed and ``torch_only`` is not set, else the torch-only stand-ins."""
    from espnet_mtla.decoder.stack import DecoderOnlyStack

    encoder, stack_class = None, DecoderOnlyStack
    if not torch_only:
        try:
            from espnet2.asr.encoder.transformer_encoder import TransformerEncoder

            from espnet_mtla.decoder.decoder_only import DecoderOnlyDecoder
        except ImportError:
            pass
        else:
            stack_class = DecoderOnlyDecoder
            encoder = TransformerEncoder(80, output_size=EMBED, attention_heads=HEADS, linear_units=2048,
                                         num_blocks=12, dropout_rate=0.0, positional_dropout_rate=0.0,
                                         attention_dropout_rate=0.0, input_layer="conv2d")
    if encoder is None:
        encoder = TorchEncoder()
    decoder = stack_class(vocab, EMBED, attention_type=attention_type, model_dim=EMBED, attention_heads=HEADS,
                          linear_units=2048, num_blocks=9, dropout_rate=0.0, prefix_stack=2, prefix_hidden=256,
                          **extra)
    return encoder.eval(), decoder.eval(), nn.Linear(EMBED, vocab).eval()


class NoEosDecoder:
    """The decoder with <eos> forbidden: every search runs to its maximum length."""

    def __init__(self, decoder, eos):
        self._decoder, self._eos = decoder, eos

    def __getattr__(self, name):
        return getattr(self._decoder, name)

    def run_tokens(self, caches, ys, mask=None):
        logits = self._decoder.run_tokens(caches, ys, mask)
        logits[..., self._eos] = float("-inf")
        return logits


class NoEos:
    """Full scorer that forbids <eos>: the search then runs to its maximum length (ESPnet
    appends <eos> after the last step), so every attention type does the same work."""

    def __init__(self, eos):
        self.eos = eos

    def init_state(self, x):
        return None

    def batch_init_state(self, x):
        return None

    def select_state(self, state, i, new_id=None):
        return None

    def batch_score(self, ys, states, xs):
        scores = torch.zeros(ys.shape[0], VOCAB)
        scores[:, self.eos] = -math.inf
        return scores, [None] * ys.shape[0]


def espnet_search(decoder, beam: int, ctc_scorer=None, ctc_weight: float = 0.0):
    """ESPnet's BatchBeamSearch over ``decoder`` (weight 1 - ctc_weight) with <eos> forbidden,
    and ESPnet's CTC prefix scorer when one is given."""
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.scorer_interface import BatchScorerInterface

    eos = VOCAB - 1
    no_eos = type("NoEosScorer", (NoEos, BatchScorerInterface), {})(eos)
    scorers = {"decoder": decoder, "no_eos": no_eos}
    weights = {"decoder": 1.0 - ctc_weight, "no_eos": 1.0}
    if ctc_scorer is not None:
        scorers["ctc"], weights["ctc"] = ctc_scorer, ctc_weight
    return BatchBeamSearch(scorers=scorers, weights=weights, beam_size=beam, vocab_size=VOCAB, sos=eos, eos=eos,
                           pre_beam_score_key="full")


# -- kernels launched ---------------------------------------------------------------------
# Ops that only re-describe a tensor (no kernel, no data written).
VIEW_OPS = {"aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::view", "aten::expand",
            "aten::alias", "aten::transpose", "aten::permute", "aten::t", "aten::split", "aten::split_with_sizes",
            "aten::chunk", "aten::narrow", "aten::as_strided", "aten::detach", "aten::view_as_real",
            "aten::view_as_complex", "aten::unflatten", "aten::flatten"}
# Ops that are views or no-ops unless they had to copy (then a child op did the work).
MAYBE_COPY_OPS = {"aten::to", "aten::reshape", "aten::contiguous", "aten::type_as"}


def kernels_launched(fn, device: str = "cpu") -> int:
    """Kernels ``fn()`` launches: CUDA kernels on a GPU; on a CPU, the top-level tensor ops that
    compute something (views and no-op casts excluded), each of which is one kernel there."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.profiler.profile(activities=activities) as prof:
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
    events = prof.events()
    if device == "cuda":
        return sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(1 for e in events if e.cpu_parent is None and e.name.startswith("aten::") and e.name not in VIEW_OPS
               and not (e.name in MAYBE_COPY_OPS and not e.cpu_children))


def layer_step_kernels(decoder, enc) -> dict:
    """Kernels one decoder layer launches per decode step (10 rows after ``enc`` (1, T, D) as the
    prefix), on the inference path and on the training code's path; CUDA kernels on a GPU."""
    counts, device = {}, enc.device
    for name, grad in (("inference", False), ("training_path", True)):
        with torch.set_grad_enabled(grad):
            caches = decoder.new_caches(10, enc.shape[1] + 8, enc)
            decoder.fill_prefix(caches, enc.expand(10, -1, -1), torch.full((10,), enc.shape[1], device=device))
            ys = torch.zeros(10, 1, dtype=torch.long, device=device)
            layer, cache = decoder.layers[0], caches.layers[0]
            h = decoder.embed_tokens(ys)
            layer(h, None, cache)  # warm: absorbed weights built
            counts[name] = kernels_launched(lambda: layer.attn(layer.attn_norm(h), None, cache=cache), device.type)
            counts[name + "_layer"] = kernels_launched(lambda: layer(h, None, cache), device.type)
    return counts


def kernel_cell(result) -> str:
    """A report's kernels cell: attention / whole layer, inference path (training path in brackets)."""
    k = result.get("kernels")
    if not k:
        return "-"
    return f"{k['inference']} / {k['inference_layer']} ({k['training_path']} / {k['training_path_layer']})"


# -- machine, CLI and processes ------------------------------------------------------------
def machine(device="cpu", dtype: str = "fp32") -> str:
    """The report's machine line: the CPU's model, cores and threads, or on ``cuda`` the GPU's
    name and SMs; the torch version; ``dtype`` as given."""
    from espnet_mtla.metrics.efficiency import machine_name

    threads = "" if torch.device(device).type == "cuda" else f", {torch.get_num_threads()} threads"
    return f"{machine_name(device)}, torch {torch.__version__}{threads}, {dtype}"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPUs): wall-clock timing of GPU work needs it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_in_subprocess(target, name, opts):
    """``target(name, opts, queue)`` in a fresh spawned process; returns what it put on the queue.

    Polls so that a child that dies (its traceback is on stderr) ends the benchmark at once
    instead of leaving the parent waiting on the queue.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(name, opts, queue))
    proc.start()
    result = None
    while result is None:
        try:
            result = queue.get(timeout=1.0)  # read before joining: put() blocks until consumed
        except queue_module.Empty:
            if not proc.is_alive():
                break
    proc.join()
    if proc.exitcode != 0 or result is None:
        raise SystemExit(f"benchmark of {name} failed (exit {proc.exitcode}); its traceback is above")
    return result


# -- report files ---------------------------------------------------------------------------
def read_report(parser, out) -> dict:
    """``--replot``: ``out``'s results.json; a one-line usage error where there is none."""
    out = Path(out)
    if not (out / "results.json").is_file():
        parser.error(f"--replot needs {out / 'results.json'}: run the benchmark with --out-dir {out} first")
    return json.loads((out / "results.json").read_text())


def write_results_json(out, report: dict) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(report, indent=2) + "\n")


def write_tables(out, report: dict, markdown, plot=None) -> str:
    """``results.md`` (``markdown(report)``) and, given ``plot``, ``results.png``
    (``plot(report, path)``) in ``out``; returns the table."""
    out = Path(out)
    table = markdown(report)
    write_text_atomic(out / "results.md", table)
    if plot is not None:
        plot(report, out / "results.png")
    return table


def _of_report(markdown, plot):
    """``markdown(results, options, machine)`` and ``plot(results, options, machine, path)`` as
    functions of a ``{"machine", "options", "results"}`` report."""
    return (lambda report: markdown(report["results"], report["options"], report["machine"]),
            None if plot is None else
            lambda report, path: plot(report["results"], report["options"], report["machine"], path))


def replot(parser, out, markdown, plot) -> None:
    """``--replot``: redo ``out``'s results.md and results.png from its results.json."""
    write_tables(out, read_report(parser, out), *_of_report(markdown, plot))


def parse_or_replot(parser, argv, markdown, plot):
    """``parser``'s options with ``--replot`` added; on ``--replot``, redo the tables of
    ``--out-dir`` from its results.json and return None."""
    parser.add_argument("--replot", action="store_true", help="redo the table and plot from --out-dir's results.json")
    opts = parser.parse_args(argv)
    if opts.replot:
        replot(parser, Path(opts.out_dir), markdown, plot)
        return None
    return opts


def save_report(out, machine_name: str, options: dict, results: list, markdown, plot) -> str:
    """Write ``results.json`` (``{"machine", "options", "results"}``), ``results.md``
    (``markdown(results, options, machine)``) and ``results.png`` (``plot(...)``) to ``out``;
    returns the table."""
    report = {"machine": machine_name, "options": options, "results": results}
    write_results_json(out, report)
    return write_tables(out, report, *_of_report(markdown, plot))
