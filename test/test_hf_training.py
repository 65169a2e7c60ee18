"""Training LlamaMTLA models as HF users do: gradient checkpointing, attn_implementation,
from_llama (exact copies; MHA2MLA-style init), transformers.Trainer and PEFT LoRA."""

import pytest
import torch

hf = pytest.importorskip("espnet_mtla.hf", reason="needs transformers (pip install -e .[hf]; make install does it)")
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from espnet_mtla.attention.registry import attention_types  # noqa: E402

VOCAB = 40


def llama_config(**fields):
    base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaConfig(**{**base, **fields})


def tiny(attention_type="mtla", **fields):
    torch.manual_seed(0)
    config = hf.LlamaMTLAConfig.from_llama_config(llama_config(), attention_type=attention_type, down_rate=2,
                                                  kv_lora_rank=16, **fields)
    return hf.LlamaMTLAForCausalLM(config)


def gradients(model, ids):
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention_type", attention_types())
def test_gradient_checkpointing_is_exact(attention_type):
    model = tiny(attention_type).train()
    ids = torch.randint(3, VOCAB, (3, 13))
    plain = gradients(model, ids)
    calls = []
    for layer in model.model.layers:  # counted by wrapping forward (hooks do not fire when recomputing)
        layer.mlp.forward = lambda x, forward=layer.mlp.forward: calls.append(1) or forward(x)
    model.activation_checkpointing_enable()
    checkpointed = gradients(model, ids)
    assert len(calls) == 2 * len(model.model.layers)  # each layer ran again in the backward pass
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=0, atol=1e-6, msg=name)
    # generation still uses the cache (no gradients: no checkpointing)
    model.eval()
    assert model.generate(ids[:1, :4], max_new_tokens=3, min_new_tokens=3).shape == (1, 7)


@pytest.mark.parametrize("implementation,backend", [("eager", "eager"), ("sdpa", "sdpa"), ("mtla_triton", "triton")])
def test_attn_implementation_maps_onto_the_backends(implementation, backend, tmp_path):
    config = hf.LlamaMTLAConfig.from_llama_config(llama_config(), attention_type="mtla")
    model = AutoModelForCausalLM.from_config(config, attn_implementation=implementation)
    assert model.config._attn_implementation == implementation and model.config.attn_backend == backend
    assert {layer.self_attn.attn_backend for layer in model.model.layers} == {backend}
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert {layer.self_attn.attn_backend for layer in reloaded.model.layers} == {backend}
    model.set_attn_implementation("eager")
    assert model.config.attn_backend == "eager"
    assert {layer.self_attn.attn_backend for layer in model.model.layers} == {"eager"}


def test_attn_backend_alone_sets_the_implementation_and_disagreement_is_an_error():
    model = AutoModelForCausalLM.from_config(hf.LlamaMTLAConfig.from_llama_config(llama_config(), attn_backend="eager"))
    assert model.config._attn_implementation == "eager"
    default = AutoModelForCausalLM.from_config(hf.LlamaMTLAConfig.from_llama_config(llama_config()))
    assert default.config.attn_backend == "auto" and default.config._attn_implementation == "mtla_auto"
    config = hf.LlamaMTLAConfig.from_llama_config(llama_config(), attn_backend="eager")
    with pytest.raises(ValueError, match="^LlamaMTLAConfig: attn_backend 'eager' disagrees with attn_implementation "
                                         "'sdpa' .*; set only one of them$"):
        AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    with pytest.raises(ValueError, match="does not support Flash Attention"):  # HF's own error
        AutoModelForCausalLM.from_config(hf.LlamaMTLAConfig.from_llama_config(llama_config()),
                                         attn_implementation="flash_attention_2")


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(llama_config(initializer_range=0.2)).eval()


def kl_to(reference_logits, model, ids):
    logp = model(ids).logits.log_softmax(-1)
    ref = reference_logits.log_softmax(-1)
    return float(torch.nn.functional.kl_div(logp, ref, log_target=True, reduction="none").sum(-1).mean())


@pytest.mark.parametrize("attention_type", attention_types())
def test_from_llama_copies_everything_but_the_attention(llama, attention_type, tmp_path):
    model = hf.LlamaMTLAForCausalLM.from_llama(llama, attention_type=attention_type)
    theirs = dict(llama.named_parameters())
    names = [n for n, _ in model.named_parameters() if ".self_attn." not in n]
    assert len(names) == 2 + 5 * 2 + 1  # embedding, lm_head; 2 norms + 3 projections per layer; final norm
    for name, param in model.named_parameters():
        if ".self_attn." not in name:
            assert torch.equal(param, theirs[name]), name
    ids = torch.randint(3, VOCAB, (2, 11))
    with torch.no_grad():
        reference = llama(ids).logits
        if attention_type in ("mha", "gqa"):  # q/k/v/o copied (kv heads repeated for mha): the same model
            torch.testing.assert_close(model(ids).logits, reference, rtol=1e-5, atol=1e-5)
        elif attention_type == "mqa":  # GQA uptraining's init: the mean of the kv heads (helps trained models)
            k = llama.model.layers[0].self_attn.k_proj.weight.view(2, 8, -1)
            assert torch.allclose(model.model.layers[0].self_attn.k_proj.weight, k.mean(0))
        else:
            torch.manual_seed(1)
            random = hf.LlamaMTLAForCausalLM.from_llama(llama, attention_type=attention_type, attention_init="random")
            assert kl_to(reference, model, ids) < 0.7 * kl_to(reference, random, ids)
    llama.save_pretrained(tmp_path)  # a path works as well as a model
    from_path = hf.LlamaMTLAForCausalLM.from_llama(tmp_path, attention_type=attention_type)
    converted = dict(from_path.named_parameters())  # MTLA's hyper-network starts random: not compared
    assert all(torch.equal(converted[n], p) for n, p in model.named_parameters() if ".hypernet." not in n)


