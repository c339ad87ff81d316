"""Tests of jaxgen.diffusion.losses."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.diffusion import losses
from jaxgen.diffusion import schedules
from jaxgen.nn import resample


def _setup(shape, seed=0):
  # numpy data: eager jax.random on fresh shapes costs a compile per call.
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
  eps = rng.standard_normal(shape).astype(np.float32)
  lam = rng.uniform(-12.0, 12.0, shape[0]).astype(np.float32)
  alpha, sigma = (np.asarray(u) for u in schedules.alpha_sigma(lam))
  bshape = (-1,) + (1,) * (len(shape) - 1)
  z = alpha.reshape(bshape) * x + sigma.reshape(bshape) * eps
  return x, eps, lam, alpha, sigma, z


@pytest.mark.parametrize("shape", [(4, 8, 8, 3), (3, 2, 8, 8, 3)])
def test_round_trips(shape):
  x, eps, _, alpha, sigma, z = _setup(shape)
  v = losses.v_target(x, eps, alpha, sigma)
  np.testing.assert_allclose(losses.eps_from_v(z, v, alpha, sigma), eps,
                             atol=1e-5)


def test_eps_error_is_sigmoid_weighted_v_error():
  x, eps, lam, alpha, sigma, z = _setup((5, 4, 4, 2))
  v = losses.v_target(x, eps, alpha, sigma)
  v_hat = v + np.random.default_rng(7).standard_normal(v.shape)
  eps_hat = losses.eps_from_v(z, v_hat, alpha, sigma)
  lhs = jnp.sum((eps - eps_hat)**2, axis=(1, 2, 3))
  rhs = jax.nn.sigmoid(lam) * jnp.sum((v - v_hat)**2, axis=(1, 2, 3))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


@pytest.mark.parametrize("bias,expected", [
    (-3.0, [1.0, 0.88, 0.047, 0.0, 0.0]),
    (0.0, [1.0, 0.99, 0.5, 0.007, 0.0]),
    (2.0, [1.0, 1.0, 0.88, 0.047, 0.0]),
])
def test_sigmoid_weight_values(bias, expected):
  w = losses.sigmoid_weight(jnp.array([-10.0, -5.0, 0.0, 5.0, 10.0]), bias)
  np.testing.assert_allclose(w, expected, atol=5e-3)
  # Decreasing in logSNR: the sign pitfall would make it increasing.
  assert np.all(np.diff(np.asarray(w)) < 0)


def _np_multiscale(err, min_size, normalize):
  """Independent reference: explicit loops over scales, float64."""
  err = np.asarray(err, np.float64)
  d = err.shape[-3]
  scales = [min_size * 2**k for k in range(int(math.log2(d // min_size)) + 1)]
  w = np.array([1.0 / s for s in scales])
  if normalize:
    w = w / w.sum()
  out = np.zeros(err.shape[0])
  for s, ws in zip(scales, w):
    f = d // s
    pooled = err.reshape(err.shape[:-3] + (s, f, s, f, err.shape[-1]))
    pooled = pooled.mean(axis=(-4, -2))
    out += ws * (pooled**2).reshape(err.shape[0], -1).mean(axis=1)
  return out


def test_multiscale_single_scale_is_eps_mse():
  for d in (16, 32):
    err = np.random.default_rng(d).standard_normal((3, d, d, 3))
    np.testing.assert_allclose(losses.multiscale_mse(err, 32),
                               jnp.mean(err**2, axis=(1, 2, 3)), rtol=1e-6)
  # The un-normalised paper weights are the bare 1/s.
  np.testing.assert_allclose(losses.multiscale_mse(err, 32, normalize=False),
                             jnp.mean(err**2, axis=(1, 2, 3)) / 32, rtol=1e-6)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", [(2, 128, 128, 3), (2, 2, 128, 128, 1)])
def test_multiscale_matches_numpy(normalize, shape):
  # Smooth + white error, so coarse scales are not all ~0.
  rng = np.random.default_rng(1)
  coarse = rng.standard_normal(shape[:-3] + (8, 8, shape[-1]))
  coarse = np.repeat(np.repeat(coarse, 16, axis=-3), 16, axis=-2)
  err = (coarse + 0.5 * rng.standard_normal(shape)).astype(np.float32)
  got = losses.multiscale_mse(err, 32, normalize)
  np.testing.assert_allclose(got, _np_multiscale(err, 32, normalize),
                             rtol=1e-5)
  assert losses.multiscale_scales(128, 32) == (32, 64, 128)


def test_multiscale_linearity():
  rng = np.random.default_rng(2)
  a = rng.standard_normal((2, 64, 64, 3)).astype(np.float32)
  b = rng.standard_normal((2, 64, 64, 3)).astype(np.float32)
  # pylint: disable-next=protected-access
  pool = functools.partial(resample.avg_pool_to, size=32)
  np.testing.assert_allclose(pool(a - b), pool(a) - pool(b), atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 96, 96, 3), (1, 48, 48, 3),
                                   (1, 64, 32, 3)])
def test_multiscale_bad_sizes(shape):
  with pytest.raises(ValueError):
    losses.multiscale_mse(jnp.zeros(shape), 32)


def _oracle_v_fn(x, eps):
  def v_fn(z, logsnr):
    del z
    alpha, sigma = schedules.alpha_sigma(logsnr)
    return losses.v_target(x, eps, alpha, sigma)
  return v_fn


@pytest.mark.parametrize("kwargs", [
    {},
    {"weighting": "sigmoid", "multiscale": True},
])
def test_oracle_gives_zero_loss(kwargs):
  x = _setup((4, 64, 64, 3))[0]
  rng = jax.random.key(3)
  # diffusion_loss documents `t_rng, eps_rng = split(rng)`.
  eps = jax.random.normal(jax.random.split(rng)[1], x.shape)
  logsnr_fn = functools.partial(schedules.logsnr_shifted, image_size=64)
  loss, aux = jax.jit(functools.partial(
      losses.diffusion_loss, _oracle_v_fn(x, eps), logsnr_fn=logsnr_fn,
      options=losses.LossOptions(**kwargs)))(x, rng)
  assert float(loss) < 1e-9
  assert float(aux["eps_mse"]) < 1e-9
  assert aux["logsnr"].shape == (4,)


def test_zero_v_fn_matches_analytic():
  x, eps, _, _, _, _ = _setup((6, 8, 8, 3))
  t = np.linspace(0.05, 0.95, 6)
  zero = lambda z, logsnr: jnp.zeros_like(z)
  loss, aux = losses.diffusion_loss_at(
      zero, x, t, eps, logsnr_fn=schedules.logsnr_cosine)
  # v_hat = 0 gives eps - eps_hat = alpha * v, so the MSE is alpha^2 |v|^2.
  lam = np.asarray(aux["logsnr"], np.float64)
  a2 = 1 / (1 + np.exp(-lam))
  a, s = np.sqrt(a2)[:, None, None, None], np.sqrt(1 - a2)[:, None, None, None]
  v = a * np.asarray(eps) - s * np.asarray(x)
  expected = a2 * (v**2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(aux["per_example_loss"], expected, rtol=1e-4)
  np.testing.assert_allclose(loss, expected.mean(), rtol=1e-4)

  # Sigmoid weighting multiplies each example's eps-MSE.
  _, aux_w = losses.diffusion_loss_at(
      zero, x, t, eps, logsnr_fn=schedules.logsnr_cosine,
      options=losses.LossOptions(weighting="sigmoid", sigmoid_bias=-1.0))
  np.testing.assert_allclose(aux_w["per_example_loss"],
                             expected / (1 + np.exp(lam + 1.0)), rtol=1e-4)


def test_zero_v_fn_expectation_over_t():
  # x = 0: per-example loss alpha^4 mean(eps^2), so E = E_t[sigmoid(lam)^2].
  x = jnp.zeros((4096, 8, 8, 1))
  loss, _ = jax.jit(functools.partial(
      losses.diffusion_loss, lambda z, l: jnp.zeros_like(z),
      logsnr_fn=schedules.logsnr_cosine))(x, jax.random.key(5))
  t = (np.arange(100000) + 0.5) / 100000
  t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
  lam = -2 * np.log(np.tan(t_min + t * (t_max - t_min)))
  expected = np.mean((1 / (1 + np.exp(-lam)))**2)  # ~3/8
  np.testing.assert_allclose(loss, expected, atol=0.025)


def test_dlogsnr_dt_weight_and_gradient():
  x, eps, _, _, _, _ = _setup((4, 8, 8, 2))
  t = np.array([0.1, 0.3, 0.6, 0.9])

  def loss_fn(p, **kw):
    return losses.diffusion_loss_at(
        lambda z, l: p * z, x, t, eps, logsnr_fn=schedules.logsnr_cosine,
        options=losses.LossOptions(**kw))

  _, aux = loss_fn(0.3, weighting="sigmoid", weight_dlogsnr_dt=True)
  t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
  lam = np.asarray(aux["logsnr"])
  expected = (4 * (t_max - t_min) * np.cosh(lam / 2) /
              (1 + np.exp(lam + 3.0)))
  np.testing.assert_allclose(aux["weight"], expected, rtol=1e-3)
  grad = jax.grad(lambda p: loss_fn(p)[0])(0.3)
  assert np.isfinite(grad) and abs(float(grad)) > 0
  with pytest.raises(ValueError, match="sigmoid"):
    loss_fn(0.3, weighting="min_snr")
