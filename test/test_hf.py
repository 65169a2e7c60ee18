"""HuggingFace integration: Auto classes, save/load, generate() with the compressed cache."""

import subprocess
import sys

import pytest
import torch

hf = pytest.importorskip("espnet_mtla.hf", reason="needs transformers (pip install -e .[hf]; make install does it)")
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig  # noqa: E402

from espnet_mtla.attention.registry import attention_types  # noqa: E402

DOWN_RATE = 3
PROMPT_LENGTHS = [1, DOWN_RATE - 1, DOWN_RATE, DOWN_RATE + 1]
TYPES = attention_types()
PAD, EOS = 0, 2


def tiny_model(attention_type="mtla", seed=0, **fields):
    # head_dim 20 differs from hidden_size / heads = 12 (the reference's HF port crashed on that)
    llama = LlamaConfig(vocab_size=40, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=20, bos_token_id=1,
                        eos_token_id=EOS, pad_token_id=PAD)
    config = hf.LlamaMTLAConfig.from_llama_config(llama, attention_type=attention_type, down_rate=DOWN_RATE, **fields)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # peaky distributions, as a trained model's: no near-ties in the comparisons
        model.lm_head.weight.mul_(40.0)
        model.lm_head.weight[EOS] = 0.0  # (and generations that run their full length)
    return model


def prompt(length, seed=1):
    return torch.randint(3, 40, (1, length), generator=torch.Generator().manual_seed(seed + length))


def test_auto_classes_and_save_load_round_trip(tmp_path):
    model = tiny_model("mtla")
    model.save_pretrained(tmp_path / "m")
    assert AutoConfig.from_pretrained(tmp_path / "m").model_type == "llama_mtla"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert type(loaded) is hf.LlamaMTLAForCausalLM and loaded.config.down_rate == DOWN_RATE
    ids = prompt(7)
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded.config.kv_lora_rank == 80 and loaded.config.qk_rope_head_dim == 10  # from head_dim 20


@pytest.mark.parametrize("attention_type", TYPES)
@pytest.mark.parametrize("length", PROMPT_LENGTHS)
def test_generate_with_the_compressed_cache_equals_without(attention_type, length):
    model = tiny_model(attention_type)
    ids = prompt(length)
    for options in ({"num_beams": 1}, {"num_beams": 3, "num_return_sequences": 3}):
        with_cache = model.generate(ids, max_new_tokens=8, do_sample=False, **options)
        without = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False, **options)
        assert torch.equal(with_cache, without), options
        assert with_cache.shape[1] == length + 8


@pytest.mark.parametrize("attention_type", TYPES)
@pytest.mark.parametrize("mask_dtype", [torch.long, torch.bool])
def test_left_padded_batch_equals_unpadded_single_runs(attention_type, mask_dtype):
    model = tiny_model(attention_type)
    prompts = [prompt(n)[0] for n in PROMPT_LENGTHS + [6]]
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD)
    mask = torch.zeros(len(prompts), width, dtype=mask_dtype)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = p
        mask[row, width - len(p):] = 1
    for options in ({"num_beams": 1}, {"num_beams": 3}):
        batch = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, **options)
        for row, p in enumerate(prompts):
            alone = model.generate(p[None], max_new_tokens=6, do_sample=False, **options)
            assert torch.equal(batch[row, width:], alone[0, len(p):]), (row, options)
        logits = model(ids, attention_mask=mask).logits[:, -1]
        assert torch.isfinite(logits).all()  # (the reference gave NaN with a boolean mask)


def test_cache_bytes_mtla_smallest():
    sizes = {}
    ids = prompt(12)
    for attention_type in TYPES:
        model = tiny_model(attention_type)
        out = model(ids, use_cache=True)
        sizes[attention_type] = out.cache.nbytes()
    # numbers per token and layer (fp32, 2 layers, 12 tokens): MHA K+V 2 x 4 heads x 20, GQA 2 x 2 x 20,
    # MQA 2 x 20, MLA latent 80 + rope 10; MTLA the same per 3 tokens (4 slots)
    assert sizes == {"mha": 12 * 160 * 4 * 2, "gqa": 12 * 80 * 4 * 2, "mqa": 12 * 40 * 4 * 2,
                     "mla": 12 * 90 * 4 * 2, "mtla": 4 * 90 * 4 * 2}


def test_training_loss_and_backward():
    model = tiny_model("mtla").train()
    ids = prompt(9)
    out = model(ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.model.layers[0].self_attn.hypernet is not None
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_core_package_does_not_import_transformers():
    code = "import sys, espnet_mtla, espnet_mtla.attention; print('transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_unknown_attention_type_is_refused():
    with pytest.raises(ValueError, match="^attention_type 'mtlaa': choose one of mha, mqa, gqa, mla, mtla$"):
        hf.LlamaMTLAConfig(attention_type="mtlaa")


def test_attn_backend_reaches_every_layer_and_keeps_generations():
    generations = {}
    for name in ("eager", "sdpa"):
        model = tiny_model("mtla", attn_backend=name)
        assert {layer.self_attn.attn_backend for layer in model.model.layers} == {name}
        generations[name] = model.generate(prompt(5), max_new_tokens=8, do_sample=False)
    assert torch.equal(generations["eager"], generations["sdpa"])
    with pytest.raises(ValueError, match="^attn_backend must be one of auto, eager, sdpa, triton, got 'flash'$"):
        hf.LlamaMTLAConfig(attn_backend="flash")


def test_latent_norm_reaches_the_layers_and_is_checked():
    model = tiny_model("mtla", latent_norm="layer_norm")
    assert all(isinstance(layer.self_attn.kv_norm, torch.nn.LayerNorm) for layer in model.model.layers)
    assert isinstance(tiny_model("mla").model.layers[0].self_attn.kv_norm, torch.nn.RMSNorm)  # the default
    with pytest.raises(ValueError, match="latent_norm 'batch_norm': choose one of layer_norm, rms_norm"):
        hf.LlamaMTLAConfig(latent_norm="batch_norm")
