"""Tests of jaxgen.diffusion.samplers with analytically optimal denoisers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.diffusion import samplers
from jaxgen.diffusion import schedules

COSINE = schedules.logsnr_cosine
SHIFTED = functools.partial(schedules.logsnr_shifted, image_size=128)


def _b(a):
  return a[:, None, None, None]


def _point_v_fn(x0):
  """Optimal v for data that is the single point x0."""
  def v_fn(z, logsnr, labels):
    del labels
    alpha, sigma = schedules.alpha_sigma(logsnr)
    eps = (z - _b(alpha) * x0) / _b(sigma)
    return _b(alpha) * eps - _b(sigma) * x0
  return v_fn


def _gauss_v_fn(s):
  """Optimal v for N(0, s^2) pixels: x_hat = a s^2 z / (a^2 s^2 + sig^2)."""
  def v_fn(z, logsnr, labels):
    del labels
    a, sg = (_b(u) for u in schedules.alpha_sigma(logsnr))
    x_hat = a * s**2 * z / (a**2 * s**2 + sg**2)
    return (a * z - x_hat) / sg
  return v_fn


def _sampler(fn, v_fn, shape, **kw):
  return jax.jit(functools.partial(fn, v_fn, shape=shape, **kw))


@pytest.mark.parametrize("fn,logsnr_fn", [(samplers.ddpm_sample, COSINE),
                                          (samplers.ddim_sample, SHIFTED)])
def test_single_point_data_is_recovered(fn, logsnr_fn):
  # For point-mass data every x_hat is x0 whatever z is, so this pins the
  # v -> x_hat conversion and that the last x_hat is returned, not the
  # update itself (the Gaussian-data tests pin that).
  shape = (2, 8, 8, 3)
  x0 = jax.random.uniform(jax.random.key(9), shape, minval=-0.9, maxval=0.9)
  out = _sampler(fn, _point_v_fn(x0), shape, logsnr_fn=logsnr_fn,
                 num_steps=16)(jax.random.key(0))
  np.testing.assert_allclose(out, x0, atol=1e-5)


def _np_lam(t):
  t_min, t_max = np.arctan(np.exp(-7.5)), np.arctan(np.exp(7.5))
  return -2.0 * np.log(np.tan(t_min + t * (t_max - t_min)))


def _predicted_std(n, s, kind):
  """Exact output std of the sampler on N(0, s^2) data (everything is linear).

  Uses the textbook posterior q(z_s | z_t, x) rather than the c-form.
  """
  var = 1.0
  for i in range(n, 0, -1):
    lt, ls = _np_lam(i / n), _np_lam((i - 1) / n)
    at2, as2 = 1 / (1 + np.exp(-lt)), 1 / (1 + np.exp(-ls))
    st2, ss2 = 1 - at2, 1 - as2
    k = np.sqrt(at2) * s**2 / (at2 * s**2 + st2)  # x_hat = k z_t
    x_var = k**2 * var
    if kind == "ddpm":
      a_ts2 = at2 / as2
      s_ts2 = st2 - a_ts2 * ss2
      gain = np.sqrt(a_ts2) * ss2 / st2 + np.sqrt(as2) * s_ts2 / st2 * k
      var = gain**2 * var + s_ts2 * ss2 / st2
    else:
      gain = np.sqrt(as2) * k + np.sqrt(ss2) * (1 - np.sqrt(at2) * k) / np.sqrt(
          st2)
      var = gain**2 * var
  return np.sqrt(x_var)


def test_gaussian_data_ddpm_std():
  s, shape = 0.5, (16, 16, 16, 4)
  key = jax.random.key(1)
  out = _sampler(samplers.ddpm_sample, _gauss_v_fn(s), shape,
                 logsnr_fn=COSINE, num_steps=256, clip_x=False)(key)
  assert abs(float(out.std()) / s - 1) < 0.04
  assert abs(float(out.mean())) < 0.02
  # At a coarse grid the sampler is biased, exactly as the linear recursion
  # predicts; this pins the update formula, not just its limit.
  out = _sampler(samplers.ddpm_sample, _gauss_v_fn(s), shape,
                 logsnr_fn=COSINE, num_steps=8, clip_x=False)(key)
  np.testing.assert_allclose(out.std(), _predicted_std(8, s, "ddpm"),
                             rtol=0.02)
  assert _predicted_std(2000, s, "ddpm") == pytest.approx(s, rel=5e-3)


def test_gaussian_data_ddim_is_exact_linear_map():
  s, shape = 0.5, (8, 16, 16, 4)
  key = jax.random.key(2)
  out = _sampler(samplers.ddim_sample, _gauss_v_fn(s), shape,
                 logsnr_fn=COSINE, num_steps=8, clip_x=False)(key)
  z0 = jax.random.normal(jax.random.split(key)[0], shape)
  # Deterministic and linear: the output is a fixed multiple of the noise.
  np.testing.assert_allclose(out, z0 * _predicted_std(8, s, "ddim"),
                             rtol=2e-4, atol=1e-6)
  assert _predicted_std(2000, s, "ddim") == pytest.approx(s, rel=5e-3)


def test_ddpm_step_matches_posterior():
  rng = np.random.default_rng(0)
  z, x, noise = (rng.standard_normal(6) for _ in range(3))
  lt, ls = -1.3, 0.7
  got = samplers.ddpm_step(jnp.array(z), jnp.array(x), lt, ls,
                           jnp.array(noise))
  at2, as2 = 1 / (1 + np.exp(-lt)), 1 / (1 + np.exp(-ls))
  a_ts2 = at2 / as2
  s_ts2 = (1 - at2) - a_ts2 * (1 - as2)
  mean = (np.sqrt(a_ts2) * (1 - as2) / (1 - at2) * z +
          np.sqrt(as2) * s_ts2 / (1 - at2) * x)
  std = np.sqrt(s_ts2 * (1 - as2) / (1 - at2))
  np.testing.assert_allclose(got, mean + std * noise, rtol=1e-5, atol=1e-6)


def test_ddim_step_keeps_noise():
  rng = np.random.default_rng(1)
  x, eps = rng.standard_normal(6), rng.standard_normal(6)
  lt, ls = -2.0, 1.0
  (at, st), (a_s, ss) = schedules.alpha_sigma(lt), schedules.alpha_sigma(ls)
  got = samplers.ddim_step(at * x + st * eps, x, lt, ls)
  np.testing.assert_allclose(got, a_s * x + ss * eps, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", [samplers.ddpm_sample, samplers.ddim_sample])
def test_determinism(fn):
  sample = _sampler(fn, _gauss_v_fn(0.5), (2, 4, 4, 3), logsnr_fn=COSINE,
                    num_steps=4)
  a, b = sample(jax.random.key(0)), sample(jax.random.key(0))
  c = sample(jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def _label_v_fn(calls=None):
  """A toy conditional model whose output depends on labels and logSNR."""
  def v_fn(z, logsnr, labels):
    if calls is not None:
      calls.append(z.shape[0])  # Python side effect: runs at trace time.
    return (0.5 * z + _b(labels.astype(jnp.float32)) +
            0.1 * _b(logsnr))
  return v_fn


def test_no_unconditional_pass_at_scale_one():
  calls = []
  labels = jnp.array([1, 2, 3])
  trace = lambda w: jax.eval_shape(functools.partial(
      samplers.ddpm_sample, _label_v_fn(calls), shape=(3, 4, 4, 1),
      logsnr_fn=COSINE, num_steps=4, labels=labels, null_label=0,
      guidance_scale=w), jax.random.key(0))
  trace(1.0)
  assert calls and all(b == 3 for b in calls)
  calls.clear()
  trace(2.0)
  assert calls and all(b == 6 for b in calls)


def _np_guided(z, logsnr, labels, null, w):
  v_c = 0.5 * z + labels[:, None, None, None] + 0.1 * logsnr
  v_u = 0.5 * z + null + 0.1 * logsnr
  return v_c, v_u + w * (v_c - v_u)


def test_guided_v_formula_and_interval():
  z = np.asarray(jax.random.normal(jax.random.key(0), (3, 4, 4, 2)))
  labels = np.array([1, 2, 5])
  v_fn, w = _label_v_fn(), 3.0
  v_c, v_g = _np_guided(z, 0.5, labels, 7, w)
  kw = dict(null_label=7, guidance_scale=w)
  np.testing.assert_allclose(
      samplers.guided_v(v_fn, z, 0.5, labels, **kw), v_g, rtol=1e-5)
  # Scalar logSNR: inside the interval -> guided, outside -> conditional.
  np.testing.assert_allclose(samplers.guided_v(
      v_fn, z, 0.5, labels, guidance_interval=(0.0, 1.0), **kw), v_g,
                             rtol=1e-5)
  v_c2, _ = _np_guided(z, 2.0, labels, 7, w)
  np.testing.assert_allclose(samplers.guided_v(
      v_fn, z, 2.0, labels, guidance_interval=(0.0, 1.0), **kw), v_c2,
                             rtol=1e-5)
  # Per-example logSNR: elementwise switch.
  lam = np.array([-1.0, 0.5, 2.0], np.float32)
  got = samplers.guided_v(v_fn, z, lam, labels, guidance_interval=(0.0, 1.0),
                          **kw)
  v_c, v_g = _np_guided(z, lam[:, None, None, None], labels, 7, w)
  inside = np.array([False, True, False])[:, None, None, None]
  np.testing.assert_allclose(got, np.where(inside, v_g, v_c), rtol=1e-5)
  with pytest.raises(ValueError, match="null_label"):
    samplers.guided_v(v_fn, z, 0.5, None, guidance_scale=w)


def test_sampler_interval_end_to_end():
  labels = jnp.array([1, 2])
  sample = functools.partial(
      samplers.ddim_sample, _label_v_fn(), shape=(2, 4, 4, 1),
      logsnr_fn=COSINE, num_steps=6, labels=labels, null_label=0,
      clip_x=False)
  key = jax.random.key(3)
  plain = jax.jit(sample)(key)
  # The interval bounds may be traced, so one compile serves all intervals.
  guided = jax.jit(lambda key, interval: sample(
      key, guidance_scale=2.0, guidance_interval=interval))
  everywhere = guided(key, jnp.array([-100.0, 100.0]))
  assert not np.allclose(plain, everywhere)
  # An interval no step falls in is no guidance.
  np.testing.assert_allclose(guided(key, jnp.array([100.0, 200.0])), plain,
                             rtol=1e-6)
  partly = guided(key, jnp.array([-2.0, 2.0]))
  assert not np.allclose(partly, plain)
  assert not np.allclose(partly, everywhere)


def test_sharded_matches_unsharded():
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  shape = (16, 4, 4, 3)
  labels = jnp.arange(16) % 5 + 1

  def sample(rng, labels):
    return samplers.ddpm_sample(
        _label_v_fn(), rng, shape, logsnr_fn=SHIFTED, num_steps=5,
        labels=labels, null_label=0, guidance_scale=1.5,
        guidance_interval=(-5.0, 5.0))

  ref = jax.jit(sample)(jax.random.key(4), labels)
  data = jax.NamedSharding(mesh, jax.P("data"))
  with jax.set_mesh(mesh):
    out = jax.jit(sample, out_shardings=data)(
        jax.random.key(4), jax.device_put(labels, data))
  assert out.sharding.spec == jax.P("data")
  assert len(out.sharding.device_set) == 8
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_get_sampler():
  assert samplers.get_sampler("ddim") is samplers.ddim_sample
  with pytest.raises(ValueError, match="ddim, ddpm"):
    samplers.get_sampler("euler")


def test_sample_loop_calls_step_fn_from_noise_to_data():
  """A custom StepFn sees the grid t = 1, (n-1)/n, ..., 1/n in order."""
  n, shape = 4, (2, 3, 3, 1)
  seen = []

  calls = []

  def step_fn(z, x_hat, logsnr_t, logsnr_s, key):
    del x_hat, key
    seen.append((logsnr_t, logsnr_s))
    jax.debug.callback(lambda a, b: calls.append((float(a), float(b))),
                       logsnr_t, logsnr_s, ordered=True)
    return z + 1.0  # counts the steps in z

  zero_v = lambda z, logsnr, labels: jnp.zeros_like(z)
  rng = jax.random.key(3)
  out = samplers.sample(step_fn, zero_v, rng, shape, logsnr_fn=COSINE,
                        num_steps=n, clip_x=False)
  assert len(seen) == 1  # traced once inside the scan
  z0 = jax.random.normal(jax.random.split(rng)[0], shape, jnp.float32)
  # With v = 0, x_hat = alpha_t z at the last step t = 1/n, where z has been
  # incremented by the n - 1 earlier steps.
  alpha_last, _ = schedules.alpha_sigma(COSINE(jnp.float32(1.0 / n)))
  np.testing.assert_allclose(out, alpha_last * (z0 + n - 1), rtol=1e-5)
  # Every step, in order: from t = (n - k)/n to s = (n - k - 1)/n.
  jax.effects_barrier()
  grid = [float(COSINE(jnp.float32(k / n))) for k in range(n, -1, -1)]
  np.testing.assert_allclose(calls, list(zip(grid, grid[1:])), rtol=1e-5)
