"""The spatial pyramid of Pyramidal Flow Matching (Jin et al. 2024, Sec. 3.2).

Conventions (see ../shared/references/pyramidal_flow.md):
  * A *signal level* t runs from 0 (pure noise) to 1 (data): x = t·x1 + (1-t)·n.
  * Stages are indexed from the lowest resolution up (the official code's
    order): stage i works at *level* k = K-1-i, i.e. at 1/2^k of the full
    resolution, inside the signal window [s_i, e_i].
  * Down = 2x2 mean (the official bilinear halving at an exact factor of 2;
    never `jax.image.resize`, whose antialiased triangle filter is not the 2x2
    mean), Up = nearest neighbour.

At a jump from stage i-1 to stage i the end point of stage i-1 is upsampled
and renoised (Eq. 15): x_s = (1+s)/2 · Up(x_e) + √3 (1-s)/2 · n', with n'
Gaussian of covariance 1 on the diagonal and -1/3 off it inside every 2x2
block; the start signal s and the previous end e satisfy e = 2s/(1+s), so the
noise of the renoised latent is again (1-s)² I and its signal coefficient s.
"""

import math
from typing import List, Optional, Sequence, Tuple

import einops
import jax
import jax.numpy as jnp
import numpy as np

Window = Tuple[float, float]


def down2(x: jax.Array) -> jax.Array:
  """Halves the spatial axes (-3, -2) by 2x2 means.

  Args:
    x: f[..., H, W, C] with even H and W.

  Returns:
    f[..., H/2, W/2, C].
  """
  return einops.reduce(x, "... (h i) (w j) c -> ... h w c", "mean", i=2, j=2)


def up2(x: jax.Array) -> jax.Array:
  """Doubles the spatial axes (-3, -2) by nearest-neighbour repetition.

  Args:
    x: f[..., h, w, C].

  Returns:
    f[..., 2h, 2w, C].
  """
  return einops.repeat(x, "... h w c -> ... (h i) (w j) c", i=2, j=2)


def down(x: jax.Array, level: int) -> jax.Array:
  """`level` halvings of the spatial axes (Down(x, 2^level))."""
  for _ in range(level):
    x = down2(x)
  return x


def stage_windows(num_stages: int = 3,
                  num_train_timesteps: Optional[int] = None) -> List[Window]:
  """(start, end) signal levels of each stage, lowest resolution first.

  The nominal windows split [0, 1] into equal parts; every start but the
  first is then rolled back by the jump rule s = e_prev / (2 - e_prev) (the
  inverse of e_prev = 2s/(1+s), Eq. 15), so that renoising the previous end
  point lands exactly on the start's marginal. With `num_train_timesteps`
  the nominal boundaries are cut on the official code's discrete grid
  (sigma_j = (T - j)/T at j = int(T·i/K)), which gives the code's 0.1998 and
  0.4993 instead of 0.2 and 0.5 for K = 3 and T = 1000.

  Args:
    num_stages: K >= 1.
    num_train_timesteps: None for the continuous form, else the grid size T.

  Returns:
    K (start, end) pairs: [(0, 1/3), (0.2, 2/3), (0.5, 1)] for K = 3.
  """
  if num_stages < 1:
    raise ValueError(f"num_stages must be >= 1, got {num_stages}.")
  ends = []
  for i in range(1, num_stages + 1):
    if num_train_timesteps and i < num_stages:
      ends.append(int(num_train_timesteps * i / num_stages)
                  / num_train_timesteps)
    else:
      ends.append(i / num_stages)
  starts = [0.0] + [e / (2.0 - e) for e in ends[:-1]]
  return list(zip(starts, ends))


