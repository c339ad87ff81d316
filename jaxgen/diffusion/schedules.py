"""logSNR noise schedules of simple diffusion (Hoogeboom et al., ICML 2023).

Every schedule maps diffusion time t in [0, 1] (0 = clean, 1 = pure noise) to
logSNR(t) = log(alpha_t^2 / sigma_t^2) of a variance-preserving process. All
functions are vectorised over `t`, return float32 and are differentiable, so
`jax.grad` gives -dlogSNR/dt (the sampling density of logSNR under t ~ U(0,1)).

Schedules are looked up by name through `make_logsnr_fn`, which the loss and the
samplers consume as a plain `logsnr_fn(t)` callable.
"""

import functools
import inspect
import math
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from jaxgen import config_lib
from jaxgen import registry

LogSNRFn = Callable[[jax.Array], jax.Array]

SCHEDULES = registry.Registry("logsnr schedule")

_INTERP_DIRECTIONS = ("eq6", "reversed")


def _as_f32(t) -> jax.Array:
  return jnp.asarray(t, dtype=jnp.float32)


@SCHEDULES.register("cosine")
def logsnr_cosine(t, logsnr_min: float = -15.0,
                  logsnr_max: float = 15.0) -> jax.Array:
  """Clipped cosine schedule, logSNR(t) = -2 log tan(a(t)) (SiD appendix).

  The angle is reparameterised as a(t) = t_min + t (t_max - t_min) with
  t_min = atan(exp(-logsnr_max / 2)) and t_max = atan(exp(-logsnr_min / 2)), so
  logSNR runs from exactly `logsnr_max` at t=0 to `logsnr_min` at t=1 without
  clipping t itself.

  Args:
    t: times in [0, 1], any shape.
    logsnr_min: logSNR at t=1.
    logsnr_max: logSNR at t=0.

  Returns:
    float32 logSNR with the shape of `t`.
  """
  t = _as_f32(t)
  t_min = math.atan(math.exp(-0.5 * logsnr_max))
  t_max = math.atan(math.exp(-0.5 * logsnr_min))
  # -2 log tan(a) = 2 (log sin(pi/2 - a) - log sin(a)). Near t=1, a is within
  # ~5e-4 of pi/2, so tan(a) in float32 loses ~3 digits; building the
  # complement angle b = pi/2 - a directly from (1 - t) avoids cancellation.
  a = t_min + t * (t_max - t_min)
  b = (0.5 * math.pi - t_max) + (1.0 - t) * (t_max - t_min)
  return 2.0 * (jnp.log(jnp.sin(b)) - jnp.log(jnp.sin(a)))


def resolution_shift(image_size: int, noise_size: int) -> float:
  """The logSNR shift 2 log(noise_size / image_size) of SiD Eq. 5.

  Args:
    image_size: side d of the generated image.
    noise_size: reference side whose schedule is kept (64 in the paper).

  Returns:
    The additive shift as a Python float (negative when image_size is larger).
  """
  return 2.0 * math.log(noise_size / image_size)


@SCHEDULES.register("shifted")
def logsnr_shifted(t, image_size: int, noise_size: int = 64,
                   logsnr_min: float = -15.0,
                   logsnr_max: float = 15.0) -> jax.Array:
  """Shifted cosine schedule: logsnr_cosine(t) + 2 log(noise_size / image_size).

  Follows the paper pseudocode: the shift is added *after* clipping, so the
  range is [logsnr_min + shift, logsnr_max + shift]. (k-diffusion instead shifts
  the clip bounds, `logsnr_cosine(t, min - shift, max - shift) + shift`, which
  keeps the final range at [logsnr_min, logsnr_max]; not implemented here.)

  Args:
    t: times in [0, 1], any shape.
    image_size: side d of the generated image.
    noise_size: reference resolution whose schedule the shift reproduces.
    logsnr_min: logSNR of the unshifted schedule at t=1.
    logsnr_max: logSNR of the unshifted schedule at t=0.

  Returns:
    float32 logSNR with the shape of `t`.
  """
  return (logsnr_cosine(t, logsnr_min, logsnr_max) +
          resolution_shift(image_size, noise_size))


