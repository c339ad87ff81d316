"""Differentiable ADA-style augmentation for R3GAN's discriminator inputs.

The official R3GAN training puts StyleGAN2-ADA's non-leaky augment pipe
between the images and D, with a probability p that ramps from 0 over the
burn-in (fixed, not adaptive; CIFAR-10 ends at 0.55). It is applied to the
real and the fake batch separately (independent transforms), and R1 / R2 are
gradients w.r.t. the images *before* augmentation, through it: of D(Aug(x))
by x, in the adversarial term's forward pass (`docs/references/r3gan.md`).

Here, per sample and independently, each with probability p:
  geometric: x-flip, rotation by a multiple of 90°, integer translation
    (up to 1/8 of the side), isotropic scale (lognormal, σ = 0.2·ln 2),
    arbitrary rotation, anisotropic scale (σ = 0.2·ln 2) and fractional
    translation (σ = 0.125 of the side), as one affine map with bilinear
    sampling and reflected borders;
  colour, with probability p/2 each: brightness (+N(0, 0.2)), contrast
    (×lognormal(0, 0.5·ln 2) around the mean) and saturation
    (×lognormal(0, ln 2) around the luma);
  cutout: a square of half the side, centred uniformly, set to 0.
Luma flip and hue rotation of ADA are left out. Every operation is
differentiable in the pixels, so G's gradient flows through augmented fakes.
"""

import math

import jax
import jax.numpy as jnp


def _bernoulli(key, p, n):
  return jax.random.uniform(key, (n,)) < p


def _affine(keys, x, p):
  """Per-sample 2x3 maps (output pixel -> input pixel), centred coordinates."""
  n, h, w, _ = x.shape
  eye = jnp.broadcast_to(jnp.eye(3), (n, 3, 3))

  def mat(a, b, c, d, tx, ty):
    zero, one = jnp.zeros_like(a), jnp.ones_like(a)
    return jnp.stack([jnp.stack([a, b, tx], -1), jnp.stack([c, d, ty], -1),
                      jnp.stack([zero, zero, one], -1)], -2)

  def gate(key, m):
    on = _bernoulli(key, p, n)[:, None, None]
    return jnp.where(on, m, eye)

  ones, zeros = jnp.ones((n,)), jnp.zeros((n,))
  m = eye
  # x-flip.
  m = m @ gate(keys[0], mat(-ones, zeros, zeros, ones, zeros, zeros))
  # Rotation by k·90°.
  k = jax.random.randint(keys[1], (n,), 0, 4).astype(jnp.float32)
  cos, sin = jnp.round(jnp.cos(k * math.pi / 2)), jnp.round(
      jnp.sin(k * math.pi / 2))
  m = m @ gate(keys[2], mat(cos, -sin, sin, cos, zeros, zeros))
  # Integer translation, up to 1/8 of the side.
  t = jnp.round(jax.random.uniform(keys[3], (n, 2), minval=-0.125,
                                   maxval=0.125) * jnp.array([w, h]))
  m = m @ gate(keys[4], mat(ones, zeros, zeros, ones, t[:, 0], t[:, 1]))
  # Isotropic scale.
  s = jnp.exp(jax.random.normal(keys[5], (n,)) * 0.2 * math.log(2))
  m = m @ gate(keys[6], mat(s, zeros, zeros, s, zeros, zeros))
  # Arbitrary rotation.
  a = jax.random.uniform(keys[7], (n,), minval=-math.pi, maxval=math.pi)
  m = m @ gate(keys[8], mat(jnp.cos(a), -jnp.sin(a), jnp.sin(a), jnp.cos(a),
                            zeros, zeros))
  # Anisotropic scale.
  s = jnp.exp(jax.random.normal(keys[9], (n,)) * 0.2 * math.log(2))
  m = m @ gate(keys[10], mat(s, zeros, zeros, 1 / s, zeros, zeros))
  # Fractional translation.
  t = jax.random.normal(keys[11], (n, 2)) * 0.125 * jnp.array([w, h])
  m = m @ gate(keys[12], mat(ones, zeros, zeros, ones, t[:, 0], t[:, 1]))
  return m


def _warp(image, m):
  """Samples `image` [H, W, C] at m · (output coordinates), reflecting."""
  h, w, c = image.shape
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
                        jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2,
                        indexing="ij")
  src = m @ jnp.stack([xx.ravel(), yy.ravel(), jnp.ones(h * w)])
  sx = (src[0] + (w - 1) / 2).reshape(h, w)
  sy = (src[1] + (h - 1) / 2).reshape(h, w)
  channels = [jax.scipy.ndimage.map_coordinates(image[..., i], [sy, sx],
                                                order=1, mode="mirror")
              for i in range(c)]
  return jnp.stack(channels, -1)


def augment(rng: jax.Array, x: jax.Array, p: jax.Array) -> jax.Array:
  """Augments each image of `x` independently with probability `p`.

  Args:
    rng: PRNG key.
    x: images f[N, H, W, C] in [-1, 1].
    p: probability of each operation (a traced scalar is fine); 0 returns
      `x` unchanged.

  Returns:
    Augmented images, same shape and dtype.
  """
  n, h, w, c = x.shape
  keys = jax.random.split(rng, 24)
  dtype = x.dtype
  x = x.astype(jnp.float32)
  m = _affine(keys[:13], x, p)
  warped = jax.vmap(_warp)(x, m)
  identity = jnp.all(jnp.abs(m - jnp.eye(3)) < 1e-6, axis=(1, 2))
  x = jnp.where(identity[:, None, None, None], x, warped)

  # Colour, each at p/2.
  q = p / 2
  b = jax.random.normal(keys[13], (n, 1, 1, 1)) * 0.2
  x = x + jnp.where(_bernoulli(keys[14], q, n)[:, None, None, None], b, 0.0)
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  k = jnp.exp(jax.random.normal(keys[15], (n, 1, 1, 1)) * 0.5 * math.log(2))
  on = _bernoulli(keys[16], q, n)[:, None, None, None]
  x = jnp.where(on, mean + (x - mean) * k, x)
  if c == 3:
    luma = jnp.mean(x, axis=-1, keepdims=True)
    k = jnp.exp(jax.random.normal(keys[17], (n, 1, 1, 1)) * math.log(2))
    on = _bernoulli(keys[18], q, n)[:, None, None, None]
    x = jnp.where(on, luma + (x - luma) * k, x)

  # Cutout: a square of half the side.
  centre = jax.random.uniform(keys[19], (n, 2)) * jnp.array([h, w])
  yy = jnp.arange(h, dtype=jnp.float32)[None, :, None] + 0.5
  xx = jnp.arange(w, dtype=jnp.float32)[None, None, :] + 0.5
  inside = ((jnp.abs(yy - centre[:, 0, None, None]) < h / 4) &
            (jnp.abs(xx - centre[:, 1, None, None]) < w / 4))
  on = _bernoulli(keys[20], p, n)[:, None, None]
  x = jnp.where((inside & on)[..., None], 0.0, x)
  return x.astype(dtype)