def test_from_llama_refuses_what_it_cannot_convert(llama):
    with pytest.raises(ValueError, match="^from_llama: qk_rope_head_dim 7 must be even and below head_dim 8$"):
        hf.LlamaMTLAForCausalLM.from_llama(llama, attention_type="mla", qk_rope_head_dim=7)
    with pytest.raises(ValueError, match="^from_llama: attention_init 'llama' needs v_head_dim 8"):
        hf.LlamaMTLAForCausalLM.from_llama(llama, attention_type="mla", v_head_dim=16)
    assert hf.LlamaMTLAForCausalLM.from_llama(llama, attention_type="mla", v_head_dim=16, attention_init="random")
    scaled = LlamaForCausalLM(llama_config(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}))
    with pytest.raises(ValueError, match="^from_llama: rope_type 'linear' is not supported"):
        hf.LlamaMTLAForCausalLM.from_llama(scaled)


class TokenDataset(torch.utils.data.Dataset):
    """Sequences of a tiny repeating language: the next token is predictable."""

    def __init__(self, n=64, length=16):
        g = torch.Generator().manual_seed(0)
        starts = torch.randint(3, VOCAB, (n, 1), generator=g)
        self.ids = (starts + torch.arange(length)) % (VOCAB - 3) + 3

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def test_trainer_trains_and_resumes(tmp_path):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=12,
                             learning_rate=3e-3, logging_steps=1, save_steps=6, report_to=[], use_cpu=True, seed=0,
                             data_seed=0, disable_tqdm=True)
    trainer = Trainer(model=tiny("mtla"), args=args, train_dataset=TokenDataset())
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 12 and sum(losses[-3:]) < 0.9 * sum(losses[:3])
    # From its step-6 checkpoint a new run reaches the weights of the uninterrupted one.
    resumed = Trainer(model=tiny("mtla"), args=args, train_dataset=TokenDataset())
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-6"))
    assert resumed.state.global_step == 12
    for (name, a), b in zip(trainer.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("attention_type", ["mtla", "gqa"])
def test_peft_lora_trains_merges_and_generates_the_same(attention_type):
    peft = pytest.importorskip("peft")
    model = tiny(attention_type)
    linears = {name.rsplit(".", 1)[-1] for name, m in model.model.layers.named_modules()
               if isinstance(m, torch.nn.Linear)}  # attention and MLP projections
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                      target_modules=sorted(linears)))
    trainable = [p for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in lora.named_parameters() if p.requires_grad)
    data = TokenDataset().ids
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    lora.train()
    losses = []
    for step in range(15):
        batch = data[(step * 8) % 64:][:8]
        loss = lora(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    lora.eval()
    prompt = data[:2, :5]
    with torch.no_grad():
        logits = lora(input_ids=data[:4]).logits
        adapted = lora.generate(input_ids=prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    merged = lora.merge_and_unload()
    assert type(merged) is hf.LlamaMTLAForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(merged(data[:4]).logits, logits, rtol=1e-4, atol=1e-5)
        assert torch.equal(merged.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False), adapted)


def test_shared_rope_key_is_exact_for_one_kv_head():
    """With one kv head the shared rope key loses nothing: rotated scores are unchanged."""
    from espnet_mtla.attention.rope import RotaryEmbedding
    from espnet_mtla.hf.from_llama import shared_rope_key

    torch.manual_seed(0)
    heads, d_r, dim = 3, 8, 16
    q, k = torch.randn(heads, d_r, dim, dtype=torch.float64), torch.randn(1, d_r, dim, dtype=torch.float64)
    key, q_new = shared_rope_key(q, k, torch.zeros(heads, dtype=torch.long))
    rope = RotaryEmbedding(d_r, 100.0).double()
    x = torch.randn(2, dim, dtype=torch.float64)
    positions = torch.tensor([[3, 11]])

    def scores(query_rows, key_rows):
        qv = rope(torch.einsum("hrd,d->hr", query_rows, x[0]).view(1, 1, heads, d_r), positions[:, :1])
        kv = rope((key_rows @ x[1]).view(1, 1, 1, d_r), positions[:, 1:])
        return (qv * kv).sum(-1)

    torch.testing.assert_close(scores(q_new, key), scores(q, k[0]), rtol=1e-6, atol=1e-5)  # RoPE tables in fp32


def test_bench_from_llama_writes_its_table(tmp_path):
    from espnet_mtla.bench import from_llama as bench_from_llama

    bench_from_llama.main(["--steps", "3", "--out-dir", str(tmp_path), "--threads", "1"])
    import json

    results = json.loads((tmp_path / "results.json").read_text())
    for model in ("random_llama", "char_lm"):
        rows = {row["attention_type"]: row for row in results[model]}
        assert list(rows) == list(attention_types())
        assert rows["mha"]["kl_llama"] == 0.0 and rows["mla"]["kl_llama"] < rows["mla"]["kl_random"]
    assert (tmp_path / "results.md").read_text().startswith("| attention |")
