"""``python -m espnet_mtla.bin.lm_perplexity``: ESPnet's ``lm_calc_perplexity`` with our language
models registered, the model file loaded safely, and the output dir written whole or not at all
(``<output_dir>/ppl``: the perplexity of the text, per token, ``<eos>`` included)."""

import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

from espnet_mtla.cli.options import check_input_files, fail, pop_option
from espnet_mtla.storage.safe_load import TRUST_OPTION


def run_perplexity(cmd: Optional[List[str]] = None) -> None:
    import espnet_mtla.tasks.registration  # noqa: F401  (registers)
    from espnet_mtla.storage.errors import ConfigError
    from espnet_mtla.storage.safe_load import UnsafeModelFileError, safe_loading

    module = importlib.import_module("espnet2.bin.lm_calc_perplexity")
    cmd, trust = pop_option(list(sys.argv[1:] if cmd is None else cmd), TRUST_OPTION, "false", ("true", "false"))
    args = module.get_parser().parse_args(cmd)
    check_input_files(args)
    for option in ("train_config", "model_file"):
        if not args.__dict__.get(option) or not os.path.isfile(getattr(args, option)):
            fail(f"--{option}: no such file: {getattr(args, option)} (the LM's config.yaml and model file)")
    output_dir = Path(args.output_dir)
    partial = output_dir.with_name(output_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    options = {k: v for k, v in vars(args).items() if k != "config"}
    options["output_dir"] = str(partial)
    try:
        with safe_loading(trust == "true"):
            module.calc_perplexity(**options)
    except (ConfigError, UnsafeModelFileError) as err:
        fail(err)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(partial, output_dir)
