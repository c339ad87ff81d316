"""Samplers: full-resolution flow, the spatial pyramid, and autoregressive video.

All three are Euler integrators of a learned velocity (Algorithm 1 of Jin et
al. 2024). The network wiring (packing tokens, guidance) stays with the
objective, which hands in a velocity closure; here live the schedule, the
jumps between stages and the frame loop.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxgen.flow import paths
from jaxgen.flow import pyramid

# velocity(stage, x, t) -> dx/dt' of the stage, x at the stage's resolution.
StageVelocityFn = Callable[[int, jax.Array, jax.Array], jax.Array]


def flow_sample(velocity_fn: Callable[[jax.Array, jax.Array], jax.Array],
                rng: jax.Array, shape: Sequence[int],
                num_steps: int) -> jax.Array:
  """Plain rectified flow: Euler from noise (t = 0) to data (t = 1).

  Args:
    velocity_fn: (x, t scalar) -> velocity.
    rng: PRNG key of the initial noise.
    shape: sample shape.
    num_steps: Euler steps.

  Returns:
    f32[shape].
  """
  x = jax.random.normal(rng, tuple(shape), jnp.float32)
  return paths.euler(velocity_fn, x, num_steps)


def pyramid_sample(velocity_fn: StageVelocityFn, rng: jax.Array,
                   shape: Sequence[int], windows: Sequence[pyramid.Window],
                   steps: Sequence[int], renoise: bool = True) -> jax.Array:
  """The spatial pyramid: Euler within each stage, renoising between them.

  Starts from the nested noise pyramid's lowest level (the official code's
  "block noise" start), integrates every stage's local time t' from 0 to 1
  in `steps[i]` equal steps (one `lax.fori_loop` each), and jumps to the next
  resolution with `pyramid.renoise`. With `renoise=False` (the ablation of
  App. C.2) the end point is only upsampled: its noise stays blocky and too
  weak for the next stage's start.

  Args:
    velocity_fn: (stage, x, t') -> velocity end - start of that stage.
    rng: PRNG key.
    shape: full-resolution sample shape (..., H, W, C).
    windows: the stages' (start, end) signal levels, lowest first.
    steps: Euler steps per stage.
    renoise: add the corrective noise at the jumps.

  Returns:
    f32[shape], the last stage's end point (signal level 1: the sample).
  """
  num_stages = len(windows)
  init_rng, *jump_rngs = jax.random.split(rng, num_stages)
  x = pyramid.noise_pyramid(init_rng, shape, num_stages)[-1]
  for i in range(num_stages):
    if i:
      x = (pyramid.renoise(jump_rngs[i - 1], x, windows[i][0]) if renoise
           else pyramid.up2(x))
    x = paths.euler(lambda x, t, i=i: velocity_fn(i, x, t), x, int(steps[i]))
  return x


def autoregressive_sample(frame_fn: Callable[[jax.Array, jax.Array,
                                              jax.Array], jax.Array],
                          rng: jax.Array, shape: Sequence[int]) -> jax.Array:
  """Generates a clip one frame at a time, each conditioned on the earlier.

  Args:
    frame_fn: (rng, frames so far f32[B, T, H, W, C], position i32) -> the
      new frame f32[B, H, W, C]; frames at positions >= `position` hold
      zeros and must not be read (the temporal pyramid masks them).
    rng: PRNG key; frame p uses fold_in(rng, p).
    shape: (B, T, H, W, C).

  Returns:
    f32[B, T, H, W, C].
  """
  def body(p, clip):
    frame = frame_fn(jax.random.fold_in(rng, p), clip, p)
    return jax.lax.dynamic_update_index_in_dim(clip, frame, p, axis=1)

  clip = jnp.zeros(tuple(shape), jnp.float32)
  return jax.lax.fori_loop(0, shape[1], body, clip)
