"""Stage 10's outputs: RESULTS.md (a table rendered from RESULTS.json) and a figure per test set.

    rows = json.loads(Path("RESULTS.json").read_text())["rows"]
    figures = plot_results(rows, Path("RESULTS.md"))   # RESULTS_<test set>.png next to RESULTS.md
    text = render_results(rows, "RESULTS.json", figures)

A row is one experiment on one test set (and one fused language model, ``lm``, or none): its
attention type, scores (``{"wer": 4.1, ...}``),
decoding efficiency (``RESULT_FIELDS``) and the experiment's learning-curve images (paths relative to
RESULTS.md; ESPnet draws them under ``exp/<experiment>/images/``). The figure puts the
experiments side by side, one bar per experiment (a ``--seeds`` group: one bar, its mean) in each
panel: quality (the first score), utterances/s, peak memory and KV-cache peak.
"""

import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

RESULT_FIELDS = ("total_decode_time_s", "utterances_per_s", "tokens_per_s", "peak_memory_bytes", "cache_bytes_peak",
                 "cache_bytes_allocated_peak", "lm_cache_bytes_peak")
# ESPnet's learning curves worth a link, in this order (others exist: grad_norm, iter_time, ...).
CURVES = ("loss", "acc", "cer", "wer", "bleu", "cer_ctc")
LOWER_IS_BETTER = {"wer", "cer"}


def row_name(r: dict) -> str:
    """An experiment, and the LM fused into its decoding: ``asr_train_mtla + lm_train_lm_mtla``."""
    return r["experiment"] + (f" + {r['lm']}" if r.get("lm") else "")


def learning_curves(exp_dir: Path, results_dir: Path) -> List[str]:
    """ESPnet's plots of one experiment that exist, as paths relative to ``results_dir``."""
    images = Path(exp_dir) / "images"
    return [os.path.relpath(images / f"{name}.png", results_dir) for name in CURVES if (images / f"{name}.png").exists()]


def figure_path(results: Path, test_set: str) -> Path:
    return results.with_name(f"{results.stem}_{test_set}.png")


def _panels(rows: List[dict]):
    """(title, [value per row]) of the figure's panels; a value is None where a row lacks it."""
    metric = next(iter(rows[0]["scores"]), None)
    quality = [r["scores"].get(metric) for r in rows]
    arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    cache = [r["cache_bytes_peak"] / 1e6 if r.get("cache_bytes_peak") is not None else None for r in rows]
    return [
        (f"{metric} ({arrow})" if metric else "quality", quality),
        ("decoding speed (utterances/s)", [r.get("utterances_per_s") for r in rows]),
        ("peak memory while decoding (MiB)", [r["peak_memory_bytes"] / 2**20 if r.get("peak_memory_bytes") else None
                                               for r in rows]),
        ("KV-cache peak (MB)", cache),
    ]


def plot_results(rows: List[dict], results: Path) -> Dict[str, List[str]]:
    """One figure per test set next to ``results``; returns {test set: bars, in order}. A ``--seeds``
    group is one bar (its mean), with the seeds' standard deviation as an error bar on quality:
    a bar per seed would show the noise as if it were a difference between experiments."""
    from espnet_mtla.recipe.figures import pyplot, save_figure

    plt = pyplot()
    drawn = {}
    bars = compared_rows(rows)  # seed groups summarised once, for every test set
    for test_set in sorted({r["test_set"] for r in bars}):
        subset = sorted((r for r in bars if r["test_set"] == test_set), key=row_name)
        names = [row_name(r) for r in subset]
        panels = _panels(subset)
        metric = next(iter(subset[0]["scores"]), None)
        spread = [(r.get("spread") or {}).get(metric) for r in subset]
        # one bar is ~0.3 inch wide with its label: panels widen with the bars instead of crowding them
        fig, axes = plt.subplots(1, len(panels), figsize=(max(3.2, 0.32 * len(names)) * len(panels), 3.6))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for panel, (ax, (title, values)) in enumerate(zip(axes, panels)):
            heights = [v if v is not None else 0.0 for v in values]
            errors = spread if panel == 0 and any(e is not None for e in spread) else None  # panel 0: quality
            artists = ax.bar(range(len(names)), heights, color=[colours[i % len(colours)] for i in range(len(names))],
                          yerr=None if errors is None else [math.nan if e is None else e for e in errors], capsize=3)
            for bar, value, error in zip(artists, values, errors or [None] * len(values)):
                top = bar.get_height() + (error or 0.0)  # above the error bar, where there is one
                ax.annotate("-" if value is None else f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, top),
                            ha="center", va="bottom", fontsize=7)
            ax.set_title(title + (" (error bars: seeds' std)" if errors else ""), fontsize=9)
            ax.set_xticks(range(len(names)), [n.split("_", 2)[-1] for n in names], rotation=40, ha="right", fontsize=7)
            ax.margins(y=0.15)
        listed = ", ".join(names)  # every name while they fit on one line; the bars' labels say the rest
        fig.suptitle(f"{test_set}: " + (listed if len(listed) < 30 * len(panels) else
                                         f"{len(names)} experiments (labels: the names after <task>_)"), fontsize=9)
        save_figure(fig, figure_path(results, test_set))
        drawn[test_set] = names
    return drawn


