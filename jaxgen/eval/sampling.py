"""Drawing many samples from a trained state, sharded, batch by batch.

Shared by `jaxgen.sample` (files on disk) and the in-training sample metrics.
Batch k draws with `fold_in(key(seed), k)` and class labels
`index % num_classes` (classes in turn), so a set of N samples is the same
whatever the batch it is resumed from and whatever the mesh.
"""

from typing import Callable, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from jaxgen.autoencoders import latent_decode
from jaxgen.eval import grids
from jaxgen.parallel import mesh as mesh_lib


def make_batch_sampler(objective, mesh: jax.sharding.Mesh, batch: int,
                       seed: int = 0, decode=None
                       ) -> Callable[[object, int], np.ndarray]:
  """Returns draw(state, k) -> uint8 [batch, H, W, C] of the k-th batch.

  Must be called (and `draw` used) under `jax.set_mesh(mesh)` and the run's
  logical axis rules.

  Args:
    objective: the family's objective (its `sample(state, rng, num,
      labels=)`).
    mesh: the mesh; `batch` must be a multiple of its data-parallel size.
    batch: samples per call.
    seed: sampling seed.
    decode: latents -> images for a latent-space run (default: built from
      `objective.config.dataset` by `latent_decode.make_decoder`; None for
      pixel-space runs).

  Returns:
    The draw function; its images are on the host (all processes), quantised
    to uint8 as saved PNGs would be.
  """
  num_classes = int(getattr(objective, "num_classes", 0) or 0)
  config = getattr(objective, "config", None)
  if decode is None and config is not None:
    decode = latent_decode.make_decoder(config.dataset, mesh)

  def draw_fn(state, rng, labels):
    return objective.sample(state, rng, batch, labels=labels)

  jitted = jax.jit(draw_fn, out_shardings=mesh_lib.batch_sharding(mesh, 4))

  def draw(state, k: int) -> np.ndarray:
    labels = (jnp.arange(k * batch, (k + 1) * batch, dtype=jnp.int32)
              % num_classes if num_classes else None)
    images = jitted(state, jax.random.fold_in(jax.random.key(seed), k),
                    labels)
    if decode is not None:
      images = decode(images)
    if jax.process_count() > 1:
      images = multihost_utils.process_allgather(images, tiled=True)
    images = np.asarray(jax.device_get(images))
    bad = int(np.sum(~np.isfinite(images.reshape(len(images), -1)).all(1)))
    if bad and not warned:
      # They quantise to black (NaN) or saturated pixels: metrics would
      # score a diverged model's garbage as images without a word.
      warned.append(k)
      logging.warning("%d of the %d samples of batch %d hold NaN or inf "
                      "values (a diverged model or sampler): they are "
                      "written and scored as black or saturated images (said "
                      "once).", bad, len(images), k)
    return grids.to_uint8(images)
  warned = []
  return draw


def labels_of(num: int, objective) -> Optional[np.ndarray]:
  """The class labels `make_batch_sampler` gives samples 0..num-1."""
  num_classes = int(getattr(objective, "num_classes", 0) or 0)
  return np.arange(num) % num_classes if num_classes else None
