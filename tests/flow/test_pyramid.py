"""The spatial pyramid's math (the reference notes' §9 checks 1-4)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.flow import paths
from jaxgen.flow import pyramid
from jaxgen.flow import samplers


def _np_mean2x2(x):
  h, w = x.shape[-3], x.shape[-2]
  return x.reshape(x.shape[:-3] + (h // 2, 2, w // 2, 2, x.shape[-1])).mean(
      axis=(-4, -2))


def test_stage_windows_continuous_and_official_grid():
  np.testing.assert_allclose(pyramid.stage_windows(3),
                             [(0, 1 / 3), (0.2, 2 / 3), (0.5, 1)], atol=1e-12)
  grid = pyramid.stage_windows(3, 1000)
  np.testing.assert_allclose([s for s, _ in grid], [0, 0.1998, 0.4993],
                             atol=5e-5)
  np.testing.assert_allclose([e for _, e in grid], [0.333, 0.666, 1.0])
  for windows in (pyramid.stage_windows(3), grid, pyramid.stage_windows(4)):
    for (_, e_prev), (s, _) in zip(windows, windows[1:]):
      # The jump rule of Eq. 15: the previous end is 2s/(1+s).
      assert e_prev == pytest.approx(2 * s / (1 + s), abs=1e-12)


def test_official_timestep_windows():
  windows = pyramid.stage_windows(3, 1000)
  # On the code's integer grid (timesteps[j] = 1000 - j): exactly its cuts.
  ts = pyramid.timestep_windows(windows, num_train_timesteps=1000)
  assert ts == [(1000.0, 744.0), (744.0, 386.0), (386.0, 1.0)]
  # By hand: path lengths 1/3 - 0, 0.666 - 0.1998, 1 - 0.4993 give
  # cumulative fractions 0.2561 and 0.6148, cut at int(256.1), int(614.8).
  lengths = [e - s for s, e in windows]
  r = np.cumsum(lengths) / sum(lengths)
  assert [1000 - int(1000 * x) for x in r[:2]] == [744, 386]
  # Continuous cuts: the fractions 0.256, 0.359, 0.385 of 1000 -> 1.
  cont = pyramid.timestep_windows(windows)
  np.testing.assert_allclose([a - b for a, b in cont],
                             999 * np.diff(np.concatenate([[0], r])),
                             rtol=1e-12)
  assert cont[0][1] == pytest.approx(744.1, abs=0.05)
  assert cont[1][1] == pytest.approx(385.8, abs=0.05)


def test_down_is_2x2_mean_and_up_is_nearest():
  x = np.random.default_rng(0).normal(size=(2, 3, 8, 6, 4)).astype(np.float32)
  np.testing.assert_allclose(pyramid.down2(jnp.asarray(x)), _np_mean2x2(x),
                             rtol=1e-6, atol=1e-6)
  up = np.asarray(pyramid.up2(jnp.asarray(x)))
  np.testing.assert_array_equal(up[..., ::2, 1::2, :], x)
  np.testing.assert_array_equal(up[..., 1::2, ::2, :], x)
  # The antialiased resize is a different (wider) filter: never use it.
  resized = jax.image.resize(jnp.asarray(x[0]), (3, 4, 3, 4), "bilinear")
  assert np.abs(np.asarray(resized) - _np_mean2x2(x[0])).max() > 1e-2


def test_noise_pyramid_is_unit_variance_uncorrelated_and_nested():
  levels = pyramid.noise_pyramid(jax.random.key(0), (100, 64, 64, 1), 3)
  assert [l.shape[1] for l in levels] == [64, 32, 16]
  for lvl in levels:
    z = np.asarray(lvl)
    assert z.var() == pytest.approx(1.0, abs=0.01)
    corr = np.mean(z[:, :, 1:] * z[:, :, :-1])
    assert abs(corr) < 0.01
  np.testing.assert_allclose(levels[1], 2 * _np_mean2x2(np.asarray(levels[0])),
                             rtol=1e-5, atol=1e-5)


def _block_cov(x):
  """4x4 covariance of the pixels of each 2x2 block, over all blocks."""
  b = x.reshape(-1, x.shape[1] // 2, 2, x.shape[2] // 2, 2)
  v = np.moveaxis(b, (2, 4), (-2, -1)).reshape(-1, 4)
  return np.cov(v, rowvar=False)


def test_block_noise_covariance():
  n = np.asarray(pyramid.block_noise(jax.random.key(1), (400, 64, 64, 1)))
  cov = _block_cov(n[..., 0])
  want = np.full((4, 4), -1 / 3) + np.eye(4) * (4 / 3)
  np.testing.assert_allclose(cov, want, atol=0.01)
  # Different blocks are independent.
  assert abs(np.mean(n[:, :, 1:3].prod(axis=2))) < 0.01
  # Every block sums to zero (the covariance is singular: no Cholesky).
  np.testing.assert_allclose(_np_mean2x2(n), 0, atol=1e-5)


def test_renoise_formula():
  rng = jax.random.key(2)
  x = jax.random.normal(jax.random.key(3), (2, 4, 4, 3))
  s = 0.3
  want = ((1 + s) / 2 * pyramid.up2(x) + math.sqrt(3) * (1 - s) / 2
          * pyramid.block_noise(rng, (2, 8, 8, 3)))
  np.testing.assert_allclose(pyramid.renoise(rng, x, s), want, rtol=1e-6)


@pytest.mark.parametrize("start", [0.1998, 0.4993])
def test_jump_point_distribution(start):
  # §9.2: renoising the previous end (signal e = 2s/(1+s), noise (1-e)) gives
  # noise covariance (1-s)^2 I and signal coefficient s.
  e = 2 * start / (1 + start)
  low = (1 - e) * jax.random.normal(jax.random.key(4), (400, 32, 32, 1))
  x = np.asarray(pyramid.renoise(jax.random.key(5), low, start))[..., 0]
  cov = _block_cov(x)
  np.testing.assert_allclose(cov, (1 - start) ** 2 * np.eye(4), atol=4e-3)
  assert (1 + start) / 2 * e == pytest.approx(start)


def test_stage_endpoints_match_the_formulas():
  rng = np.random.default_rng(0)
  x1 = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  noise = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
  s, e = 0.2, 2 / 3
  start, end = pyramid.stage_endpoints(jnp.asarray(x1), jnp.asarray(noise), 1,
                                       (s, e))
  x_k = _np_mean2x2(x1)
  np.testing.assert_allclose(end, e * x_k + (1 - e) * noise, atol=1e-5)
  up = np.repeat(np.repeat(_np_mean2x2(x_k), 2, axis=1), 2, axis=2)
  np.testing.assert_allclose(start, s * up + (1 - s) * noise, atol=1e-5)


def test_path_endpoints_exact_and_euler_lands_on_end():
  rng = np.random.default_rng(1)
  a, b = (jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32)
          for _ in range(2))
  np.testing.assert_array_equal(paths.interpolate(a, b, jnp.zeros(3)), a)
  np.testing.assert_array_equal(paths.interpolate(a, b, jnp.ones(3)), b)
  for steps in (1, 3, 17):
    out = paths.euler(lambda x, t: paths.velocity(a, b), a, steps)
    np.testing.assert_allclose(out, b, atol=1e-5)


def test_time_sampling():
  u = paths.sample_time(jax.random.key(0), (20000,))
  ln = paths.sample_time(jax.random.key(0), (20000,), "logit_normal")
  assert 0 <= float(u.min()) and float(u.max()) < 1
  assert float(u.mean()) == pytest.approx(0.5, abs=0.01)
  logits = np.log(np.asarray(ln) / (1 - np.asarray(ln)))
  assert logits.std() == pytest.approx(1.0, abs=0.03)
  with pytest.raises(ValueError, match="logit_normal"):
    paths.sample_time(jax.random.key(0), (2,), "cosine")


def test_guidance_combines_conditional_and_unconditional():
  def v_fn(x, ts, labels):
    return x * 0 + labels[:, None].astype(jnp.float32)
  x = jnp.zeros((2, 3))
  out = paths.guided_velocity(v_fn, x, jnp.zeros(2), jnp.array([2, 4]),
                              null_label=10, guidance_scale=3.0)
  # v_u + 3 (v_c - v_u) with v_u = 10.
  np.testing.assert_allclose(out[:, 0], [10 + 3 * (2 - 10), 10 + 3 * (4 - 10)])


def _oracle(x1, windows):
  """The exact stage velocity for delta data x1 (the notes' §9.4)."""
  num = len(windows)

  def velocity(i, x, t):
    s, e = windows[i]
    k = num - 1 - i
    x_k = pyramid.down(x1, k)
    low = (pyramid.up2(pyramid.down2(x_k)) if s > 0 else 0.0)
    signal = t * e * x_k + (1 - t) * s * low
    noise_coef = t * (1 - e) + (1 - t) * (1 - s)
    n = (x - signal) / noise_coef
    return e * x_k - s * low + (s - e) * n

  return velocity


@pytest.mark.parametrize("grid", [None, 1000])
def test_delta_data_oracle_through_the_three_stage_sampler(grid):
  x1 = jax.random.uniform(jax.random.key(7), (2, 16, 16, 3), minval=-1,
                          maxval=1)
  windows = pyramid.stage_windows(3, grid)
  out = samplers.pyramid_sample(_oracle(x1, windows), jax.random.key(8),
                                x1.shape, windows, (5, 3, 4))
  np.testing.assert_allclose(out, x1, atol=1e-5)


@pytest.mark.parametrize("renoise", [True, False])
def test_each_stage_starts_from_its_marginal(renoise, monkeypatch):
  # The delta test ends at x1 whatever the jumps did (the last stage's
  # end has no noise), so it cannot see the renoising. Here the state each
  # stage starts from is caught: at start level s it must be
  # s·Up(Down(x_k)) + (1 - s)·n with n i.i.d. N(0, 1) — its 2x2 blocks
  # uncorrelated. Upsampling alone (renoise=False) leaves n with blocks of
  # one value (and a signal residue).
  x1 = jax.random.uniform(jax.random.key(7), (96, 16, 16, 3), minval=-1,
                          maxval=1)
  windows = pyramid.stage_windows(3)
  euler = samplers.paths.euler
  starts = []

  def catching(v_fn, x, num_steps):
    starts.append(np.asarray(x))  # Eager: each stage's start point.
    return euler(v_fn, x, num_steps)

  monkeypatch.setattr(samplers.paths, "euler", catching)
  samplers.pyramid_sample(_oracle(x1, windows), jax.random.key(8), x1.shape,
                          windows, (2, 2, 2), renoise=renoise)
  assert [x.shape[1] for x in starts] == [4, 8, 16]
  for i in (1, 2):
    s = windows[i][0]
    x_k = pyramid.down(x1, len(windows) - 1 - i)
    low = pyramid.up2(pyramid.down2(x_k))
    n = (starts[i] - s * np.asarray(low)) / (1 - s)
    b, h, w, c = n.shape
    # Rows: one 2x2 block of one channel; columns: its 4 pixels.
    blocks = n.reshape(b, h // 2, 2, w // 2, 2, c).transpose(
        0, 1, 3, 5, 2, 4).reshape(-1, 4)
    cov = np.cov(blocks, rowvar=False)
    if renoise:
      # 96·(h/2)·(w/2)·3 blocks: standard error about 0.02 (stage 1).
      np.testing.assert_allclose(cov, np.eye(4), atol=0.1)
      np.testing.assert_allclose(blocks.mean(), 0.0, atol=0.05)
    else:
      off = cov[~np.eye(4, dtype=bool)]
      assert off.min() > 0.3, cov


def _mixture_oracle(points, windows):
  """The exact stage velocity for data = equal mixture of `points`.

  Given x at local time t' of stage i, each point's path has x ~
  N(m_j, c² I) with m_j = t'·e·x_k + (1-t')·s·Up(Down(x_k)) and c = t'(1-e)
  + (1-t')(1-s); the velocity is the posterior-weighted mean of the
  points' conditional velocities. The two points differ at the coarsest
  level, so stage 0 decides the outcome: this checks the stage velocities,
  not the jumps (`test_each_stage_starts_from_its_marginal` does).
  """
  num = len(windows)

  def velocity(i, x, t):
    s, e = windows[i]
    k = num - 1 - i
    c = t * (1 - e) + (1 - t) * (1 - s)
    vs, logw = [], []
    for p in points:
      x_k = pyramid.down(p, k)
      low = pyramid.up2(pyramid.down2(x_k)) if s > 0 else 0.0
      m = t * e * x_k + (1 - t) * s * low
      n = (x - m) / c
      vs.append(e * x_k - s * low + (s - e) * n)
      logw.append(-0.5 * jnp.sum(jnp.square(x - m), axis=(1, 2, 3)) / c ** 2)
    w = jax.nn.softmax(jnp.stack(logw), axis=0)[:, :, None, None, None]
    return jnp.sum(w * jnp.stack(vs), axis=0)

  return velocity


def test_two_point_mixture_through_the_three_stage_sampler():
  # §9.4's stricter check: with the exact posterior-weighted velocity, the
  # sampler reproduces the data distribution: every sample lands on one of
  # the two points, half on each.
  pattern = jnp.linspace(-1, 1, 64).reshape(1, 8, 8, 1)
  a, b = 0.6 * pattern, -0.6 * pattern[:, ::-1]
  windows = pyramid.stage_windows(3)
  n = 2000
  out = samplers.pyramid_sample(
      _mixture_oracle([a, b], windows), jax.random.key(11), (n, 8, 8, 1),
      windows, (40, 40, 40))
  da = np.sqrt(np.mean(np.square(np.asarray(out - a)), axis=(1, 2, 3)))
  db = np.sqrt(np.mean(np.square(np.asarray(out - b)), axis=(1, 2, 3)))
  assert np.minimum(da, db).max() < 0.02
  frac = np.mean(da < db)
  assert abs(frac - 0.5) < 3 * np.sqrt(0.25 / n)


def test_without_renoising_the_start_is_off_its_marginal():
  # The ablation's jump (plain Up of the previous end, signal e, noise 1-e)
  # gives the next stage a start whose noise is fully correlated inside each
  # 2x2 block with variance (1-e)^2, instead of (1-s)^2 I: the blocky input
  # the paper's App. C.2 shows.
  s = 0.2
  e = 2 * s / (1 + s)
  low = (1 - e) * jax.random.normal(jax.random.key(9), (400, 16, 16, 1))
  cov = _block_cov(np.asarray(pyramid.up2(low))[..., 0])
  np.testing.assert_allclose(cov, np.full((4, 4), (1 - e) ** 2), atol=4e-3)
  assert (1 - e) ** 2 < 0.7 * (1 - s) ** 2


def test_stage_ratios():
  assert pyramid.stage_ratios("official", 3) == (1, 2, 1)
  assert pyramid.stage_ratios("uniform", 3) == (1, 1, 1)
  assert pyramid.stage_ratios((2, 1, 1), 3) == (2, 1, 1)
  assert pyramid.stage_ratios("2,1,1", 3) == (2, 1, 1)
  with pytest.raises(ValueError, match="integers separated by commas"):
    pyramid.stage_ratios("2,x,1", 3)
  with pytest.raises(ValueError, match="3 positive ints"):
    pyramid.stage_ratios((1, 1), 3)


def test_history_levels_follow_the_official_rule():
  # Full-res stage: lag 1 full, lag 2 half, older quarter.
  assert [pyramid.history_level(0, lag, 3) for lag in (1, 2, 3, 9)] == [
      0, 1, 2, 2]
  assert [pyramid.history_level(1, lag, 3) for lag in (1, 2, 5)] == [1, 2, 2]
  assert [pyramid.history_level(2, lag, 3) for lag in (1, 4)] == [2, 2]
