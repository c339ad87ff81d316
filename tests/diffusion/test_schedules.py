"""Tests of jaxgen.diffusion.schedules against the SiD reference values."""

import logging
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.diffusion import schedules

T_GRID = np.array([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])


def _np_cosine(t, lo=-15.0, hi=15.0):
  """float64 transcription of the appendix pseudocode."""
  t_min = np.arctan(np.exp(-0.5 * hi))
  t_max = np.arctan(np.exp(-0.5 * lo))
  return -2.0 * np.log(np.tan(t_min + np.asarray(t) * (t_max - t_min)))


def test_reference_table_d512():
  # simple_diffusion.md Sec. 6.1, rounded to 2 decimals there.
  base = [15, 3.68, 1.76, 0, -1.76, -3.68, -15]
  shift32 = [9.45, -1.87, -3.78, -5.55, -7.31, -9.22, -20.55]
  interp_a = [9.45, -1.45, -2.74, -3.47, -4.19, -5.48, -16.39]
  np.testing.assert_allclose(schedules.logsnr_cosine(T_GRID), base, atol=6e-3)
  np.testing.assert_allclose(
      schedules.logsnr_shifted(T_GRID, 512, noise_size=32), shift32,
      atol=6e-3)
  np.testing.assert_allclose(
      schedules.logsnr_interpolated(T_GRID, 512), interp_a, atol=6e-3)


def test_cosine_endpoints_and_float64_reference():
  lam = schedules.logsnr_cosine(jnp.array([0.0, 0.5, 1.0]))
  assert lam.dtype == jnp.float32
  np.testing.assert_allclose(lam, [15.0, 0.0, -15.0], atol=1e-5)
  t = np.linspace(0.0, 1.0, 1001)
  np.testing.assert_allclose(schedules.logsnr_cosine(t), _np_cosine(t),
                             atol=1e-4)
  np.testing.assert_allclose(
      schedules.logsnr_cosine(t, -10.0, 20.0), _np_cosine(t, -10.0, 20.0),
      atol=1e-4)


@pytest.mark.parametrize("d", [32, 64, 128, 256, 512])
def test_shifted_midpoint(d):
  np.testing.assert_allclose(schedules.logsnr_shifted(0.5, d),
                             2 * math.log(64 / d), atol=1e-5)


def test_alpha_sigma_variance_preserving():
  lam = jnp.linspace(-30.0, 30.0, 301)
  alpha, sigma = schedules.alpha_sigma(lam)
  np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)
  np.testing.assert_allclose(alpha**2 / sigma**2, np.exp(lam), rtol=1e-4)
  # Away from the clipped ends, alpha_t ~ cos(pi t / 2).
  t = np.linspace(0.05, 0.95, 19)
  alpha, sigma = schedules.alpha_sigma(schedules.logsnr_cosine(t))
  np.testing.assert_allclose(alpha, np.cos(np.pi * t / 2), atol=1e-3)
  np.testing.assert_allclose(sigma, np.sin(np.pi * t / 2), atol=1e-3)


@pytest.mark.parametrize("d", [64, 256])
def test_dlogsnr_dt_identity(d):
  # -dlambda/dt = 4 (t_max - t_min) cosh((lambda - shift) / 2).
  t = jnp.linspace(0.0, 1.0, 41)
  fn = lambda t: schedules.logsnr_shifted(t, d)
  dldt = jax.vmap(jax.grad(fn))(t)
  lam = fn(t)
  shift = 2 * math.log(64 / d)
  t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
  expected = 4 * (t_max - t_min) * np.cosh((np.asarray(lam) - shift) / 2)
  np.testing.assert_allclose(-dldt, expected, rtol=2e-3)


