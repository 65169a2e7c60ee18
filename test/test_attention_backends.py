"""Attention backends: the Triton decode kernel against a float64 definition, backend choice,
fallback notices, and (on a GPU) every backend against eager in fp32/bf16/fp16.

test_attention.py runs its equivalence matrix once per backend (the ``backend`` fixture);
this file covers what is specific to backends.
"""

import logging

import pytest
import torch

from espnet_mtla.attention import backends, build_attention, set_attention_backend
from espnet_mtla.attention.backends import resolve_backend
from espnet_mtla.storage.errors import ConfigError

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
needs_interpreter = pytest.mark.skipif(
    not backends.triton_interpreting(), reason="Triton's CPU interpreter is on only without a GPU"
)


def reference_decode(query, slots, num_visible, scale, d_latent):
    """softmax(scale * q . slot) @ slot latent over each row's visible slots, in float64."""
    visible = torch.arange(slots.shape[1], device=slots.device) < num_visible.unsqueeze(1)  # (B, S)
    scores = torch.einsum("bhk,bsk->bhs", query.double(), slots.double()) * scale
    scores = scores.masked_fill(~visible.unsqueeze(1), float("-inf"))
    return torch.einsum("bhs,bsc->bhc", scores.softmax(-1), slots[..., :d_latent].double())


def random_decode_inputs(batch, heads, d_latent, d_rope, num_slots, dtype, device, seed=0):
    """Slots as a cache hands them over: a view of a longer buffer (row stride > S x width)."""
    gen = torch.Generator().manual_seed(seed)
    width = d_latent + d_rope
    query = torch.randn(batch, heads, width, generator=gen).to(device, dtype)
    buffer = torch.randn(batch, num_slots + 7, width, generator=gen).to(device, dtype)
    num_visible = torch.randint(1, num_slots + 1, (batch,), generator=gen)
    num_visible[0], num_visible[-1] = 1, num_slots  # one slot only; the whole cache
    return query, buffer[:, :num_slots], num_visible.to(device)


def relative_error(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


# (batch, heads, d_latent, d_rope, slots, splits): head counts and widths that are not powers
# of two, more heads than one block, splits that hold no visible slot of some rows.
KERNEL_SHAPES = [
    (3, 4, 16, 4, 70, None),
    (3, 5, 24, 6, 130, 3),
    (2, 8, 32, 8, 300, 7),
    (2, 20, 16, 4, 40, 2),
]


@needs_interpreter
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2)], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=[str(s) for s in KERNEL_SHAPES])
def test_triton_kernel_matches_definition_in_interpreter(shape, dtype, tol):
    from espnet_mtla.attention.triton_decode import latent_decode

    batch, heads, d_latent, d_rope, num_slots, splits = shape
    query, slots, num_visible = random_decode_inputs(batch, heads, d_latent, d_rope, num_slots, dtype, "cpu")
    out = latent_decode(query, slots, num_visible, 0.3, d_latent, num_splits=splits)
    assert out.shape == (batch, heads, d_latent) and out.dtype == dtype
    assert relative_error(out, reference_decode(query, slots, num_visible, 0.3, d_latent)) <= tol


def test_triton_kernel_refuses_mismatched_inputs_in_one_line():
    pytest.importorskip("triton")
    from espnet_mtla.attention.triton_decode import latent_decode

    query, slots = torch.zeros(2, 4, 20), torch.zeros(2, 9, 20, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"^query \(2, 4, 20\) torch.float32 and slots \(2, 9, 20\) torch.float16 differ$"):
        latent_decode(query, slots, torch.ones(2, dtype=torch.long), 0.3, 16)


