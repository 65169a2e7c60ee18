"""Tiny random SSL checkpoints that ESPnet's S3PRL frontend loads offline.

    python -m espnet_mtla.bin.make_tiny_ssl_checkpoint /abs/path/hubert_tiny.pt --upstream hubert_local

then in a config:  frontend: s3prl
                   frontend_conf: {frontend_conf: {upstream: hubert_local, path_or_url: /abs/path/hubert_tiny.pt}}

Named upstreams (``hubert``, ``wavlm``) replace ``path_or_url`` with a hub URL; the ``*_local``
upstreams read a local file in the upstream's own format:
- hubert_local: {"task_cfg", "model_cfg", "model_weight", "dictionaries_symbols"}
  (s3prl.upstream.hubert.convert.load_converted_model)
- wavlm_local:  {"cfg", "model"} (WavLM(WavLMConfig(cfg)).load_state_dict)
The models are 2-layer, 64-d, with the real conv strides (s3prl assumes a 320-sample hop).
For tests and recipe smoke runs; real experiments point ``path_or_url`` at a real checkpoint.
"""

import os

import torch

# Conv extractor: channels shrunk to 32, but kernels/strides kept identical to
# the real model (total stride 320). s3prl hard-codes get_downsample_rates()=320
# and S3PRLUpstream._match_length asserts the frame count is ~len/320, so the
# strides must multiply to 320.
_CONV = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"

_COMMON = dict(
    extractor_mode="default",
    encoder_layers=2,
    encoder_embed_dim=64,
    encoder_ffn_embed_dim=128,
    encoder_attention_heads=4,
    activation_fn="gelu",
    layer_norm_first=False,
    conv_feature_layers=_CONV,
    conv_bias=False,
    conv_pos=16,
    conv_pos_groups=4,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    encoder_layerdrop=0.0,
    dropout_input=0.0,
    dropout_features=0.0,
    feature_grad_mult=1.0,
)


def _hubert_state(seed):
    from s3prl.upstream.hubert.hubert_model import (
        HubertConfig,
        HubertModel,
        HubertPretrainingConfig,
    )
    from s3prl.upstream.utils import merge_with_parent

    model_cfg = dict(_COMMON, label_rate=50.0, final_dim=32)
    task_cfg = dict(label_rate=50.0, sample_rate=16000, normalize=False)
    symbols = [["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(8)]]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HubertModel(
            merge_with_parent(HubertConfig, model_cfg),
            merge_with_parent(HubertPretrainingConfig, task_cfg),
            symbols,
        )
    return {
        "task_cfg": task_cfg,
        "model_cfg": model_cfg,
        "model_weight": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "dictionaries_symbols": symbols,
    }


def _wavlm_state(seed):
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = dict(
        _COMMON,
        normalize=False,
        relative_position_embedding=True,
        num_buckets=32,
        max_distance=128,
        gru_rel_pos=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WavLM(WavLMConfig(cfg))
    return {
        "cfg": cfg,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


def build_tiny_ssl_checkpoint(path, upstream: str = "hubert_local", seed: int = 0) -> str:
    """Write a tiny randomly-initialised checkpoint for `upstream` to `path`."""
    if upstream == "hubert_local":
        state = _hubert_state(seed)
    elif upstream == "wavlm_local":
        state = _wavlm_state(seed)
    else:
        raise ValueError(f"unsupported upstream {upstream!r}; choose hubert_local or wavlm_local")
    path = os.path.abspath(str(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)
    return path


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="output checkpoint file")
    parser.add_argument("--upstream", default="hubert_local", choices=["hubert_local", "wavlm_local"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_ssl_checkpoint(args.path, args.upstream, args.seed))


if __name__ == "__main__":
    main()
