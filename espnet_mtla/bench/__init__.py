"""Benchmarks: scripts that measure speed and memory side by side in one run and write
``docs/bench_*/results.{json,md,png}`` (never timed tests). ``python -m espnet_mtla.bench.<name>``:

    attention     one attention layer's decode step and training pass, ours against the reference's
    kernels       attention backends (eager, sdpa, triton) per type, decode and training
    decode        the paper-size encoder + decoder, one utterance: ESPnet's search against ours
    batch_decode  the same, many utterances per search
    paper         the paper's efficiency protocol (MuST-C-like lengths, beam 50, frame budget)
    from_llama    how close `from_llama` starts to the Llama it converts (KL per token)
    trained       a recipe's trained models decoding its test set in turns (speed ratios free of drift)

``common.py`` holds what they share.
"""
