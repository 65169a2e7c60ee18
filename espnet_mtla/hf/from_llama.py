"""``LlamaMTLAForCausalLM.from_llama``: a Llama with its attention swapped for MTLA (or any type).

    model = LlamaMTLAForCausalLM.from_llama("path/to/llama", attention_type="mtla", down_rate=2)

Copied exactly: the token embedding, every RMSNorm, every MLP, the final norm and ``lm_head``.
The attention (``attention_init``):

- ``"llama"`` (default): start close to the Llama.
  - mha | gqa | mqa: q/k/v/o copied; the kv heads regrouped when their number changes (mean
    of each group when fewer, as GQA's uptraining does; repeated when more, which is exact).
  - mla | mtla, as MHA2MLA / TransMLA do. A head's ``d`` dims are split. ``qk_rope_head_dim``
    of them keep their rotation: the ``d_r / 2`` highest-frequency rotary pairs (the ones that
    change most between positions), turning at exactly the Llama's frequencies
    (``qk_rope_theta = rope_theta ** (d_r / d)``). All kv heads share one rope key in MLA: per
    rotary pair, the kv heads' rows, read as complex numbers (a rotation is a complex phase), are
    replaced by their best complex rank-1 approximation ``c_h * b``; ``b`` is the shared key and
    each query head's rows are multiplied by ``conj(c_h)``, which commutes with the rotation (exact
    for one kv head). The other ``d - d_r`` dims (not rotated in MLA) and all value dims of
    every query head are one matrix ``[W_k_nope ; W_v]``: its
    truncated SVD ``U S V^T`` gives the latent projection ``S^1/2 V^T`` (``kv_lora_rank``
    rows) and ``kv_up = U S^1/2``. The latent norm's weight is the latent's typical RMS on
    inputs shaped by the Llama's input norm, so that normalising a typical latent leaves it
    about as it was. ``out_proj`` is ``o_proj``. MTLA's hyper-network stays as initialised.
    Left to fine-tuning: the nope dims lose their rotation, kv heads share one rope key, the
    norm rescales each token's latent, and MTLA merges ``down_rate`` latents.
- ``"random"``: the attention as ``LlamaMTLAConfig`` initialises it.
"""

from typing import Union

import torch
from torch import nn

from espnet_mtla.attention.registry import get_attention_type
from espnet_mtla.hf.configuration import LlamaMTLAConfig

ATTENTION_INITS = ("llama", "random")


def attention_family(attention_type: str) -> str:
    """Which Llama initialisation a registered type takes: "mla" (the latent types, which read
    mla_conf) or "mha" (the MHA family, which reads mha_conf)."""
    sections = get_attention_type(attention_type).sections()
    for family in ("mla", "mha"):
        if f"{family}_conf" in sections:
            return family
    raise ValueError(f"from_llama: attention_init 'llama' initialises the mha and mla families; {attention_type!r} "
                     "is neither: use attention_init='random'")


def load_llama(llama) -> nn.Module:
    """A LlamaForCausalLM instance, or one loaded from a local path."""
    if isinstance(llama, nn.Module):
        return llama
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(llama))


