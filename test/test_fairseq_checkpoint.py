"""Importing the reference toolkit's fairseq decoder-only speech models.

fairseq itself does not install beside our pinned stack, so a checkpoint is assembled here in
its layout (keys, ``cfg.model`` Namespace) with the reference's own MTLA layer (pip mtla 0.3.2,
MTLA.py) for the MTLA decoder, and its forward is written out as the fork's
``MTLADecoderOnly`` computes it: projector -> prefix; per layer h = N1(h + attn(q = N1(h),
kv = [prefix ; N1(h)])), h = N2(h + fc2(relu(fc1(h)))); final LayerNorm; output projection.
The MHA family's rotary attention (q/k/v/out with biases, interleaved RoPE pairs) is written
out the same way.
"""

import argparse
import math

import pytest
import torch
import yaml
from torch import nn

from espnet_mtla.bin.import_reference import main as import_reference
from espnet_mtla.decoder.stack import DecoderOnlyStack
from test_reference_layer import TOL, reference  # noqa: F401  (fixture)

D, H, F, L, V, E = 48, 4, 64, 2, 20, 40
LATENT = dict(kv_lora_rank=32, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12)
ARCH = {"mtla": "s2t_decoder_only_MTLA_cross_xm", "mha": "s2t_decoder_only_roformer_cross_xm",
        "gqa": "s2t_decoder_only_GQAroformer_cross_xm"}


def rotate_interleaved(x, positions):
    """fairseq's RoPE: pairs (2i, 2i+1) as complex numbers. x (B, T, H, d), positions (T,)."""
    d = x.shape[-1]
    angles = positions.float().unsqueeze(-1) / 10000.0 ** (torch.arange(0, d, 2).float() / d)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], d // 2, 2))
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)[None, :, None]).flatten(3)


