"""Rotary position embeddings over several axes, at real-valued positions.

Each axis (e.g. frame, row, column) gets its own slice of the D/2 rotation
frequencies, θ^(-2i/d) over that axis's d features; frequency j rotates the
feature pair (j, j + D/2) of the whole head (the "rotate half" layout, so for
D = 64 the frame axis turns features 0-7 and 32-39). miniFLUX / FLUX pair
(2i, 2i + 1) within contiguous [16, 24, 24] slices instead: the same
frequencies up to a fixed permutation of head features, which matters only
when importing their weights. Positions may be fractional: a coarser history
frame of the temporal pyramid sits at cell centres 0.5, 2.5, ... of the
generated frame's grid. Because q·k after rotation depends only on position
differences, shifting every position of an axis changes nothing.
"""

from typing import Sequence, Tuple

import jax
import jax.numpy as jnp


def axes_dims(head_dim: int) -> Tuple[int, int, int]:
  """(frame, row, column) slices of a head: 3/8 each spatially, rest time.

  For head_dim 64 this is miniFLUX's [16, 24, 24].

  Args:
    head_dim: the per-head width (even).

  Returns:
    Three even sizes summing to head_dim.
  """
  spatial = 2 * ((3 * head_dim // 8) // 2)
  return (head_dim - 2 * spatial, spatial, spatial)


def rope_angles(coords: jax.Array, dims: Sequence[int],
                theta: float = 10_000.0) -> jax.Array:
  """Rotation angles of every token and frequency.

  Args:
    coords: f[..., L, A] positions along A axes.
    dims: the head-dimension slice of each axis (even; sums to head_dim).
    theta: base wavelength.

  Returns:
    f32[..., L, head_dim / 2].
  """
  parts = []
  for a, d in enumerate(dims):
    if d % 2:
      raise ValueError(f"RoPE axis dims must be even, got {tuple(dims)}.")
    if d == 0:
      continue
    freqs = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    parts.append(coords[..., a:a + 1].astype(jnp.float32) * freqs)
  return jnp.concatenate(parts, axis=-1)


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
  """Rotates q or k by per-token angles.

  Args:
    x: f[B, L, H, D].
    angles: f32[B or 1, L, D/2] from `rope_angles`.

  Returns:
    f[B, L, H, D] in x's dtype.
  """
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  cos = jnp.cos(angles)[:, :, None]
  sin = jnp.sin(angles)[:, :, None]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)
