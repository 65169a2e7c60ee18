"""Tiny ESPnet configs for every task x attention type, built through ESPnet's own parsers."""

import argparse
import copy

import yaml

import espnet_mtla.tasks.registration as registry
from espnet_mtla.attention.registry import attention_types

CHARS = list("abcdefgh")
TOKENS = ["<blank>", "<unk>", "<space>"] + CHARS + ["<sos/eos>"]
INTENTS = ["alarm_set", "play_music"]
SLU_TOKENS = ["<blank>", "<unk>", "<space>"] + INTENTS + CHARS + ["<sos/eos>"]
ATTENTION_TYPES = attention_types()
TASKS = ["asr", "st", "slu", "mt"]

DECODER = dict(
    model_dim=32, attention_heads=4, linear_units=64, num_blocks=2, dropout_rate=0.0,
    prefix_stack=2, prefix_hidden=32,
    gqa_conf={"num_kv_heads": 2},
    mla_conf={"kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8},
    mtla_conf={"down_rate": 2},
)
SPEECH_FRONTEND = dict(
    frontend="default",
    frontend_conf={"n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 20},
    normalize="utterance_mvn",
)
ENCODER = dict(encoder="transformer", encoder_conf={"output_size": 32, "attention_heads": 2, "linear_units": 64,
                                                    "num_blocks": 1, "dropout_rate": 0.0})


def config(task: str, attention_type: str) -> dict:
    """The YAML a user would write (token lists inline)."""
    conf = dict(decoder="decoder_only", decoder_conf=dict(copy.deepcopy(DECODER), attention_type=attention_type))
    conf.update(copy.deepcopy(ENCODER))
    if task == "mt":
        conf.update(frontend="embed", frontend_conf={"embed_dim": 32, "positional_dropout_rate": 0.0},
                    model="decoder_only", model_conf={"lsm_weight": 0.1},
                    token_list=TOKENS, src_token_list=TOKENS, token_type="char", src_token_type="char")
        conf["encoder_conf"]["input_layer"] = None
        return conf
    conf.update(copy.deepcopy(SPEECH_FRONTEND))
    conf["encoder_conf"]["input_layer"] = "conv2d"
    if task == "asr":
        conf.update(model="decoder_only", model_conf={"ctc_weight": 0.3, "lsm_weight": 0.1},
                    token_list=TOKENS, token_type="char")
    elif task == "slu":
        conf.update(model="decoder_only", model_conf={"ctc_weight": 0.3, "lsm_weight": 0.1, "intent_weight": 2.0},
                    token_list=SLU_TOKENS, token_type="word")
    elif task == "st":
        conf.update(model_conf={"lsm_weight": 0.1}, token_list=TOKENS, src_token_list=TOKENS,
                    token_type="char", src_token_type="char")
    return conf


def encoder_decoder_config(task: str, attention_type: str, source_attention: str = "mha") -> dict:
    """The same task with ESPnet's own model and ``decoder: cached_transformer``."""
    conf = config(task, attention_type)
    conf["decoder"] = "cached_transformer"
    conf["decoder_conf"] = dict(attention_type=attention_type, attention_heads=4, linear_units=64, num_blocks=2,
                                dropout_rate=0.0, positional_dropout_rate=0.0, source_attention=source_attention,
                                source_conf={"kv_lora_rank": 16, "down_rate": 2} if source_attention == "latent" else {},
                                **{k: DECODER[k] for k in ("gqa_conf", "mla_conf", "mtla_conf")})
    conf.pop("model", None)  # ESPnet's model class of the task
    conf["model_conf"].pop("intent_weight", None)
    return conf


def parse(task: str, config_path) -> argparse.Namespace:
    """ESPnet's parser with the YAML as --config, as the train CLI sees it."""
    return registry.ESPNET_TASKS[task].get_parser().parse_args(["--config", str(config_path), "--output_dir", "unused"])


def write_yaml(path, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f)
