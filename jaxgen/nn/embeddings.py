"""Sinusoidal embeddings of scalars (noise level, time) and of positions.

`sinusoidal_embedding` turns a scalar per example (e.g. logSNR) into a vector;
`sincos_2d_positions` / `sincos_3d_positions` give fixed position embeddings
for token grids. `ConditioningEmbedding` is the usual diffusion conditioning
path: sinusoid -> MLP, plus a learned class embedding with an extra "null"
row for classifier-free guidance.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.nn import linear
from jaxgen.nn import partitioning as pt

Dtype = Any


def sinusoidal_embedding(x: jax.Array, dim: int,
                         max_period: float = 10_000.0) -> jax.Array:
  """Embeds scalars with sines and cosines of geometric frequencies.

  Angular frequencies run from 1 down to 1/max_period, so the embedding
  resolves changes of x from about 1 up to about max_period.

  Args:
    x: f[...] scalars.
    dim: embedding size (an odd size gets one zero feature).
    max_period: longest wavelength / (2 pi).

  Returns:
    f32[..., dim], [sin | cos].
  """
  half = dim // 2
  freqs = jnp.exp(-float(np.log(max_period))
                  * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
  angles = x.astype(jnp.float32)[..., None] * freqs
  emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
  return emb


def sincos_1d(positions: np.ndarray, dim: int,
              max_period: float = 10_000.0) -> np.ndarray:
  """Fixed 1-D sin-cos embedding of (possibly fractional) positions.

  Args:
    positions: f[N] positions.
    dim: even embedding size.
    max_period: longest wavelength / (2 pi).

  Returns:
    f32[N, dim], [sin | cos].
  """
  if dim % 2:
    raise ValueError(f"sincos_1d needs an even dim, got {dim}.")
  half = dim // 2
  freqs = max_period ** (-np.arange(half, dtype=np.float64) / half)
  angles = np.asarray(positions, np.float64)[:, None] * freqs[None]
  return np.concatenate([np.sin(angles), np.cos(angles)],
                        axis=1).astype(np.float32)


def sincos_2d_positions(height: int, width: int, dim: int) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding (half the features per axis).

  Args:
    height: grid rows.
    width: grid columns.
    dim: embedding size, divisible by 4.

  Returns:
    f32[height * width, dim], row-major over the grid.
  """
  if dim % 4:
    raise ValueError(f"sincos_2d_positions needs dim % 4 == 0, got {dim}.")
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return np.concatenate([sincos_1d(rows.reshape(-1), dim // 2),
                         sincos_1d(cols.reshape(-1), dim // 2)], axis=1)


def sincos_3d_positions(frames: int, height: int, width: int,
                        dim: int) -> np.ndarray:
  """Fixed 3-D sin-cos position embedding for (T, H, W) token grids.

  H and W get the same number of features (about a third each); T gets the
  rest.

  Args:
    frames: grid length in time.
    height: grid rows.
    width: grid columns.
    dim: embedding size, even.

  Returns:
    f32[frames * height * width, dim], row-major over (T, H, W).
  """
  if dim % 2:
    raise ValueError(f"sincos_3d_positions needs an even dim, got {dim}.")
  d_hw = 2 * ((dim // 3) // 2)
  d_t = dim - 2 * d_hw
  t, h, w = np.meshgrid(np.arange(frames), np.arange(height),
                        np.arange(width), indexing="ij")
  return np.concatenate([sincos_1d(t.reshape(-1), d_t),
                         sincos_1d(h.reshape(-1), d_hw),
                         sincos_1d(w.reshape(-1), d_hw)], axis=1)


class ConditioningEmbedding(nn.Module):
  """Noise-level (and class) conditioning vector for diffusion backbones.

  cond = Dense(SiLU(Dense(sinusoid(scalar)))) + class_table[label].

  Attributes:
    cond_dim: width of the conditioning vector.
    freq_dim: size of the sinusoidal embedding of the scalar.
    max_period: longest wavelength of the sinusoid (in scalar units).
    num_classes: number of classes; 0 means unconditional. The table has
      num_classes + 1 rows; row num_classes is the null label.
    dtype: compute dtype.
  """
  cond_dim: int
  freq_dim: int = 256
  max_period: float = 10_000.0
  num_classes: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, scalar: jax.Array,
               labels: Optional[jax.Array] = None) -> jax.Array:
    """Builds the conditioning vector.

    Args:
      scalar: f32[B] (e.g. logSNR).
      labels: optional i32[B] in [0, num_classes]; None means the null label.

    Returns:
      f[B, cond_dim] in the compute dtype.
    """
    emb = sinusoidal_embedding(scalar, self.freq_dim, self.max_period)
    # The sinusoid side is tiny and fixed-size, so it is never sharded.
    h = linear.Dense(self.cond_dim, (None, pt.COND), dtype=self.dtype,
                     name="dense_in")(emb)
    h = linear.Dense(self.cond_dim, (pt.MLP, pt.COND), dtype=self.dtype,
                     name="dense_out")(nn.silu(h))
    if self.num_classes > 0:
      table = self.param(
          "class_embedding",
          pt.logical_init(pt.embed_init, (pt.CLASSES, pt.COND)),
          (self.num_classes + 1, self.cond_dim), jnp.float32)
      if labels is None:
        labels = jnp.full(scalar.shape, self.num_classes, jnp.int32)
      h = h + jnp.take(table, labels, axis=0).astype(self.dtype)
    elif labels is not None:
      raise ValueError("labels were given to an unconditional model "
                       "(num_classes=0).")
    return h
