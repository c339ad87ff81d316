"""Cosmos-tokenizer Haar wavelet patching (NVIDIA 2025), NHWC and NTHWC.

One 2-D level maps each 2x2 block (a b / c d) to four sub-bands

  LL = (a+b+c+d)/4   LH = (a+b-c-d)/4   HL = (a-b+c-d)/4   HH = (a-b-c+d)/4

stacked on channels sub-band-major (channel s * C + c, order LL, LH, HL, HH;
the first letter is the W filter, the second the H filter), i.e. the
reference's `rescale=True` transform: LL is the 2x2 mean. `patch_size` p
applies log2 p levels to *all* channels (a wavelet packet), so p = 4 turns C
channels into 16 C at 1/4 resolution, the first C being the 4x4 mean.

In 3-D each level filters T, then H, then W; sub-band s = 4 t + 2 h + w and
every sub-band is the signed sum of a 2x2x2 cube divided by 8 (LLL is its
mean; the reference's division by 2 sqrt 2 of the orthonormal filters).
Before the levels the first frame is repeated p times (causal: frame 0 is
encoded on its own), so 1 + k p frames become k + 1; the inverse drops the
p - 1 repeated frames again. Every function here has an exact inverse.
See docs/references/autoencoders.md section 4.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _signs(ndim: int) -> np.ndarray:
  """[2**ndim sub-bands, 2**ndim block positions] of +-1.

  Sub-band bits are (first filtered axis, ..., last); position bits are the
  array axes in order. In 2-D the first filtered axis is W, in 3-D T.
  """
  positions = list(itertools.product((0, 1), repeat=ndim))  # array order
  bands = list(itertools.product((0, 1), repeat=ndim))
  out = np.empty((len(bands), len(positions)), np.float32)
  for s, band in enumerate(bands):
    # 2-D: band = (w, h) while positions are (h, w): reverse to array order.
    band_axes = band[::-1] if ndim == 2 else band
    for q, pos in enumerate(positions):
      out[s, q] = (-1) ** sum(b * p for b, p in zip(band_axes, pos))
  return out


def _levels(patch_size: int) -> int:
  levels = int(round(math.log2(patch_size)))
  if patch_size < 1 or 2 ** levels != patch_size:
    raise ValueError(f"patch_size must be a power of 2, got {patch_size}.")
  return levels


def _dwt2(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"Haar patching needs even H and W, got {h}x{w}.")
  blocks = x.reshape(b, h // 2, 2, w // 2, 2, c)
  blocks = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4, c)
  out = jnp.einsum("sq,bhwqc->bhwsc", _signs(2) / 4.0, blocks,
                   precision="highest")
  return out.reshape(b, h // 2, w // 2, 4 * c)


def _idwt2(y: jax.Array) -> jax.Array:
  b, h, w, c4 = y.shape
  bands = y.reshape(b, h, w, 4, c4 // 4)
  blocks = jnp.einsum("sq,bhwsc->bhwqc", _signs(2), bands,
                      precision="highest")
  blocks = blocks.reshape(b, h, w, 2, 2, c4 // 4).transpose(0, 1, 3, 2, 4, 5)
  return blocks.reshape(b, 2 * h, 2 * w, c4 // 4)


def haar_patch(x: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/p, W/p, C p^2] (see the module docstring)."""
  for _ in range(_levels(patch_size)):
    x = _dwt2(x)
  return x


def haar_unpatch(y: jax.Array, patch_size: int) -> jax.Array:
  """Exact inverse of `haar_patch`."""
  for _ in range(_levels(patch_size)):
    y = _idwt2(y)
  return y


def _dwt3(x: jax.Array) -> jax.Array:
  b, t, h, w, c = x.shape
  if t % 2 or h % 2 or w % 2:
    raise ValueError(f"3-D Haar patching needs even T, H, W, got "
                     f"{t}x{h}x{w}.")
  cubes = x.reshape(b, t // 2, 2, h // 2, 2, w // 2, 2, c)
  cubes = cubes.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(
      b, t // 2, h // 2, w // 2, 8, c)
  out = jnp.einsum("sq,bthwqc->bthwsc", _signs(3) / 8.0, cubes,
                   precision="highest")
  return out.reshape(b, t // 2, h // 2, w // 2, 8 * c)


def _idwt3(y: jax.Array) -> jax.Array:
  b, t, h, w, c8 = y.shape
  bands = y.reshape(b, t, h, w, 8, c8 // 8)
  cubes = jnp.einsum("sq,bthwsc->bthwqc", _signs(3), bands,
                     precision="highest")
  cubes = cubes.reshape(b, t, h, w, 2, 2, 2, c8 // 8).transpose(
      0, 1, 4, 2, 5, 3, 6, 7)
  return cubes.reshape(b, 2 * t, 2 * h, 2 * w, c8 // 8)


def haar_patch_3d(x: jax.Array, patch_size: int) -> jax.Array:
  """[B, 1 + k p, H, W, C] -> [B, k + 1, H/p, W/p, C p^3], causally."""
  levels = _levels(patch_size)
  t = x.shape[1]
  if (t - 1) % patch_size:
    raise ValueError(f"causal 3-D patching needs 1 + k * {patch_size} "
                     f"frames, got {t}.")
  x = jnp.concatenate([jnp.repeat(x[:, :1], patch_size, axis=1), x[:, 1:]],
                      axis=1)
  for _ in range(levels):
    x = _dwt3(x)
  return x


def haar_unpatch_3d(y: jax.Array, patch_size: int) -> jax.Array:
  """Exact inverse of `haar_patch_3d` (drops the repeated first frames)."""
  for _ in range(_levels(patch_size)):
    y = _idwt3(y)
  return y[:, patch_size - 1:]
