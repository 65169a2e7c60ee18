import os

import torch

# Deterministic, and quick on 2-core CI machines.
torch.set_num_threads(min(2, os.cpu_count() or 1))