@SCHEDULES.register("interpolated")
def logsnr_interpolated(t, image_size: int, noise_size_low: int = 32,
                        noise_size_high: int = 256, direction: str = "eq6",
                        logsnr_min: float = -15.0,
                        logsnr_max: float = 15.0) -> jax.Array:
  """Linear-in-t interpolation of two shifted schedules (SiD Eq. 6).

  The direction is an open item (the PDF could not be checked), and the
  public sources split 2-2:
    * "eq6" (default): t * shifted_high(t) + (1 - t) * shifted_low(t), so the
      strong shift (noise_size_low) acts at the clean end t=0. This is Eq. 6
      as one set of study notes transcribes it; DFoT's noise schedule
      interpolates the same way (between unshifted and shifted).
    * "reversed": t * shifted_low(t) + (1 - t) * shifted_high(t), strong shift
      at the noisy end t=1: lucidrains' `logsnr_schedule_interpolated` (said
      to follow the appendix pseudocode) and k-diffusion's
      `rand_cosine_interpolated` (its u=0 is the noisy end). The paper's aim
      (resolving higher-frequency detail) reads more like this one.
  The default is kept as the equation's transcription, not as the better
  supported choice; check the paper before relying on either.
  At d=512, t=0.25 they give about -2.74 ("eq6") and -0.66 ("reversed").

  Args:
    t: times in [0, 1], any shape.
    image_size: side d of the generated image.
    noise_size_low: reference side of the strongly shifted schedule.
    noise_size_high: reference side of the weakly shifted schedule.
    direction: "eq6" or "reversed", see above.
    logsnr_min: logSNR of the unshifted schedule at t=1.
    logsnr_max: logSNR of the unshifted schedule at t=0.

  Returns:
    float32 logSNR with the shape of `t`.
  """
  if direction not in _INTERP_DIRECTIONS:
    raise ValueError(f"unknown interpolation direction {direction!r}; choose "
                     f"one of: {', '.join(_INTERP_DIRECTIONS)}.")
  t = _as_f32(t)
  base = logsnr_cosine(t, logsnr_min, logsnr_max)
  low = base + resolution_shift(image_size, noise_size_low)
  high = base + resolution_shift(image_size, noise_size_high)
  if direction == "eq6":
    return t * high + (1.0 - t) * low
  return t * low + (1.0 - t) * high


def alpha_sigma(logsnr) -> Tuple[jax.Array, jax.Array]:
  """Signal and noise scales of a variance-preserving process.

  Args:
    logsnr: logSNR values, any shape.

  Returns:
    (alpha, sigma) with alpha^2 = sigmoid(logsnr), sigma^2 = sigmoid(-logsnr).
    Computed as exp(log_sigmoid / 2) so that neither underflows to a 0 with an
    infinite sqrt gradient at extreme logSNR.
  """
  logsnr = _as_f32(logsnr)
  alpha = jnp.exp(0.5 * jax.nn.log_sigmoid(logsnr))
  sigma = jnp.exp(0.5 * jax.nn.log_sigmoid(-logsnr))
  return alpha, sigma


def schedule_keywords(name: str) -> Dict[str, Any]:
  """The keyword arguments of schedule `name` with their defaults.

  `image_size` is not among them: it comes from the data.

  Args:
    name: a registered schedule.

  Returns:
    {keyword: default}.
  """
  params = inspect.signature(SCHEDULES.get(name)).parameters
  return {k: p.default for k, p in params.items()
          if k not in ("t", "image_size")}


