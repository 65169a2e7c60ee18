"""Attention library: parallel == incremental == definition, caches, padding, errors."""

import math

import pytest
import torch

from attention_reference import reference_latent, reference_mha
from espnet_mtla.attention import (
    MultiHeadAttention,
    MultiHeadTemporalLatentAttention,
    attention_options,
    attention_types,
    build_attention,
)

D, H = 32, 4
LATENT = dict(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6)
TOL = 1e-5

# (id, attention_type, conf): every type, and MTLA with down_rate 1..4.
CASES = [
    ("mha", "mha", {}),
    ("mqa", "mqa", {}),
    ("gqa", "gqa", {"num_kv_heads": 2}),
    ("mla", "mla", LATENT),
    ("mla-qlora", "mla", dict(LATENT, q_lora_rank=12)),
] + [(f"mtla-s{s}", "mtla", dict(LATENT, down_rate=s)) for s in (1, 2, 3, 4)] + [
    # the paper's LayerNorm on the latents (the q_lora latent's too)
    ("mtla-s3-layernorm", "mtla", dict(LATENT, down_rate=3, q_lora_rank=12, latent_norm="layer_norm")),
]


def test_cases_cover_every_registered_type():
    # A type registered without a case here would silently go untested.
    assert {case[1] for case in CASES} == set(attention_types())


def make(attention_type, conf, seed=0, backend="auto"):
    torch.manual_seed(seed)
    return build_attention(attention_type, D, H, attn_backend=backend, **conf).eval()


def down_rate(conf):
    return conf.get("down_rate", 1)


def padded_batch(lengths, seed=1):
    """Right-padded batch: x (B, T, D) with garbage in the padding, mask (B, T)."""
    torch.manual_seed(seed)
    time = max(lengths)
    x = torch.randn(len(lengths), time, D)
    mask = torch.arange(time) < torch.tensor(lengths).unsqueeze(1)
    return x, mask


def max_diff(a, b, mask):
    return ((a - b) * mask.unsqueeze(-1)).abs().max().item()


def step_by_step(attn, x, cache, start=0):
    return torch.cat([attn(x[:, t : t + 1], cache=cache) for t in range(start, x.shape[1])], dim=1)


