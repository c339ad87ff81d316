"""Orbax checkpoints of the train state together with the data iterator.

Saves are asynchronous and atomic (orbax writes to a temporary directory and
renames it when complete), keep the last N, and always include the grain
iterator so a resumed run sees exactly the batches it would have seen.
Resume order: the workdir's own latest checkpoint, else a fresh start.
"""

from typing import Any, Optional, Tuple

from absl import logging
import etils.epath as epath
import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Wraps `ocp.CheckpointManager` with the items 'state' and 'data'."""

  def __init__(self, directory: str, *, max_to_keep: int = 3,
               save_every_steps: int = 1000, async_save: bool = True):
    """Creates (or reopens) the checkpoint directory.

    Args:
      directory: where checkpoints live (usually WORKDIR/checkpoints).
      max_to_keep: number of most recent checkpoints kept.
      save_every_steps: save interval (the final step is always saved).
      async_save: write in a background thread after the device-to-host copy.
    """
    self.save_every_steps = save_every_steps
    self.manager = ocp.CheckpointManager(
        epath.Path(directory).absolute(),
        item_names=("state", "data"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True))

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any,
           force: bool = False) -> bool:
    """Saves at `step` if it is a save step (or `force`).

    Args:
      step: the state's step.
      state: the train state (sharded jax arrays).
      data_iterator: the grain iterator, positioned after the last batch used.
      force: save even off the interval (end of run).

    Returns:
      Whether a save was started.
    """
    if not force and step % self.save_every_steps:
      return False
    if step == self.manager.latest_step():
      return False
    return self.manager.save(
        step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator)))

  def restore(self, abstract_state: Any, shardings: Any,
              data_iterator: Any) -> Tuple[Optional[int], Any]:
    """Restores the latest checkpoint, laid out with `shardings`.

    Args:
      abstract_state: pytree of ShapeDtypeStructs of the state.
      shardings: matching pytree of NamedShardings.
      data_iterator: grain iterator whose position is restored in place.

    Returns:
      (step, state), or (None, None) when there is no checkpoint.
    """
    step = self.manager.latest_step()
    if step is None:
      return None, None
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state, shardings)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    logging.info("Restored checkpoint at step %d.", step)
    return step, restored["state"]

  def wait(self):
    """Blocks until pending asynchronous saves are on disk."""
    self.manager.wait_until_finished()

  def close(self):
    """Waits for saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
