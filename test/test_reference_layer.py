"""Parity with the reference implementation itself (pip mtla==0.3.2, its MTLA.py loaded by path).

The reference goes into .venv-bench/mtla (never the venv), as ``make bench`` puts it; the tests
skip, naming why, where it cannot be installed.
"""

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from espnet_mtla.attention import MultiheadTemporalLatentAttention, build_attention
from espnet_mtla.interop.reference_layer import (
    ReferenceFormatError,
    build_from_reference,
    convert_reference_layer,
    reference_layer_config,
    rope_rows,
)
from espnet_mtla.interop import reference_package

ROOT = Path(__file__).resolve().parents[1]
D, H, T = 48, 4, 11
DIMS = dict(kv_lora_rank=32, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12)
TOL = 1e-5
# (q_lora_rank, bias): full-rank queries, with biases, and compressed queries
VARIANTS = [(0, False), (0, True), (12, False)]


@pytest.fixture(scope="module")
def reference():
    directory = ROOT / reference_package.DEFAULT_DIR
    try:
        reference_package.install(directory)
    except (RuntimeError, OSError, TimeoutError) as err:
        pytest.skip(f"reference implementation not installable here: {err}")
    return reference_package.load_layer_module(directory)


def reference_layer(module, down_rate, q_lora_rank=0, bias=False, seed=0):
    """A reference MTLA layer with every parameter random (norms and biases included)."""
    torch.manual_seed(seed)
    layer = module.MultiheadTemporalLatentAttention(D, H, q_lora_rank=q_lora_rank, bias=bias, down_rate=down_rate,
                                                    **DIMS).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.3)
    return layer


def inputs(seed=1):
    torch.manual_seed(seed)
    return torch.randn(2, T, D), torch.arange(T, dtype=torch.float32).view(1, -1)


def reference_parallel(ref, x, pos):
    with torch.no_grad():
        return ref(query=x, key=x, value=x, position=pos)


def reference_incremental(ref, x, pos, reorder=None):
    """Token by token with the reference's incremental_state; ``reorder`` (t, rows) reorders before step t."""
    state, outs = {}, []
    with torch.no_grad():
        for t in range(x.shape[1]):
            if reorder and t == reorder[0]:
                ref.reorder_incremental_state(state, reorder[1])
            step = x[:, t:t + 1]
            outs.append(ref(query=step, key=step, value=step, position=pos[:, t:t + 1], incremental_state=state))
    return torch.cat(outs, 1)


@pytest.mark.parametrize("down_rate", [2, 3, 4])
@pytest.mark.parametrize("q_lora_rank,bias", VARIANTS, ids=["plain", "bias", "q_lora"])
def test_converted_layer_equals_reference(reference, down_rate, q_lora_rank, bias):
    ref = reference_layer(reference, down_rate, q_lora_rank, bias)
    ours = build_from_reference(ref.state_dict(), H, down_rate).eval()
    assert ours.latent_norm == "layer_norm" and ours.down_rate == down_rate
    x, pos = inputs()
    expected = reference_parallel(ref, x, pos)
    expected_steps = reference_incremental(ref, x, pos)
    assert (expected - expected_steps).abs().max() < TOL  # the reference agrees with itself here
    with torch.no_grad():
        assert (ours(x) - expected).abs().max() < TOL
        cache = ours.new_cache(2)
        steps = torch.cat([ours(x[:, t:t + 1], cache=cache) for t in range(T)], 1)
    assert (steps - expected_steps).abs().max() < TOL


@pytest.mark.parametrize("down_rate", [2, 3, 4])
def test_drop_in_class_loads_reference_weights_and_matches(reference, down_rate):
    ref = reference_layer(reference, down_rate, seed=down_rate)
    ours = MultiheadTemporalLatentAttention(D, H, down_rate=down_rate, **DIMS).eval()
    ours.load_state_dict(ref.state_dict())  # the reference's own keys
    x, pos = inputs()
    with torch.no_grad():
        assert (ours(x, x, x, position=pos) - reference_parallel(ref, x, pos)).abs().max() < TOL
    # beam search: rows duplicated half-way, as fairseq's search reorders them
    rows = torch.tensor([1, 1])
    expected = reference_incremental(ref, x, pos, reorder=(5, rows))
    assert (reference_incremental(ours, x, pos, reorder=(5, rows)) - expected).abs().max() < TOL


def test_drop_in_prompt_then_steps(reference):
    """A prompt fed at once (key = [prompt ; last token]), then single steps: the reference's decoder-only use."""
    ref = reference_layer(reference, 2, seed=3)
    ours = MultiheadTemporalLatentAttention(D, H, down_rate=2, **DIMS).eval()
    ours.load_state_dict(ref.state_dict())
    x, pos = inputs()
    outs = {}
    for name, layer in (("ref", ref), ("ours", ours)):
        state = {}
        with torch.no_grad():
            first = layer(query=x[:, 6:7], key=x[:, :7], value=x[:, :7], position=pos[:, :7], incremental_state=state)
            rest = [layer(query=x[:, t:t + 1], key=x[:, t:t + 1], value=x[:, t:t + 1], position=pos[:, t:t + 1],
                          incremental_state=state) for t in range(7, T)]
        outs[name] = torch.cat([first] + rest, 1)
    assert (outs["ours"] - outs["ref"]).abs().max() < TOL


