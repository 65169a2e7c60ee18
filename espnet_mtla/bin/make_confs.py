"""Make a recipe's conf/ from conf_templates/: one train config per attention type.

    python -m espnet_mtla.bin.make_confs --all      # every recipe in RECIPES below
    python -m espnet_mtla.bin.make_confs --template conf_templates/asr_mini.yaml \\
        --decode conf_templates/decode_asr.yaml --out egs2/mini_synth/asr1/conf [--prefix train_]

Writes ``<prefix><type>.yaml`` for every registered attention type (the template with
``decoder_conf.attention_type``, or a language model's ``lm_conf.attention_type``, set; everything else identical, so results compare the
attention alone) and copies the decode config to ``decode.yaml``.
"""

import argparse
from pathlib import Path
from typing import Optional

import yaml

from espnet_mtla.attention.registry import attention_types
from espnet_mtla.storage.fileio import write_text_atomic

ROOT = Path(__file__).resolve().parents[2]
# recipe conf dir -> [(train template, decode template, file prefix)], paths relative to the repository
RECIPES = {
    "egs2/mini_synth/asr1/conf": [("asr_mini.yaml", "decode_asr.yaml", "train_"),
                                  ("asr_mini_encdec.yaml", None, "train_encdec_"),
                                  ("lm_mini.yaml", None, "train_lm_")],
    "egs2/mini_synth/asr_lm1/conf": [("asr_mini.yaml", "decode_asr_lm.yaml", "train_"),
                                     ("lm_mini.yaml", None, "train_lm_")],
    "egs2/mini_synth/st1/conf": [("st_mini.yaml", "decode_st.yaml", "train_"),
                                 ("st_mini_encdec.yaml", None, "train_encdec_")],
    "egs2/mini_synth/slu1/conf": [("slu_mini.yaml", "decode_slu.yaml", "train_")],
    "egs2/mini_synth/mt1/conf": [("mt_mini.yaml", "decode_mt.yaml", "train_")],
    "egs2/ami/asr1/conf": [("asr_paper.yaml", "decode_asr_paper.yaml", "train_"),
                           ("asr_ssl_paper.yaml", None, "train_ssl_"),
                           ("asr_paper_encdec.yaml", None, "train_encdec_")],
    "egs2/mustc/st1/conf": [("st_paper.yaml", "decode_st_paper.yaml", "train_"),
                            ("st_paper_encdec.yaml", None, "train_encdec_")],
    "egs2/slurp/slu1/conf": [("slu_paper.yaml", "decode_slu_paper.yaml", "train_"),
                             ("slu_paper_encdec.yaml", None, "train_encdec_")],
    "egs2/xsum/sum1/conf": [("sum_paper.yaml", "decode_sum_paper.yaml", "train_"),
                            ("sum_paper_encdec.yaml", None, "train_encdec_")],
}


def render(template: Path, attention_type: str) -> str:
    config = yaml.safe_load(template.read_text())
    config["lm_conf" if "lm_conf" in config else "decoder_conf"]["attention_type"] = attention_type
    header = (f"# Generated from {template.as_posix()} by espnet_mtla.bin.make_confs "
              f"(attention_type: {attention_type}); edit the template and re-run.\n")
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)


def make_confs(template: Path, decode: Optional[Path], out: Path, prefix: str = "train_") -> None:
    out.mkdir(parents=True, exist_ok=True)
    for attention_type in attention_types():
        write_text_atomic(out / f"{prefix}{attention_type}.yaml", render(template, attention_type))
    if decode is not None:
        write_text_atomic(out / "decode.yaml", f"# Copied from {decode.as_posix()} by espnet_mtla.bin.make_confs.\n"
                          + decode.read_text())


def make_all() -> None:
    """Every recipe's conf/, run from the repository root (the headers name relative paths)."""
    for out, entries in RECIPES.items():
        for template, decode, prefix in entries:
            make_confs(Path("conf_templates") / template, decode and Path("conf_templates") / decode, ROOT / out, prefix)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="every recipe in RECIPES (run from the repository root)")
    parser.add_argument("--template", type=Path)
    parser.add_argument("--decode", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--prefix", default="train_")
    args = parser.parse_args(argv)
    if args.all:
        make_all()
    elif args.template and args.out:
        make_confs(args.template, args.decode, args.out, args.prefix)
    else:
        parser.error("give --all, or --template and --out")


if __name__ == "__main__":
    main()