class RotaryAttention(nn.Module):
    """The fork's RotaryMultiheadAttention / GQARotaryMultiheadAttention (self-attention over [prefix ; tokens])."""

    def __init__(self, kv_heads):
        super().__init__()
        self.kv_heads, self.head_dim = kv_heads, D // H
        self.q_proj, self.out_proj = nn.Linear(D, D), nn.Linear(D, D)
        self.k_proj, self.v_proj = nn.Linear(D, kv_heads * self.head_dim), nn.Linear(D, kv_heads * self.head_dim)

    def forward(self, query, key, value, position):
        batch, t_q, t_k = query.shape[0], query.shape[1], key.shape[1]
        q = self.q_proj(query).view(batch, t_q, H, -1) * self.head_dim**-0.5
        k = self.k_proj(key).view(batch, t_k, self.kv_heads, -1)
        v = self.v_proj(key).view(batch, t_k, self.kv_heads, -1).repeat_interleave(H // self.kv_heads, dim=2)
        q, k = rotate_interleaved(q, position[0, -t_q:]), rotate_interleaved(k, position[0])
        k = k.repeat_interleave(H // self.kv_heads, dim=2)
        scores = torch.einsum("bihd,bjhd->bhij", q, k)
        visible = torch.arange(t_k) <= (t_k - t_q + torch.arange(t_q)).unsqueeze(1)
        probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
        return self.out_proj(torch.einsum("bhij,bjhd->bihd", probs, v).reshape(batch, t_q, -1))


class ReferenceDecoder(nn.Module):
    """The fork's MTLADecoderOnly / RotaryDecoderOnly (projector stack k = 1), keys as fairseq saves them."""

    def __init__(self, reference_module, attention_type):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, D)
        self.output_projection = nn.Linear(D, V, bias=False)
        self.layer_norm = nn.LayerNorm(D)
        self.projector = nn.Module()
        self.projector.linear1, self.projector.linear2 = nn.Linear(E, D // 2), nn.Linear(D // 2, D)
        self.layers = nn.ModuleList()
        for _ in range(L):
            layer = nn.Module()
            layer.self_attn_layer_norm, layer.final_layer_norm = nn.LayerNorm(D), nn.LayerNorm(D)
            layer.fc1, layer.fc2 = nn.Linear(D, F), nn.Linear(F, D)
            if attention_type == "mtla":
                layer.self_attn = reference_module.MultiheadTemporalLatentAttention(D, H, down_rate=2, **LATENT)
            else:
                layer.self_attn = RotaryAttention({"mha": H, "gqa": 2}[attention_type])
            self.layers.append(layer)
        self.register_buffer("version", torch.tensor([3.0]))
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.uniform_(0.5, 1.5) if name.endswith("norm.weight") else p.normal_(0.0, 0.3)

    def forward(self, encoder_out, tokens):
        prefix = self.projector.linear2(torch.relu(self.projector.linear1(encoder_out)))
        x = math.sqrt(D) * self.embed_tokens(tokens)
        position = torch.arange(prefix.shape[1] + tokens.shape[1]).float().view(1, -1)
        for layer in self.layers:
            h = layer.self_attn_layer_norm(x)
            y = torch.cat([prefix, h], dim=1)
            x = layer.self_attn_layer_norm(x + layer.self_attn(query=h, key=y, value=y, position=position))
            x = layer.final_layer_norm(x + layer.fc2(torch.relu(layer.fc1(x))))
        return self.output_projection(self.layer_norm(x))


def write_checkpoint(path, decoder, attention_type, **args):
    state = {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    state.update({"encoder.subsample.conv_layers.0.weight": torch.randn(2 * E, 8, 5),
                  "encoder.transformer_layers.0.fc1.weight": torch.randn(F, E),
                  "encoder.transformer_layers.0.self_attn.q_proj.bias": torch.randn(E),
                  "encoder.layer_norm.weight": torch.randn(E)})
    namespace = argparse.Namespace(arch=ARCH[attention_type], decoder_attention_heads=H, decoder_down_rate=2,
                                   share_decoder_input_output_embed=False, encoder_projector_ds_rate=1, **args)
    torch.save({"args": None, "cfg": {"model": namespace}, "model": state}, path)


@pytest.mark.parametrize("attention_type", ["mtla", "mha", "gqa"])
def test_fairseq_decoder_converts_to_the_same_function(reference, tmp_path, attention_type):  # noqa: F811
    torch.manual_seed(0)
    ref = ReferenceDecoder(reference, attention_type).eval()
    write_checkpoint(tmp_path / "checkpoint_best.pt", ref, attention_type)
    assert import_reference(["fairseq", str(tmp_path / "checkpoint_best.pt"), str(tmp_path / "out")]) == 0
    conf = yaml.safe_load((tmp_path / "out" / "decoder_conf.yaml").read_text())
    assert conf["decoder"] == "decoder_only" and conf["decoder_conf"]["attention_type"] == attention_type
    ours = DecoderOnlyStack(V, E, **conf["decoder_conf"]).eval()
    state = torch.load(tmp_path / "out" / "decoder.pth")
    ours.load_state_dict({k[len("decoder."):]: v for k, v in state.items()})
    encoder_out, tokens = torch.randn(1, 7, E), torch.randint(0, V, (1, 9))
    with torch.no_grad():
        expected = ref(encoder_out, tokens)
        logits, _ = ours(encoder_out, torch.tensor([7]), tokens, torch.tensor([9]))
    assert (logits - expected).abs().max() < TOL
    report = (tmp_path / "out" / "report.txt").read_text()
    assert "not converted: encoder.subsample.conv_layers.0.weight (no ESPnet counterpart)" in report
    encoder = torch.load(tmp_path / "out" / "encoder.pth")
    assert sorted(encoder) == ["encoder.after_norm.weight", "encoder.encoders.0.feed_forward.w_1.weight",
                               "encoder.encoders.0.self_attn.linear_q.bias"]


def test_fairseq_errors_are_one_line(reference, tmp_path, capsys):  # noqa: F811
    torch.manual_seed(0)
    ref = ReferenceDecoder(reference, "mtla")
    write_checkpoint(tmp_path / "ckpt.pt", ref, "mtla", layernorm_embedding=True)
    assert import_reference(["fairseq", str(tmp_path / "ckpt.pt"), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'ckpt.pt'}: layernorm_embedding is on: our stack has no embedding LayerNorm")
    del ref.layers[1].fc2.bias
    ref.layers[1].fc2.register_parameter("bias", None)
    write_checkpoint(tmp_path / "ckpt.pt", ref, "mtla")
    assert import_reference(["fairseq", str(tmp_path / "ckpt.pt"), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'ckpt.pt'}: not a reference decoder-only model: missing key 'decoder.layers.1.fc2.bias'")
    torch.save({"model": {}, "cfg": {"model": argparse.Namespace(arch="transformer")}}, tmp_path / "other.pt")
    assert import_reference(["fairseq", str(tmp_path / "other.pt"), str(tmp_path / "out")]) == 1
    assert "arch 'transformer' is not one of the reference's decoder-only speech models" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()
    namespace = argparse.Namespace(arch=ARCH["mtla"], decoder_attention_heads=H)
    torch.save({"model": {"decoder.layer_norm.weight": torch.ones(D)}, "cfg": {"model": namespace}}, tmp_path / "bare.pt")
    assert import_reference(["fairseq", str(tmp_path / "bare.pt"), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'bare.pt'}: not a reference decoder-only model: "
                                               "missing key 'decoder.embed_tokens.weight'")
