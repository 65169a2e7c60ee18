"""The reference implementation's MTLA module (pip ``mtla`` 0.3.2), on our layer.

Given the same weights, the reference ``MultiheadTemporalLatentAttention`` computes our
``MultiHeadTemporalLatentAttention`` with ``latent_norm: layer_norm`` (and its
``MultiheadLatentAttention`` our MLA), up to two layout differences that this module converts:

- names: ``wq`` / ``wq_a, q_norm, wq_b`` / ``wkv_a`` / ``kv_norm`` / ``wkv_b`` / ``wo`` /
  ``hypernet_down.fc_c, fc_p`` are our ``q_proj`` / ``q_proj.{0,1,2}`` / ``kv_down`` /
  ``kv_norm`` / ``kv_up`` / ``out_proj`` / ``hypernet.chunk_proj, latent_proj``;
- RoPE: the reference rotates interleaved pairs (2i, 2i+1), we rotate halves (i, i + d/2).
  Attention scores only see q_rope . k_rope, so permuting the rope rows of the query and key
  projections the same way (ours[i] = ref[2i], ours[d/2 + i] = ref[2i + 1]) gives the same
  function.

``wkv_b.bias`` is never read by the reference (it uses ``wkv_b.weight`` only, in training and
decoding), so it is dropped; a non-zero ``wq_b.bias`` has no counterpart in our layer and is
refused.

``MultiheadTemporalLatentAttention`` below is a drop-in for users of the reference module:
same constructor, ``forward(query, key, value, key_padding_mask=None, position=None,
incremental_state=None)`` and ``reorder_incremental_state``, and it loads the reference's
state dicts as they are. It differs where the reference is wrong: multi-token queries after a
prompt are causal, padding never enters a merged slot, and ``down_rate=1`` works.
"""

import uuid
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from espnet_mtla.attention.mla import MultiHeadLatentAttention
from espnet_mtla.attention.mtla import MultiHeadTemporalLatentAttention


class ReferenceFormatError(ValueError):
    """A file or state dict is not what it claims to be; the message names it and the first bad key."""


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix``, keyed without it (a layer out of a whole model)."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def rope_rows(dim: int) -> torch.Tensor:
    """Row order taking the reference's interleaved rope pairs to our halves: ours = ref[rope_rows(d)]."""
    return torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])


def permute_rope_rows(tensor: torch.Tensor, groups: int, nope: int, rope: int) -> torch.Tensor:
    """Rows grouped as ``groups`` x [nope rows ; rope rows]: permute each group's rope rows."""
    shaped = tensor.reshape(groups, nope + rope, *tensor.shape[1:])
    order = torch.cat([torch.arange(nope), nope + rope_rows(rope)]).to(tensor.device)
    return shaped.index_select(1, order).reshape(tensor.shape)


def reference_layer_config(state: Mapping[str, torch.Tensor], num_heads: int, down_rate: int = 2,
                           source: str = "state dict") -> Dict:
    """``build_attention`` options (type included) for a reference MTLA/MLA layer's state dict.

    The dimensions come from the tensors' shapes; ``num_heads`` and ``down_rate`` are not in
    a state dict and must be given (the reference's defaults: ``down_rate`` 2).
    """
    def need(key):
        if key not in state:
            raise ReferenceFormatError(f"{source}: not a reference MTLA/MLA layer: missing key {key!r}")
        return state[key]

    d_c = need("kv_norm.weight").shape[0]
    kv_a, up_rows, out_cols = need("wkv_a.weight"), need("wkv_b.weight").shape[0], need("wo.weight").shape[1]
    q_lora = "wq_a.weight" in state
    q_rows = need("wq_b.weight" if q_lora else "wq.weight").shape[0]
    d_r, d_v = kv_a.shape[0] - d_c, out_cols // num_heads
    d_n = up_rows // num_heads - d_v
    if up_rows % num_heads or out_cols % num_heads or d_n <= 0 or d_r <= 0 or q_rows != num_heads * (d_n + d_r):
        raise ReferenceFormatError(
            f"{source}: shapes do not fit num_heads={num_heads} (wq rows {q_rows}, wkv_b rows {up_rows}, "
            f"wo columns {out_cols}, latent {d_c}); pass the number of heads the model was trained with")
    config = {"attention_type": "mtla" if "hypernet_down.fc_c.weight" in state else "mla",
              "embed_dim": kv_a.shape[1], "num_heads": num_heads, "bias": "wkv_a.bias" in state,
              "q_lora_rank": need("wq_a.weight").shape[0] if q_lora else 0, "kv_lora_rank": d_c,
              "qk_nope_head_dim": d_n, "qk_rope_head_dim": d_r, "v_head_dim": d_v, "latent_norm": "layer_norm"}
    if config["attention_type"] == "mtla":
        config["down_rate"] = down_rate
        config["hypernet_rank_ratio"] = d_c // need("hypernet_down.fc_c.weight").shape[0]
    return config


