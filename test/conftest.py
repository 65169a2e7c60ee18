import os

import pytest
import torch

from espnet_mtla.attention import hypernet
from espnet_mtla.attention.backends import triton_interpreting

# Deterministic, and quick on 2-core CI machines; one thread per worker when make test runs
# several pytest workers (pytest-xdist), so that workers do not fight over the cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

# Without a GPU, Triton kernels run in Triton's CPU interpreter. It must be switched on before
# triton is first imported; only an explicit attn_backend: triton ever reaches it on a CPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# The equivalence tests (parallel vs step by step, absorbed vs plain, batched vs single) need MTLA
# merge weights that vary with the chunk and the latent, or a wrong chunk index would go unseen:
# the library's default start ("one") gives every latent the same weight. Subprocesses (the
# recipes) keep the library's default.
hypernet.DEFAULT_INIT = "random"


@pytest.fixture(params=["eager", "sdpa", "triton", "auto"])
def backend(request):
    """Each attention backend, on CPU tensors (``auto``: the stride-aware parallel attention for
    MLA/MTLA, sdpa for the rest). ``triton`` runs its kernel in Triton's CPU
    interpreter, and the test runs under ``torch.no_grad()`` as decoding does: with autograd
    recording, the kernel (which has no backward) gives way to sdpa."""
    if request.param != "triton":
        yield request.param
        return
    pytest.importorskip("triton")
    if not triton_interpreting():
        pytest.skip("triton on CPU tensors needs TRITON_INTERPRET=1; the CUDA tests cover the kernel")
    with torch.no_grad():
        yield request.param
