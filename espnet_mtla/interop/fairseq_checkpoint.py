"""The reference toolkit's fairseq decoder-only speech models as our decoder stack.

The MTLA paper's models (fairseq archs ``s2t_decoder_only_{MTLA,MLA,roformer,GQAroformer,
MQAroformer}_cross_xm``) are a speech encoder, a projector (``EncoderProjectorConcat``) and a
decoder-only stack whose layers compute ``h = N1(h + attn(N1(h)))`` then ``h = N2(h + ffn(h))``
with the projector's output as keys/values only; our stack computes that with
``norm_layout: mtla_fairseq`` and ``prefix_mode: kv_only``. ``import_fairseq`` writes:

- ``decoder.pth``: the decoder's state dict under ``decoder.`` (our ESPnet model's names), for
  ``--init_param OUT/decoder.pth`` or to load into a model built with ``decoder_conf.yaml``;
- ``decoder_conf.yaml``: ``decoder: decoder_only`` and the ``decoder_conf`` that reproduces it;
- ``encoder.pth``: the encoder tensors that map onto ESPnet's ``TransformerEncoder``
  (``encoder.encoders.N.*``, ``encoder.after_norm.*``, ``ctc.ctc_lo.*``); the rest (the Conv1d+GLU
  subsampler, which no ESPnet input layer has) is listed by name as not converted;
- ``report.txt``: what was converted, dropped and not converted.

Exact for one utterance at a time (fairseq attends to padded prefix frames in batches) and for
``encoder_projector_ds_rate`` 1 as in every recipe of the paper (with k > 1 fairseq drops the
last T mod k frames where we pad them: noted in the report). The vocabulary keeps fairseq's
order (``<s>`` = 0 is CTC's blank, ``</s>`` = 2 is BOS and EOS): make the ESPnet token list
``<blank> <pad> <sos/eos> <unk>`` followed by the dictionary's lines.
"""

import argparse
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from espnet_mtla.storage import safe_load
from espnet_mtla.interop.reference_layer import (
    ReferenceFormatError,
    convert_reference_layer,
    permute_rope_rows,
    reference_layer_config,
    strip_prefix,
)
from espnet_mtla.storage.fileio import write_directory_atomic

# arch -> our attention type (the reference's GQA layers have 2 kv heads, fixed in its code)
ARCHS = {
    "s2t_decoder_only_MTLA_cross_xm": "mtla",
    "s2t_decoder_only_MLA_cross_xm": "mla",
    "s2t_decoder_only_roformer_cross_xm": "mha",
    "s2t_decoder_only_GQAroformer_cross_xm": "gqa",
    "s2t_decoder_only_MQAroformer_cross_xm": "mqa",
}