def convert_reference_layer(state: Mapping[str, torch.Tensor], config: Mapping, source: str = "state dict",
                            interleaved_rope: bool = True) -> Tuple[Dict[str, torch.Tensor], list]:
    """A reference layer's state dict -> (our layer's state dict, notes on what was dropped).

    ``config``: ``reference_layer_config``'s result (or the same keys). ``interleaved_rope``:
    the layer rotated (2i, 2i+1) pairs (``MTLA.py``, the fairseq models); False for the HF
    port, which rotates halves with Llama's ``apply_rotary_pos_emb`` as we do.
    """
    heads, d_n, d_r = config["num_heads"], config["qk_nope_head_dim"], config["qk_rope_head_dim"]
    d_c = config["kv_lora_rank"]
    out, notes, used = {}, [], set()

    def take(ref_key, our_key, transform=None, optional=False):
        if ref_key not in state:
            if optional:
                return
            raise ReferenceFormatError(f"{source}: not a reference MTLA/MLA layer: missing key {ref_key!r}")
        used.add(ref_key)
        tensor = state[ref_key]
        out[our_key] = transform(tensor) if transform else tensor.clone()

    def per_head_query(t):
        return permute_rope_rows(t, heads, d_n, d_r) if interleaved_rope else t.clone()

    def kv_down(t):
        return permute_rope_rows(t, 1, d_c, d_r) if interleaved_rope else t.clone()

    if config["q_lora_rank"]:
        take("wq_a.weight", "q_proj.0.weight")
        take("wq_a.bias", "q_proj.0.bias", optional=True)
        take("q_norm.weight", "q_proj.1.weight")
        take("q_norm.bias", "q_proj.1.bias")
        take("wq_b.weight", "q_proj.2.weight", per_head_query)
        if "wq_b.bias" in state:
            used.add("wq_b.bias")
            if torch.count_nonzero(state["wq_b.bias"]):
                raise ReferenceFormatError(
                    f"{source}: wq_b.bias is non-zero; our MLA/MTLA has no bias on the query up-projection "
                    "(q_lora_rank > 0 with bias=True), so this layer cannot be converted exactly")
    else:
        take("wq.weight", "q_proj.weight", per_head_query)
        take("wq.bias", "q_proj.bias", per_head_query, optional=True)
    take("wkv_a.weight", "kv_down.weight", kv_down)
    take("wkv_a.bias", "kv_down.bias", kv_down, optional=True)
    take("kv_norm.weight", "kv_norm.weight")
    take("kv_norm.bias", "kv_norm.bias")
    take("wkv_b.weight", "kv_up.weight")
    if "wkv_b.bias" in state:
        used.add("wkv_b.bias")
        notes.append("wkv_b.bias dropped (the reference never reads it)")
    take("wo.weight", "out_proj.weight")
    take("wo.bias", "out_proj.bias", optional=True)
    if config["attention_type"] == "mtla":
        for ref, ours in (("fc_c", "chunk_proj"), ("fc_p", "latent_proj")):
            for part in ("weight", "bias"):
                take(f"hypernet_down.{ref}.{part}", f"hypernet.{ours}.{part}")
    unknown = sorted(set(state) - used)
    if unknown:
        raise ReferenceFormatError(f"{source}: unexpected key {unknown[0]!r} for a reference "
                                   f"{config['attention_type'].upper()} layer")
    return out, notes


def build_from_reference(state: Mapping[str, torch.Tensor], num_heads: int, down_rate: int = 2,
                         source: str = "state dict", **overrides) -> MultiHeadLatentAttention:
    """Our MTLA/MLA layer holding a reference layer's weights (``overrides``: e.g. attn_backend)."""
    from espnet_mtla.attention import build_attention

    config = reference_layer_config(state, num_heads, down_rate, source)
    converted, _ = convert_reference_layer(state, config, source)
    options = {k: v for k, v in config.items() if k not in ("attention_type", "embed_dim", "num_heads")}
    layer = build_attention(config["attention_type"], config["embed_dim"], num_heads, **{**options, **overrides})
    layer.load_state_dict(converted)
    return layer


