"""The stride-aware parallel attention (``attn_backend`` auto): exact gradients in less memory.

Gradients of every parameter (hyper-network included) and of the input equal the explicit
path's (eager); float64 gradcheck of the autograd Function itself with tiles small enough that
every loop runs several blocks; and what it keeps for backward is O(T) and, at the paper's
dimensions, less than MHA keeps. On GPUs (``attn_backend`` triton) the same through
FlexAttention (``stride_flex.py``): its block lists and compiled forward are checked here on
CPUs, its gradients and memory on a GPU.
"""

import math
import shutil

import pytest
import torch

from espnet_mtla.attention import build_attention, stride_attention, stride_flex
from espnet_mtla.attention.stride_attention import stride_aware_attention
from test_attention import D, H, LATENT, padded_batch

CUDA = torch.cuda.is_available()
CASES = [("mla", LATENT), ("mla", dict(LATENT, q_lora_rank=12))] + [
    ("mtla", dict(LATENT, down_rate=s)) for s in (1, 2, 3, 4)
]
IDS = ["mla", "mla-qlora"] + [f"mtla-s{s}" for s in (1, 2, 3, 4)]


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 3 slots x 2 queries, so every loop of the Function runs over several blocks."""
    monkeypatch.setitem(stride_attention.KEY_BLOCK, "cpu", 3)
    monkeypatch.setitem(stride_attention.TILE_ELEMENTS, "cpu", 1)
    monkeypatch.setattr(stride_attention, "MIN_ROWS", 2)


def gradients(attention_type, conf, backend, inputs, prefix=None, device="cpu"):
    """Output and gradients of every parameter and input for one backend (same weights)."""
    torch.manual_seed(0)
    attn = build_attention(attention_type, D, H, attn_backend=backend, **conf).train().to(device)
    x, mask = (t.to(device) for t in inputs)
    x = x.clone().requires_grad_(True)
    cache = None
    if prefix is not None:
        prefix = prefix.to(device).clone().requires_grad_(True)
        cache = attn.new_cache(x.shape[0], capacity=2)
        attn.prefill(cache, prefix)
    out = attn(x, mask, cache=cache)
    weight = torch.linspace(-1, 1, out.numel(), device=device).view_as(out)  # a loss that weighs every output differently
    (out * weight * mask.unsqueeze(-1)).sum().backward()
    grads = {name: p.grad for name, p in attn.named_parameters()}
    grads["input"] = x.grad
    if prefix is not None:
        grads["prefix"] = prefix.grad
    return out.detach() * mask.unsqueeze(-1), grads


@pytest.mark.parametrize("with_prefix", [False, True], ids=["scratch", "after-prefix"])
@pytest.mark.parametrize("attention_type,conf", CASES, ids=IDS)
def test_gradients_equal_the_explicit_path(attention_type, conf, with_prefix, small_tiles):
    inputs = padded_batch([17, 11, 4])
    prefix = torch.randn(3, 5, D) if with_prefix else None
    out, grads = gradients(attention_type, conf, "auto", inputs, prefix)
    expected_out, expected = gradients(attention_type, conf, "eager", inputs, prefix)
    assert (out - expected_out).abs().max().item() <= 1e-5
    assert grads.keys() == expected.keys()
    if attention_type == "mtla":
        assert any(name.startswith("hypernet.") for name in grads)
    for name, grad in grads.items():
        assert grad is not None and expected[name] is not None, name
        assert (grad - expected[name]).abs().max().item() <= 1e-5, name


def test_gradcheck_float64(small_tiles):
    """The Function's own backward against finite differences, rows of unequal visibility."""
    torch.manual_seed(0)
    batch, time, heads, d_n, d_r, d_c, d_v, slots = 2, 7, 2, 3, 2, 4, 3, 4
    q = torch.randn(batch, heads, time, d_n + d_r, dtype=torch.float64, requires_grad=True)
    own = torch.randn(batch, time, d_c, dtype=torch.float64, requires_grad=True)
    own_rope = torch.randn(batch, time, d_r, dtype=torch.float64, requires_grad=True)
    cached = torch.randn(batch, slots, d_c + d_r, dtype=torch.float64, requires_grad=True)
    w_up = torch.randn(heads * (d_n + d_v), d_c, dtype=torch.float64, requires_grad=True)
    visible = torch.tensor([[0, 0, 1, 1, 2, 3, 4], [1, 1, 1, 2, 2, 2, 3]])
    assert torch.autograd.gradcheck(
        lambda q, own, own_rope, cached, w_up: stride_aware_attention(
            q, own, own_rope, cached[..., :d_c], cached[..., d_c:], visible, w_up, 0.7),
        (q, own, own_rope, cached, w_up),
    )


