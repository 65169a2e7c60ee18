"""The MLA/MTLA inference decode step on absorbed weights (attention/absorbed.py).

It runs when autograd is off; with autograd on, the same calls take the training code's
path, which test_attention.py checks against the definition. Here the two are compared,
for both weight forms (merged products, factored), every backend, and after the weights
change under the prepared copies.
"""

import pytest
import torch

from espnet_mtla.attention import build_attention
from espnet_mtla.bench.common import kernels_launched

D, H = 32, 4
LATENT = dict(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6)
TOL = 1e-5
CASES = [
    ("mla", "mla", LATENT),
    ("mla-qlora-bias", "mla", dict(LATENT, q_lora_rank=12, bias=True)),
] + [(f"mtla-s{s}", "mtla", dict(LATENT, down_rate=s)) for s in (1, 2, 3, 4)] + [
    ("mtla-s2-qlora-bias", "mtla", dict(LATENT, down_rate=2, q_lora_rank=12, bias=True)),
    ("mtla-s2-qlora-layernorm", "mtla", dict(LATENT, down_rate=2, q_lora_rank=12, bias=True, latent_norm="layer_norm")),
]
FORMS = pytest.mark.parametrize("merged", [False, True], ids=["factored", "merged"])


def make(attention_type, conf, merged, backend="auto", seed=0):
    torch.manual_seed(seed)
    attn = build_attention(attention_type, D, H, attn_backend=backend, **conf).eval()
    attn.absorb_merged = merged
    return attn


def decode(attn, x, mask, prompt, fast: bool, rows=None):
    """Prompt of ``prompt`` tokens, then one token per call with the per-step mask (rows that
    ended get steps without a real token); ``rows`` reorders the cache after the prompt."""
    with torch.set_grad_enabled(not fast):
        cache = attn.new_cache(x.shape[0], capacity=2)
        outs = [attn(x[:, :prompt], mask[:, :prompt], cache=cache)]
        if rows is not None:
            cache.reorder(rows)
            x, mask, outs = x[rows], mask[rows], [outs[0][rows]]
        outs += [attn(x[:, t : t + 1], mask[:, t : t + 1], cache=cache) for t in range(prompt, x.shape[1])]
    return torch.cat(outs, 1).detach(), cache


def batch(lengths, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), D, generator=gen)
    return x, torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)


def assert_same_cache(a, b):
    assert a.lengths.tolist() == b.lengths.tolist()
    for row, length in enumerate(a.lengths.tolist()):
        slots = a.num_slots(length)
        got, want = a.buffers["kv"][row, :slots], b.buffers["kv"][row, :slots]
        assert (got - want).abs().max().item() <= TOL


@FORMS
@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_absorbed_step_equals_training_path(name, attention_type, conf, merged, backend):
    if backend == "triton" and name not in ("mla", "mtla-s3"):
        pytest.skip("the kernel sees the same (query, slots) for every case: two cases cover it (interpreter time)")
    attn = make(attention_type, conf, merged, backend)
    x, mask = batch([14, 9, 5, 3])
    parallel = attn(x, mask).detach()
    for prompt in (1, 2, 3):
        fast, fast_cache = decode(attn, x, mask, prompt, fast=True)
        slow, slow_cache = decode(attn, x, mask, prompt, fast=False)
        assert ((fast - slow) * mask.unsqueeze(-1)).abs().max().item() <= TOL, f"prompt {prompt}"
        assert ((fast - parallel) * mask.unsqueeze(-1)).abs().max().item() <= TOL, f"prompt {prompt}"
        assert fast[~mask].abs().max().item() == 0.0
        assert_same_cache(fast_cache, slow_cache)


@FORMS
@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_absorbed_step_after_beam_reorder(name, attention_type, conf, merged):
    attn = make(attention_type, conf, merged)
    x, mask = batch([11, 11, 11])
    rows = torch.tensor([2, 0, 0, 1])
    fast, _ = decode(attn, x, mask, 3, fast=True, rows=rows)
    slow, _ = decode(attn, x, mask, 3, fast=False, rows=rows)
    assert (fast - slow).abs().max().item() <= TOL


def steps_agree(attn, tol=TOL):
    x, mask = batch([9, 9])
    x = x.to(attn.kv_down.weight.dtype)
    fast, _ = decode(attn, x, mask, 2, fast=True)
    slow, _ = decode(attn, x, mask, 2, fast=False)
    return (fast - slow).abs().max().item() <= tol


@FORMS
def test_weights_changed_after_absorption_are_picked_up(merged):
    attn = make("mtla", dict(LATENT, down_rate=2), merged)
    assert steps_agree(attn)  # absorbed weights built here
    prepared = attn.__dict__["_absorbed"]

    # a training step (in-place parameter updates)
    attn.train()
    assert "_absorbed" not in attn.__dict__  # train() drops the inference copies
    optimizer = torch.optim.SGD(attn.parameters(), lr=0.5)
    x, _ = batch([6, 6])
    attn(x).square().sum().backward()
    optimizer.step()
    attn.eval()
    assert steps_agree(attn)
    assert attn.__dict__["_absorbed"] is not prepared

    # in-place edits without train(): load_state_dict, a manual update of the hyper-network
    assert steps_agree(attn)
    attn.load_state_dict(make("mtla", dict(LATENT, down_rate=2), merged, seed=7).state_dict())
    assert steps_agree(attn)
    with torch.no_grad():
        attn.hypernet.chunk_proj.bias.add_(1.0)
    assert steps_agree(attn)

    # another dtype (new storage)
    attn.to(torch.float64)
    assert steps_agree(attn, tol=1e-10)


