"""A run's state outside training: restored for the tools, traced for checks.

`sample`, `encode`, warm starts and the experiment scripts read a run's
newest (or a given) checkpoint on the mesh they start with, read-only: they
never prune the run's checkpoints or move one aside. Nothing is compiled.
"""

import dataclasses
import os
from typing import Any, Callable, Optional, Sequence

from absl import logging
import flax.linen as nn
import jax
import ml_collections

from jaxgen.data import pipeline as data_pipeline
from jaxgen.train import checkpoint as checkpoint_lib
from jaxgen.train import checks
from jaxgen.train import trainer


def restore(config: ml_collections.ConfigDict, workdir: str, *,
            devices: Optional[Sequence[jax.Device]] = None,
            step: Optional[int] = None, data_optional: bool = False):
  """The newest verified checkpoint of a run, laid out on this mesh.

  For sampling, evaluation and experiments; nothing is compiled. Use the
  returned state under `jax.set_mesh(s.mesh)` and `s.rules`.

  Args:
    config: the run's config.
    workdir: the run directory.
    devices: devices of the mesh (default: all).
    step: this checkpoint instead of the newest.
    data_optional: the training data need not be readable here (sampling
      on another machine): the shapes then come from the config, the
      dataset size from the checkpoint, with one warning.

  Returns:
    (setup, step, state); step and state are None without a checkpoint (or
    when `step` is not kept).

  Raises:
    ValueError: one line for a checkpoint that does not restore (it is
      left in place, as every other one is).
  """
  ckpt_dir = os.path.join(workdir, "checkpoints")

  def without_data(config):
    # The shapes come from the config, the dataset size (for a run
    # measured in epochs) from the checkpoint.
    newest = max(checks.committed_steps(ckpt_dir), default=0)
    saved = checkpoint_lib.saved_extra(
        ckpt_dir, step if step is not None else newest)
    return dataclasses.replace(
        data_pipeline.DatasetInfo.synthetic(config.dataset),
        num_examples=int(saved.get("num_examples") or 0))

  s = resolve(config, devices,
              without_data=without_data if data_optional else None)[0]
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    _, abstract, shardings = trainer.abstract_state(s, jax.random.key(0))
    # Read only: a tool deletes none of the run's checkpoints (beyond the
    # default 3 kept) and moves none aside (one too big for this machine
    # is not corrupt).
    ckpt = checkpoint_lib.Checkpointer(ckpt_dir, read_only=True)
    try:
      step, state, _ = ckpt.restore(abstract, shardings, None, step=step)
    finally:
      ckpt.close()
  return s, step, state


def abstract_of(config: ml_collections.ConfigDict, *,
                devices: Optional[Sequence[jax.Device]] = None):
  """The abstract train state (shapes and dtypes) a run config describes.

  Traced, not compiled: cheap enough to compare two runs' architectures
  before anything compiles (a warm start's check).

  Args:
    config: a run config.
    devices: devices of the mesh (default: all).

  Returns:
    The abstract state, a pytree of `jax.ShapeDtypeStruct`.
  """
  return trainer.traced_state(resolve(config, devices)[0])


def resolve(config: ml_collections.ConfigDict,
            devices: Optional[Sequence[jax.Device]] = None, *,
            without_data: Optional[Callable[[ml_collections.ConfigDict],
                                            Any]] = None):
  """The trainer's setup of a run config, for restoring or tracing.

  Args:
    config: a run config.
    devices: devices of the mesh (default: all).
    without_data: when given, training data that does not open is one
      warning and this (checked config -> `DatasetInfo`) describes it.

  Returns:
    (setup, its train-data iterator, None without the data).
  """
  config, checked = checks.check_restorable(config, devices)
  batch = trainer.train_batch_size(config, checked[2])
  try:
    it, info = data_pipeline.build_input(
        config.dataset, global_batch_size=batch, seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(), train=True)
  except ValueError as e:
    if without_data is None:
      raise
    logging.warning("The training data is not readable here (%s); "
                    "restoring with the config's shapes.",
                    checkpoint_lib.error_reason(e).rstrip("."))
    it, info = None, without_data(config)
  return trainer.setup(config, data_info=info, devices=devices,
                       checked=checked), it