def decoding_differences(a: dict, b: dict, ignore=()) -> List[str]:
    """How rows ``a`` and ``b`` were decoded differently (model, search, beam, budget, weights,
    machine); empty where alike. Rows written before rows said how they were decoded compare with
    each other as before."""
    da, db = a.get("decoding"), b.get("decoding")
    if da is None and db is None:
        return []
    if da is None or db is None:
        return [f"{row_name(a if da is None else b)}'s decoding was not recorded: decoded before rows said how"]
    differ = [] if a.get("model") == b.get("model") else [f"model {a.get('model')} vs {b.get('model')}"]
    keys = list(da) + [key for key in db if key not in da]
    return differ + [f"{key} {da.get(key)} vs {db.get(key)}" for key in keys
                     if key not in ignore and da.get(key) != db.get(key)]


def tuned_alike(a: dict, b: dict) -> tuple:
    """What ``decoding_differences`` ignores between two rows whose length bonus stage 8 tuned on
    the dev set (--tune_penalty): each is compared with the bonus it does best with."""
    return ("penalty",) if all((row.get("decoding") or {}).get("penalty_tuned_on") for row in (a, b)) else ()


def describe_decoding(d: dict) -> str:
    """One row's decoding in words: 'batched within 4000 frames, beam 10, CTC weight 0.3, ...'."""
    search = (f"batched within {d['batch_frames']} frames" if d.get("batch_frames") else
              f"batched {d.get('batch_size')} utterances per search" if d.get("search") == "batched" else
              "one utterance per search")
    parts = [search, f"beam {d.get('beam_size')}"]
    tuned = f" (the best on {d['penalty_tuned_on']})" if d.get("penalty_tuned_on") else ""
    parts += [f"{label} {d[key]}" + (tuned if key == "penalty" else "")
              for key, label in (("ctc_weight", "CTC weight"), ("lm_weight", "LM weight"),
                                 ("penalty", "length bonus"), ("maxlenratio", "maxlenratio"))
              if d.get(key) is not None]
    parts.append(f"{d.get('jobs', 1)} job(s) of {d.get('threads')} thread(s) on {d.get('machine')}")
    return ", ".join(parts)


def seed_groups(rows: List[dict]) -> Dict[tuple, List[dict]]:
    """Rows of one ``--seeds`` run, {(seed group, test set, lm): rows}: groups of two seeds or more."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        if r.get("seed_group"):
            groups.setdefault((r["seed_group"], r["test_set"], r.get("lm")), []).append(r)
    return {key: members for key, members in groups.items() if len(members) > 1}


def mean_and_spread(values: List[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of two values or more."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def seed_summaries(rows: List[dict]) -> List[dict]:
    """A row per seed group: each score's and efficiency field's mean, ``spread`` (each score's
    standard deviation over the seeds) and ``seeds`` (their count); the first seed's other fields."""
    summaries = []
    for (group, _, _), members in sorted(seed_groups(rows).items()):
        first = members[0]
        scores = {k: [m["scores"][k] for m in members if k in m["scores"]] for k in first["scores"]}
        stats = {k: mean_and_spread(v) for k, v in scores.items() if len(v) == len(members)}
        efficiency = {k: sum(m[k] for m in members) / len(members) for k in RESULT_FIELDS
                      if all(m.get(k) is not None for m in members)}
        summaries.append({**first, **efficiency, "experiment": f"{group} ({len(members)} seeds)",
                          "scores": {k: round(mean, 2) for k, (mean, _) in stats.items()},
                          "spread": {k: round(sd, 2) for k, (_, sd) in stats.items()}, "seeds": len(members)})
    return summaries


def compared_rows(rows: List[dict]) -> List[dict]:
    """What comparisons are made between: single runs as they are, seed groups as their means."""
    grouped = {id(m) for members in seed_groups(rows).values() for m in members}
    return [r for r in rows if id(r) not in grouped] + seed_summaries(rows)


