"""Our classes in ESPnet 202511's task registries: ``import espnet_mtla.tasks`` registers them
(as it always has), once.

    import espnet_mtla.tasks   # then ESPnet's asr/st/slu/mt/lm tasks know decoder: decoder_only,
                               # model: decoder_only, decoder: cached_transformer, lm: decoder_only,
                               # and the zip_npy data type (espnet_mtla.tasks.registration)

ESPnet's own entry points (``python -m espnet2.bin.asr_inference``) know nothing of us: use ours
(``python -m espnet_mtla.bin.<task>_inference``, which register first), or import this before
building an ESPnet parser or model. The task table, which needs no ESPnet, is
``espnet_mtla.task_specs``; the model classes live in ``espnet_mtla.models``.
"""

from espnet_mtla.tasks import registration  # noqa: F401  (registers)
