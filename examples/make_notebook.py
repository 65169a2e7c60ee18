"""Writes examples/mtla_char_lm.ipynb (run it with nbclient to fill in the outputs):

    python examples/make_notebook.py && python -m espnet_mtla.bin.run_notebook examples/mtla_char_lm.ipynb
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell("""# A tiny MTLA character language model with HuggingFace Transformers

This notebook builds an MTLA causal LM through `espnet_mtla.hf` (registered with the `Auto`
classes), trains it for about a minute on CPU on bundled text (sentences of the repository's
synthetic-corpus grammar), decodes with `generate()` (greedy and beam search, with the
compressed KV cache), and compares its cache with what MHA and MLA would store.
Requires `pip install -e .[hf]` (`make install` does it)."""),
    new_code_cell("""import random, time
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import espnet_mtla.hf as hf
from espnet_mtla.data.grammar import sentence

torch.manual_seed(0)
torch.set_num_threads(2)
rng = random.Random(0)
text = "".join(sentence(rng).english + ".\\n" for _ in range(3000))
chars = sorted(set(text))
PAD, BOS, EOS = 0, 1, 2                      # special ids; characters start at 3
stoi = {c: i + 3 for i, c in enumerate(chars)}
itos = {i: c for c, i in stoi.items()}
encode = lambda s: [stoi[c] for c in s]
decode = lambda ids: "".join(itos.get(int(i), "") for i in ids)
data = torch.tensor(encode(text))
print(f"{len(text)} characters, vocabulary {len(chars)} + 3 specials")
print(text[:200])"""),
    new_markdown_cell("""## The model: any Llama config, MTLA attention

`LlamaMTLAConfig.from_llama_config` keeps the Llama shape (here `head_dim` 24, which is not
`hidden_size / heads`) and adds the latent rank and the temporal `down_rate`."""),
    new_code_cell("""llama = LlamaConfig(vocab_size=len(chars) + 3, hidden_size=96, intermediate_size=256, num_hidden_layers=3,
                    num_attention_heads=4, head_dim=24, max_position_embeddings=512,
                    pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
config = hf.LlamaMTLAConfig.from_llama_config(llama, attention_type="mtla", down_rate=2, kv_lora_rank=48)
model = AutoModelForCausalLM.from_config(config)
print(type(model).__name__, f"{sum(p.numel() for p in model.parameters()) / 1e3:.0f}k parameters")
print({k: getattr(config, k) for k in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "down_rate")})"""),
    new_markdown_cell("## Training (about a minute on 2 CPU cores)"),
    new_code_cell("""opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
steps, window, batch = 500, 96, 32
start = time.time()
model.train()
for step in range(1, steps + 1):
    offsets = torch.randint(0, len(data) - window, (batch,))
    ids = torch.stack([data[o:o + window] for o in offsets.tolist()])
    loss = model(ids, labels=ids).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    for group in opt.param_groups:
        group["lr"] = 3e-3 * min(1.0, 2 * (1 - step / steps) + 0.05)
    if step % 100 == 0:
        print(f"step {step}: loss {loss.item():.3f} ({time.time() - start:.0f} s)")
model.eval();"""),
    new_markdown_cell("""## Decoding with `generate()`

Beam search reorders the compressed cache by one gather per step; the same search without a
cache (`use_cache=False`) recomputes everything and must give the same result."""),
    new_code_cell("""prompts = ["the cat ", "my brother sells ", "a"]
for p in prompts:
    ids = torch.tensor([encode(p)])
    greedy = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=stoi["\\n"])
    beam = model.generate(ids, max_new_tokens=40, num_beams=4, do_sample=False, eos_token_id=stoi["\\n"])
    no_cache = model.generate(ids, max_new_tokens=40, num_beams=4, do_sample=False, eos_token_id=stoi["\\n"],
                              use_cache=False)
    assert torch.equal(beam, no_cache)
    print(f"{p!r:22} greedy: {decode(greedy[0])!r}")
    print(f"{'':22} beam 4: {decode(beam[0])!r}")"""),
    new_markdown_cell("""A left-padded batch (0/1 mask) gives each prompt what it gets alone: padding never
enters the cache."""),
    new_code_cell("""batch_ids = [encode(p) for p in prompts]
width = max(map(len, batch_ids))
ids = torch.tensor([[PAD] * (width - len(b)) + b for b in batch_ids])
mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch_ids])
out = model.generate(ids, attention_mask=mask, max_new_tokens=30, num_beams=4, do_sample=False)
for row, p in enumerate(prompts):
    alone = model.generate(torch.tensor([encode(p)]), max_new_tokens=30, num_beams=4, do_sample=False)
    assert torch.equal(out[row, width:], alone[0, len(p):])
    print(repr(p + decode(out[row, width:])))"""),
    new_markdown_cell("## KV-cache size: MTLA vs MLA vs MHA (same Llama shape, 400 tokens)"),
    new_code_cell("""ids = data[:400][None]
for attention_type in ("mha", "gqa", "mla", "mtla"):
    cfg = hf.LlamaMTLAConfig.from_llama_config(llama, attention_type=attention_type, down_rate=2, kv_lora_rank=48,
                                               num_key_value_heads=2)
    m = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        cache = m(ids, use_cache=True).cache
    print(f"{attention_type:5s} {cache.nbytes() / 1024:8.1f} KiB")"""),
    new_markdown_cell("## Save and reload through the Auto classes"),
    new_code_cell("""import tempfile
with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp)
    again = AutoModelForCausalLM.from_pretrained(tmp).eval()
ids = torch.tensor([encode("the old man ")])
assert torch.equal(model.generate(ids, max_new_tokens=20, do_sample=False),
                   again.generate(ids, max_new_tokens=20, do_sample=False))
print(type(again).__name__, "reloaded: same generations")"""),
]


def main():
    notebook = new_notebook(cells=CELLS, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}})
    path = Path(__file__).with_name("mtla_char_lm.ipynb")
    nbformat.write(notebook, path)
    print(path)


if __name__ == "__main__":
    main()
