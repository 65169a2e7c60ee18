"""Importing the reference implementation's checkpoints: its HF port and single layers, by command.

The reference HF port is built from its own classes (pip mtla==0.3.2, in .venv-bench/mtla) and
saved with its own ``save_pretrained``. It does not run under transformers 5 as a whole (its
layers call the attention with transformers 4's arguments), so its function is computed here
from its own modules, wired as ``LlamaDecoderLayer`` wires them.
"""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from espnet_mtla.attention import build_attention
from espnet_mtla.interop import reference_package
from espnet_mtla.bin.import_reference import main as import_reference
from test_reference_layer import DIMS, H, D, TOL, reference, reference_layer, reference_parallel, inputs  # noqa: F401

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference_hf(reference):  # noqa: F811  (the fixture installs the reference)
    sys.path.insert(0, str(ROOT / reference_package.DEFAULT_DIR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from mtla.mtla_hf.configuration_mtla import LlamaMTLAConfig
            from mtla.mtla_hf.modeling_mtla import LlamaMTLAForCausalLM
    finally:
        sys.path.pop(0)
    return LlamaMTLAConfig, LlamaMTLAForCausalLM


def reference_logits(model, ids):
    """The reference port's forward, from its own modules (embedding, Llama rotary, layers, norm, head)."""
    h = model.model.embed_tokens(ids)
    rotary = model.model.rotary_emb(h, torch.arange(ids.shape[1]).unsqueeze(0))
    for layer in model.model.layers:
        h = h + layer.self_attn(layer.input_layernorm(h), position_embeddings=rotary)[0]
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return model.lm_head(model.model.norm(h))


def saved_reference_model(reference_hf, path, down_rate=3, tie=False, safe=True):
    config_class, model_class = reference_hf
    # head_dim = qk_nope_head_dim = qk_rope_head_dim: the reference's own rotary size rule holds
    # under transformers 4 and 5 alike.
    config = config_class(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16,
                          v_head_dim=16, down_rate=down_rate, rms_norm_eps=1e-5, tie_word_embeddings=tie)
    torch.manual_seed(0)
    model = model_class(config).eval()
    if tie:  # its __init__ replaces the tied LlamaModel after tying: tie again, as loading does
        model.lm_head.weight = model.model.embed_tokens.weight
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.uniform_(0.5, 1.5) if "norm" in name and p.dim() == 1 and "bias" not in name else p.normal_(0.0, 0.2)
    model.save_pretrained(path)
    if not safe:  # transformers 4's pytorch_model.bin (transformers 5 writes safetensors only)
        from safetensors.torch import load_file

        torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")
        (path / "model.safetensors").unlink()
    return model


@pytest.mark.parametrize("down_rate,tie,safe", [(2, False, True), (3, True, False)],
                         ids=["s2-safetensors", "s3-tied-bin"])
def test_hf_checkpoint_converts_to_the_same_function(reference_hf, tmp_path, down_rate, tie, safe):
    from espnet_mtla.hf import LlamaMTLAForCausalLM

    ref = saved_reference_model(reference_hf, tmp_path / "ref", down_rate, tie, safe)
    assert (tmp_path / "ref" / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    assert import_reference(["hf", str(tmp_path / "ref"), str(tmp_path / "ours")]) == 0
    ours = LlamaMTLAForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert ours.config.down_rate == down_rate and ours.config.latent_norm == "layer_norm"
    ids = torch.randint(0, 50, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference_logits(ref, ids)
        assert (ours(ids).logits - expected).abs().max() < TOL
        # and generation on our compressed cache follows the same function
        greedy = ours.generate(ids[:, :5], max_new_tokens=6, do_sample=False)
        assert torch.equal(ours(greedy).logits[:, 4:-1].argmax(-1), greedy[:, 5:])
    assert not (tmp_path / ".ours.partial").exists()


def test_hf_checkpoint_errors_name_the_file(reference_hf, tmp_path, capsys):
    saved_reference_model(reference_hf, tmp_path / "ref")
    assert import_reference(["hf", str(tmp_path / "ref"), str(tmp_path / "ours")]) == 0
    # our own output is not a reference checkpoint
    assert import_reference(["hf", str(tmp_path / "ours"), str(tmp_path / "again")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'ours' / 'config.json'}: model_type is 'llama_mtla', not the reference port's 'llama-mtla'")
    # a layer missing from the weights
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "ref" / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, tmp_path / "ref" / "model.safetensors")
    assert import_reference(["hf", str(tmp_path / "ref"), str(tmp_path / "broken")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'ref'}: not a reference LlamaMTLAForCausalLM: missing key 'model.layers.1.mlp.up_proj.weight'")
    assert not (tmp_path / "broken").exists() and not (tmp_path / ".broken.partial").exists()


def test_layer_command_round_trip(reference, tmp_path, capsys):  # noqa: F811
    ref = reference_layer(reference, 3, bias=True)
    nested = {"model": {f"decoder.layers.0.self_attn.{k}": v for k, v in ref.state_dict().items()}}
    torch.save(nested, tmp_path / "checkpoint.pt")
    assert import_reference(["layer", str(tmp_path / "checkpoint.pt"), str(tmp_path / "layer.pth"), "--num_heads",
                             str(H), "--down_rate", "3", "--prefix", "decoder.layers.0.self_attn."]) == 0
    assert "note: wkv_b.bias dropped (the reference never reads it)" in capsys.readouterr().err
    saved = torch.load(tmp_path / "layer.pth")
    ours = build_attention(**saved["config"]).eval()
    ours.load_state_dict(saved["state_dict"])
    x, pos = inputs()
    with torch.no_grad():
        assert (ours(x) - reference_parallel(ref, x, pos)).abs().max() < TOL


def test_layer_command_errors(tmp_path, capsys):
    (tmp_path / "garbage.pt").write_text("not a model")
    assert import_reference(["layer", str(tmp_path / "garbage.pt"), str(tmp_path / "out.pth"), "--num_heads", "4"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'garbage.pt'}: not a readable PyTorch file")
    torch.save(build_attention("mla", D, H, **DIMS).state_dict(), tmp_path / "ours.pt")
    assert import_reference(["layer", str(tmp_path / "ours.pt"), str(tmp_path / "out.pth"), "--num_heads", "4"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'ours.pt'}: not a reference MTLA/MLA layer: missing key 'wkv_a.weight'")
    assert import_reference(["layer", str(tmp_path / "ours.pt"), str(tmp_path / "out.pth"), "--num_heads", "4",
                             "--prefix", "decoder."]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'ours.pt'}: no key starts with --prefix 'decoder.'"
    assert not (tmp_path / "out.pth").exists()
    result = subprocess.run([sys.executable, "-m", "espnet_mtla.bin.import_reference", "layer", "missing.pt", "o.pth",
                             "--num_heads", "4"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr == "error: missing.pt: no such file or directory\n"
