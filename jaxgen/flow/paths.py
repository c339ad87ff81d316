"""Rectified-flow paths, velocity targets, time sampling and the Euler sampler.

The paper's convention (Jin et al. 2024, Eq. 3): t runs from 0 (noise) to 1
(data), x_t = t·x1 + (1-t)·x0 with x0 ~ N(0, I), and the velocity is
dx_t/dt = x1 - x0. The pyramid's stages use the same path between their
start and end points (`interpolate(start, end, t')`, velocity end - start).
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp


def interpolate(start: jax.Array, end: jax.Array, t: jax.Array) -> jax.Array:
  """The straight path t·end + (1-t)·start, t broadcast from the left.

  Args:
    start: f[B, ...] the point at t = 0 (noise for the plain flow).
    end: f[B, ...] the point at t = 1 (data for the plain flow).
    t: f[B] times in [0, 1].

  Returns:
    f[B, ...]; exactly `start` at t = 0 and `end` at t = 1.
  """
  t = jnp.reshape(t, t.shape + (1,) * (end.ndim - t.ndim)).astype(end.dtype)
  return t * end + (1.0 - t) * start


def velocity(start: jax.Array, end: jax.Array) -> jax.Array:
  """The path's constant velocity end - start (the regression target)."""
  return end - start


TIME_SAMPLING = ("uniform", "logit_normal")


def check_time_sampling(kind: str) -> None:
  """Raises a one-line ValueError for an unknown `flow.time_sampling`."""
  if kind not in TIME_SAMPLING:
    raise ValueError(f"flow.time_sampling={kind!r}: use "
                     f"{' or '.join(repr(k) for k in TIME_SAMPLING)}.")


def sample_time(rng: jax.Array, shape, kind: str = "uniform",
                logit_mean: float = 0.0, logit_std: float = 1.0) -> jax.Array:
  """Training times in [0, 1).

  Args:
    rng: PRNG key.
    shape: output shape.
    kind: "uniform" (the official pyramid code's 'random' weighting) or
      "logit_normal" (SD3: t = sigmoid(N(mean, std)), concentrating on the
      middle of the path).
    logit_mean: mean of the logit-normal. t is the signal level here
      (1 = data) and SD3's t the noise level: SD3's mean m is -m here (a
      positive mean leans towards data).
    logit_std: standard deviation of the logit-normal.

  Returns:
    f32[shape].
  """
  check_time_sampling(kind)
  if kind == "uniform":
    return jax.random.uniform(rng, shape, jnp.float32)
  return jax.nn.sigmoid(
      logit_mean + logit_std * jax.random.normal(rng, shape, jnp.float32))


def model_timestep(t: jax.Array) -> jax.Array:
  """The scalar a DiT embeds at time t: 1000 × the noise level (SD3 scale)."""
  return 1000.0 * (1.0 - jnp.asarray(t, jnp.float32))


# v_fn(x, timestep[B], labels[B] or None) -> velocity like x.
VelocityFn = Callable[[jax.Array, jax.Array, Optional[jax.Array]], jax.Array]


def guided_velocity(v_fn: VelocityFn, x: jax.Array, timestep: jax.Array,
                    labels: Optional[jax.Array], null_label: Optional[int],
                    guidance_scale: float) -> jax.Array:
  """Classifier-free guidance: v_u + w (v_c - v_u), one batched call.

  Args:
    v_fn: the network's velocity.
    x: f[B, ...] current point.
    timestep: f[B] the embedded scalar.
    labels: i32[B] class labels, or None (unconditional model).
    null_label: the label id meaning "no class".
    guidance_scale: w; 1 (or no labels) is the conditional velocity alone.

  Returns:
    f[B, ...] guided velocity.
  """
  if labels is None or guidance_scale == 1.0:
    return v_fn(x, timestep, labels)
  both = v_fn(jnp.concatenate([x, x]), jnp.concatenate([timestep, timestep]),
              jnp.concatenate([labels, jnp.full_like(labels, null_label)]))
  v_c, v_u = jnp.split(both, 2)
  return v_u + guidance_scale * (v_c - v_u)


def euler(v_fn: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array,
          num_steps: int, t0: float = 0.0, t1: float = 1.0) -> jax.Array:
  """Integrates dx/dt = v_fn(x, t) from t0 to t1 in equal Euler steps.

  One `lax.fori_loop`, so the step count costs no compile time.

  Args:
    v_fn: (x, t scalar f32) -> velocity.
    x: the point at t0.
    num_steps: number of steps (>= 1).
    t0: start time.
    t1: end time.

  Returns:
    The point at t1.
  """
  dt = (t1 - t0) / num_steps

  def body(i, x):
    t = t0 + i.astype(jnp.float32) * dt
    return x + dt * v_fn(x, t).astype(x.dtype)

  return jax.lax.fori_loop(0, num_steps, body, x)
