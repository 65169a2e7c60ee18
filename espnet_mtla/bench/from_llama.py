"""How close ``LlamaMTLAForCausalLM.from_llama`` starts to the Llama it converts, before any fine-tuning.

    python -m espnet_mtla.bench.from_llama [--steps 500] [--out-dir docs/bench_from_llama]

Next-token KL divergence KL(Llama || converted), in nats per token, for every attention type,
with the attention initialised from the Llama's (``attention_init="llama"``: copies for MHA/GQA,
mean-pooled kv heads for MQA, MHA2MLA-style SVD for MLA/MTLA) and at random, on two models:
- a small random Llama (GQA, 4 layers, initializer_range 0.1 so that its next-token
  distributions are not flat), on random token sequences;
- the notebook's character LM (examples/mtla_char_lm.ipynb) as a Llama: trained ``--steps``
  steps on the synthetic-corpus grammar, measured on held-out sentences.
Writes ``results.json`` and ``results.md`` to ``--out-dir``.
"""

import argparse
import random
import time
from pathlib import Path

import torch

from espnet_mtla.attention.registry import attention_types
from espnet_mtla.bench.common import write_results_json, write_tables


def kl_per_token(reference: torch.Tensor, logits: torch.Tensor) -> float:
    """KL(reference || logits) over the vocabulary, averaged over positions. (B, T, V) each."""
    ref, logp = reference.log_softmax(-1), logits.log_softmax(-1)
    return float(torch.nn.functional.kl_div(logp, ref, log_target=True, reduction="none").sum(-1).mean())


def latent_fields(attention_type: str, head_dim: int) -> dict:
    from espnet_mtla.hf.from_llama import attention_family

    return {"kv_lora_rank": 4 * head_dim, "down_rate": 2} if attention_family(attention_type) == "mla" else {}


@torch.no_grad()
def compare(llama, ids: torch.Tensor) -> list:
    from espnet_mtla.hf import LlamaMTLAForCausalLM

    reference = llama(ids).logits
    head_dim = llama.config.head_dim
    rows = []
    for attention_type in attention_types():
        row = {"attention_type": attention_type}
        for init in ("llama", "random"):
            torch.manual_seed(1)
            model = LlamaMTLAForCausalLM.from_llama(llama, attention_type=attention_type, attention_init=init,
                                                    **latent_fields(attention_type, head_dim))
            row[f"kl_{init}"] = round(max(0.0, kl_per_token(reference, model(ids).logits)), 4)  # not -0.0
        rows.append(row)
    return rows


def random_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, head_dim=32, initializer_range=0.1)
    llama = LlamaForCausalLM(config).eval()
    return llama, torch.randint(0, 512, (8, 64), generator=torch.Generator().manual_seed(2))


def char_lm_llama(steps: int):
    """The notebook's character LM, as a plain Llama, trained on the grammar's sentences."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from espnet_mtla.data.grammar import sentence

    torch.manual_seed(0)
    rng = random.Random(0)
    text = "".join(sentence(rng).english + ".\n" for _ in range(3000))
    held_out = "".join(sentence(rng).english + ".\n" for _ in range(300))
    chars = sorted(set(text + held_out))
    stoi = {c: i + 3 for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text])
    config = LlamaConfig(vocab_size=len(chars) + 3, hidden_size=96, intermediate_size=256, num_hidden_layers=3,
                         num_attention_heads=4, head_dim=24, max_position_embeddings=512, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2)
    llama = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(llama.parameters(), lr=3e-3, weight_decay=0.01)
    window, batch = 96, 32
    llama.train()
    for step in range(1, steps + 1):
        offsets = torch.randint(0, len(data) - window, (batch,))
        ids = torch.stack([data[o:o + window] for o in offsets.tolist()])
        loss = llama(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = 3e-3 * min(1.0, 2 * (1 - step / steps) + 0.05)
        if step % 100 == 0 or step == steps:
            print(f"  char LM step {step}/{steps}: loss {loss.item():.3f}", flush=True)
    llama.eval()
    test = torch.tensor([stoi[c] for c in held_out])
    ids = torch.stack([test[o:o + window] for o in range(0, len(test) - window, window)][:32])
    with torch.no_grad():
        test_loss = float(llama(ids, labels=ids).loss)
    return llama, ids, test_loss


def markdown(results: dict) -> str:
    lines = ["| attention | random Llama: KL, from the Llama's attention | KL, random attention | "
             "char LM: KL, from the Llama's attention | KL, random attention |", "|---|---|---|---|---|"]
    for a, b in zip(results["random_llama"], results["char_lm"]):
        lines.append(f"| {a['attention_type']} | {a['kl_llama']} | {a['kl_random']} | {b['kl_llama']} | "
                     f"{b['kl_random']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500, help="training steps of the character LM")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/bench_from_llama"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    print("random Llama (GQA 8/4 heads, 4 layers):", flush=True)
    llama, ids = random_llama()
    results = {"random_llama": compare(llama, ids)}
    print(f"character LM ({args.steps} training steps):", flush=True)
    llama, ids, test_loss = char_lm_llama(args.steps)
    results.update(char_lm=compare(llama, ids), char_lm_test_loss=round(test_loss, 4), steps=args.steps,
                   seconds=round(time.time() - start, 1))
    write_results_json(args.out_dir, results)
    print(write_tables(args.out_dir, results, markdown))
    print(f"char LM held-out loss {test_loss:.3f} nats/char; {results['seconds']} s")


if __name__ == "__main__":
    main()
