"""Samplers for v-predicting, logSNR-conditioned diffusion models.

One loop, `sample(step_fn, ...)`, walks a uniform time grid from t=1
(noise) to t=0 in a `jax.lax.scan` and returns the model's clean-data
prediction x_hat of the last step; DDPM and DDIM differ only in `step_fn`. They are pure functions of `rng`; callers jit them with
`functools.partial(ddpm_sample, v_fn, shape=..., logsnr_fn=..., num_steps=...)`
(`shape`, `num_steps`, `guidance_scale` and `guidance_interval` static), and
may pass `out_shardings` so the batch is sharded across devices.

Classifier-free guidance (optionally restricted to a logSNR interval, SiD2 /
Kynkaanniemi et al. 2024) is applied by `guided_v`.
"""

import functools
from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from jaxgen import registry
from jaxgen.diffusion import losses
from jaxgen.diffusion import schedules

# v_fn(z, logsnr[B], labels[B] or None) -> v_hat with the shape of z.
GuidedVFn = Callable[[jax.Array, jax.Array, Optional[jax.Array]], jax.Array]


def guided_v(v_fn: GuidedVFn, z, logsnr, labels, *, null_label=None,
             guidance_scale: float = 1.0,
             guidance_interval: Optional[Tuple[float, float]] = None
             ) -> jax.Array:
  """Classifier-free-guided velocity.

  Convention: v = v_u + w (v_c - v_u) with w = `guidance_scale`, so w=1 is the
  plain conditional model (no guidance), w=0 the unconditional one, and w>1
  extrapolates (w = 1 + w' of Ho & Salimans' (1+w')eps_c - w'eps_u). When
  `guidance_scale` is the Python number 1 the unconditional pass is skipped
  entirely. Otherwise the conditional and unconditional inputs are
  concatenated along the batch and evaluated in one call of `v_fn`.

  With `guidance_interval=(lo, hi)` guidance applies only where
  lo <= logSNR <= hi and v = v_c elsewhere. For a scalar `logsnr` (as the
  samplers pass) this is a `lax.cond`, so steps outside the interval cost one
  conditional pass; for a per-example [B] logsnr it is an elementwise select.

  Args:
    v_fn: `v_fn(z, logsnr, labels) -> v_hat`, logsnr of shape [B].
    z: noisy inputs, [B, ...].
    logsnr: scalar or [B] logSNR.
    labels: [B] class labels, or None for an unconditional model.
    null_label: the label value meaning "no class" (the dropped-label id).
    guidance_scale: w above; a Python float (static under jit).
    guidance_interval: None (guide everywhere) or (lo, hi) in logSNR units;
      the bounds may be traced values.

  Returns:
    The (guided) v prediction with the shape of `z`.

  Raises:
    ValueError: if guidance is requested without labels or null_label.
  """
  logsnr = jnp.asarray(logsnr, jnp.float32)
  batch = z.shape[0]
  logsnr_b = jnp.broadcast_to(logsnr, (batch,))
  if guidance_scale == 1.0:
    return v_fn(z, logsnr_b, labels)
  if labels is None or null_label is None:
    raise ValueError("guidance_scale != 1 needs labels and a null_label.")

  def cond_only():
    return v_fn(z, logsnr_b, labels)

  def both():
    # One call on the concatenated batch: [conditional; unconditional].
    null = jnp.full_like(labels, null_label)
    v = v_fn(jnp.concatenate([z, z]), jnp.concatenate([logsnr_b, logsnr_b]),
             jnp.concatenate([labels, null]))
    v_c, v_u = v[:batch], v[batch:]
    return v_u + guidance_scale * (v_c - v_u), v_c

  if guidance_interval is None:
    return both()[0]
  lo, hi = guidance_interval
  inside = (logsnr >= lo) & (logsnr <= hi)
  if logsnr.ndim == 0:
    return jax.lax.cond(inside, lambda: both()[0], cond_only)
  v_guided, v_c = both()
  return jnp.where(losses.bcast(inside, z), v_guided, v_c)


def ddpm_step(z, x_hat, logsnr_t, logsnr_s, noise) -> jax.Array:
  """One ancestral step z_t -> z_s (s < t) of q(z_s | z_t, x = x_hat).

  With c = -expm1(logsnr_t - logsnr_s): mean = alpha_s (z_t (1 - c) / alpha_t
  + c x_hat) and variance sigma_s^2 c.

  Args:
    z: current sample z_t.
    x_hat: clean-data prediction at t.
    logsnr_t: logSNR at the current time (scalar).
    logsnr_s: logSNR at the next, less noisy time (scalar, > logsnr_t).
    noise: standard normal noise with the shape of z.

  Returns:
    z_s.
  """
  alpha_t, _ = schedules.alpha_sigma(logsnr_t)
  alpha_s, sigma_s = schedules.alpha_sigma(logsnr_s)
  # exp(.) rather than 1 - c keeps precision when the step is tiny.
  one_minus_c = jnp.exp(logsnr_t - logsnr_s)
  c = -jnp.expm1(logsnr_t - logsnr_s)
  mean = alpha_s * (z * (one_minus_c / alpha_t) + c * x_hat)
  return mean + jnp.sqrt(c) * sigma_s * noise


