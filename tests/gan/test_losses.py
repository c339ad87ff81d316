"""RpGAN / GAN losses and R1 / R2 penalties against hand-derived values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.gan import losses


def _softplus(t):
  return math.log1p(math.exp(t))


def test_rpgan_losses_pair_ith_real_with_ith_fake():
  d_real = jnp.array([0.0, 1.0, -2.0])
  d_fake = jnp.array([1.0, 0.0, 1.0])
  # D: softplus(fake - real) per pair = softplus(1), softplus(-1), softplus(3).
  want_d = (_softplus(1.0) + _softplus(-1.0) + _softplus(3.0)) / 3
  want_g = (_softplus(-1.0) + _softplus(1.0) + _softplus(-3.0)) / 3
  np.testing.assert_allclose(losses.rpgan_d_loss(d_real, d_fake), want_d,
                             rtol=1e-6)
  np.testing.assert_allclose(losses.rpgan_g_loss(d_real, d_fake), want_g,
                             rtol=1e-6)
  # Equal logits: both losses are log 2.
  z = jnp.zeros(4)
  np.testing.assert_allclose(losses.rpgan_d_loss(z, z), math.log(2), rtol=1e-6)
  np.testing.assert_allclose(losses.rpgan_g_loss(z, z), math.log(2), rtol=1e-6)


def test_non_relativistic_gan_losses():
  d_real = jnp.array([2.0, -1.0])
  d_fake = jnp.array([0.5, -3.0])
  want_d = ((_softplus(-2.0) + _softplus(1.0)) / 2 +
            (_softplus(0.5) + _softplus(-3.0)) / 2)
  want_g = (_softplus(-0.5) + _softplus(3.0)) / 2
  np.testing.assert_allclose(losses.gan_d_loss(d_real, d_fake), want_d,
                             rtol=1e-6)
  np.testing.assert_allclose(losses.gan_g_loss(d_real, d_fake), want_g,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="unknown config.gan.loss"):
    losses.get_losses("wgan")


def test_penalties_of_a_linear_discriminator_are_the_weight_norm():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(4, 4, 3)), jnp.float32)
  d_fn = lambda x: jnp.einsum("bhwc,hwc->b", x, w) + 0.7
  x = jnp.asarray(rng.normal(size=(5, 4, 4, 3)), jnp.float32)
  want = float(jnp.sum(w ** 2))
  np.testing.assert_allclose(losses.r1_penalty(d_fn, x), want, rtol=1e-5)
  np.testing.assert_allclose(losses.r2_penalty(d_fn, -3 * x), want, rtol=1e-5)
  logits, pen = losses.logits_and_penalty(d_fn, x)
  np.testing.assert_allclose(logits, d_fn(x), rtol=1e-5)
  np.testing.assert_allclose(pen, want, rtol=1e-5)


def test_penalty_is_per_sample_sum_over_pixels_then_batch_mean():
  # D(x) = a/2 · ‖x‖²: ∇ₓD = a·x, so the penalty is a² · mean_i ‖x_i‖².
  a = 1.5
  d_fn = lambda x: 0.5 * a * jnp.sum(x ** 2, axis=(1, 2, 3))
  x = jnp.arange(2 * 2 * 2 * 1, dtype=jnp.float32).reshape(2, 2, 2, 1)
  per_sample = [0 + 1 + 4 + 9, 16 + 25 + 36 + 49]
  np.testing.assert_allclose(losses.r1_penalty(d_fn, x),
                             a ** 2 * np.mean(per_sample), rtol=1e-6)


def test_penalty_is_float32_for_bf16_discriminators():
  # A bf16 D of bf16 images: its input gradient is w (bf16, exact), and
  # ‖w‖² over 12k pixels must be summed in float32 (in bf16 the sum is off
  # by ~1%, which a gradient of ones over 3 pixels could not show).
  w = jax.random.normal(jax.random.key(0), (3, 64, 64)).astype(jnp.bfloat16)
  d_fn = lambda x: jnp.sum(x * w, axis=(1, 2, 3))  # noqa: E731
  logits, pen = losses.logits_and_penalty(
      d_fn, jnp.ones((2, 3, 64, 64), jnp.bfloat16))
  assert logits.dtype == jnp.float32 and pen.dtype == jnp.float32
  want = np.sum(np.asarray(w, np.float64) ** 2)
  np.testing.assert_allclose(pen, want, rtol=1e-5)


def _mlp_d(params, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
  return h @ params["w2"]


def test_penalty_gradient_wrt_d_params_is_double_backprop():
  rng = np.random.default_rng(1)
  params = {"w1": jnp.asarray(rng.normal(size=(6, 5)) * 0.5, jnp.float32),
            "b1": jnp.asarray(rng.normal(size=(5,)) * 0.1, jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
  x = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
  r1 = lambda p: losses.r1_penalty(lambda y: _mlp_d(p, y), x)
  grads = jax.grad(r1)(params)
  for g in jax.tree.leaves(grads):
    assert np.all(np.isfinite(g)) and np.any(np.abs(g) > 1e-4)
  # Central differences on a few coordinates (float64 on the host).
  def r1_np(p):
    w1, b1, w2 = (np.asarray(p[k], np.float64) for k in ("w1", "b1", "w2"))
    xs = np.asarray(x, np.float64)
    s = 1 - np.tanh(xs @ w1 + b1) ** 2  # [B, 5]
    gx = (s * w2) @ w1.T  # per-sample ∇ₓD, [B, 6]
    return np.mean(np.sum(gx ** 2, axis=1))
  for key, idx in [("w1", (2, 3)), ("b1", (1,)), ("w2", (4,))]:
    eps = 1e-4
    plus = {k: np.array(v, np.float64) for k, v in params.items()}
    minus = {k: np.array(v, np.float64) for k, v in params.items()}
    plus[key][idx] += eps
    minus[key][idx] -= eps
    fd = (r1_np(plus) - r1_np(minus)) / (2 * eps)
    np.testing.assert_allclose(grads[key][idx], fd, rtol=2e-3, atol=1e-5)


def _dirac_run(gamma, steps=2000, lr=0.05):
  """DiracRpGAN (R3GAN App. B): p_D = δ(0), G = δ(θ), D(x) = ψx."""
  def d_loss(psi, theta):
    d_fn = lambda x: psi * x[:, 0]
    d_real, r1 = losses.logits_and_penalty(d_fn, jnp.zeros((1, 1)))
    d_fake, r2 = losses.logits_and_penalty(d_fn, jnp.full((1, 1), theta))
    return losses.rpgan_d_loss(d_real, d_fake) + gamma / 2 * (r1 + r2)

  def g_loss(theta, psi):
    return losses.rpgan_g_loss(jnp.zeros(1), psi * jnp.full((1,), theta))

  @jax.jit
  def step(carry, _):
    psi, theta = carry
    psi = psi - lr * jax.grad(d_loss)(psi, theta)
    theta = theta - lr * jax.grad(g_loss)(theta, psi)
    return (psi, theta), jnp.hypot(psi, theta)

  _, radius = jax.lax.scan(step, (jnp.float32(0.0), jnp.float32(1.0)), None,
                           length=steps)
  return np.asarray(radius)


def test_dirac_rpgan_converges_with_penalty_and_not_without():
  # Sign conventions end to end: with γ > 0, (ψ, θ) converges linearly to
  # (0, 0) (App. C). Unregularised, the zero-sum game of App. B would keep
  # ψ² + θ² constant; with the mirrored (non-saturating) G loss the code
  # trains with, it shrinks only at a rate ∝ (ψθ)², i.e. sub-linearly.
  with_pen = _dirac_run(gamma=1.0)
  without = _dirac_run(gamma=0.0)
  assert with_pen[-1] < 1e-4, with_pen[-1]
  assert without[-1] > 0.1, without[-1]
