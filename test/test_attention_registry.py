"""The attention registry: a sixth type registered once reaches the decoder, the HF config, the
pipeline's choices and make_confs; the core imports without ESPnet, the registry without torch."""

import subprocess
import sys

import pytest
import torch

from espnet_mtla.attention import MultiHeadAttention
from espnet_mtla.attention.registry import (
    BUILT_IN,
    AttentionType,
    attention_options,
    attention_types,
    config_sections,
    register_attention,
    unregister_attention,
)
from espnet_mtla.decoder.stack import DecoderOnlyStack
from espnet_mtla.storage.errors import ConfigError


class ToyAttention(MultiHeadAttention):
    """MHA with one option of its own, enough to see that the option arrives."""

    def __init__(self, embed_dim, num_heads, toy_scale: float = 1.0, dropout=0.0, bias=False,
                 rope_base=10000.0, attn_backend="auto"):
        super().__init__(embed_dim, num_heads, dropout=dropout, bias=bias, rope_base=rope_base,
                         attn_backend=attn_backend)
        self.toy_scale = toy_scale


@pytest.fixture
def toy():
    entry = register_attention(AttentionType("toy", ToyAttention, section="toy_conf"))
    yield entry
    unregister_attention("toy")
    assert attention_types() == tuple(e.name for e in BUILT_IN)


def test_built_in_sections():
    sections = config_sections()
    assert list(sections) == ["attention_conf", "mha_conf", "gqa_conf", "mla_conf", "mtla_conf"]
    assert sections["attention_conf"] == (["attn_backend", "bias", "dropout", "rope_base"], attention_types())
    assert sections["mha_conf"] == (["head_dim", "rope"], ("mha", "mqa", "gqa"))
    assert sections["gqa_conf"] == (["num_kv_heads"], ("gqa",))
    assert sections["mtla_conf"] == (["down_rate", "hypernet_init", "hypernet_rank_ratio"], ("mtla",))
    assert "num_kv_heads" not in attention_options("mqa")  # fixed by the type


def test_toy_type_reaches_the_decoder(toy):
    assert attention_types()[-1] == "toy"
    assert config_sections()["toy_conf"] == (["toy_scale"], ("toy",))
    stack = DecoderOnlyStack(11, 8, attention_type="toy", model_dim=16, attention_heads=2, linear_units=32,
                             num_blocks=2, attention_conf={"dropout": 0.0}, toy_conf={"toy_scale": 2.5},
                             mla_conf={"kv_lora_rank": 8})  # other types' sections are checked, not used
    assert all(isinstance(layer.attn, ToyAttention) and layer.attn.toy_scale == 2.5 for layer in stack.layers)
    logits, _ = stack(torch.randn(2, 5, 8), torch.tensor([5, 3]), torch.tensor([[1, 2, 3], [4, 5, 0]]),
                      torch.tensor([3, 2]))
    assert logits.shape == (2, 3, 11)
    with pytest.raises(ConfigError, match=r"decoder_conf.toy_conf: unknown key 'toy_scal'"):
        DecoderOnlyStack(11, 8, attention_type="toy", model_dim=16, attention_heads=2, toy_conf={"toy_scal": 2})


def test_toy_type_reaches_the_hf_config(toy):
    hf = pytest.importorskip("espnet_mtla.hf")
    config = hf.LlamaMTLAConfig(attention_type="toy", toy_scale=3.0, hidden_size=16, num_attention_heads=2,
                                num_key_value_heads=2, intermediate_size=32, num_hidden_layers=1, vocab_size=13)
    model = hf.LlamaMTLAForCausalLM(config).eval()
    assert model.model.layers[0].self_attn.toy_scale == 3.0
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)


def test_toy_type_reaches_the_pipeline_and_make_confs(toy, tmp_path):
    from espnet_mtla.bin.make_confs import make_confs
    from espnet_mtla.recipe.options import get_parser

    assert get_parser().parse_args(["--task", "asr", "--attention", "toy"]).attention == "toy"
    template = tmp_path / "t.yaml"
    template.write_text("decoder: decoder_only\ndecoder_conf: {attention_type: mtla}\n")
    make_confs(template, None, tmp_path / "conf")
    assert sorted(p.stem for p in (tmp_path / "conf").glob("*.yaml")) == sorted(f"train_{t}" for t in attention_types())
    assert "attention_type: toy" in (tmp_path / "conf" / "train_toy.yaml").read_text()


def test_unknown_type_and_section_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"decoder_conf: unknown attention_type 'toy'; choose one of mha, mqa"):
        DecoderOnlyStack(11, 8, attention_type="toy")
    with pytest.raises(ConfigError, match=r"decoder_conf: unknown key 'toy_conf'"):
        DecoderOnlyStack(11, 8, attention_type="mha", toy_conf={})
    with pytest.raises(SystemExit):
        from espnet_mtla.recipe.options import get_parser

        get_parser().parse_args(["--task", "asr", "--attention", "toy"])


def test_registration_errors(toy):
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register_attention(AttentionType("toy", ToyAttention))
    with pytest.raises(ValueError, match="section 'mla_conf' is already used"):
        register_attention(AttentionType("toy2", ToyAttention, section="mla_conf"))
    with pytest.raises(ValueError, match="extends 'nope', which is not registered"):
        register_attention(AttentionType("toy3", ToyAttention, extends="nope"))
    with pytest.raises(ValueError, match="'mha' is extended by mqa, gqa"):
        unregister_attention("mha")


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_registry_and_pipeline_import_without_torch():
    code = ("import sys, espnet_mtla.attention.registry as r, espnet_mtla.recipe.runner\n"
            "print(','.join(r.attention_types()), 'torch' in sys.modules)")
    assert run_python(code) == "mha,mqa,gqa,mla,mtla False"


def test_core_and_hf_import_without_espnet():
    pytest.importorskip("transformers")
    code = ("import sys, espnet_mtla.decoder.layers, espnet_mtla.decoder.stack, espnet_mtla.search, espnet_mtla.hf\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('espnet', 'espnet2')))")
    assert run_python(code) == "[]"


def test_layer_errors_name_the_config_they_came_from():
    """The core raises ValueError; the ESPnet decoder says decoder_conf, the HF model LlamaMTLAConfig."""
    from espnet_mtla.decoder.layers import FeedForward

    with pytest.raises(ValueError, match=r"^unknown ffn_activation 'tanh'; choose one of relu, gelu, swiglu$"):
        FeedForward(8, 16, "tanh")
    with pytest.raises(ConfigError, match=r"^decoder_conf: unknown ffn_activation 'tanh'"):
        DecoderOnlyStack(11, 8, attention_type="mha", model_dim=16, attention_heads=2, ffn_activation="tanh")
    hf = pytest.importorskip("espnet_mtla.hf")
    config = hf.LlamaMTLAConfig(attention_type="gqa", hidden_size=16, num_attention_heads=4, num_key_value_heads=3,
                                intermediate_size=32, num_hidden_layers=1, vocab_size=13)
    with pytest.raises(ValueError, match=r"^LlamaMTLAConfig: num_heads \(4\) must be divisible by num_kv_heads \(3\)$"):
        hf.LlamaMTLAForCausalLM(config)