class MultiheadTemporalLatentAttention(nn.Module):
    """Drop-in for the reference's ``mtla.MultiheadTemporalLatentAttention`` (see module docstring).

    Self-attention in the decoder-only sense: ``key`` is [prompt ; query] (``value`` is
    ignored, as in the reference), so ``query`` is the last ``T_q`` tokens of ``key``.
    ``key_padding_mask`` (B, T_k) is True on padding; ``position`` (B or 1, T_k) gives the
    RoPE positions. With ``incremental_state`` (a dict), the layer keeps its compressed cache
    there and each call appends ``key``'s new tokens. Returns (B, T_q, embed_dim).
    ``recompute_prompt_attn`` and ``use_flashattn_infer`` are accepted for compatibility and
    change nothing: queries always see exactly their causal (stride-aware) context, and the
    fast decode path is chosen by ``attn_backend``.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=False, q_lora_rank=0, kv_lora_rank=256,
                 qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, down_rate=2,
                 recompute_prompt_attn=False, latent_norm="layer_norm", attn_backend="auto"):
        super().__init__()
        self.layer = MultiHeadTemporalLatentAttention(
            embed_dim, num_heads, down_rate=down_rate, dropout=dropout, bias=bias, q_lora_rank=q_lora_rank,
            kv_lora_rank=kv_lora_rank, qk_nope_head_dim=qk_nope_head_dim, qk_rope_head_dim=qk_rope_head_dim,
            v_head_dim=v_head_dim, latent_norm=latent_norm, attn_backend=attn_backend)
        self.num_heads = num_heads
        self.down_rate = down_rate
        self.recompute_prompt_attn = recompute_prompt_attn
        self._incremental_state_id = str(uuid.uuid4())
        self.register_load_state_dict_pre_hook(self._accept_reference_keys)

    def _accept_reference_keys(self, module, state_dict, prefix, *args):
        """``load_state_dict`` of a reference state dict: convert its keys to ``layer.*`` in place."""
        if prefix + "wkv_a.weight" not in state_dict:
            return
        own = strip_prefix(state_dict, prefix)
        for key in own:
            del state_dict[prefix + key]
        config = reference_layer_config(own, self.num_heads, self.down_rate)
        converted, _ = convert_reference_layer(own, config)
        state_dict.update({f"{prefix}layer.{k}": v for k, v in converted.items()})

    def forward(self, query, key, value=None, key_padding_mask=None, self_attn_mask=None, position=None,
                incremental_state: Optional[dict] = None, need_weights=False, use_flashattn_infer=False):
        batch, t_q = query.shape[:2]
        t_k = key.shape[1]
        if t_k < t_q:
            raise ValueError(f"key has {t_k} tokens, fewer than query's {t_q}: key must be [prompt ; query]")
        if self_attn_mask is not None and bool((self_attn_mask.float().tril() != 0).any()):
            raise ValueError("self_attn_mask may only mask future tokens: MTLA's stride-aware causal mask is built in")
        real = None if key_padding_mask is None else ~key_padding_mask.to(device=key.device, dtype=torch.bool)
        if position is not None:
            position = position.to(key.device).expand(batch, t_k)
        cache = self._cache(incremental_state, batch, key)
        prompt = t_k - t_q
        if prompt:
            if cache is None:
                cache = self.layer.new_cache(batch, capacity=t_k, dtype=key.dtype, device=key.device)
            self.layer.prefill(cache, key[:, :prompt], None if real is None else real[:, :prompt],
                               None if position is None else position[:, :prompt])
        return self.layer(query, None if real is None else real[:, prompt:],
                          None if position is None else position[:, prompt:], cache=cache)

    def _cache(self, incremental_state, batch, like):
        if incremental_state is None:
            return None
        state = incremental_state.setdefault(f"{self._incremental_state_id}.attn_state", {})
        if "cache" not in state:
            state["cache"] = self.layer.new_cache(batch, dtype=like.dtype, device=like.device)
        return state["cache"]

    def reorder_incremental_state(self, incremental_state: dict, new_order: torch.Tensor) -> dict:
        """Beam search: keep/duplicate the cached rows ``new_order``, as the reference does."""
        state = incremental_state.get(f"{self._incremental_state_id}.attn_state")
        if state and "cache" in state:
            state["cache"].reorder(new_order)
        return incremental_state
