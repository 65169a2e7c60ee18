"""Rotary position embedding at explicit positions (rotate-half convention, as in Llama).

Positions are passed in rather than inferred from the tensor index, because with padded
batches and caches the position of a token is its rank among the real tokens of its row,
not its column in the tensor.
"""

import torch


def check_rope_dim(dim: int, option: str) -> None:
    if dim <= 0 or dim % 2 != 0:
        raise ValueError(f"{option} must be a positive even number (RoPE rotates pairs), got {dim}")


class RotaryEmbedding(torch.nn.Module):
    """Rotates the last dimension of ``x`` by angle ``position * base**(-2i/dim)``."""

    def __init__(self, dim: int, base: float = 10000.0, option: str = "rope dim"):
        super().__init__()
        check_rope_dim(dim, option)
        self.dim = dim
        self.base = float(base)
        # float32 whatever the model dtype: bf16 positions > 256 would collide. Not saved in
        # checkpoints (a function of dim and base).
        self.register_buffer("inv_freq", self.frequencies(), persistent=False)

    def frequencies(self) -> torch.Tensor:
        """(dim/2,) inverse frequencies; also for re-filling the buffer after loading on an empty device."""
        return self.base ** (-torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: (B, T, H, dim) or (B, T, dim); positions: (B, T) integer. Returns x's shape/dtype.

        The halves (x1, x2) rotate as the complex number x1 + i x2 times e^(i angle): the same
        x1 cos - x2 sin, x2 cos + x1 sin, in about half the tensor ops of writing it out.
        """
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq.float()  # (B, T, dim/2)
        if x.dim() == 4:
            angles = angles.unsqueeze(2)  # (B, T, 1, dim/2): same rotation for every head
        rotation = torch.polar(torch.ones_like(angles), angles)
        x1, x2 = x.float().chunk(2, dim=-1)
        rotated = torch.view_as_real(torch.view_as_complex(torch.stack([x1, x2], dim=-1)) * rotation)
        return rotated.transpose(-1, -2).reshape(x.shape).to(x.dtype)  # (..., 2, dim/2) -> [real ; imag]