def ddim_step(z, x_hat, logsnr_t, logsnr_s) -> jax.Array:
  """One deterministic DDIM (eta=0) step z_t -> z_s.

  z_s = alpha_s x_hat + sigma_s eps_hat with eps_hat = (z_t - alpha_t x_hat) /
  sigma_t, recomputed from the (possibly clipped) x_hat so both stay
  consistent.

  Args:
    z: current sample z_t.
    x_hat: clean-data prediction at t.
    logsnr_t: logSNR at the current time (scalar).
    logsnr_s: logSNR at the next time (scalar).

  Returns:
    z_s.
  """
  alpha_t, sigma_t = schedules.alpha_sigma(logsnr_t)
  alpha_s, sigma_s = schedules.alpha_sigma(logsnr_s)
  eps_hat = (z - alpha_t * x_hat) / sigma_t
  return alpha_s * x_hat + sigma_s * eps_hat


# step_fn(z_t, x_hat, logsnr_t, logsnr_s, key) -> z_s: one update of a sampler.
StepFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array],
                  jax.Array]


def ddpm_update(z, x_hat, logsnr_t, logsnr_s, key) -> jax.Array:
  """`ddpm_step` with its noise drawn from `key` (a `StepFn`)."""
  noise = jax.random.normal(key, z.shape, jnp.float32)
  return ddpm_step(z, x_hat, logsnr_t, logsnr_s, noise)


def ddim_update(z, x_hat, logsnr_t, logsnr_s, key) -> jax.Array:
  """`ddim_step` as a `StepFn`; deterministic, so `key` is unused."""
  del key
  return ddim_step(z, x_hat, logsnr_t, logsnr_s)


def sample(step_fn: StepFn, v_fn: GuidedVFn, rng: jax.Array,
           shape: Sequence[int], *, logsnr_fn, num_steps: int, labels=None,
           null_label=None, guidance_scale: float = 1.0,
           guidance_interval: Optional[Tuple[float, float]] = None,
           clip_x: bool = True) -> jax.Array:
  """Walks t = 1 -> 0 on a uniform grid with `step_fn`; returns the last x_hat.

  The initial noise comes from `split(rng)[0]` and step i's key is
  `fold_in(split(rng)[1], i)`, so samples are a deterministic function of
  rng. `ddpm_sample` and `ddim_sample` are this loop with `ddpm_update` and
  `ddim_update`; a new sampler is a new `StepFn`.

  Args:
    step_fn: `step_fn(z_t, x_hat, logsnr_t, logsnr_s, key) -> z_s`.
    v_fn: `v_fn(z, logsnr, labels) -> v_hat`, logsnr of shape [B].
    rng: PRNG key.
    shape: output shape, NHWC or NTHWC (static).
    logsnr_fn: schedule `logsnr_fn(t)`.
    num_steps: number of network evaluations (static; x2 with guidance).
    labels: [B] class labels or None.
    null_label: unconditional label id, needed when guidance_scale != 1.
    guidance_scale: CFG scale w, see `guided_v` (1 = no guidance).
    guidance_interval: None or (lo, hi) logSNR range where guidance applies.
    clip_x: clip x_hat to [-1, 1] at every step.

  Returns:
    float32 samples of `shape` (the final x_hat).

  Raises:
    ValueError: if num_steps < 1.
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
  init_rng, step_rng = jax.random.split(rng)
  z = jax.random.normal(init_rng, tuple(shape), jnp.float32)

  def body(carry, i):
    z, _ = carry
    t = i.astype(jnp.float32) / num_steps
    s = (i - 1).astype(jnp.float32) / num_steps
    logsnr_t, logsnr_s = logsnr_fn(t), logsnr_fn(s)
    v = guided_v(v_fn, z, logsnr_t, labels, null_label=null_label,
                 guidance_scale=guidance_scale,
                 guidance_interval=guidance_interval).astype(jnp.float32)
    alpha_t, sigma_t = schedules.alpha_sigma(logsnr_t)
    x_hat = alpha_t * z - sigma_t * v
    if clip_x:
      x_hat = jnp.clip(x_hat, -1.0, 1.0)
    z = step_fn(z, x_hat, logsnr_t, logsnr_s, jax.random.fold_in(step_rng, i))
    # The step to s=0 is still taken (cheap) but its z is discarded: the
    # sample is the last prediction x_hat, not a slightly noisy z_0.
    return (z, x_hat), None

  steps = jnp.arange(num_steps, 0, -1, dtype=jnp.int32)
  (_, x_hat), _ = jax.lax.scan(body, (z, jnp.zeros_like(z)), steps)
  return x_hat


# Continuous-time ancestral (DDPM) sampling; arguments as `sample` minus
# step_fn.
ddpm_sample = functools.partial(sample, ddpm_update)
# Deterministic DDIM (eta = 0) sampling; only the initial noise is random.
ddim_sample = functools.partial(sample, ddim_update)


# Samplers by config name (config.diffusion.sampler).
SAMPLERS = registry.Registry("sampler")
SAMPLERS.register("ddpm")(ddpm_sample)
SAMPLERS.register("ddim")(ddim_sample)


def get_sampler(name: str) -> Callable[..., jax.Array]:
  """Returns the sampler function registered as `name`.

  Args:
    name: "ddpm" or "ddim".

  Returns:
    `ddpm_sample` or `ddim_sample`.

  Raises:
    ValueError: for an unknown name.
  """
  return SAMPLERS.get(name)
