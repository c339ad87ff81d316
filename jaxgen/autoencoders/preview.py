"""Reconstruction grids for autoencoder runs.

An autoencoder draws no samples; what a researcher looks at while it trains
is its reconstructions. The trainer's sample grids (`samples/step_N.png` and
TensorBoard's "samples" image, every `sample_every_steps` and at the end)
show, for an autoencoder, the first `config.num_samples` held-out examples
(the training split's when the run does not evaluate) each followed by its
reconstruction: grids read as original / reconstruction pairs.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data import config as data_config
from jaxgen.data import pipeline as data_pipeline
from jaxgen.parallel import mesh as mesh_lib


def fixed_examples(config: ml_collections.ConfigDict, key: str,
                   num: int) -> np.ndarray:
  """The first `num` examples of the run's preview split, the same on every
  process (each reads them itself: the grid's input is replicated).

  Args:
    config: the run config.
    key: the batch key ("image" or "video").
    num: how many.

  Returns:
    [num, ...] float array in [-1, 1].
  """
  batch = max(int(num), 1)
  split = None  # The held-out split (train=False reads it in order) ...
  if not config.get("eval_batches"):
    # ... unless the run does not evaluate: it may have none (a one-split
    # folder), so its training split, also in order and unaugmented.
    split = (data_config.parse_spec(str(config.dataset.name)).split
             or config.dataset.split)
  read = lambda size: data_pipeline.build_input(
      config.dataset, global_batch_size=size, seed=config.seed,
      process_index=0, process_count=1, split=split, train=False,
      repeat=True)
  have = read(1)[1].num_examples
  if batch > have:
    # The pipeline's own error would blame config.batch_size.
    raise ValueError(
        f"config.num_samples={num}: the reconstruction grid shows that many "
        f"examples of the {'held-out' if split is None else repr(split)} "
        f"split, which has {have}; use config.num_samples <= {have}.")
  return np.asarray(next(read(batch)[0])[key][:num], np.float32)


def reconstructions(objective: Any, config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh) -> Callable[..., jax.Array]:
  """`(state, rng) -> images` for the trainer's grids: each original beside
  (images: [n, 2, H, W, C], one pair per grid row) or above (clips: rows of
  frames) its reconstruction.

  Args:
    objective: the run's `Autoencoder` objective (`key`, `reconstruct`).
    config: the run config (`num_samples` examples are shown).
    mesh: the run's mesh (the grid comes back replicated).

  Returns:
    The grid function; the rng is unused (the same examples every time).
  """
  replicated = mesh_lib.replicated(mesh)
  x = jax.device_put(fixed_examples(config, objective.key,
                                    int(config.num_samples)), replicated)

  @functools.partial(jax.jit, out_shardings=replicated)
  def pairs(state, x):
    y = objective.reconstruct(state, {objective.key: x})
    both = jnp.stack([x, y.astype(x.dtype)], axis=1)
    if x.ndim == 4:
      # [n, 2, H, W, C]: the grid lays a "clip" per row, so each original
      # sits beside its reconstruction whatever n is.
      return both
    # Clips: rows of frames, the original's row above its reconstruction's.
    return both.reshape((-1,) + x.shape[1:])

  return lambda state, rng: pairs(state, x)