def make_logsnr_fn(name: str, image_size: int, **kwargs) -> LogSNRFn:
  """Builds `logsnr_fn(t)` for the schedule registered as `name`.

  Args:
    name: "cosine", "shifted" or "interpolated" (see `SCHEDULES.names()`).
    image_size: side d of the generated images; ignored by "cosine".
    **kwargs: further keyword arguments of that schedule, e.g. `noise_size`,
      `direction`, `logsnr_min` (see `schedule_keywords(name)`).

  Returns:
    A function mapping times t (any shape) to float32 logSNR.

  Raises:
    ValueError: (one line) `name` is not a registered schedule, a keyword
      it does not take, or a value it cannot use (checked here, before
      anything is traced: a logsnr_min above logsnr_max made every DDPM
      step's variance negative and the samples all-black NaNs cast to 0).
  """
  fn = SCHEDULES.get(name)
  known = schedule_keywords(name)
  unknown = sorted(set(kwargs) - set(known))
  if unknown:
    raise ValueError(f"schedule {name!r} takes no {', '.join(unknown)}; its "
                     f"keywords are: {', '.join(known) or 'none'}.")
  _check_keywords(name, dict(known, **kwargs))
  _check_falls(name, dict(known, **kwargs))
  if "image_size" not in inspect.signature(fn).parameters:
    return functools.partial(fn, **kwargs)
  return functools.partial(fn, image_size=image_size, **kwargs)


def _check_keywords(name: str, kwargs: Dict[str, Any]) -> None:
  """One-line ValueError for a schedule keyword value that cannot work."""
  field = lambda key: f"config.diffusion.schedules.{name}.{key}"
  for key, value in kwargs.items():
    if key.startswith("noise_size"):
      config_lib.check_range(field(key), value, low=1, integer=True)
    elif key.startswith("logsnr_"):
      config_lib.check_range(field(key), value, finite=True)
  if "logsnr_min" in kwargs and kwargs["logsnr_min"] >= kwargs["logsnr_max"]:
    raise ValueError(
        f"{field('logsnr_min')}={kwargs['logsnr_min']!r} must be below "
        f"logsnr_max={kwargs['logsnr_max']!r} (logSNR falls from logsnr_max "
        "at t=0 to logsnr_min at t=1); swap or change them.")
  direction = kwargs.get("direction", _INTERP_DIRECTIONS[0])
  if direction not in _INTERP_DIRECTIONS:
    raise ValueError(f"{field('direction')}={direction!r} is not a "
                     f"direction; choose one of: "
                     f"{', '.join(_INTERP_DIRECTIONS)}.")


def _check_falls(name: str, kwargs: Dict[str, Any]) -> None:
  """One-line ValueError unless logSNR falls from t=0 to t=1.

  Bounds in order are not enough: the interpolated schedule is the clipped
  cosine plus a linear term c1 t (c1 = 2 log(high / low) for "eq6", its
  negative "reversed"), and the cosine's slope -4 (t_max - t_min) /
  sin(2 a(t)) is smallest in magnitude where sin(2 a) is largest; once c1
  beats that (noise sizes ~23x apart at the default bounds) logSNR rises
  where sin(2 a) > 4 (t_max - t_min) / c1, and a rising step has a
  negative DDPM variance (NaN samples). Decided in closed form: evaluating
  the schedule here would compile programs for every run, even a finished
  one.
  """
  if name != "interpolated":
    return  # The cosine and its constant shift always fall.
  low, high = kwargs["noise_size_low"], kwargs["noise_size_high"]
  c1 = 2.0 * math.log(high / low)
  if kwargs["direction"] == "reversed":
    c1 = -c1
  t_min = math.atan(math.exp(-0.5 * kwargs["logsnr_max"]))
  t_max = math.atan(math.exp(-0.5 * kwargs["logsnr_min"]))
  width = t_max - t_min
  # sin(2a) over a in [t_min, t_max] (within (0, pi/2)) peaks at pi/4.
  peak = 1.0 if t_min <= math.pi / 4 <= t_max else max(
      math.sin(2 * t_min), math.sin(2 * t_max))
  if c1 * peak <= 4.0 * width:
    return
  # The first angle where the slope turns positive: sin(2a) = 4 width / c1,
  # on the rising side of sin(2a) when it starts below pi/4.
  a = max(t_min, 0.5 * math.asin(4.0 * width / c1))
  raise ValueError(
      f"config.diffusion.schedules.{name}: logSNR must fall from t=0 to "
      f"t=1, but with noise_size_low={low}, noise_size_high={high} it "
      f"rises from t={(a - t_min) / width:.2f} (the interpolation adds a "
      f"slope of {c1:.3g}; the cosine's is at least {4 * width:.3g} in "
      "magnitude); bring the noise sizes closer together.")
