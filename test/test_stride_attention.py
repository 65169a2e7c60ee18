"""The stride-aware parallel attention (``attn_backend`` auto): exact gradients in less memory.

Gradients of every parameter (hyper-network included) and of the input equal the explicit
path's (eager); float64 gradcheck of the autograd Function itself with tiles small enough that
every loop runs several blocks; and what it keeps for backward is O(T) and, at the paper's
dimensions, less than MHA keeps.
"""

import pytest
import torch

from espnet_mtla.attention import build_attention, stride_attention
from espnet_mtla.attention.stride_attention import stride_aware_attention
from test_attention import D, H, LATENT, padded_batch
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


def gradients(attention_type, conf, backend, inputs, prefix=None):
    """Output and gradients of every parameter and input for one backend (same weights)."""
    torch.manual_seed(0)
    attn = build_attention(attention_type, D, H, attn_backend=backend, **conf).train()
    x, mask = inputs
    x = x.clone().requires_grad_(True)
    cache = None
    if prefix is not None:
        prefix = prefix.clone().requires_grad_(True)
        cache = attn.new_cache(x.shape[0], capacity=2)
        attn.prefill(cache, prefix)
    out = attn(x, mask, cache=cache)
    weight = torch.linspace(-1, 1, out.numel()).view_as(out)  # a loss that weighs every output differently
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
