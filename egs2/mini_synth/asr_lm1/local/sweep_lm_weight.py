"""LM weight x length bonus on dev for this recipe's acoustic model, then test at each LM's best.

    cd egs2/mini_synth/asr_lm1 && python local/sweep_lm_weight.py [--am exp/asr_train_mtla]

Stage 8 fuses every LM with the decode config's one lm_weight and tunes only the length bonus
(--tune_penalty); this sweeps both on dev, for no LM and for each trained LM (exp/lm_train_lm_*),
decodes test with each one's best dev setting (the API's batched search, conf/decode.yaml
otherwise) and writes exp/lm_weight_sweep.json. WER is stage 9's (``metrics.scoring.wer``:
sclite) over the dump's text. On test it also counts the homophone objects (``a pear``/``a
pair``: grammar.HOMOPHONES) the hypothesis spells as the reference does: what only context decides.
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch

from espnet_mtla.api import load_model
from espnet_mtla.data.grammar import HOMOPHONES
from espnet_mtla.data.long_form import read_table
from espnet_mtla.metrics.scoring import wer

WEIGHTS = (0.2, 0.35, 0.5, 0.8, 1.0)
BONUSES = (0.0, 0.5, 1.0, 1.5, 2.0)


def homophones_right(refs: dict, hyps: dict) -> tuple:
    """(right, total): reference homophone phrases the hypothesis holds as they are spelt."""
    phrases = [en for pair in HOMOPHONES for en, _ in pair]
    found = [(key, phrase) for key, ref in refs.items() for phrase in phrases if f" {phrase} " in f" {ref} "]
    return sum(f" {phrase} " in f" {hyps[key]} " for key, phrase in found), len(found)


def decode(am: Path, lm, weight: float, bonus: float, data: Path) -> tuple:
    """(WER, references, hypotheses) of one setting on one set."""
    options = dict(penalty=bonus, lm_weight=weight)
    if lm is not None:
        options.update(lm_train_config=str(lm / "config.yaml"), lm_file=str(lm / "valid.loss.ave.pth"))
    model = load_model(am, decode_config="conf/decode.yaml", **options)
    wavs, refs = read_table(data / "wav.scp"), read_table(data / "text")
    keys = sorted(refs)
    hyps = dict(zip(keys, (r.text for r in model([wavs[k] for k in keys]))))
    with tempfile.TemporaryDirectory() as scoring:
        return wer(refs, hyps, scoring)["wer"], refs, hyps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--am", default="exp/asr_train_mtla")
    parser.add_argument("--dump", default="dump/flac")
    opts = parser.parse_args()
    torch.set_num_threads(1)
    am, dump = Path(opts.am), Path(opts.dump)
    lms = {"none": None, **{p.name: p for p in sorted(Path("exp").glob("lm_train_lm_*"))}}
    dev, best = {}, {}
    for name, lm in lms.items():
        for weight in ((0.0,) if lm is None else WEIGHTS):
            for bonus in BONUSES:
                dev[f"{name} {weight} {bonus}"] = score = decode(am, lm, weight, bonus, dump / "dev")[0]
                print(f"dev: {name}, LM weight {weight}, bonus {bonus}: WER {score}", flush=True)
        key = min((k for k in dev if k.split()[0] == name), key=lambda k: (dev[k], k))
        _, weight, bonus = key.split()
        test, refs, hyps = decode(am, lm, float(weight), float(bonus), dump / "test")
        right, total = homophones_right(refs, hyps)
        best[name] = {"lm_weight": float(weight), "bonus": float(bonus), "dev_wer": dev[key], "test_wer": test,
                      "test_homophones_right": right, "test_homophones": total}
        print(f"best on dev: {name}: {best[name]}", flush=True)
    Path("exp/lm_weight_sweep.json").write_text(json.dumps({"dev": dev, "best": best}, indent=1) + "\n")


if __name__ == "__main__":
    main()