@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_parallel_matches_definition(name, attention_type, conf, backend):
    attn = make(attention_type, conf, backend=backend)
    x, _ = padded_batch([11, 11])
    expected = reference_mha(attn, x) if attention_type in ("mha", "mqa", "gqa") else reference_latent(attn, x)
    assert (attn(x) - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_incremental_matches_parallel(name, attention_type, conf, backend):
    attn = make(attention_type, conf, backend=backend)
    x, mask = padded_batch([13, 9, 5, 1])
    parallel = attn(x, mask)
    cache = attn.new_cache(x.shape[0], capacity=2)
    assert max_diff(parallel, step_by_step(attn, x, cache), mask) <= TOL
    # Padded positions give zeros, not garbage.
    assert parallel[~mask].abs().max().item() == 0.0


@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_prefill_then_steps(name, attention_type, conf, backend):
    attn = make(attention_type, conf, backend=backend)
    s = down_rate(conf)
    x, mask = padded_batch([15, 14, 7])
    parallel = attn(x, mask)
    for prompt in sorted({p for p in (1, s - 1, s, s + 1, 13) if p > 0}):
        cache = attn.new_cache(x.shape[0], capacity=3)
        first = attn(x[:, :prompt], mask[:, :prompt], cache=cache)
        rest = step_by_step(attn, x, cache, start=prompt)
        assert max_diff(parallel, torch.cat([first, rest], 1), mask) <= TOL, f"prompt length {prompt}"


@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_parallel_chunks_after_cache(name, attention_type, conf, backend):
    """A multi-token block on top of a cache (prompt after a prefix) equals the parallel pass."""
    attn = make(attention_type, conf, backend=backend)
    x, mask = padded_batch([15, 12, 10])
    parallel = attn(x, mask)
    for split in (1, 2, 3, 5):
        cache = attn.new_cache(x.shape[0])
        first = attn(x[:, :split], cache=cache)
        rest = attn(x[:, split:], mask[:, split:], cache=cache)
        assert max_diff(parallel, torch.cat([first, rest], 1), mask) <= TOL, f"split {split}"


@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_beam_reorder(name, attention_type, conf, backend):
    attn = make(attention_type, conf, backend=backend)
    s = down_rate(conf)
    x, _ = padded_batch([12, 12, 12])
    beams = torch.tensor([2, 0, 0, 1])  # rows may be duplicated and dropped, as in beam search
    expected = attn(x[beams])
    prompt = s + 1
    cache = attn.new_cache(3)
    attn(x[:, :prompt], cache=cache)
    cache.reorder(beams)
    got = step_by_step(attn, x[beams], cache, start=prompt)
    assert (got - expected[:, prompt:]).abs().max().item() <= TOL


@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_left_padded_prompt_equals_unpadded_rows(name, attention_type, conf, backend):
    """Left padding (as in batched LM prompts) changes nothing: each row as if alone."""
    attn = make(attention_type, conf, backend=backend)
    lengths, extra = [7, 4, 1], 5
    torch.manual_seed(3)
    rows = [torch.randn(1, n + extra, D) for n in lengths]
    width = max(lengths)
    x = torch.zeros(len(lengths), width, D)
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for b, n in enumerate(lengths):
        x[b, width - n :] = rows[b][0, :n]
        mask[b, width - n :] = True
    cache = attn.new_cache(len(lengths))
    prompt_out = attn(x, mask, cache=cache)
    steps = torch.cat([rows[b][:, lengths[b] :] for b in range(len(lengths))])
    step_out = step_by_step(attn, steps, cache)
    for b, n in enumerate(lengths):
        alone = attn(rows[b])
        assert (prompt_out[b, width - n :] - alone[0, :n]).abs().max().item() <= TOL
        assert (step_out[b] - alone[0, n:]).abs().max().item() <= TOL
    assert prompt_out[~mask].abs().max().item() == 0.0


@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_keys_only_prefix(name, attention_type, conf, backend):
    """Decoder layout: keys/values over [prefix; text], queries over text only.

    The prefix is left-padded, the text right-padded; each row must equal causal attention
    over its own unpadded [prefix; text], read at the text positions.
    """
    attn = make(attention_type, conf, backend=backend)
    prefix_lengths, text_lengths = [6, 3, 8], [5, 7, 2]
    torch.manual_seed(4)
    prefix = torch.randn(3, 8, D)
    prefix_mask = torch.arange(8) >= (8 - torch.tensor(prefix_lengths)).unsqueeze(1)
    text, text_mask = padded_batch(text_lengths, seed=5)
    cache = attn.new_cache(3)
    attn.prefill(cache, prefix, prefix_mask)
    out = attn(text, text_mask, cache=cache)
    assert cache.lengths.tolist() == [p + t for p, t in zip(prefix_lengths, text_lengths)]
    for b, (p, t) in enumerate(zip(prefix_lengths, text_lengths)):
        whole = torch.cat([prefix[b : b + 1, 8 - p :], text[b : b + 1, :t]], dim=1)
        assert (out[b, :t] - attn(whole)[0, p:]).abs().max().item() <= TOL


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_gradients_reach_every_parameter(name, attention_type, conf, backend):
    attn = make(attention_type, conf, backend=backend).train()
    x, mask = padded_batch([9, 6])
    (attn(x, mask) ** 2).sum().backward()
    missing = [n for n, p in attn.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"
    if attention_type == "mtla":
        assert any(n.startswith("hypernet.") for n, _ in attn.named_parameters())


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_training_through_prefix_cache(name, attention_type, conf, backend):
    """Training with a keys-only prefix: gradients flow into the prefix through the cache."""
    attn = make(attention_type, conf, backend=backend).train()
    prefix = torch.randn(2, 5, D, requires_grad=True)
    text, mask = padded_batch([4, 3])
    cache = attn.new_cache(2, capacity=2)
    attn.prefill(cache, prefix)
    (attn(text, mask, cache=cache) ** 2).sum().backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
    missing = [n for n, p in attn.named_parameters() if p.grad is None]
    assert not missing


# Not triton: Triton 3.6's CPU interpreter computes bf16 dot products wrongly (NumPy has no
# bf16); test_attention_backends.py checks the kernel in bf16 on a GPU.
@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_bf16_forward_on_cpu(name, attention_type, conf, backend):
    attn = make(attention_type, conf, backend=backend)
    x, mask = padded_batch([10, 7])
    full = attn(x, mask)
    attn = attn.to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    parallel = attn(xb, mask)
    cache = attn.new_cache(2)
    incremental = torch.cat([attn(xb[:, :3], mask[:, :3], cache=cache), step_by_step(attn, xb, cache, start=3)], 1)
    for out in (parallel, incremental):
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
        assert max_diff(out.float(), full, mask) <= 0.1


def theoretical_bytes(attention_type, conf, lengths, element_size=4):
    s = down_rate(conf)
    if attention_type in ("mha", "mqa", "gqa"):
        kv_heads = {"mha": H, "mqa": 1, "gqa": conf.get("num_kv_heads", 2)}[attention_type]
        per_token = 2 * kv_heads * (D // H)
        return sum(lengths) * per_token * element_size
    per_slot = conf["kv_lora_rank"] + conf["qk_rope_head_dim"]
    return sum(math.ceil(n / s) for n in lengths) * per_slot * element_size


@pytest.mark.parametrize("name,attention_type,conf", CASES, ids=[c[0] for c in CASES])
def test_cache_nbytes_is_theoretical(name, attention_type, conf):
    attn = make(attention_type, conf)
    x, mask = padded_batch([13, 8, 3])
    cache = attn.new_cache(3, capacity=1)
    attn(x, mask, cache=cache)
    assert cache.nbytes() == theoretical_bytes(attention_type, conf, [13, 8, 3])
    attn(torch.randn(3, 1, D), cache=cache)
    assert cache.nbytes() == theoretical_bytes(attention_type, conf, [14, 9, 4])
    assert cache.allocated_nbytes() >= cache.nbytes()


def test_cache_grows_by_a_quarter_and_at_least_sixteen_slots():
    """A full cache grows by a quarter of its capacity (at least 16 slots): it never holds much
    more than its tokens, and reallocates every 16 slots at most."""
    attn = make("mtla", dict(LATENT, down_rate=2))
    cache = attn.new_cache(2, capacity=2)
    capacities = set()
    for _ in range(60):
        attn(torch.randn(2, 1, D), cache=cache)
        capacities.add(cache.capacity_slots)
    assert sorted(capacities) == [1, 17, 33]  # 30 slots hold 60 tokens
    assert cache.nbytes() == 2 * 30 * (16 + 4) * 4
    cache = attn.new_cache(2, capacity=200)  # 100 slots
    for _ in range(201):
        attn(torch.randn(2, 1, D), cache=cache)
    assert cache.capacity_slots == 125


def test_beam_reorder_copies_only_the_used_slots_and_leaves_zeros_past_them():
    """A reorder copies the slots up to the longest row (the rest of the capacity is never read
    unmasked): what rows hold is exactly index_select's; fresh buffers hold zeros past them, so
    readers that mask by weighting (0 x value) never meet NaN."""
    from espnet_mtla.attention.cache import AttentionCache

    cache = AttentionCache(4, {"kv": (3,)}, tokens_per_slot=2, capacity=40)
    cache.buffers["kv"][:, :5] = torch.randn(4, 5, 3)
    cache.buffers["kv"][:, 5:] = float("nan")  # past every row: must not be copied
    cache.advance(torch.tensor([9, 7, 9, 8]), 9)  # 5 slots used
    expected = cache.buffers["kv"][:, :5].index_select(0, torch.tensor([2, 2, 0]))
    cache.reorder(torch.tensor([2, 2, 0]))
    assert torch.equal(cache.view("kv"), expected)
    assert torch.equal(cache.buffers["kv"][:, 5:], torch.zeros(3, 15, 3))


@pytest.mark.parametrize("attention_type,conf", [("mha", {}), ("mtla", dict(LATENT, down_rate=2))])
def test_caches_know_without_a_sync_when_rows_are_equally_long(attention_type, conf):
    """Decode steps skip the mask only while every row holds max_length tokens: unmasked input
    keeps rows equal, a mask or a direct advance makes them unknown (masked from then on), and
    a step over equal rows computes what the masked step computes."""
    attn = make(attention_type, conf)
    cache = attn.new_cache(3)
    attn(torch.randn(3, 4, D), cache=cache)
    assert cache.view_is_visible()
    cache.reorder(torch.tensor([2, 0, 0]))
    assert cache.view_is_visible()
    masked = cache.select(torch.arange(3))
    masked.equal_rows = False  # the same rows, read through the mask
    x = torch.randn(3, 1, D)
    assert torch.allclose(attn(x, cache=cache), attn(x, cache=masked), atol=1e-6)
    with torch.no_grad():  # MLA/MTLA: the absorbed decode step
        assert torch.allclose(attn(x, cache=cache), attn(x, cache=masked), atol=1e-6)
    assert cache.view_is_visible()
    attn(torch.randn(3, 2, D), torch.tensor([[True, True], [True, False], [True, True]]), cache=cache)
    assert not cache.view_is_visible()
    other = attn.new_cache(3)
    other.advance(torch.tensor([1, 1, 1]), 1)
    assert not other.view_is_visible()


def test_mtla_cache_is_smaller():
    sizes = {}
    for name, attention_type, conf in [("mha", "mha", {}), ("mla", "mla", LATENT)] + [
        (f"s{s}", "mtla", dict(LATENT, down_rate=s)) for s in (2, 4)
    ]:
        attn = make(attention_type, conf)
        cache = attn.new_cache(1)
        attn(torch.randn(1, 64, D), cache=cache)
        sizes[name] = cache.nbytes()
    assert sizes["mla"] == 2 * sizes["s2"] == 4 * sizes["s4"]
    assert sizes["mha"] > sizes["mla"]


def test_parallel_pass_never_builds_quadratic_tensors():
    """The MTLA training path saves only O(T) tensors for backward (no (T, T) weights/masks)."""
    time = 1024
    attn = build_attention("mtla", D, H, **dict(LATENT, down_rate=2)).train()
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    x = torch.randn(1, time, D, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = attn(x)
    out.sum().backward()
    assert max(sizes) < time * time // 4, f"largest saved tensor has {max(sizes)} elements"


def test_mtla_differs_from_mla_only_by_merging():
    """With down_rate 1 and no hyper-network MTLA's slots are MLA's."""
    mla = make("mla", LATENT)
    mtla = make("mtla", dict(LATENT, down_rate=1))
    assert isinstance(mtla, MultiHeadTemporalLatentAttention)
    mtla.load_state_dict({**mla.state_dict(), **{k: v for k, v in mtla.state_dict().items() if "hypernet" in k}})
    torch.nn.init.zeros_(mtla.hypernet.latent_proj.weight)
    torch.nn.init.zeros_(mtla.hypernet.latent_proj.bias)  # sigmoid(0) = 1/2 for every token
    x = torch.randn(2, 7, D)
    c_mla, c_mtla = mla.new_cache(2), mtla.new_cache(2)
    mla(x, cache=c_mla)
    mtla(x, cache=c_mtla)
    assert torch.allclose(c_mtla.buffers["kv"][..., :16], 0.5 * c_mla.buffers["kv"][..., :16], atol=1e-6)


@pytest.mark.parametrize("init,weight", [("one", torch.sigmoid(torch.tensor(4.0)).item()), ("half", 0.5)])
def test_hypernet_starts_with_one_weight_for_every_latent_and_learns(init, weight):
    """"one" (the library's default) and "half" start every merge weight alike, whatever the
    latent and chunk; the projections still get gradients, so the weights can come to differ
    ("half": the chunk projection first, its output being zero)."""
    attn = make("mtla", dict(LATENT, down_rate=2, hypernet_init=init))
    latent, chunk = torch.randn(5, 16), torch.tensor([0, 1, 2, 7, 40])
    w = attn.hypernet(latent, chunk)
    assert torch.allclose(w, torch.full_like(w, weight), atol=1e-6)
    w.sum().backward()
    learning = [attn.hypernet.chunk_proj] + ([attn.hypernet.latent_proj] if init == "one" else [])
    for proj in learning:
        assert proj.weight.grad.abs().sum() > 0


def test_hypernet_init_default_and_unknown():
    from espnet_mtla.attention import hypernet

    assert hypernet.INITS["one"] == 4.0  # the library's default, which test/conftest.py sets aside
    with pytest.raises(ValueError, match="hypernet_init must be one of one, half, random, got 'sum'"):
        make("mtla", dict(LATENT, down_rate=2, hypernet_init="sum"))


@pytest.mark.parametrize(
    "attention_type,conf,option",
    [
        ("transformer", {}, "attention_type"),
        ("gqa", {"num_kv_heads": 3}, "num_kv_heads"),
        ("mha", {"head_dim": 5}, "head_dim"),
        ("mla", dict(LATENT, qk_rope_head_dim=5), "qk_rope_head_dim"),
        ("mtla", dict(LATENT, down_rate=0), "down_rate"),
        ("mtla", dict(LATENT, down_rate=1.5), "down_rate"),
        ("mtla", dict(LATENT, kv_lora_rank=15), "kv_lora_rank"),
        ("mha", {"dropout": 1.5}, "dropout"),
        ("mla", dict(LATENT, kv_lora_rnak=8), "kv_lora_rnak"),
        ("mha", {"down_rate": 2}, "down_rate"),
        ("mla", dict(LATENT, q_lora_rank=-1), "q_lora_rank"),
        ("mtla", dict(LATENT, latent_norm="batch_norm"), "latent_norm"),
    ],
)
def test_bad_configurations_name_the_option(attention_type, conf, option):
    with pytest.raises(ValueError, match=option):
        build_attention(attention_type, D, H, **conf)


def test_embed_dim_must_divide_into_heads():
    with pytest.raises(ValueError, match="embed_dim .30. must be divisible by num_heads .4."):
        MultiHeadAttention(30, 4)


def test_options_listing():
    assert "down_rate" in attention_options("mtla") and "kv_lora_rank" in attention_options("mtla")
    assert "num_kv_heads" in attention_options("gqa") and "num_kv_heads" not in attention_options("mha")


def test_mask_and_cache_mismatches_are_clear_errors():
    attn = make("mtla", dict(LATENT, down_rate=2))
    x = torch.randn(3, 5, D)
    with pytest.raises(ValueError, match=r"mask must have shape \(3, 5\) like x, got \(3, 4\)"):
        attn(x, torch.ones(3, 4, dtype=torch.bool))
    cache = attn.new_cache(2)
    with pytest.raises(ValueError, match="x has 3 rows but the cache holds 2; reorder the cache"):
        attn(x, cache=cache)
    assert cache.lengths.tolist() == [0, 0] and cache.max_length == 0  # untouched


def test_latent_norm_choice_and_the_default_that_old_checkpoints_rely_on():
    old = make("mtla", dict(LATENT, down_rate=2, q_lora_rank=12))  # written before latent_norm existed
    assert isinstance(old.kv_norm, torch.nn.RMSNorm) and isinstance(old.q_proj[1], torch.nn.RMSNorm)
    assert "kv_norm.bias" not in old.state_dict()
    paper = make("mtla", dict(LATENT, down_rate=2, q_lora_rank=12, latent_norm="layer_norm"))
    assert isinstance(paper.kv_norm, torch.nn.LayerNorm) and isinstance(paper.q_proj[1], torch.nn.LayerNorm)
    assert paper.kv_norm.eps == 1e-5 and "kv_norm.bias" in paper.state_dict()
    with pytest.raises(ValueError, match="latent_norm must be one of layer_norm, rms_norm, got 'batch_norm'"):
        make("mla", dict(LATENT, latent_norm="batch_norm"))