def timestep_windows(windows: Sequence[Window],
                     t_max: float = 1000.0,
                     t_min: float = 1.0,
                     num_train_timesteps: int = 0
                     ) -> List[Tuple[float, float]]:
  """The official code's DiT timestep range of each stage.

  The global range t_max -> t_min is split among the stages in proportion to
  each stage's path length e - s (Sec. 1.3 of the notes), and within a stage
  the timestep is linear in the local time t'. It is not the noise level;
  reproduce it to load released weights. With `num_train_timesteps` = T the
  cuts are taken on the code's integer grid timesteps[j] = T - j, as its
  scheduler does (timesteps[int(r·T)] at a cumulative fraction r, the last
  stage ending at timesteps[T - 1] = 1): 1000 -> 744 -> 386 -> 1 for K = 3
  and T = 1000 (continuously: 1000 -> 744.1 -> 385.8 -> 1).

  Args:
    windows: the stages' (start, end) signal levels.
    t_max: timestep at the start of the first stage (continuous cuts).
    t_min: timestep at the end of the last stage (continuous cuts).
    num_train_timesteps: T of the integer grid (0: continuous cuts between
      t_max and t_min).

  Returns:
    (timestep at t' = 0, timestep at t' = 1) per stage.
  """
  lengths = np.array([e - s for s, e in windows], np.float64)
  fractions = np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])
  if num_train_timesteps:
    grid = int(num_train_timesteps)
    bounds = [float(grid - min(int(r * grid), grid - 1)) for r in fractions]
    # The first stage starts at timesteps[0] = T.
    bounds[0] = float(grid)
  else:
    bounds = t_max - (t_max - t_min) * fractions
  return [(float(bounds[i]), float(bounds[i + 1]))
          for i in range(len(windows))]


def model_timestep(local_t: jax.Array, window: Window,
                   ts_window: Optional[Tuple[float, float]] = None
                   ) -> jax.Array:
  """The scalar the DiT embeds for local time t' of a stage.

  Args:
    local_t: f[...] local time t' in [0, 1].
    window: the stage's (start, end) signal levels.
    ts_window: the official timestep window of the stage (the config's
      default, `pyramid.timestep_embedding="official"`), or None for
      "global": 1000 × the global noise level 1 - (s + t'(e - s)) (the
      scale of SD3 and of `jaxgen.flow.paths.model_timestep`).

  Returns:
    f32[...].
  """
  local_t = jnp.asarray(local_t, jnp.float32)
  if ts_window is not None:
    return ts_window[0] + local_t * (ts_window[1] - ts_window[0])
  s, e = window
  return 1000.0 * (1.0 - (s + local_t * (e - s)))


def noise_at_level(z: jax.Array, level: int) -> jax.Array:
  """Unit noise at `level` nested in full-resolution unit noise z.

  2^k × Down(z, 2^k): the mean of 4^k i.i.d. units has variance 4^-k, the
  factor 2^k restores 1 (the official code's bilinear halving × 2, k times).

  Args:
    z: f[..., H, W, C] i.i.d. N(0, 1).
    level: k.

  Returns:
    f[..., H/2^k, W/2^k, C], i.i.d. N(0, 1) per element.
  """
  return down(z, level) * (2.0 ** level)


def noise_pyramid(rng: jax.Array, shape: Sequence[int],
                  num_stages: int) -> List[jax.Array]:
  """Nested unit-variance noise at every level, full resolution first.

  Full-resolution noise z is drawn once; level k is `noise_at_level(z, k)`
  (2 × the 2x2 mean of the level above), so the levels stay i.i.d. N(0, 1)
  per element but are nested, as in the official code.

  Args:
    rng: PRNG key.
    shape: (..., H, W, C) at full resolution.
    num_stages: K; returns K levels.

  Returns:
    [z at level 0, level 1, ..., level K-1].
  """
  z = jax.random.normal(rng, tuple(shape), jnp.float32)
  return [noise_at_level(z, k) for k in range(num_stages)]


def block_noise(rng: jax.Array, shape: Sequence[int],
                dtype=jnp.float32) -> jax.Array:
  """Noise with covariance 1 on the diagonal, -1/3 off it, per 2x2 block.

  Closed form, exact and vectorised: n' = √(4/3) · (z - blockmean(z)) with z
  i.i.d. N(0, 1). Within a block Var(z_i - m) = 3/4 and Cov(z_i - m, z_j - m)
  = -1/4, so the factor 4/3 gives [1, -1/3]. The covariance is singular
  (every block sums to zero), which is why the official per-block Cholesky
  needs jitter; this form does not.

  Args:
    rng: PRNG key.
    shape: (..., H, W, C) with even H and W.
    dtype: output dtype.

  Returns:
    dtype[shape]; blocks are independent of each other and across channels.
  """
  z = jax.random.normal(rng, tuple(shape), jnp.float32)
  return (math.sqrt(4.0 / 3.0) * (z - up2(down2(z)))).astype(dtype)


