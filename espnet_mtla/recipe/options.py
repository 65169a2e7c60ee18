"""The recipe's options: ``python -m espnet_mtla.recipe --help`` (every recipe's run.sh passes
them through ``pipeline.sh``)."""

import argparse
from typing import List, Union

import espnet_mtla.recipe
from espnet_mtla.attention.registry import attention_types
from espnet_mtla.metrics.scoring import METRICS, check_metrics
from espnet_mtla.recipe.jobs import job_backend
from espnet_mtla.task_specs import TASKS

DESCRIPTION = espnet_mtla.recipe.__doc__


def metric_names(value: str) -> Union[str, List[str]]:
    """``--metrics``: "auto", or metric names separated by spaces or commas."""
    if value == "auto":
        return value
    names = value.replace(",", " ").split()
    try:
        check_metrics(names)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return names


def seed_list(value: str) -> str:
    """``--seeds``: integers >= 0 separated by spaces (kept as the string the stages split)."""
    for word in value.split():
        if not word.isdigit():
            raise argparse.ArgumentTypeError(f"{word!r} is not a seed; give integers >= 0, e.g. \"0 1 2\"")
    return value


def number_list(value: str) -> str:
    """``--tune_penalty``: numbers separated by spaces (kept as the string the stages split)."""
    for word in value.split():
        try:
            float(word)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{word!r} is not a number; give length bonuses, e.g. "
                                             f"\"0 0.2 0.5 1\"") from None
    return value


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--task", choices=tuple(TASKS), required=True)
    add("--stage", type=int, default=1)
    add("--stop_stage", type=int, default=14)
    add("--nj", type=int, default=2, help="parallel jobs for formatting and statistics")
    add("--inference_nj", type=int, default=2, help="parallel decoding jobs")
    add("--cmd", default="local", type=job_backend,
        help='where the jobs of stages 3 and 6 run: "local", "slurm [--mem 4G --gpu 1 --time T --partition P '
             '--cpus N]" or "sge [... --config conf/queue.conf]" (a recipe\'s cmd.sh sets it)')
    add("--train_cmd", default=None, type=job_backend, help="stage 7's backend (default: --cmd's)")
    add("--decode_cmd", default=None, type=job_backend, help="stage 8's backend (default: --cmd's)")
    add("--ngpu", type=int, default=0, help="GPUs per node for training (ESPnet's DDP when > 1) and decoding")
    add("--num_nodes", type=int, default=1, help="training nodes (ESPnet's --num_nodes; > 1 needs --dist_launcher)")
    add("--dist_launcher", default="none", choices=("none", "slurm", "mpi"),
        help="how ESPnet's distributed training finds its processes: slurm runs one srun task per node "
             "(the training job asks its backend for --num_nodes nodes)")
    add("--dist_backend", default=None, choices=("nccl", "gloo"),
        help="ESPnet's torch.distributed backend (ESPnet's default: nccl)")
    add("--train_set", default="train")
    add("--valid_set", default="dev")
    add("--test_sets", default="test", help="space-separated")
    add("--local_data_opts", default="", help="options passed to local/data.sh")
    add("--audio_format", default="flac", choices=("flac", "wav", "flac.ark", "wav.ark"))
    add("--feats_type", default="raw", choices=("raw", "fbank"))
    add("--feats_storage", default="ark", choices=("ark", "zip"),
        help="fbank: kaldi ark, or fairseq-style npy entries in an uncompressed zip with a manifest.tsv")
    add("--fs", type=int, default=16000)
    add("--speed_perturb_factors", default="", help='e.g. "0.9 1.0 1.1"; empty: none')
    add("--min_wav_duration", type=float, default=0.1)
    add("--max_wav_duration", type=float, default=30.0)
    add("--token_type", default="bpe", choices=("bpe", "char", "word"))
    add("--nbpe", type=int, default=100)
    add("--src_token_type", default="bpe", choices=("bpe", "char", "word"))
    add("--src_nbpe", type=int, default=100)
    add("--src_lang", default="en", help="st/mt: source text is data/<set>/text.<src_lang>")
    add("--tgt_lang", default="de", help="st: target text is data/<set>/text.<tgt_lang>")
    add("--user_defined_symbols", default="", help="space-separated tokens kept whole by BPE (e.g. SLU intents)")
    add("--user_defined_symbols_file", default="",
        help="a file of such tokens, one per line, read at stage 5 (e.g. data/intents.txt written by local/data.sh)")
    add("--pretrained_asr", default="",
        help="st: initialise the encoder from this ASR model file (as the paper does); its encoder must "
             "have the ST config's shape")
    add("--ssl_checkpoint", default="",
        help="an S3PRL upstream's local checkpoint: sets frontend_conf.path_or_url of an s3prl frontend config")
    add("--attention", default="mtla", choices=attention_types(),
        help="fills {attention} in --train_config, e.g. conf/train_{attention}.yaml")
    add("--train_config", required=False, help="may contain {attention}")
    add("--inference_config", default=None)
    add("--inference_model", default="valid.acc.ave.pth",
        help="model file under the experiment dir; default: ESPnet's average of the keep_nbest_models best "
             "epochs by valid.acc (as ESPnet's recipes and the paper decode); e.g. valid.acc.best.pth: the best one")
    add("--tag", default=None, help="experiment name; default: the train config's stem")
    add("--seeds", default="", type=seed_list,
        help='train and decode one model per seed, e.g. "0 1 2": stages 7-11 run for exp/<task>_<tag>_seed<N> '
             "(ESPnet's --seed N), and stage 10 reports each seed's row and their mean and spread")
    add("--train_args", default="", help="extra options for <task>_train")
    add("--inference_args", default="", help="extra options for <task>_inference")
    add("--tune_penalty", default="", type=number_list,
        help='length bonuses to try, e.g. "0 0.2 0.5 1": stage 8 decodes --valid_set with each (ESPnet\'s '
             "penalty, added per output token), keeps the one with the best first --metrics value, and decodes "
             "the test sets with it (the sweep: <decode dir>/../tune_penalty_<valid set>/tuning.json)")
    add("--long_form_minutes", default="",
        help='speech tasks: also decode long recordings made from the first test set\'s utterances, e.g. "5 10" '
             "(one recording of each length, espnet_mtla.data.long_form): set <test>_long segmented by voice "
             "activity, and <test>_long_oracle with the true utterance times, scored per recording by stage 9")
    add("--long_form_args", default="", help='extra options for espnet_mtla.bin.transcribe, e.g. "--vad energy '
        '--beam_size 5" (the decode config\'s options are its defaults)')
    add("--use_lm", default="false", choices=("true", "false"),
        help="stages 12-14 train a language model and stage 8 fuses it into decoding (the decode config's "
             "lm_weight); false: the LM stages are skipped")
    add("--lm_config", default="", help="the LM's training config (lm: decoder_only | transformer ...); may "
        "contain {attention}, filled with --lm_attention")
    add("--lm_attention", default=None, choices=attention_types(),
        help="fills {attention} in --lm_config (default: --attention)")
    add("--lm_train_text", default="",
        help="space-separated Kaldi text files (key sentence) the LM trains on; default: the training set's "
             "transcripts")
    add("--lm_extra_text", default="",
        help="space-separated plain text files (one sentence per line) added to the LM's training text")
    add("--lm_dev_text", default="", help="the LM's validation and perplexity text (Kaldi text); default: the "
        "valid set's transcripts")
    add("--lm_args", default="", help="extra options for lm_train")
    add("--lm_inference_model", default="valid.loss.ave.pth",
        help="the LM file stage 8 fuses, under the LM's experiment dir (ESPnet's average of the best epochs by "
             "valid.loss)")
    add("--dumpdir", default="dump")
    add("--expdir", default="exp")
    add("--metrics", default="auto", type=metric_names,
        help=f"stage 9's scorers, space- or comma-separated, from: {', '.join(METRICS)}; auto: the task's ("
             + "; ".join(f"{t.name} {' '.join(t.metrics)}" for t in TASKS.values()) + ")")
    add("--results", default="RESULTS.md")
    add("--force", default="false", choices=("true", "false"),
        help="redo stages recorded as finished with the same options and inputs, and continue a training "
             "whose options changed")
    return p