@pytest.mark.parametrize("attention_type,conf", [("mla", LATENT), ("mtla", dict(LATENT, down_rate=2))])
def test_absorbed_step_launches_far_fewer_ops(attention_type, conf):
    attn = make(attention_type, conf, merged=True)
    x, _ = batch([8, 8])
    counts = {}
    for fast in (True, False):
        with torch.set_grad_enabled(not fast):
            cache = attn.new_cache(2)
            attn(x[:, :5], cache=cache)
            attn(x[:, 5:6], cache=cache)  # warm (absorbed weights built)
            counts[fast] = kernels_launched(lambda: attn(x[:, 6:7], cache=cache))
    assert counts[True] <= 0.65 * counts[False], counts  # MLA 22 vs 51, MTLA 36 vs 66


def test_absorbed_step_in_bfloat16():
    attn = make("mtla", dict(LATENT, down_rate=2), merged=True)
    x, mask = batch([10, 7])
    reference, _ = decode(attn, x, mask, 3, fast=False)
    attn.to(torch.bfloat16)
    got, _ = decode(attn, x.to(torch.bfloat16), mask, 3, fast=True)
    assert got.dtype == torch.bfloat16
    err = ((got.float() - reference) * mask.unsqueeze(-1)).abs().max().item() / reference.abs().max().item()
    assert err <= 2e-2


def test_absorbed_decode_can_be_switched_off_for_before_after_benchmarks():
    attn = make("mtla", dict(LATENT, down_rate=2), merged=False)
    attn.absorbed_decode = False
    x, mask = batch([6, 6])
    off, _ = decode(attn, x, mask, 2, fast=True)
    assert "_absorbed" not in attn.__dict__
    attn.absorbed_decode = True
    on, _ = decode(attn, x, mask, 2, fast=True)
    assert "_absorbed" in attn.__dict__ and (on - off).abs().max().item() <= TOL


@FORMS
@pytest.mark.parametrize("attention_type,conf", [("mla", {}), ("mtla", {"down_rate": 2}), ("mtla", {"down_rate": 3})])
def test_beam_search_hypotheses_equal_on_both_paths(attention_type, conf, merged):
    """The whole multi-utterance search gives the same n-best lists (tokens, scores) on the
    absorbed decode step as on the training code's path."""
    from espnet_mtla.attention import MultiHeadLatentAttention
    from espnet_mtla.decoder.stack import DecoderOnlyStack
    from espnet_mtla.search import MultiUtteranceBeamSearch

    torch.manual_seed(0)
    sections = {"mla_conf": dict(LATENT), f"{attention_type}_conf": dict(conf)} if conf else {"mla_conf": dict(LATENT)}
    stack = DecoderOnlyStack(17, 12, attention_type=attention_type, model_dim=D, attention_heads=H,
                             linear_units=48, num_blocks=2, dropout_rate=0.0, tie_embeddings=False, **sections).eval()
    with torch.no_grad():
        stack.final_norm.weight.mul_(3.0)  # sharper outputs: few near-ties between hypotheses
    layers = [m for m in stack.modules() if isinstance(m, MultiHeadLatentAttention)]
    for layer in layers:
        layer.absorb_merged = merged
    gen = torch.Generator().manual_seed(1)
    enc, lens = torch.randn(3, 11, 12, generator=gen), torch.tensor([11, 7, 9])
    results = {}
    for absorbed in (False, True):  # training path first: nothing absorbed before the second run
        for layer in layers:
            layer.absorbed_decode = absorbed
        hyps = MultiUtteranceBeamSearch(stack, 16, 16, 4, nbest=3)(enc, lens, maxlenratio=-6).hypotheses
        assert ("_absorbed" in stack.layers[0].attn.__dict__) == absorbed
        results[absorbed] = [[(h.yseq.tolist(), float(h.score)) for h in utt] for utt in hyps]
    for fast, slow in zip(results[True], results[False]):
        assert [y for y, _ in fast] == [y for y, _ in slow]
        assert all(abs(a - b) <= 1e-4 for (_, a), (_, b) in zip(fast, slow))


def test_a_search_checks_the_weights_once_not_at_every_step(monkeypatch):
    """Walking every parameter of every layer per step (to see whether the prepared weights are
    stale) costs as much as a small layer's step: a search, which changes no weight, checks once.
    Outside a search, a changed weight is still picked up at the next call."""
    from espnet_mtla.attention import absorbed
    from test_search import inputs, our_search, search_decoder

    decoder = search_decoder("mtla")
    calls = []
    key = absorbed.parameters_key
    monkeypatch.setattr(absorbed, "parameters_key", lambda params: calls.append(1) or key(params))
    _, enc, lens = inputs([9, 12])
    with torch.no_grad():
        first = our_search(decoder, 0.0)(enc, lens, -8, -2).hypotheses
        steps = len(calls)
        calls.clear()
        again = our_search(decoder, 0.0)(enc, lens, -8, -2).hypotheses
    assert len(calls) == len(decoder.layers)  # once per layer (weights already built): not per step
    assert steps <= 2 * len(decoder.layers)  # built (key) at the first step
    assert [h[0].yseq.tolist() for h in first] == [h[0].yseq.tolist() for h in again]
    attn = decoder.layers[0].attn
    with torch.no_grad():
        cached = absorbed.absorbed_weights(attn)
        attn.out_proj.weight.mul_(2.0)
        assert absorbed.absorbed_weights(attn) is not cached  # outside a search: checked per call
