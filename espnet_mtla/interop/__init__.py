"""The reference implementation (pip ``mtla`` 0.3.2 and its fairseq toolkit), in one place.

    reference_layer.py     its ``MultiheadTemporalLatentAttention`` layer on our attention, and
                           its weight layout to ours (also ``espnet_mtla.attention.MultiheadTemporalLatentAttention``)
    reference_package.py   where ``make bench`` installs it (beside the venv, never in it)
    hf_checkpoint.py       its HF port's checkpoints as our ``LlamaMTLAForCausalLM``
    fairseq_checkpoint.py  its fairseq decoder-only speech models as our decoder stack

``python -m espnet_mtla.bin.import_reference`` is the command line of all three converters.
"""