def saved_tensors(layer, x):
    """(largest saved tensor's elements, bytes of the distinct storages kept for backward)."""
    storages, largest = {}, 0

    def pack(t):
        nonlocal largest
        largest = max(largest, t.numel())
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x).sum().backward()
    return largest, sum(storages.values())


@pytest.mark.parametrize("down_rate", [1, 2, 4])
def test_keeps_less_than_mha_for_backward(down_rate):
    """Paper dimensions: no saved tensor beyond O(T*H*d), and fewer bytes kept than MHA keeps."""
    batch, time, dim, heads = 1, 512, 512, 8
    torch.manual_seed(0)
    x = torch.randn(batch, time, dim, requires_grad=True)
    paper = dict(kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, down_rate=down_rate)
    largest, kept = saved_tensors(build_attention("mtla", dim, heads, **paper).train(), x)
    _, kept_by_mha = saved_tensors(build_attention("mha", dim, heads).train(), x)
    assert largest <= batch * time * heads * (64 + 32), f"largest saved tensor has {largest} elements"
    assert kept < kept_by_mha, f"MTLA s={down_rate} keeps {kept} bytes, MHA {kept_by_mha}"


# -- FlexAttention (attn_backend triton on GPUs) -----------------------------------------------
def visible_rows(batch, time, slots, seed):
    """Random visibility (B, T) in [0, slots], non-decreasing along t, rows unequal."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(0, slots // 2 + 1, (batch, 1), generator=gen)
    return (start + torch.randint(0, 3, (batch, time), generator=gen).cumsum(1)).clamp(max=slots)


@pytest.mark.parametrize("time,slots", [(1, 0), (5, 3), (13, 9), (16, 16), (37, 20)])
def test_flex_block_lists_cover_exactly_the_visible_keys(time, slots):
    """Per query block: the listed key blocks are those holding a key some row sees; the full
    ones (no mask) are seen whole by every row; partial and full lists are disjoint."""
    block, batch = 4, 3
    visible = visible_rows(batch, time, slots, seed=time)
    slot_blocks, q_blocks = math.ceil(slots / block), math.ceil(time / block)
    partial, indices, full, full_indices = stride_flex.kv_blocks(visible, slot_blocks, block)
    query = torch.arange(q_blocks * block)
    real = query < time
    seen_by = torch.nn.functional.pad(visible, (0, q_blocks * block - time))  # (B, Q * block)
    key = torch.arange((slot_blocks + q_blocks) * block)
    seen = ((key < seen_by[..., None]) | (key == slot_blocks * block + query[:, None])) & real[:, None]
    seen = seen.view(batch, q_blocks, block, slot_blocks + q_blocks, block)
    any_seen = seen.any(4).any(2)
    all_seen = (seen | ~real.view(1, q_blocks, block, 1, 1)).all(4).all(2)
    for b in range(batch):
        for i in range(q_blocks):
            listed = indices[b, i, : partial[b, i]].tolist()
            whole = full_indices[b, i, : full[b, i]].tolist()
            assert listed == sorted(listed) and not set(listed) & set(whole)
            assert set(listed) | set(whole) == set(torch.nonzero(any_seen[b, i]).flatten().tolist())
            assert all(all_seen[b, i, k] for k in whole)


def flex_inputs(batch=2, heads=3, time=37, slots=20, d_n=8, d_r=4, d_c=12, d_v=6, device="cpu"):
    torch.manual_seed(0)
    q = torch.randn(batch, heads, time, d_n + d_r, device=device)
    own, own_rope = torch.randn(batch, time, d_c, device=device), torch.randn(batch, time, d_r, device=device)
    cached = torch.randn(batch, slots, d_c + d_r, device=device)
    w_up = torch.randn(heads * (d_n + d_v), d_c, device=device) / 4
    visible = visible_rows(batch, time, slots, seed=1).to(device)
    return q, own, own_rope, cached[..., :d_c], cached[..., d_c:], visible, w_up, 0.3


def test_flex_forward_equals_the_pytorch_op_function():
    """FlexAttention (uncompiled: on a CPU it runs without autograd) over the block lists."""
    from torch.nn.attention.flex_attention import flex_attention

    args = flex_inputs()
    expected = stride_aware_attention(*args)
    got = stride_flex.flex_stride_attention(*args, block=16, flex=flex_attention)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.skipif(shutil.which("c++") is None, reason="inductor's CPU kernels need a C++ compiler")
def test_compiled_flex_forward_skips_blocks_and_equals_the_pytorch_op_function():
    """Compiled FlexAttention (inductor's CPU kernel, which walks the block lists) over rows
    whose visibility starts and rises differently: the block-sparse path itself, forward only."""
    args = flex_inputs(time=150, slots=70)
    expected = stride_aware_attention(*args)
    torch.testing.assert_close(stride_flex.flex_stride_attention(*args, block=32), expected, rtol=0, atol=1e-5)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("with_prefix", [False, True], ids=["scratch", "after-prefix"])
@pytest.mark.parametrize("attention_type,conf", CASES, ids=IDS)
def test_flex_gradients_equal_the_explicit_path_on_a_gpu(attention_type, conf, with_prefix):
    inputs = padded_batch([17, 11, 4])
    prefix = torch.randn(3, 5, D) if with_prefix else None
    out, grads = gradients(attention_type, conf, "triton", inputs, prefix, device="cuda")
    expected_out, expected = gradients(attention_type, conf, "eager", inputs, prefix, device="cuda")
    assert (out - expected_out).abs().max().item() <= 1e-5
    for name, grad in grads.items():
        assert (grad - expected[name]).abs().max().item() <= 1e-5, name


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_flex_function_equals_the_pytorch_op_function_on_a_gpu():
    args = flex_inputs(time=300, slots=150, device="cuda")
    leaves = [t.clone().requires_grad_(True) for t in args[:5]] + [args[5], args[6].clone().requires_grad_(True)]
    expected = stride_aware_attention(*leaves, args[7])
    got = stride_flex.flex_stride_attention(*leaves, args[7])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    weight = torch.randn_like(got)
    grads = torch.autograd.grad((got * weight).sum(), [t for t in leaves if t.requires_grad])
    expected_grads = torch.autograd.grad((expected * weight).sum(), [t for t in leaves if t.requires_grad])
    for got_grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=1e-4)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_flex_keeps_less_than_mha_for_backward_on_a_gpu():
    batch, time, dim, heads = 1, 512, 512, 8
    torch.manual_seed(0)
    x = torch.randn(batch, time, dim, device="cuda", requires_grad=True)
    paper = dict(kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, down_rate=2)
    mtla = build_attention("mtla", dim, heads, attn_backend="triton", **paper).train().cuda()
    largest, kept = saved_tensors(mtla, x)
    _, kept_by_mha = saved_tensors(build_attention("mha", dim, heads).train().cuda(), x)
    assert largest <= batch * time * heads * (64 + 32), f"largest saved tensor has {largest} elements"
    assert kept < kept_by_mha, f"MTLA s=2 keeps {kept} bytes, MHA {kept_by_mha}"