@needs_interpreter
def test_triton_backend_runs_the_kernel_for_decode_steps(monkeypatch):
    """attn_backend: triton really goes through the kernel (no silent fallback) and agrees with eager."""
    from espnet_mtla.attention import triton_decode

    calls = []
    kernel = triton_decode.latent_decode
    monkeypatch.setattr(triton_decode, "latent_decode", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    outputs = {}
    for name in ("eager", "triton"):
        torch.manual_seed(0)
        attn = build_attention("mtla", 32, 4, kv_lora_rank=16, qk_rope_head_dim=4, down_rate=2, attn_backend=name)
        cache = attn.eval().new_cache(2)
        x = torch.randn(2, 6, 32)
        with torch.no_grad():
            outputs[name] = torch.cat([attn(x[:, :2], cache=cache)] + [attn(x[:, t : t + 1], cache=cache) for t in range(2, 6)], 1)
    assert len(calls) == 4  # one per decode step; the 2-token prompt is not a decode step
    assert (outputs["triton"] - outputs["eager"]).abs().max().item() <= 1e-5


@pytest.fixture
def fresh_notices():
    backends._noticed.clear()
    yield
    backends._noticed.clear()


def test_auto_picks_sdpa_on_cpu_and_triton_only_on_gpu():
    cpu = torch.zeros(2, 2)
    assert resolve_backend("auto", cpu, "MLA/MTLA decode step", has_triton_kernel=True) == "sdpa"
    assert resolve_backend("eager", cpu, "MLA/MTLA decode step", has_triton_kernel=True) == "eager"
    if CUDA and backends.triton_installed():
        gpu = cpu.cuda()
        assert resolve_backend("auto", gpu, "MLA/MTLA decode step", has_triton_kernel=True) == "triton"
        assert resolve_backend("auto", gpu, "MLA/MTLA parallel pass") == "sdpa"
        assert resolve_backend("auto", gpu.double(), "MLA/MTLA decode step", has_triton_kernel=True) == "sdpa"


def test_triton_falls_back_to_sdpa_with_one_notice(caplog, fresh_notices):
    caplog.set_level(logging.WARNING, logger="espnet_mtla.attention")
    cpu = torch.zeros(2, 2)
    assert resolve_backend("triton", cpu, "MHA/MQA/GQA attention") == "sdpa"
    assert resolve_backend("triton", cpu, "MHA/MQA/GQA attention") == "sdpa"
    assert resolve_backend("triton", cpu.double(), "MLA/MTLA decode step", has_triton_kernel=True) == "sdpa"
    assert resolve_backend("triton", cpu.requires_grad_(), "MLA/MTLA decode step", has_triton_kernel=True) == "sdpa"
    assert [r.getMessage() for r in caplog.records] == [
        "attn_backend triton: no Triton kernel for the MHA/MQA/GQA attention; using sdpa",
        "attn_backend triton: the kernel takes float32/float16/bfloat16, not torch.float64; "
        "using sdpa for the MLA/MTLA decode step",
        "attn_backend triton: the kernel has no backward pass (autograd is recording); "
        "using sdpa for the MLA/MTLA decode step",
    ]


def test_training_with_triton_backend_trains_through_the_stride_aware_attention(caplog, fresh_notices):
    caplog.set_level(logging.WARNING, logger="espnet_mtla.attention")
    attn = build_attention("mtla", 32, 4, kv_lora_rank=16, qk_rope_head_dim=4, attn_backend="triton").train()
    (attn(torch.randn(2, 7, 32)) ** 2).sum().backward()
    assert attn.kv_up.weight.grad.abs().sum() > 0
    assert [r.getMessage() for r in caplog.records] == [
        "attn_backend triton: the MLA/MTLA parallel pass has Triton kernels (FlexAttention) on GPUs only; using "
        "the stride-aware attention (PyTorch ops)"
    ]


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^attn_backend must be one of auto, eager, sdpa, triton, got 'flash'$"):
        build_attention("mla", 32, 4, kv_lora_rank=16, qk_rope_head_dim=4, attn_backend="flash")
    pytest.importorskip("espnet2")  # the decoder package (absent on bare GPU machines)
    from espnet_mtla.decoder.attention_config import build_layer_attention

    with pytest.raises(ConfigError, match=r"^decoder_conf \(mtla\): attn_backend must be one of"):
        build_layer_attention("mtla", 32, 4, {"attention_conf": {"attn_backend": "cuda"}})


def test_set_attention_backend_switches_every_layer():
    model = torch.nn.ModuleList(
        [build_attention("mha", 32, 4), build_attention("mtla", 32, 4, kv_lora_rank=16, qk_rope_head_dim=4)]
    )
    assert set_attention_backend(model, "eager") == 2
    assert [layer.attn_backend for layer in model] == ["eager", "eager"]
    with pytest.raises(ValueError, match="attn_backend must be one of"):
        set_attention_backend(model, "fast")


# -- on a GPU -----------------------------------------------------------------------------
GPU_CASES = [
    ("mha", {}),
    ("gqa", {"num_kv_heads": 2}),
    ("mla", {}),
    ("mtla-s2", {"down_rate": 2}),
    ("mtla-s4", {"down_rate": 4}),
]
LATENT = dict(kv_lora_rank=64, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16)


def gpu_layer(name, conf, backend, dtype):
    torch.manual_seed(0)
    attention_type = name.split("-")[0]
    if attention_type in ("mla", "mtla"):
        conf = dict(LATENT, **conf)
    return build_attention(attention_type, 128, 8, attn_backend=backend, **conf).eval().to("cuda", dtype)


@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-2)],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("backend_name", ["sdpa", "triton"])
@pytest.mark.parametrize("name,conf", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_gpu_backend_matches_eager(name, conf, backend_name, dtype, tol):
    """Prompt + step-by-step decoding of padded rows on the GPU; reference: eager in float32.

    Errors are relative to the reference's size (max abs difference / max abs value).
    """
    torch.manual_seed(1)
    x = torch.randn(3, 40, 128, device="cuda")
    mask = torch.arange(40, device="cuda") < torch.tensor([40, 33, 21], device="cuda").unsqueeze(1)
    with torch.no_grad():
        expected = gpu_layer(name, conf, "eager", torch.float32)(x, mask)
        layer = gpu_layer(name, conf, backend_name, dtype)
        xd = x.to(dtype)
        cache = layer.new_cache(3)
        outs = [layer(xd[:, :5], mask[:, :5], cache=cache)]
        outs += [layer(xd[:, t : t + 1], mask[:, t : t + 1], cache=cache) for t in range(5, 40)]
        parallel = layer(xd, mask)
    scale = expected.abs().max().item()
    for got in (torch.cat(outs, 1), parallel):
        assert got.dtype == dtype
        err = ((got.float() - expected) * mask.unsqueeze(-1)).abs().max().item() / scale
        assert err <= tol, f"relative error {err:.2e}"


@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-2)],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("batch,heads,num_slots", [(64, 8, 8192), (4, 16, 1000), (1, 128, 300)])
def test_gpu_triton_kernel_at_paper_dims(batch, heads, num_slots, dtype, tol):
    """kv_lora_rank 256 + rope 32 (the paper's MLA/MTLA), long caches, many heads."""
    from espnet_mtla.attention.triton_decode import latent_decode

    query, slots, num_visible = random_decode_inputs(batch, heads, 256, 32, num_slots, dtype, "cuda")
    out = latent_decode(query, slots, num_visible, 288**-0.5, 256)
    assert torch.isfinite(out).all()
    assert relative_error(out, reference_decode(query, slots, num_visible, 288**-0.5, 256)) <= tol
