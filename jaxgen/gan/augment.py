"""Differentiable ADA-style augmentation for R3GAN's discriminator inputs.

The official R3GAN training puts StyleGAN2-ADA's non-leaky augment pipe
between the images and D, with a probability p that ramps from 0 over the
burn-in (fixed, not adaptive; CIFAR-10 ends at 0.55). It is applied to the
real and the fake batch separately (independent transforms), and R1 / R2 are
gradients w.r.t. the images *before* augmentation, through it: of D(Aug(x))
by x, in the adversarial term's forward pass (`docs/references/r3gan.md`).

Here, per sample and independently, as ADA draws them:
  geometric, each with probability p: x-flip (then a fair coin: flipped
    with probability p/2, so the flip stays invertible, "non-leaky"),
    rotation by k·90° (k uniform in 0..3), integer translation (up to 1/8
    of the side), isotropic scale (lognormal, σ = 0.2·ln 2), arbitrary
    rotation (before and after the anisotropic scale, each with
    probability 1 - sqrt(1 - p): one of them with probability p, and the
    stretch is not always along the image axes), anisotropic scale
    (σ = 0.2·ln 2) and fractional translation (σ = 0.125 of the side), as
    one affine map with bilinear sampling and reflected borders;
  colour, with probability p/2 each: brightness (+N(0, 0.2)), contrast
    (×lognormal(0, 0.5·ln 2) around 0, mid-grey) and saturation
    (×lognormal(0, ln 2) around the luma);
  cutout, with probability p: a square of half the side, centred
    uniformly, set to 0.
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
  # x-flip: a gated fair coin (ADA's i in {0, 1}).
  flip = jnp.where(jax.random.bernoulli(keys[13], 0.5, (n,)), -ones, ones)
  m = m @ gate(keys[0], mat(flip, zeros, zeros, ones, zeros, zeros))
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
  # Arbitrary rotation, before and after the anisotropic scale.
  p_rot = 1 - jnp.sqrt(1 - p)

  def rotation(angle_key, gate_key):
    a = jax.random.uniform(angle_key, (n,), minval=-math.pi, maxval=math.pi)
    r = mat(jnp.cos(a), -jnp.sin(a), jnp.sin(a), jnp.cos(a), zeros, zeros)
    return jnp.where(_bernoulli(gate_key, p_rot, n)[:, None, None], r, eye)

  m = m @ rotation(keys[7], keys[8])
  s = jnp.exp(jax.random.normal(keys[9], (n,)) * 0.2 * math.log(2))
  m = m @ gate(keys[10], mat(s, zeros, zeros, 1 / s, zeros, zeros))
  m = m @ rotation(keys[14], keys[15])
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
  m = _affine(keys[:16], x, p)
  warped = jax.vmap(_warp)(x, m)
  identity = jnp.all(jnp.abs(m - jnp.eye(3)) < 1e-6, axis=(1, 2))
  x = jnp.where(identity[:, None, None, None], x, warped)

  # Colour, each at p/2, on [-1, 1] pixels as ADA's colour matrix: the
  # contrast scales around 0 (mid-grey), not each image's mean.
  q = p / 2
  b = jax.random.normal(keys[16], (n, 1, 1, 1)) * 0.2
  x = x + jnp.where(_bernoulli(keys[17], q, n)[:, None, None, None], b, 0.0)
  k = jnp.exp(jax.random.normal(keys[18], (n, 1, 1, 1)) * 0.5 * math.log(2))
  on = _bernoulli(keys[19], q, n)[:, None, None, None]
  x = jnp.where(on, x * k, x)
  if c == 3:
    luma = jnp.mean(x, axis=-1, keepdims=True)
    k = jnp.exp(jax.random.normal(keys[20], (n, 1, 1, 1)) * math.log(2))
    on = _bernoulli(keys[21], q, n)[:, None, None, None]
    x = jnp.where(on, luma + (x - luma) * k, x)

  # Cutout: a square of half the side.
  centre = jax.random.uniform(keys[22], (n, 2)) * jnp.array([h, w])
  yy = jnp.arange(h, dtype=jnp.float32)[None, :, None] + 0.5
  xx = jnp.arange(w, dtype=jnp.float32)[None, None, :] + 0.5
  inside = ((jnp.abs(yy - centre[:, 0, None, None]) < h / 4) &
            (jnp.abs(xx - centre[:, 1, None, None]) < w / 4))
  on = _bernoulli(keys[23], p, n)[:, None, None]
  x = jnp.where((inside & on)[..., None], 0.0, x)
  return x.astype(dtype)
