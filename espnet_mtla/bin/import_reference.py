"""Bring models trained with the reference implementation (pip ``mtla``, its HF port, its fairseq
recipes) to espnet_mtla, with the same function.

    python -m espnet_mtla.bin.import_reference layer REF.pt OUT.pth --num_heads 8 [--down_rate 2] [--prefix P]
    python -m espnet_mtla.bin.import_reference hf REF_DIR OUT_DIR
    python -m espnet_mtla.bin.import_reference fairseq CHECKPOINT.pt OUT_DIR

layer: a ``MultiheadTemporalLatentAttention`` (or fairseq ``MultiheadLatentAttention``) state
dict, or a larger one whose layer sits under ``--prefix``; writes ``{"config": ..., "state_dict":
...}`` where ``build_attention(**config).load_state_dict(state_dict)`` rebuilds it.
hf: a ``LlamaMTLAForCausalLM`` directory -> ours, loadable with ``from_pretrained(OUT_DIR)``.
fairseq: see ``espnet_mtla.interop.fairseq_checkpoint`` (decoder stack -> ``DecoderOnlyDecoder``).
Input files are read without unpickling code (espnet_mtla.storage.safe_load); outputs appear whole or
not at all. A file that is not what it claims gives one line naming it and the first bad key.
"""

import argparse
import sys
from pathlib import Path

import torch

from espnet_mtla.storage import safe_load
from espnet_mtla.interop.reference_layer import (
    ReferenceFormatError,
    convert_reference_layer,
    reference_layer_config,
    strip_prefix,
)
from espnet_mtla.storage.errors import one_line_errors
from espnet_mtla.storage.fileio import write_atomic, write_directory_atomic


def import_layer(source: Path, out: Path, num_heads: int, down_rate: int = 2, prefix: str = "") -> dict:
    state = safe_load.load(source, map_location="cpu")
    if not isinstance(state, dict):
        raise ReferenceFormatError(f"{source}: not a state dict")
    state = state.get("model", state)  # a training checkpoint holds the state dict under "model"
    if prefix:
        state = strip_prefix(state, prefix)
        if not state:
            raise ReferenceFormatError(f"{source}: no key starts with --prefix {prefix!r}")
    config = reference_layer_config(state, num_heads, down_rate, str(source))
    converted, notes = convert_reference_layer(state, config, str(source))
    write_atomic(out, lambda tmp: torch.save({"config": config, "state_dict": converted}, tmp))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return config


def import_hf(source: Path, out: Path) -> None:
    from espnet_mtla.interop.hf_checkpoint import convert_reference_checkpoint, copy_tokenizer_files

    model = convert_reference_checkpoint(source)
    write_directory_atomic(out, lambda tmp: (model.save_pretrained(tmp), copy_tokenizer_files(source, tmp)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " " + __doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="kind", required=True)
    layer = sub.add_parser("layer", help="one reference MTLA/MLA layer's state dict")
    layer.add_argument("source", type=Path)
    layer.add_argument("out", type=Path)
    layer.add_argument("--num_heads", type=int, required=True, help="not stored in a state dict")
    layer.add_argument("--down_rate", type=int, default=2, help="MTLA's s (not stored in a state dict)")
    layer.add_argument("--prefix", default="", help="the layer's key prefix in a larger state dict")
    hf = sub.add_parser("hf", help="a reference LlamaMTLAForCausalLM directory")
    hf.add_argument("source", type=Path)
    hf.add_argument("out", type=Path)
    fairseq = sub.add_parser("fairseq", help="a reference fairseq decoder-only checkpoint")
    fairseq.add_argument("source", type=Path)
    fairseq.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    for path in [args.source]:
        if not path.exists():
            parser.exit(1, f"error: {path}: no such file or directory\n")

    def run():
        if args.kind == "layer":
            config = import_layer(args.source, args.out, args.num_heads, args.down_rate, args.prefix)
            print(f"wrote {args.out}: {config['attention_type']} layer {config}")
        elif args.kind == "hf":
            import_hf(args.source, args.out)
            print(f"wrote {args.out}: LlamaMTLAForCausalLM.from_pretrained({str(args.out)!r}) loads it")
        else:
            from espnet_mtla.interop.fairseq_checkpoint import import_fairseq

            import_fairseq(args.source, args.out)

    return one_line_errors(run, (ReferenceFormatError, safe_load.UnsafeModelFileError))


if __name__ == "__main__":
    sys.exit(main())
