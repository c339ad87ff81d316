"""Pixel metrics of reconstructions: PSNR and SSIM through dm-pix.

Images in [-1, 1] (the project's convention) are mapped to [0, 1] first, so
PSNR is in dB of a unit data range and SSIM uses the standard constants
(11x11 Gaussian window, sigma 1.5, k1 = 0.01, k2 = 0.03; Wang et al. 2004).
Both return one value per image; callers average.
"""

import dm_pix
import jax
import jax.numpy as jnp


def _unit(x: jax.Array) -> jax.Array:
  return (jnp.asarray(x, jnp.float32) + 1.0) / 2.0


# The PSNR of an exact reconstruction is infinite: one such image (a blank
# frame) made a set's mean PSNR inf. Capped at the value of a mean squared
# error of 1e-10 (float32 rounding of [0, 1] pixels is ~1e-7 each).
MAX_PSNR_DB = 100.0
# SSIM's Gaussian window is 11 taps: smaller images are filtered wrongly by
# dm-pix (its "valid" convolution swaps image and window), not refused.
SSIM_MIN_SIZE = 11


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  """Peak signal-to-noise ratio in dB, per image, capped at `MAX_PSNR_DB`.

  Args:
    a: [B, H, W, C] images in [-1, 1].
    b: images of the same shape.

  Returns:
    f32[B].
  """
  return jnp.minimum(dm_pix.psnr(_unit(a), _unit(b)), MAX_PSNR_DB)


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  """Structural similarity (mean over the image and channels), per image.

  Args:
    a: [B, H, W, C] images in [-1, 1], at least 11 x 11.
    b: images of the same shape.

  Returns:
    f32[B].

  Raises:
    ValueError: images under `SSIM_MIN_SIZE` pixels a side (at trace time).
  """
  if min(a.shape[1:3]) < SSIM_MIN_SIZE:
    raise ValueError(f"SSIM's {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} window needs "
                     f"images of at least {SSIM_MIN_SIZE} px; these are "
                     f"{a.shape[1]}x{a.shape[2]}")
  return dm_pix.ssim(_unit(a), _unit(b), max_val=1.0)