def read_checkpoint(path: Path) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """(the model's arguments as a dict, the model's state dict) of a fairseq checkpoint."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = safe_load.load(path, map_location="cpu")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ReferenceFormatError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    args = checkpoint.get("args")
    if args is None:
        args = (checkpoint.get("cfg") or {}).get("model")
    if args is None:
        raise ReferenceFormatError(f"{path}: a fairseq checkpoint without its model arguments ('args' or cfg.model)")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return args, {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["model"].items()}


def decoder_conf(args: dict, state: Dict[str, torch.Tensor], source: str) -> dict:
    """Our ``decoder_conf`` for the reference decoder (refusing what our stack cannot compute the same)."""
    arch = args.get("arch") or args.get("_name")
    if arch not in ARCHS:
        raise ReferenceFormatError(f"{source}: arch {arch!r} is not one of the reference's decoder-only speech "
                                   f"models ({', '.join(ARCHS)})")
    if args.get("layernorm_embedding"):
        raise ReferenceFormatError(f"{source}: layernorm_embedding is on: our stack has no embedding LayerNorm")
    if args.get("no_scale_embedding"):
        raise ReferenceFormatError(f"{source}: no_scale_embedding is on: our stack scales embeddings by sqrt(D)")
    if "decoder.layer_norm.weight" not in state:
        raise ReferenceFormatError(f"{source}: no final decoder LayerNorm (decoder.layer_norm): our stack has one")

    def need(key):
        if key not in state:
            raise ReferenceFormatError(f"{source}: not a reference decoder-only model: missing key {key!r}")
        return state[key]

    if "decoder_attention_heads" not in args:
        raise ReferenceFormatError(f"{source}: its model arguments lack decoder_attention_heads")
    attention_type = ARCHS[arch]
    heads, dim = args["decoder_attention_heads"], need("decoder.embed_tokens.weight").shape[1]
    linear_units = need("decoder.layers.0.fc1.weight").shape[0]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.layers."))
    conf = {
        "attention_type": attention_type, "model_dim": dim, "attention_heads": heads,
        "linear_units": linear_units, "num_blocks": layers,
        "ffn_activation": "relu", "norm_type": "layer_norm", "norm_layout": "mtla_fairseq", "dropout_rate": 0.0,
        "tie_embeddings": bool(args.get("share_decoder_input_output_embed", False)),
        "prefix_stack": args.get("encoder_projector_ds_rate", 1),
        "prefix_hidden": need("decoder.projector.linear1.weight").shape[0], "prefix_mode": "kv_only",
        "attention_conf": {"dropout": 0.0, "bias": attention_type in ("mha", "mqa", "gqa"), "rope_base": 10000.0},
    }
    if attention_type == "gqa":
        conf["gqa_conf"] = {"num_kv_heads": 2}
    if attention_type in ("mla", "mtla"):
        attn = strip_prefix(state, "decoder.layers.0.self_attn.")
        layer = reference_layer_config(attn, heads, args.get("decoder_down_rate", 2), f"{source} (decoder.layers.0)")
        conf["mla_conf"] = {k: layer[k] for k in ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                                                  "qk_rope_head_dim", "v_head_dim", "latent_norm")}
        if attention_type == "mtla":
            if layer["down_rate"] < 2:
                raise ReferenceFormatError(f"{source}: decoder_down_rate {layer['down_rate']}: the reference's MTLA "
                                           "decodes wrongly with s = 1 (use MLA)")
            conf["mtla_conf"] = {"down_rate": layer["down_rate"], "hypernet_rank_ratio": layer["hypernet_rank_ratio"]}
    return conf


def convert_decoder(state: Dict[str, torch.Tensor], conf: dict, source: str) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The reference decoder's tensors under our DecoderOnlyStack's names; returns (tensors, notes)."""
    out, notes, used = {}, [], {"decoder.version"}

    def take(ref, ours):
        if ref not in state:
            raise ReferenceFormatError(f"{source}: not a reference decoder-only model: missing key {ref!r}")
        used.add(ref)
        out[ours] = state[ref].clone()

    take("decoder.embed_tokens.weight", "embed.weight")
    if conf["tie_embeddings"]:
        used.add("decoder.output_projection.weight")
    else:
        take("decoder.output_projection.weight", "output.weight")
    take("decoder.layer_norm.weight", "final_norm.weight")
    take("decoder.layer_norm.bias", "final_norm.bias")
    for ref, ours in (("linear1", "net.0"), ("linear2", "net.2")):
        for part in ("weight", "bias"):
            take(f"decoder.projector.{ref}.{part}", f"projector.{ours}.{part}")
    heads, attention_type = conf["attention_heads"], conf["attention_type"]
    for n in range(conf["num_blocks"]):
        ref, ours = f"decoder.layers.{n}.", f"layers.{n}."
        for part in ("weight", "bias"):
            take(f"{ref}self_attn_layer_norm.{part}", f"{ours}attn_norm.{part}")
            take(f"{ref}final_layer_norm.{part}", f"{ours}ffn_norm.{part}")
            take(f"{ref}fc1.{part}", f"{ours}ffn.w1.{part}")
            take(f"{ref}fc2.{part}", f"{ours}ffn.w2.{part}")
        attn = strip_prefix(state, ref + "self_attn.")
        if attention_type in ("mla", "mtla"):
            layer = reference_layer_config(attn, heads, conf.get("mtla_conf", {}).get("down_rate", 2), f"{source} ({ref})")
            converted, layer_notes = convert_reference_layer(attn, layer, f"{source} ({ref})")
            notes += [f"{ref}self_attn: {note}" for note in layer_notes]
        else:
            converted = _convert_rotary_mha(attn, heads, conf["model_dim"] // heads, f"{source} ({ref}self_attn)")
        out.update({f"{ours}attn.{k}": v for k, v in converted.items()})
        used.update(ref + "self_attn." + k for k in attn)
    dropped = sorted(k for k in state if k.startswith("decoder.") and k not in used and ".encoder_attn" in k)
    used.update(dropped)
    if dropped:
        notes.append(f"dropped {len(dropped)} cross-attention tensors the reference builds but never calls")
    unknown = sorted(k for k in state if k.startswith("decoder.") and k not in used)
    if unknown:
        raise ReferenceFormatError(f"{source}: unexpected key {unknown[0]!r} for a reference "
                                   f"{attention_type.upper()} decoder-only model")
    if conf["prefix_stack"] > 1:
        notes.append(f"encoder_projector_ds_rate {conf['prefix_stack']}: fairseq drops the last T mod "
                     f"{conf['prefix_stack']} encoder frames where we pad them (the last prefix slot differs then)")
    return out, notes


def _convert_rotary_mha(attn: Dict[str, torch.Tensor], heads: int, head_dim: int, source: str) -> Dict[str, torch.Tensor]:
    """fairseq RotaryMultiheadAttention / GQA (q/k/v/out_proj with biases, interleaved RoPE on whole heads)."""
    out = {}
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        for part in ("weight", "bias"):
            key = f"{name}.{part}"
            if key not in attn:
                raise ReferenceFormatError(f"{source}: missing key {key!r}")
            tensor = attn[key]
            if name in ("q_proj", "k_proj"):  # every head dim is rotary: permute pairs to halves per head
                tensor = permute_rope_rows(tensor, tensor.shape[0] // head_dim, 0, head_dim)
            out[key] = tensor.clone()
    return out


def convert_encoder(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Encoder tensors that map onto ESPnet's TransformerEncoder (and CTC); returns (tensors, not converted)."""
    names = {"self_attn.q_proj": "self_attn.linear_q", "self_attn.k_proj": "self_attn.linear_k",
             "self_attn.v_proj": "self_attn.linear_v", "self_attn.out_proj": "self_attn.linear_out",
             "self_attn_layer_norm": "norm1", "final_layer_norm": "norm2", "fc1": "feed_forward.w_1",
             "fc2": "feed_forward.w_2"}
    out, missed = {}, []
    for key, value in state.items():
        if not key.startswith("encoder."):
            continue
        parts = key.split(".")
        if parts[1] == "transformer_layers" and ".".join(parts[3:-1]) in names:
            out[f"encoder.encoders.{parts[2]}.{names['.'.join(parts[3:-1])]}.{parts[-1]}"] = value.clone()
        elif parts[1] == "layer_norm":
            out[f"encoder.after_norm.{parts[-1]}"] = value.clone()
        elif parts[1] == "ctc_proj":
            out[f"ctc.ctc_lo.{parts[-1]}"] = value.clone()
        else:
            missed.append(key)
    return out, missed


def import_fairseq(source: Path, out_dir: Path) -> dict:
    """Write decoder.pth, decoder_conf.yaml, encoder.pth and report.txt into ``out_dir`` (whole or not at all)."""
    import yaml

    args, state = read_checkpoint(source)
    conf = decoder_conf(args, state, str(source))
    decoder, notes = convert_decoder(state, conf, str(source))
    encoder, missed = convert_encoder(state)
    others = sorted(k for k in state if not k.startswith(("decoder.", "encoder.")))
    vocab = state["decoder.embed_tokens.weight"].shape[0]
    report = [f"source: {source}", f"arch: {args.get('arch') or args.get('_name')} -> decoder_conf.attention_type "
              f"{conf['attention_type']}", f"vocabulary: {vocab} (fairseq order: <s>=blank, <pad>, </s>=<sos/eos>, "
              "<unk>, then dict.txt)", f"decoder: {len(decoder)} tensors converted (decoder.pth)"]
    report += [f"note: {note}" for note in notes]
    report.append(f"encoder: {len(encoder)} tensors mapped onto ESPnet's TransformerEncoder/CTC (encoder.pth; "
                  "LayerNorm eps there is 1e-12, fairseq's 1e-5)")
    report += [f"not converted: {key} (no ESPnet counterpart)" for key in missed + others]

    def write(tmp: Path) -> None:
        torch.save({f"decoder.{k}": v for k, v in decoder.items()}, tmp / "decoder.pth")
        torch.save(encoder, tmp / "encoder.pth")
        (tmp / "decoder_conf.yaml").write_text(yaml.safe_dump({"decoder": "decoder_only", "decoder_conf": conf},
                                                               sort_keys=False))
        (tmp / "report.txt").write_text("\n".join(report) + "\n")

    write_directory_atomic(out_dir, write)
    print("\n".join(report))
    return conf