def renoise(rng: jax.Array, x_low: jax.Array, start: float) -> jax.Array:
  """Upsamples a stage's end point into the next stage's start (Eq. 15).

  Args:
    rng: PRNG key for the corrective noise.
    x_low: f[..., h, w, C], the previous stage's end point (signal level
      e = 2s/(1+s)).
    start: s, the next stage's start signal level.

  Returns:
    f[..., 2h, 2w, C] = (1+s)/2 · Up(x_low) + √3 (1-s)/2 · block_noise.
  """
  up = up2(x_low)
  n = block_noise(rng, up.shape, up.dtype)
  return (1.0 + start) / 2.0 * up + math.sqrt(3.0) * (1.0 - start) / 2.0 * n


def stage_endpoints(x1: jax.Array, noise: jax.Array, level: int,
                    window: Window) -> Tuple[jax.Array, jax.Array]:
  """Coupled start and end points of one stage (Eqs. 9-10).

  Both share the same noise `noise`, drawn at the stage's resolution:
    end   = e · Down(x1, 2^k) + (1 - e) · n
    start = s · Up(Down(x1, 2^(k+1))) + (1 - s) · n

  Args:
    x1: f[..., H, W, C] data at full resolution.
    noise: f[..., H/2^k, W/2^k, C] unit noise of the stage.
    level: k, the stage's level (0 = full resolution).
    window: (s, e).

  Returns:
    (start, end), both at the stage's resolution.
  """
  s, e = window
  x_k = down(x1, level)
  end = e * x_k + (1.0 - e) * noise
  if s == 0.0:
    # The first stage starts from pure noise; Down(x1, 2^K) never appears.
    return noise, end
  start = s * up2(down2(x_k)) + (1.0 - s) * noise
  return start, end


def stage_ratios(kind_or_ratios, num_stages: int) -> Tuple[int, ...]:
  """Examples per stage in every group of a batch, lowest resolution first.

  Args:
    kind_or_ratios: "official" ([1, 2, 1] for K = 3: the mid resolution
      gets twice the samples, as in train_pyramid_flow.py), "uniform" (one
      each), or K positive ints (a sequence or a string "1,2,1").
    num_stages: K.

  Returns:
    A tuple of K positive ints.
  """
  if isinstance(kind_or_ratios, str) and "," in kind_or_ratios:
    try:
      kind_or_ratios = [int(r) for r in kind_or_ratios.split(",")]
    except ValueError:
      raise ValueError(f"pyramid.stage_ratios={kind_or_ratios!r}: write "
                       "integers separated by commas, e.g. '1,2,1'.") from None
  if isinstance(kind_or_ratios, str):
    if kind_or_ratios == "uniform":
      return (1,) * num_stages
    if kind_or_ratios == "official":
      if num_stages == 3:
        return (1, 2, 1)
      return (1,) * num_stages
    raise ValueError(f"pyramid.stage_ratios={kind_or_ratios!r}: use "
                     "'official', 'uniform' or ints, one per stage, e.g. "
                     "'1,2,1'.")
  ratios = tuple(int(r) for r in kind_or_ratios)
  if len(ratios) != num_stages or min(ratios) < 1:
    raise ValueError(f"pyramid.stage_ratios={ratios} must hold {num_stages} "
                     "positive ints, one per stage.")
  return ratios


def history_level(stage_level: int, lag: int, num_stages: int) -> int:
  """Level of the history frame at `lag` for a frame generated at a level.

  The official rule (Eqs. 16-17): lag L = 1 is the previous frame, kept at
  level min(k + L - 1, K - 1).

  Args:
    stage_level: k of the frame being generated (0 = full resolution).
    lag: L >= 1.
    num_stages: K.

  Returns:
    The history frame's level.
  """
  return min(stage_level + lag - 1, num_stages - 1)
