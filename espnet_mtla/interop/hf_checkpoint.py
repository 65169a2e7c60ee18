"""Checkpoints of the reference implementation's HF port (``mtla.LlamaMTLAForCausalLM``) as ours.

The reference's port is a Llama (``LlamaDecoderLayer``: RMSNorm, SwiGLU MLP without biases)
whose attention is the reference MTLA layer with LayerNorm latents, rotating RoPE halves with
Llama's ``apply_rotary_pos_emb`` as we do. ``convert_reference_checkpoint`` reads its
directory (``config.json`` with ``model_type: llama-mtla``, and ``model.safetensors`` or
``pytorch_model.bin``, sharded or not) and returns our ``LlamaMTLAForCausalLM`` with the same
function: attention through ``reference_layer``, norms and MLP copied (our MLP's biases zero).

    python -m espnet_mtla.bin.import_reference hf path/to/reference_model out_dir
    LlamaMTLAForCausalLM.from_pretrained("out_dir")
"""

import json
import shutil
from pathlib import Path
from typing import Dict, Tuple

import torch

from espnet_mtla.storage import safe_load
from espnet_mtla.interop.reference_layer import (
    ReferenceFormatError,
    convert_reference_layer,
    reference_layer_config,
    strip_prefix,
)
from espnet_mtla.hf.configuration import LlamaMTLAConfig
from espnet_mtla.hf.modeling import LlamaMTLAForCausalLM

REFERENCE_MODEL_TYPE = "llama-mtla"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "generation_config.json")
# Fields of the reference's config that ours does not have (its prompt handling is always causal here).
_DROPPED = ("model_type", "architectures", "transformers_version", "auto_map", "recompute_prompt_attn",
            "partial_rotary_factor", "torch_dtype", "dtype", "use_cache")


def read_checkpoint(path: Path) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """(config.json as a dict, every weight tensor) of a reference HF checkpoint directory."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ReferenceFormatError(f"{path}: no config.json (expected a reference LlamaMTLAForCausalLM directory, "
                                   "as save_pretrained writes it)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ReferenceFormatError(f"{config_file}: not JSON ({err})") from None
    if config.get("model_type") != REFERENCE_MODEL_TYPE:
        raise ReferenceFormatError(f"{config_file}: model_type is {config.get('model_type')!r}, not the reference "
                                   f"port's {REFERENCE_MODEL_TYPE!r}")
    found = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if found is None:
        raise ReferenceFormatError(f"{path}: no weights ({' or '.join(WEIGHT_FILES)})")
    if found.name.endswith(".index.json"):
        shards = sorted(set(json.loads(found.read_text())["weight_map"].values()))
        files = [path / shard for shard in shards]
    else:
        files = [found]
    weights = {}
    for file in files:
        state = safe_load.load(file, map_location="cpu")
        if not isinstance(state, dict):
            raise ReferenceFormatError(f"{file}: not a state dict")
        weights.update(state)
    return config, weights


def our_config(reference: dict, source: str) -> LlamaMTLAConfig:
    """Our config with the reference's shapes; refuses what our model cannot compute the same way."""
    scaling = reference.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise ReferenceFormatError(f"{source}: rope_scaling {scaling!r} is not supported (plain RoPE only)")
    heads = reference["num_attention_heads"]
    head_dim = reference.get("head_dim") or reference["hidden_size"] // heads
    rope, nope = reference.get("qk_rope_head_dim", 32), reference.get("qk_nope_head_dim", 64)
    if int(head_dim * rope / nope) != rope:  # Llama's rotary size is head_dim * partial_rotary_factor
        raise ReferenceFormatError(f"{source}: head_dim {head_dim} differs from qk_nope_head_dim {nope}: the "
                                   f"reference rotates {int(head_dim * rope / nope)} dims of a {rope}-dim rope key "
                                   "(it cannot run this model itself)")
    fields = {k: v for k, v in reference.items() if k not in _DROPPED}
    fields.update(attention_type="mtla", latent_norm="layer_norm", attention_bias=False,
                  q_lora_rank=reference.get("q_lora_rank") or None)
    return LlamaMTLAConfig(**fields)


def convert_weights(weights: Dict[str, torch.Tensor], config: LlamaMTLAConfig,
                    source: str) -> Dict[str, torch.Tensor]:
    """The reference port's tensors under our names (attention via reference_layer)."""
    out, used = {}, set()

    def take(ref, ours):
        if ref not in weights:
            raise ReferenceFormatError(f"{source}: not a reference LlamaMTLAForCausalLM: missing key {ref!r}")
        used.add(ref)
        out[ours] = weights[ref]

    take("model.embed_tokens.weight", "model.embed_tokens.weight")
    take("model.norm.weight", "model.norm.weight")
    if "lm_head.weight" in weights or not config.tie_word_embeddings:
        take("lm_head.weight", "lm_head.weight")
    for i in range(config.num_hidden_layers):
        ref, ours = f"model.layers.{i}.", f"model.layers.{i}."
        attn = strip_prefix(weights, ref + "self_attn.")
        layer_config = reference_layer_config(attn, config.num_attention_heads, config.down_rate,
                                              f"{source} (layer {i})")
        converted, _ = convert_reference_layer(attn, layer_config, f"{source} (layer {i})", interleaved_rope=False)
        out.update({f"{ours}self_attn.{k}": v for k, v in converted.items()})
        used.update(ref + "self_attn." + k for k in attn)
        # the rest of the layer has Llama's names on both sides
        for name in ("input_layernorm.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight",
                     "mlp.up_proj.weight", "mlp.down_proj.weight"):
            take(ref + name, ours + name)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            if f"{ref}mlp.{proj}.bias" in weights:  # mlp_bias: true
                take(f"{ref}mlp.{proj}.bias", f"{ours}mlp.{proj}.bias")
    unknown = sorted(set(weights) - used)
    if unknown:
        raise ReferenceFormatError(f"{source}: unexpected key {unknown[0]!r} for a reference LlamaMTLAForCausalLM "
                                   f"with {config.num_hidden_layers} layers")
    return out


def convert_reference_checkpoint(path: Path) -> LlamaMTLAForCausalLM:
    """Our model computing what the reference port's checkpoint at ``path`` computes."""
    reference, weights = read_checkpoint(path)
    config = our_config(reference, str(Path(path) / "config.json"))
    converted = convert_weights(weights, config, str(path))
    model = LlamaMTLAForCausalLM(config)
    state = model.state_dict()
    if config.tie_word_embeddings:
        converted.setdefault("lm_head.weight", converted["model.embed_tokens.weight"])
    model.load_state_dict({k: v.to(state[k].dtype) for k, v in converted.items()})
    return model.eval()


def copy_tokenizer_files(source: Path, target: Path) -> list:
    """Copy the checkpoint's tokenizer (and generation config) files; returns their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copy2(Path(source) / name, Path(target) / name)
            copied.append(name)
    return copied