def latent_dims(llama_config, fields: dict) -> dict:
    """mla/mtla dimensions that the Llama's heads can be split into (``attention_init="llama"``)."""
    d = llama_config.head_dim or llama_config.hidden_size // llama_config.num_attention_heads
    rope = fields.get("qk_rope_head_dim") or max(2, d // 2 // 2 * 2)
    if rope % 2 or rope >= d:
        raise ValueError(f"from_llama: qk_rope_head_dim {rope} must be even and below head_dim {d}")
    theta = float((llama_config.rope_parameters or {}).get("rope_theta", 10000.0))
    dims = {"qk_rope_head_dim": rope, "qk_nope_head_dim": d - rope, "v_head_dim": d,
            "qk_rope_theta": theta ** (rope / d)}
    for name, value in dims.items():
        if fields.get(name) not in (None, value):
            raise ValueError(f"from_llama: attention_init 'llama' needs {name} {value} (head_dim {d}), "
                             f"got {fields[name]}; or use attention_init='random'")
    if fields.get("q_lora_rank"):
        raise ValueError("from_llama: attention_init 'llama' keeps the Llama's full-rank queries: q_lora_rank must be 0")
    return dims


def regroup_heads(weight: torch.Tensor, heads: int, target: int) -> torch.Tensor:
    """(heads * d, ...) rows of ``heads`` kv heads -> (target * d, ...): group means or repeats."""
    rows = weight.view(heads, -1, *weight.shape[1:])
    if target == heads:
        return weight
    if heads % target == 0:
        return rows.view(target, heads // target, *rows.shape[1:]).mean(1).reshape(-1, *weight.shape[1:])
    if target % heads == 0:
        return rows.repeat_interleave(target // heads, dim=0).reshape(-1, *weight.shape[1:])
    raise ValueError(f"from_llama: cannot regroup {heads} kv heads into {target}")


@torch.no_grad()
def init_mha_family(attn, llama_attn, heads: int, kv_heads: int) -> None:
    attn.q_proj.weight.copy_(llama_attn.q_proj.weight)
    attn.out_proj.weight.copy_(llama_attn.o_proj.weight)
    for ours, theirs in ((attn.k_proj, llama_attn.k_proj), (attn.v_proj, llama_attn.v_proj)):
        ours.weight.copy_(regroup_heads(theirs.weight, kv_heads, attn.num_kv_heads))


def shared_rope_key(q_rope: torch.Tensor, k_rope: torch.Tensor, group: torch.Tensor):
    """One rope key for all heads: q_rope (H, d_r, D), k_rope (H_kv, d_r, D) rows in our layout
    (first halves, then second halves of the rotary pairs), group (H,) kv head of each query head
    -> shared key rows (d_r, D) and the query rows (H, d_r, D) that go with it.

    Per rotary pair, row x + i y is a complex row; the kv heads' rows Z (H_kv, D) ~ c b with the
    top singular triple (c (H_kv,), b (D,)). A query head of kv head h then scores
    Re(e^{i w t} conj(c_h) q (conj(b) x)^*)-wise what it scored with its own key.
    """
    pairs = k_rope.shape[1] // 2
    z = torch.complex(k_rope[:, :pairs], k_rope[:, pairs:]).transpose(0, 1)  # (pairs, H_kv, D)
    u, s, vh = torch.linalg.svd(z, full_matrices=False)
    c = u[..., 0] * s[:, :1].sqrt()  # (pairs, H_kv)
    b = s[:, :1].sqrt() * vh[:, 0]  # (pairs, D): z ~ c[:, :, None] * b[:, None]
    key = torch.cat([b.real, b.imag], dim=0)  # (d_r, D)
    qz = torch.complex(q_rope[:, :pairs], q_rope[:, pairs:])  # (H, pairs, D)
    qz = qz * c.conj().transpose(0, 1)[group].unsqueeze(-1)
    return key, torch.cat([qz.real, qz.imag], dim=1)


@torch.no_grad()
def init_latent(attn, llama_attn, input_norm: torch.Tensor, heads: int, kv_heads: int) -> None:
    """MLA/MTLA from the Llama's q/k/v/o (see the module docstring)."""
    d_r, d_n, d_c = attn.qk_rope_head_dim, attn.qk_nope_head_dim, attn.kv_lora_rank
    d = d_r + d_n
    half, pairs = d // 2, d_r // 2
    rope = torch.tensor(list(range(pairs)) + [half + j for j in range(pairs)])  # the fastest pairs, our layout
    nope = torch.tensor(sorted(set(range(d)) - set(rope.tolist())))
    dim = llama_attn.q_proj.weight.shape[1]
    q = llama_attn.q_proj.weight.view(heads, d, dim).double()
    k = llama_attn.k_proj.weight.view(kv_heads, d, dim).double()
    v = llama_attn.v_proj.weight.view(kv_heads, d, dim).double()
    group = torch.arange(heads) // (heads // kv_heads)  # the kv head of each query head (HF's repeat_kv)
    shared_key, q_rope = shared_rope_key(q[:, rope], k[:, rope], group)
    attn.q_proj.weight.copy_(torch.cat([q[:, nope], q_rope], dim=1).reshape(-1, dim))
    joint = torch.cat([k[group][:, nope], v[group]], dim=1).reshape(-1, dim)  # (H * (d_n + d_v), D)
    u, s, vh = torch.linalg.svd(joint, full_matrices=False)
    rank = min(d_c, s.shape[0])
    down = torch.zeros(d_c, dim, dtype=torch.float64)
    down[:rank] = s[:rank].sqrt().unsqueeze(1) * vh[:rank]
    up = torch.zeros(joint.shape[0], d_c, dtype=torch.float64)
    up[:, :rank] = u[:, :rank] * s[:rank].sqrt()
    attn.kv_down.weight.copy_(torch.cat([down, shared_key], dim=0))
    attn.kv_up.weight.copy_(up)
    attn.out_proj.weight.copy_(llama_attn.o_proj.weight)
    # A latent of an input x = g * z (g: the input norm's weight, z of RMS 1) has E[c_i^2] = sum_j W_ij^2 g_j^2.
    typical_rms = (down.pow(2) @ input_norm.double().pow(2)).mean().sqrt()
    attn.kv_norm.weight.fill_(float(typical_rms))
    if getattr(attn.kv_norm, "bias", None) is not None:
        attn.kv_norm.bias.zero_()


def check_llama(llama_config) -> None:
    rope = dict(getattr(llama_config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"from_llama: rope_type {rope['rope_type']!r} is not supported (our RoPE is the default one)")
    if getattr(llama_config, "attention_bias", False):
        raise ValueError("from_llama: attention_bias is not supported (Llama checkpoints have none)")


def convert_llama(cls, llama: Union[str, nn.Module], attention_type: str = "mtla", attention_init: str = "llama",
                  **fields):
    """See ``LlamaMTLAForCausalLM.from_llama``."""
    if attention_init not in ATTENTION_INITS:
        raise ValueError(f"from_llama: attention_init must be one of {', '.join(ATTENTION_INITS)}, got {attention_init!r}")
    llama = load_llama(llama)
    lc = llama.config
    check_llama(lc)
    latent = attention_family(attention_type) == "mla" if attention_init == "llama" else None
    if latent:
        fields = {**fields, **latent_dims(lc, fields)}
    config = LlamaMTLAConfig.from_llama_config(lc, attention_type=attention_type, **fields)
    model = cls(config).to(llama.dtype)
    copy_non_attention(model, llama)
    if attention_init == "llama":
        heads, kv_heads = lc.num_attention_heads, lc.num_key_value_heads or lc.num_attention_heads
        for ours, theirs in zip(model.model.layers, llama.model.layers):
            if latent:
                init_latent(ours.self_attn, theirs.self_attn, theirs.input_layernorm.weight, heads, kv_heads)
            else:
                init_mha_family(ours.self_attn, theirs.self_attn, heads, kv_heads)
    return model.eval()


@torch.no_grad()
def copy_non_attention(model, llama) -> None:
    """Copy every tensor outside the attention (the names are Llama's on both sides)."""
    theirs = dict(llama.named_parameters())
    for name, param in model.named_parameters():
        if ".self_attn." in name:
            continue
        if name not in theirs:
            if name == "lm_head.weight" and model.config.tie_word_embeddings:
                continue  # tied to the embedding, copied with it
            raise ValueError(f"from_llama: the Llama has no {name!r}; is it a LlamaForCausalLM?")
        if theirs[name].shape != param.shape:
            raise ValueError(f"from_llama: {name} is {tuple(theirs[name].shape)} in the Llama, "
                             f"{tuple(param.shape)} here")
        param.copy_(theirs[name])
