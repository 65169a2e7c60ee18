"""Files and safety: what the toolkit reads and writes, and how it survives bad input and kills.

    errors.py          one-line errors (ConfigError, BatchDecodingError)
    fileio.py          atomic writes (temp name, then rename)
    safe_load.py       model files that cannot run code when loaded (torch.load, safetensors)
    packed_model.py    stage 11's zip: pack, and unpack refusing unsafe archives
    training_files.py  checkpoints written atomically; links repaired before a resume
    init_param.py      --init_param checked before ESPnet copies it
    patches.py         every runtime patch of torch/ESPnet, applied and listed in one place
"""