def test_average_pool_raises_snr_by_s_squared():
  rng = np.random.default_rng(0)
  d, s = 256, 4
  noise = rng.standard_normal((8, d, d))
  pooled = noise.reshape(8, d // s, s, d // s, s).mean(axis=(2, 4))
  np.testing.assert_allclose(pooled.var() * s**2, 1.0, rtol=0.03)
  # A smooth (here constant) image at side d noised with the schedule for d
  # has, after s x s pooling, the SNR that the schedule gives at side d / s.
  t = 0.6
  alpha, sigma = schedules.alpha_sigma(schedules.logsnr_shifted(t, d))
  x = 0.7
  z = float(alpha) * x + float(sigma) * noise
  zp = z.reshape(8, d // s, s, d // s, s).mean(axis=(2, 4))
  snr = (float(alpha) * x)**2 / zp.var()
  np.testing.assert_allclose(
      np.log(snr) - math.log(x**2),
      schedules.logsnr_shifted(t, d // s), atol=0.05)


def test_gradients_finite():
  t = jnp.array([0.0, 1e-6, 0.5, 1.0 - 1e-6, 1.0])
  for fn in (schedules.logsnr_cosine,
             lambda t: schedules.logsnr_shifted(t, 512),
             lambda t: schedules.logsnr_interpolated(t, 512)):
    g = jax.vmap(jax.grad(fn))(t)
    assert np.all(np.isfinite(g))
    ga = jax.vmap(jax.grad(lambda t: schedules.alpha_sigma(fn(t))[0]))(t)
    gs = jax.vmap(jax.grad(lambda t: schedules.alpha_sigma(fn(t))[1]))(t)
    assert np.all(np.isfinite(ga)) and np.all(np.isfinite(gs))


def test_interpolation_directions():
  t = 0.25
  a = schedules.logsnr_interpolated(t, 512, direction="eq6")
  b = schedules.logsnr_interpolated(t, 512, direction="reversed")
  np.testing.assert_allclose(a, -2.74, atol=6e-3)
  np.testing.assert_allclose(b, -0.66, atol=6e-3)
  base = _np_cosine(t)
  low, high = base + 2 * np.log(32 / 512), base + 2 * np.log(256 / 512)
  np.testing.assert_allclose(b, t * low + (1 - t) * high, atol=1e-4)
  np.testing.assert_allclose(a, t * high + (1 - t) * low, atol=1e-4)
  with pytest.raises(ValueError, match="eq6"):
    schedules.logsnr_interpolated(t, 512, direction="up")


def test_make_logsnr_fn():
  t = jnp.linspace(0.0, 1.0, 11)
  np.testing.assert_array_equal(
      schedules.make_logsnr_fn("cosine", 256)(t), schedules.logsnr_cosine(t))
  np.testing.assert_array_equal(
      schedules.make_logsnr_fn("shifted", 256, noise_size=32)(t),
      schedules.logsnr_shifted(t, 256, noise_size=32))
  np.testing.assert_array_equal(
      schedules.make_logsnr_fn("interpolated", 512, direction="reversed")(t),
      schedules.logsnr_interpolated(t, 512, direction="reversed"))
  with pytest.raises(ValueError, match="cosine, interpolated, shifted"):
    schedules.make_logsnr_fn("linear", 64)


@pytest.mark.parametrize("name,kwargs,message", [
    # Rising logSNR: every DDPM step's variance was negative, the samples
    # NaN cast to all-black PNGs, and the command exited 0.
    ("shifted", dict(logsnr_min=20.0),
     r"config\.diffusion\.schedules\.shifted\.logsnr_min=20\.0 must be "
     r"below logsnr_max=15\.0 \(logSNR falls"),
    ("cosine", dict(logsnr_max=float("nan")),
     r"config\.diffusion\.schedules\.cosine\.logsnr_max=nan must be a "
     r"finite number\.$"),
    # Was "math domain error", naming no field.
    ("shifted", dict(noise_size=0),
     r"config\.diffusion\.schedules\.shifted\.noise_size=0 must be an "
     r"integer >= 1\.$"),
    ("interpolated", dict(noise_size_high=2.5), r"noise_size_high=2\.5"),
    # Was only found when the schedule was first traced (after restoring).
    ("interpolated", dict(direction="up"),
     r"config\.diffusion\.schedules\.interpolated\.direction='up' is not a "
     r"direction; choose one of: eq6, reversed\.$"),
    # Bounds in order, yet rising over part of [0, 1] (the shift's slope
    # beats the cosine's): DDPM steps there were NaN.
    ("interpolated", dict(noise_size_low=32, noise_size_high=1024),
     r"^config\.diffusion\.schedules\.interpolated: logSNR must fall from "
     r"t=0 to t=1, but with noise_size_low=32, noise_size_high=1024 it "
     r"rises from t=0\.36 \("),
])
def test_make_logsnr_fn_refuses_values_the_schedule_cannot_use(
    name, kwargs, message):
  with pytest.raises(ValueError, match=message) as e:
    schedules.make_logsnr_fn(name, 64, **kwargs)
  assert "\n" not in str(e.value)
  # Values that work pass; the defaults fill what is not given.
  schedules.make_logsnr_fn(name, 64, logsnr_min=-10.0, logsnr_max=12.0)


@pytest.mark.parametrize("low,high,direction", [
    (32, 1024, "eq6"), (32, 512, "eq6"), (32, 256, "eq6"), (32, 768, "eq6"),
    (1024, 32, "reversed"), (32, 1024, "reversed"), (1024, 32, "eq6")])
def test_the_closed_form_rise_check_agrees_with_the_schedule(low, high,
                                                             direction):
  """Refused exactly when the schedule, evaluated densely, rises; and from
  the t where it starts to."""
  kwargs = dict(noise_size_low=low, noise_size_high=high, direction=direction)
  t = np.linspace(0.0, 1.0, 20001)
  values = np.asarray(schedules.logsnr_interpolated(t, 512, **kwargs),
                      np.float64)
  rises = np.flatnonzero(np.diff(values) > 1e-6)
  if not len(rises):
    schedules.make_logsnr_fn("interpolated", 512, **kwargs)
    return
  with pytest.raises(ValueError, match="rises from t=") as e:
    schedules.make_logsnr_fn("interpolated", 512, **kwargs)
  said = float(re.search(r"rises from t=([\d.]+)", str(e.value)).group(1))
  assert abs(said - t[rises[0]]) < 0.011


def test_the_pixel_shift_on_latents_is_warned_about(caplog):
  # SiD's shift is derived for pixels: on a 16x16 latent it adds +2.77
  # (less noise), the opposite of what it does for a 256 px image.
  from jaxgen.diffusion import objective  # pylint: disable=g-import-not-at-top
  from tests.train import common  # pylint: disable=g-import-not-at-top

  def warnings_of(name, **overrides):
    caplog.clear()
    config = common.tiny_config(**{"dataset.name": name, **overrides})
    with caplog.at_level(logging.WARNING):
      objective.SimpleDiffusion(config).validate(8)
    return [r.getMessage() for r in caplog.records
            if "derived for pixels" in r.getMessage()]

  assert not warnings_of("jaxgen_shapes")
  assert warnings_of("latents:/runs/latents") == [
      "config.diffusion.schedule='shifted' shifts logSNR by 2 log(noise_size "
      "/ side), derived for pixels; on these latents (side 16) it is +2.77 "
      "at noise_size 64. Set config.diffusion.schedules.shifted's noise "
      "size(s) for the latent space, or use schedule='cosine'."]
  # Once the noise size is set for the latents, nothing is said.
  assert not warnings_of("latents:/runs/latents", **{
      "diffusion.schedules.shifted.noise_size": 16})
