"""The ESPnet glue behind the thin CLIs of ``espnet_mtla.bin``: register our classes, then run ESPnet's own ``main``.

Every ESPnet option keeps working. Configuration mistakes that we detect (ConfigError,
checkpoint/config mismatches) end the run with one line on stderr instead of a traceback.
Inference also writes ``<output_dir>/1best_recog/efficiency.json`` (see
espnet_mtla.metrics.efficiency) and takes options of ours: ``--batch_frames N`` (also from a
decode config) or ``--batch_size N`` with ``--batch_encoder true|false``
(espnet_mtla.cli.batch_inference), ``--cuda_graphs true|false`` (batched decoding on a GPU:
decode steps replayed from CUDA graphs, espnet_mtla.search.decode_step) and ``--attn_backend
auto|eager|sdpa|triton`` (espnet_mtla.attention.backends; the model's config otherwise).
``training.run_training`` and ``inference.run_inference`` run inside espnet_mtla.storage.safe_load.safe_loading: no model file can run
code when loaded unless ``--trust_model_file true``.
"""
