"""GAN losses: RpGAN, the non-relativistic baseline, and R1 / R2 penalties.

Sign convention (R3GAN's code): D scores real images high. For a minibatch the
i-th real image is paired with the i-th fake one.

  RpGAN (Jolicoeur-Martineau 2018; R3GAN Eq. 2):
    D loss = mean softplus(D(fake) − D(real))
    G loss = mean softplus(D(real) − D(fake))
  Non-relativistic GAN (Goodfellow et al. 2014, non-saturating G):
    D loss = mean softplus(−D(real)) + mean softplus(D(fake))
    G loss = mean softplus(−D(fake))
  Zero-centred gradient penalties (Mescheder et al. 2018; R3GAN Eq. 3):
    R1 = mean_i ‖∇ₓ D(x_real)_i‖²,   R2 = mean_i ‖∇ₓ D(x_fake)_i‖²
    and the full D loss adds γ/2 · (R1 + R2), on every step.

The squared norm is a sum over all pixels and channels (not a mean), as in the
reference code, so a good γ depends on the resolution.

The input gradient of every sample comes from one vector-Jacobian product of
the *summed* logits: this is exact only because D has no batch-coupled layers
(no BatchNorm, no minibatch-stddev). The penalty is not detached: differentiating
the D loss w.r.t. D's parameters differentiates through ∇ₓ D (double
backprop), which is what makes it a regulariser at all (R3GAN issue #20).
"""

from typing import Callable, Tuple

import jax
import jax.numpy as jnp

from jaxgen import registry

# d_fn maps a batch of images f[B, H, W, C] to one logit per image f[B].
DiscriminatorFn = Callable[[jax.Array], jax.Array]


def _f32(x: jax.Array) -> jax.Array:
  return x.astype(jnp.float32)


def rpgan_d_loss(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
  """Relativistic pairing D loss: mean softplus(D(fake) − D(real)).

  Args:
    d_real: logits of the real images, f[B].
    d_fake: logits of the fake images, f[B] (paired with `d_real`).

  Returns:
    Scalar float32 loss.
  """
  return jnp.mean(jax.nn.softplus(_f32(d_fake) - _f32(d_real)))


def rpgan_g_loss(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
  """Relativistic pairing G loss: mean softplus(D(real) − D(fake)).

  This is the mirrored (non-saturating) form the reference trains with, not
  the negated D loss. It needs real images too.

  Args:
    d_real: logits of the real images, f[B].
    d_fake: logits of the fake images, f[B].

  Returns:
    Scalar float32 loss.
  """
  return jnp.mean(jax.nn.softplus(_f32(d_real) - _f32(d_fake)))


def gan_d_loss(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
  """Non-relativistic (JS) GAN D loss: softplus(−D(real)) + softplus(D(fake)).

  Args:
    d_real: logits of the real images, f[B].
    d_fake: logits of the fake images, f[B].

  Returns:
    Scalar float32 loss (the sum of the two batch means).
  """
  return (jnp.mean(jax.nn.softplus(-_f32(d_real))) +
          jnp.mean(jax.nn.softplus(_f32(d_fake))))


def gan_g_loss(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
  """Non-saturating GAN G loss: mean softplus(−D(fake)).

  Args:
    d_real: unused (kept so both loss kinds share one signature).
    d_fake: logits of the fake images, f[B].

  Returns:
    Scalar float32 loss.
  """
  del d_real
  return jnp.mean(jax.nn.softplus(-_f32(d_fake)))


def hinge_d_loss(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
  """Hinge D loss (taming-transformers):
  (mean relu(1 − D(real)) + mean relu(1 + D(fake))) / 2.

  Args:
    d_real: logits of the real images (any shape, e.g. per patch).
    d_fake: logits of the fake images.

  Returns:
    Scalar float32 loss.
  """
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - _f32(d_real)))
                + jnp.mean(jax.nn.relu(1.0 + _f32(d_fake))))


def hinge_g_loss(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
  """Hinge G loss: −mean D(fake).

  Args:
    d_real: unused.
    d_fake: logits of the fake images.

  Returns:
    Scalar float32 loss.
  """
  del d_real
  return -jnp.mean(_f32(d_fake))


# Loss kinds by config name: (d_loss, g_loss, g_needs_real_logits).
LOSSES = registry.Registry("config.gan.loss")
LOSSES.register("rpgan")((rpgan_d_loss, rpgan_g_loss, True))
LOSSES.register("gan")((gan_d_loss, gan_g_loss, False))
LOSSES.register("hinge")((hinge_d_loss, hinge_g_loss, False))


def get_losses(name: str):
  """Returns (d_loss_fn, g_loss_fn, g_needs_real) for a loss name.

  Args:
    name: "rpgan", "gan" or "hinge".

  Returns:
    The two loss functions and whether the G loss reads D(real).
  """
  return LOSSES.get(name)


def logits_and_penalty(d_fn: DiscriminatorFn,
                       x: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """D's logits on `x` and mean_i ‖∇ₓ D(x)_i‖², from one forward pass.

  The logits are the same forward pass the gradient is taken through, so the
  adversarial term and the penalty share it (no extra D forward). Both are
  differentiable w.r.t. whatever `d_fn` closes over (D's parameters).

  Args:
    d_fn: images f[B, ...] -> logits f[B], without batch-coupled layers.
    x: the images the penalty is evaluated at.

  Returns:
    (logits f[B] in float32, scalar float32 penalty).
  """
  logits, vjp_fn = jax.vjp(d_fn, x)
  # Cotangent of ones: the gradient of sum(logits) = per-sample gradients.
  (grad,) = vjp_fn(jnp.ones_like(logits))
  grad = _f32(grad)
  per_sample = jnp.sum(jnp.square(grad), axis=tuple(range(1, grad.ndim)))
  return _f32(logits), jnp.mean(per_sample)


def gradient_penalty(d_fn: DiscriminatorFn, x: jax.Array) -> jax.Array:
  """Zero-centred gradient penalty mean_i ‖∇ₓ D(x)_i‖² (float32).

  Args:
    d_fn: images -> logits f[B].
    x: images f[B, ...].

  Returns:
    Scalar penalty.
  """
  return logits_and_penalty(d_fn, x)[1]


def r1_penalty(d_fn: DiscriminatorFn, x_real: jax.Array) -> jax.Array:
  """R1: the gradient penalty on real data (see `gradient_penalty`).

  Args:
    d_fn: images -> logits f[B].
    x_real: real images f[B, ...].

  Returns:
    Scalar penalty (without the γ/2 factor).
  """
  return gradient_penalty(d_fn, x_real)


def r2_penalty(d_fn: DiscriminatorFn, x_fake: jax.Array) -> jax.Array:
  """R2: the gradient penalty on generated data (see `gradient_penalty`).

  Args:
    d_fn: images -> logits f[B].
    x_fake: generated images f[B, ...] (detached from G).

  Returns:
    Scalar penalty (without the γ/2 factor).
  """
  return gradient_penalty(d_fn, jax.lax.stop_gradient(x_fake))
