"""HuggingFace Transformers integration (optional: ``pip install -e .[hf]``).

    import espnet_mtla.hf            # registers "llama_mtla" with AutoConfig / AutoModelForCausalLM
    config = LlamaMTLAConfig.from_llama_config(llama_config, down_rate=2)
    model = AutoModelForCausalLM.from_config(config)
    model.generate(input_ids, attention_mask=mask, num_beams=4, max_new_tokens=20)

The core package never imports this module (nor transformers).
"""

from transformers import AutoConfig, AutoModelForCausalLM

from espnet_mtla.hf.configuration import LlamaMTLAConfig
from espnet_mtla.hf.modeling import CompressedKVCache, LlamaMTLAForCausalLM, LlamaMTLAModel

AutoConfig.register(LlamaMTLAConfig.model_type, LlamaMTLAConfig, exist_ok=True)
AutoModelForCausalLM.register(LlamaMTLAConfig, LlamaMTLAForCausalLM, exist_ok=True)

__all__ = ["CompressedKVCache", "LlamaMTLAConfig", "LlamaMTLAForCausalLM", "LlamaMTLAModel"]
