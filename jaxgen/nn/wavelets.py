"""Exact, orthonormal Haar wavelet transforms in 2-D (NHWC) and 3-D (NTHWC).

One level halves every transformed axis and moves the sub-bands onto the
channel axis. Each 1-D step maps an (even, odd) pair to
((even + odd) / sqrt(2), (even - odd) / sqrt(2)), an orthogonal 2x2 matrix, so
the transform preserves energy (sum of squares) and its inverse is its
transpose: `haar2d_inverse(haar2d(x)) == x` up to float rounding.

Channel layout after one 2-D level: channel `(2 * i + j) * C + c`, where i is
the band along H (0 low, 1 high), j the band along W and c the input channel;
band 0 is the (scaled) 2x2 average. In 3-D the band index is 4 * t + 2 * i + j.
Several levels apply the same step to every channel (a wavelet packet), so
all sub-bands share one resolution and can be stacked as channels: L levels
give C * 4**L channels in 2-D and C * 8**L in 3-D.
"""

import math

import jax
import jax.numpy as jnp

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def _split(x: jax.Array, axis: int) -> jax.Array:
  """One 1-D Haar step along `axis`; bands are concatenated on the last axis."""
  n = x.shape[axis]
  if n % 2:
    raise ValueError(f"Haar transform needs an even size, got {n} on axis "
                     f"{axis} of shape {x.shape}.")
  even = jax.lax.slice_in_dim(x, 0, n, 2, axis)
  odd = jax.lax.slice_in_dim(x, 1, n, 2, axis)
  return jnp.concatenate([(even + odd) * _INV_SQRT2,
                          (even - odd) * _INV_SQRT2], axis=-1)


def _merge(y: jax.Array, axis: int) -> jax.Array:
  """Inverse of `_split` along `axis` (a positive axis index)."""
  low, high = jnp.split(y, 2, axis=-1)
  even = (low + high) * _INV_SQRT2
  odd = (low - high) * _INV_SQRT2
  out = jnp.stack([even, odd], axis=axis + 1)
  shape = list(even.shape)
  shape[axis] *= 2
  return out.reshape(shape)


def haar2d(x: jax.Array, levels: int = 1) -> jax.Array:
  """Forward orthonormal 2-D Haar transform of NHWC images.

  Args:
    x: f[B, H, W, C]; H and W divisible by 2**levels.
    levels: number of levels.

  Returns:
    f[B, H / 2**levels, W / 2**levels, C * 4**levels].
  """
  for _ in range(levels):
    x = _split(_split(x, 2), 1)
  return x


def haar2d_inverse(y: jax.Array, levels: int = 1) -> jax.Array:
  """Inverse of `haar2d`.

  Args:
    y: f[B, h, w, C * 4**levels].
    levels: number of levels used in the forward transform.

  Returns:
    f[B, h * 2**levels, w * 2**levels, C].
  """
  for _ in range(levels):
    y = _merge(_merge(y, 1), 2)
  return y


def haar3d(x: jax.Array, levels: int = 1) -> jax.Array:
  """Forward orthonormal 3-D Haar transform of NTHWC videos.

  Args:
    x: f[B, T, H, W, C]; T, H and W divisible by 2**levels.
    levels: number of levels.

  Returns:
    f[B, T / 2**levels, H / 2**levels, W / 2**levels, C * 8**levels].
  """
  for _ in range(levels):
    x = _split(_split(_split(x, 3), 2), 1)
  return x


def haar3d_inverse(y: jax.Array, levels: int = 1) -> jax.Array:
  """Inverse of `haar3d`.

  Args:
    y: f[B, t, h, w, C * 8**levels].
    levels: number of levels used in the forward transform.

  Returns:
    f[B, t * 2**levels, h * 2**levels, w * 2**levels, C].
  """
  for _ in range(levels):
    y = _merge(_merge(_merge(y, 1), 2), 3)
  return y
