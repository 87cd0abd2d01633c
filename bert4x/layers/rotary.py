"""Rotary position embedding (RoPE) in the interleaved-pair layout of RoFormer.

Dimensions (2i, 2i+1) of a query/key at position m are rotated by the angle m * theta_i with
theta_i = 10000^(-2i/d).  This pairing (not keras-hub's rotate-halves layout) is the one the
published RoFormer, RoFormer-V2 and GAU-alpha checkpoints were trained with.
"""

import numpy as np
from keras import ops


def rotary_frequencies(dim, base=10000.0):
    """theta_i = base^(-2i/dim) for i < dim/2, in float64 (HF builds its table from these too)."""
    return base ** (-np.arange(0, dim, 2, dtype="float64") / dim)


def ntk_scaled_base(base, factor, dim):
    """RoPE base for inputs ``factor`` times longer than in training, NTK-aware:
    base · factor^(dim/(dim−2)).

    Frequency i is θ_i = base^(-2i/dim). The new base leaves θ_0 = 1 (the fastest rotation,
    which tells neighbours apart) as it is and divides the slowest, θ_(dim/2−1), by exactly
    ``factor``, so the longest wavelength stretches over the longer input, as position
    interpolation would do, while short distances keep the resolution they were trained at.
    """
    if factor < 1:
        raise ValueError(f"the NTK factor stretches positions: it must be >= 1, got {factor}")
    return base * factor ** (dim / (dim - 2)) if dim > 2 else base * factor


def rotary_angles(positions, dim, base=10000.0):
    """Angles m * theta_i for ``positions`` (shape [n] or [batch, n]), each repeated for its
    pair: shape [..., dim]."""
    inv_freq = ops.convert_to_tensor(np.repeat(rotary_frequencies(dim, base), 2), "float32")
    return ops.cast(positions, "float32")[..., None] * inv_freq


def rotate_pairs(x):
    """[x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...] along the last axis."""
    shape = ops.shape(x)
    pairs = ops.reshape(x, (*shape[:-1], shape[-1] // 2, 2))
    rotated = ops.stack([-pairs[..., 1], pairs[..., 0]], axis=-1)
    return ops.reshape(rotated, shape)


def apply_rotary(x, positions, base=10000.0):
    """Rotate ``x`` of shape [batch, n, heads, dim] by its positions ([n], shared by the batch,
    or [batch, n]). ``x`` may be a NumPy array: it becomes a tensor of the backend first, as
    NumPy cannot multiply itself by a PyTorch tensor."""
    x = ops.convert_to_tensor(x)
    dim = x.shape[-1]
    if dim % 2:
        raise ValueError(f"RoPE needs an even per-head size, got {dim}")
    angles = rotary_angles(positions, dim, base)
    angles = angles[None, :, None, :] if len(angles.shape) == 2 else angles[:, :, None, :]
    cos = ops.cast(ops.cos(angles), x.dtype)
    sin = ops.cast(ops.sin(angles), x.dtype)
    return x * cos + rotate_pairs(x) * sin


def apply_rotary_2d(x, positions, base=10000.0):
    """2D RoPE: the first half of each head rotated by x, the second half by y.

    ``positions`` is [batch, n, 2] (x, y per token). The rotation is block-diagonal, so
    R(x1, y1)ᵀ R(x2, y2) = R(x2 − x1, y2 − y1): scores depend only on the relative 2D offset.
    """
    dim = x.shape[-1]
    if dim % 4:
        raise ValueError(f"2D RoPE needs a per-head size divisible by 4, got {dim}")
    half = dim // 2
    first = apply_rotary(x[..., :half], positions[..., 0], base)
    second = apply_rotary(x[..., half:], positions[..., 1], base)
    return ops.concatenate([first, second], axis=-1)