def test_reference_readme_examples_run_with_our_import():
    """The reference README's two examples, only the import changed (and the device where there is no GPU)."""
    from espnet_mtla.attention import MultiheadTemporalLatentAttention  # noqa: F811  (the README's import line)

    batch, length, dim = 2, 64, 512
    x = torch.randn(batch, length, dim)
    pos = torch.arange(0, length).float().view(1, -1)  # Position information
    model = MultiheadTemporalLatentAttention(
        embed_dim=dim,  # Model dimension
        num_heads=8,  # Attention heads of queries
    )
    y = model(query=x, key=x, value=x, position=pos)
    assert y.shape == x.shape

    batch, length, dim = 2, 16, 512
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32  # or torch.bfloat16
    x = torch.randn(batch, length, dim, device=device, dtype=dtype)
    pos = torch.arange(0, length, device=device, dtype=torch.float32).view(1, -1)
    model = MultiheadTemporalLatentAttention(embed_dim=dim, num_heads=8).to(device, dtype=dtype)
    model.eval()
    incremental_state = {}
    outputs = []
    with redirect_stdout(io.StringIO()):
        for t in range(length):
            out = model(
                query=x[:, t:t + 1],
                key=x[:, t:t + 1],
                value=x[:, t:t + 1],
                position=pos[:, t:t + 1],
                incremental_state=incremental_state,
                use_flashattn_infer=True,  # Enable FlashAttention
            )
            outputs.append(out)
    y = torch.cat(outputs, dim=1)
    assert y.shape == (batch, length, dim)
    with torch.no_grad():
        parallel = model(query=x, key=x, value=x, position=pos)
    tol = 2e-2 if dtype != torch.float32 else TOL
    assert (y - parallel).abs().max() < tol


def test_rope_rows_pair_interleaved_with_halves():
    assert rope_rows(8).tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


def test_converted_state_dict_names_and_dropped_bias():
    layer = build_attention("mtla", D, H, bias=True, latent_norm="layer_norm", **DIMS)
    ref_keys = {"wq.weight": (H * 16, D), "wq.bias": (H * 16,), "wkv_a.weight": (40, D), "wkv_a.bias": (40,),
                "kv_norm.weight": (32,), "kv_norm.bias": (32,), "wkv_b.weight": (H * 20, 32), "wkv_b.bias": (H * 20,),
                "wo.weight": (D, H * 12), "wo.bias": (D,), "hypernet_down.fc_c.weight": (8, 32),
                "hypernet_down.fc_c.bias": (8,), "hypernet_down.fc_p.weight": (8, 32), "hypernet_down.fc_p.bias": (8,)}
    state = {k: torch.randn(shape) for k, shape in ref_keys.items()}
    config = reference_layer_config(state, H)
    converted, notes = convert_reference_layer(state, config)
    assert set(converted) == set(layer.state_dict())
    assert notes == ["wkv_b.bias dropped (the reference never reads it)"]
    # rope rows of the key: ours[32 + i] = ref[32 + 2i], ours[36 + i] = ref[32 + 2i + 1]
    assert torch.equal(converted["kv_down.weight"][32:36], state["wkv_a.weight"][32:40:2])
    assert torch.equal(converted["kv_down.weight"][36:40], state["wkv_a.weight"][33:40:2])


def test_wrong_state_dicts_are_one_line_errors():
    layer = build_attention("mtla", D, H, **DIMS)
    with pytest.raises(ReferenceFormatError, match=r"layer.pt: not a reference MTLA/MLA layer: missing key 'wkv_a.weight'"):
        reference_layer_config(layer.state_dict(), H, source="layer.pt")  # our own names are not the reference's
    state = {"wq.weight": torch.zeros(H * 16, D), "wkv_a.weight": torch.zeros(40, D), "kv_norm.weight": torch.zeros(32),
             "kv_norm.bias": torch.zeros(32), "wkv_b.weight": torch.zeros(H * 20, 32), "wo.weight": torch.zeros(D, H * 12)}
    with pytest.raises(ReferenceFormatError, match="shapes do not fit num_heads=3"):
        reference_layer_config(state, 3)
    config = reference_layer_config(state, H)
    assert config["attention_type"] == "mla"
    with pytest.raises(ReferenceFormatError, match="unexpected key 'extra.weight'"):
        convert_reference_layer({**state, "extra.weight": torch.zeros(1)}, config)
