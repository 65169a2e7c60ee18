"""Make a recipe's conf/ from conf_templates/: one train config per attention type.

    python -m espnet_mtla.bin.make_confs --template conf_templates/asr_mini.yaml \\
        --decode conf_templates/decode_asr.yaml --out egs2/mini_synth/asr1/conf

Writes ``train_<type>.yaml`` for mha, mqa, gqa, mla and mtla (the template with
``decoder_conf.attention_type`` set; everything else identical, so results compare the
attention alone) and copies the decode config to ``decode.yaml``.
"""

import argparse
from pathlib import Path

import yaml

from espnet_mtla.attention import ATTENTION_TYPES
from espnet_mtla.fileio import write_text_atomic


def render(template: Path, attention_type: str) -> str:
    config = yaml.safe_load(template.read_text())
    config["decoder_conf"]["attention_type"] = attention_type
    header = (f"# Generated from {template.as_posix()} by espnet_mtla.bin.make_confs "
              f"(attention_type: {attention_type}); edit the template and re-run.\n")
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)


def make_confs(template: Path, decode: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for attention_type in ATTENTION_TYPES:
        write_text_atomic(out / f"train_{attention_type}.yaml", render(template, attention_type))
    write_text_atomic(out / "decode.yaml", f"# Copied from {decode.as_posix()} by espnet_mtla.bin.make_confs.\n"
                      + decode.read_text())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", type=Path, required=True)
    parser.add_argument("--decode", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    make_confs(args.template, args.decode, args.out)


if __name__ == "__main__":
    main()