def spread_verdict(a: dict, b: dict, metric: str, difference: float) -> str:
    """Whether a difference is larger than the seeds' spread (the two standard deviations summed)."""
    spreads = [(r.get("spread") or {}).get(metric) for r in (a, b)]
    if spreads == [None, None]:  # two single runs: nothing to say
        return ""
    if None in spreads:
        single = row_name(a if spreads[0] is None else b)
        return f"; {single} is one run, so whether this is more than seed noise is unknown"
    spread = spreads[0] + spreads[1]
    larger = "larger" if abs(difference) > spread else "not larger"
    return f"; {larger} than the seed spread, {spreads[0]:.2f} + {spreads[1]:.2f} standard deviations"


def comparisons(rows: List[dict]) -> List[str]:
    """Each experiment against the MHA one of the same decoder (decoder-only, encoder-decoder),
    trained for as many epochs, on the same test set with the same LM (or none), in words a
    person can read. MHA rows are the baselines, not compared with each other.

    Quality: the first score's difference (absolute points); speed, memory and cache: ratios.
    Experiments know their attention type from their config (``attention`` in the row).
    """
    lines = []
    rows = compared_rows(rows)
    # rows written before rows named their decoder are decoder_only (the only one there was)
    decoder_of = lambda r: r.get("decoder") or "decoder_only"  # noqa: E731
    lm_of = lambda r: r.get("lm") or ""  # noqa: E731
    for test_set, decoder, lm in sorted({(r["test_set"], decoder_of(r), lm_of(r)) for r in rows}):
        subset = [r for r in rows if (r["test_set"], decoder_of(r), lm_of(r)) == (test_set, decoder, lm)]
        bases = [r for r in subset if r.get("attention") == "mha"]
        for r in subset:
            if r.get("attention") == "mha" or not bases:  # MHA rows are what the others are compared with
                continue
            # trained as long as it; a row written before rows said their epochs pairs with any MHA row
            # like with like: a seed group with an MHA seed group where there is one
            bases.sort(key=lambda b: bool(b.get("seeds")) != bool(r.get("seeds")))
            base = (next((b for b in bases if b.get("epochs") == r.get("epochs")), None)
                    or next((b for b in bases if None in (b.get("epochs"), r.get("epochs"))), None))
            if base is None:
                trained = ", ".join(sorted(f"{b['experiment']} {b.get('epochs')}" for b in bases))
                lines.append(f"{row_name(r)} on {test_set}: not compared, no MHA row trained for "
                             f"{r.get('epochs')} epochs (MHA: {trained} epochs): train one alike")
                continue
            differ = decoding_differences(r, base, ignore=tuned_alike(r, base))
            if differ:  # a gap the setup makes is not the attention's
                lines.append(f"{row_name(r)} vs {row_name(base)} on {test_set}: not compared, decoded differently "
                             f"({'; '.join(differ)}): decode both alike (stage 8 with the same options and machine)")
                continue
            metric = next(iter(base["scores"]), None)
            parts = []
            if metric in r["scores"]:
                a, b = r["scores"][metric], base["scores"][metric]
                better = (a < b) if metric in LOWER_IS_BETTER else (a > b)
                verdict = "equal" if a == b else ("better" if better else "worse")
                parts.append(f"{metric} {a} vs {b} ({a - b:+.2f} points, {verdict}"
                             f"{spread_verdict(r, base, metric, a - b)})")
            for key, label, unit in (("utterances_per_s", "decoding speed", "the utterances/s"),
                                     ("peak_memory_bytes", "peak decoding memory", "the memory"),
                                     ("cache_bytes_peak", "KV cache", "the bytes")):
                if r.get(key) and base.get(key):
                    ratio = r[key] / base[key]
                    smaller = f", {1 / ratio:.1f}x smaller" if key != "utterances_per_s" and ratio < 1 else ""
                    parts.append(f"{label} {ratio:.2f}x {unit}{smaller}")
            lines.append(f"{row_name(r)} vs {row_name(base)} on {test_set}: " + "; ".join(parts))
    return lines


def _number(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def language_model_effects(rows: List[dict]) -> List[str]:
    """Each row decoded with an LM against the same experiment's row without one."""
    lines = []
    for r in rows:
        if not r.get("lm"):
            continue
        base = next((b for b in rows if b["experiment"] == r["experiment"] and b["test_set"] == r["test_set"]
                     and not b.get("lm") and not decoding_differences(r, b, ignore=("lm_weight",) + tuned_alike(r, b))),
                    None)
        metric = next(iter(base["scores"]), None) if base else None
        if metric in r["scores"]:
            a, b = r["scores"][metric], base["scores"][metric]
            speed = (f"; decoding speed {r['utterances_per_s'] / base['utterances_per_s']:.2f}x"
                     if r.get("utterances_per_s") and base.get("utterances_per_s") else "")
            if r.get("lm_cache_bytes_peak"):
                speed += f"; the LM's cache {r['lm_cache_bytes_peak'] / 1e6:.3f} MB at its peak"
            lines.append(f"{r['experiment']} on {r['test_set']} with {r['lm']}: {metric} {a} vs {b} without "
                         f"({a - b:+.2f} points){speed}")
    return lines


def render_results(rows: List[dict], source: str = "RESULTS.json", figures: Optional[Dict[str, str]] = None,
                   lms: Optional[List[dict]] = None) -> str:
    """RESULTS.md from the rows of ``source``; ``figures``: {test set: image path relative to RESULTS.md};
    ``lms``: the language models' perplexity reports (stage 14)."""
    lines = []
    for r in rows:
        quality = ", ".join(f"{k} {v}" for k, v in r["scores"].items())
        if r.get("empty_hypotheses"):  # each named in the decoding log, with the best non-empty score
            quality += f", {r['empty_hypotheses']} empty"
        peak, cache, held = r.get("peak_memory_bytes"), r.get("cache_bytes_peak"), r.get("cache_bytes_allocated_peak")
        lines.append(f"| {row_name(r)} | {r['test_set']} | {r['model']} | {quality} | "
                     f"{_number(r.get('total_decode_time_s'), '.2f')} | {r.get('utterances_per_s', '-')} | "
                     f"{r.get('tokens_per_s', '-')} | {_number(None if peak is None else peak / 2**20, '.1f')} | "
                     f"{_number(None if cache is None else cache / 1e6, '.3f')} | "
                     f"{_number(None if held is None else held / 1e6, '.3f')} |\n")
    # held: what the caches had allocated meanwhile (room to grow, the reorder spare): used <= held
    header = ("| experiment | test set | model | quality | decode time (s) | utterances/s | tokens/s | "
              "peak memory (MiB) | KV cache peak (MB) | KV cache held (MB) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    text = (f"# Results\n\nWritten by stage 10 of the pipeline from {source} (one row per experiment and "
            f"test set; decode time is the sum over utterances; \"N empty\": hypotheses decoded to nothing, "
            f"each named in the decoding log).\n\n{header}{''.join(lines)}")
    summaries = seed_summaries(rows)
    if summaries:
        text += "\nOver seeds (each score's mean +- standard deviation; speed and memory: means):\n\n"
        text += ("| experiment | test set | quality | utterances/s | peak memory (MiB) |\n|---|---|---|---|---|\n")
        for r in summaries:
            quality = ", ".join(f"{k} {v} +- {r['spread'][k]}" for k, v in r["scores"].items())
            peak = r.get("peak_memory_bytes")
            text += (f"| {row_name(r)} | {r['test_set']} | {quality} | {_number(r.get('utterances_per_s'), '.3f')} | "
                     f"{_number(None if peak is None else peak / 2**20, '.1f')} |\n")
    compared = comparisons(rows)
    if compared:
        text += "\nAgainst MHA (quality: difference in points; speed, memory, cache: ratios):\n\n"
        text += "".join(f"- {line}\n" for line in compared)
    effects = language_model_effects(rows)
    if effects:
        text += "\nWith a language model against without (shallow fusion, the decode config's lm_weight):\n\n"
        text += "".join(f"- {line}\n" for line in effects)
    if lms:
        text += ("\nLanguage models (stage 14: perplexity per token, <eos> included, on the dev text):\n\n"
                 "| language model | attention | model | dev tokens | perplexity |\n|---|---|---|---|---|\n")
        text += "".join(f"| {r['lm']} | {r.get('attention') or '-'} | {r.get('model', '-')} | {r.get('tokens', '-')} | "
                        f"{r['perplexity']} |\n" for r in lms)
    setups: Dict[str, List[str]] = {}
    for r in rows:
        if r.get("decoding"):
            setups.setdefault(describe_decoding(r["decoding"]), []).append(f"{row_name(r)} ({r['test_set']})")
    if setups:
        text += "\nHow the rows were decoded:\n\n" + "".join(
            f"- {', '.join(names)}: {setup}\n" for setup, names in setups.items())
    for test_set, image in sorted((figures or {}).items()):
        text += f"\n![{test_set}: the experiments side by side]({image})\n"
    curves = {r["experiment"]: r["learning_curves"] for r in rows if r.get("learning_curves")}  # one per experiment
    if curves:
        text += "\nLearning curves (ESPnet's, under each experiment's `images/`):\n\n"
        for experiment, images in curves.items():
            links = ", ".join(f"[{Path(image).stem}]({image})" for image in images)
            text += f"- {experiment}: {links}\n"
    return text
