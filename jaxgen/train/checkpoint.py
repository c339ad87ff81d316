"""Orbax checkpoints of the train state, the data iterator and a fingerprint.

Saves are asynchronous and atomic (orbax writes `<step>.orbax-checkpoint-tmp*`
and renames it to `<step>` when complete) and always include the grain
iterator, so a resumed run sees exactly the batches it would have seen.

What this adds to `ocp.CheckpointManager`, so that nothing committed is lost:

* A save is only *good* once it is committed (the step directory is final).
  A failed background save (full disk, lost mount) is noticed by `poll()` at
  the next step and raised as one `CheckpointWriteError` line; the previous
  checkpoints stay, because old steps are deleted here, only after a newer one
  committed (orbax's own `max_to_keep` deletes them even when the new save
  failed).
* Each checkpoint carries a fingerprint of the state (a position-weighted
  uint32 sum per array, computed on device, or with numpy for small states
  held whole by this process) in a small JSON item. `restore`
  recomputes it and checks the state is finite; a checkpoint that fails to
  load or to verify is moved to `WORKDIR/corrupt_checkpoints/` (never deleted)
  with a one-line warning and the next older one is tried.
* A checkpoint written by another number of processes is not corrupt: the
  state restores onto any mesh and the data position (one file per process)
  is carried over (`jaxgen.train.data_position`).
* Saves a dead run cut short (`*.orbax-checkpoint-tmp*` directories; on
  GCS, step folders orbax did not finalize) are removed when a writer opens
  the run, and a failed save's once a newer checkpoint is committed.
* Replicated arrays are split across their replicas for writing only when
  each part is at least 256 KiB (`jaxgen.train.array_handler`).
"""

import logging as pylogging
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import logging
import etils.epath as epath
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxgen.train import array_handler
from jaxgen.train import data_position
from jaxgen.train import fingerprint as fingerprint_lib
from jaxgen.train import state as state_lib

# The JSON item saved with each checkpoint: fingerprint and host-side extras.
_META = "meta"
_TMP = ".orbax-checkpoint-tmp"


def finalized(path) -> bool:
  """Whether a `<step>` directory is a committed checkpoint.

  On a local disk orbax writes `<step>.orbax-checkpoint-tmp-*` and renames
  it, so the name says it; on GCS it writes into `<step>/` and marks the end
  with a commit file, so a folder named `<step>` may be a save cut short.

  Args:
    path: the step directory.

  Returns:
    True if orbax finished writing it.
  """
  return bool(ocp.step.is_checkpoint_finalized(epath.Path(path)))


class StorageError(RuntimeError):
  """Output could not be written (full disk, lost mount); one line."""


class CheckpointWriteError(StorageError):
  """A checkpoint could not be written; earlier checkpoints are intact."""


def _remove(path: epath.Path) -> None:
  """Deletes a (temporary) checkpoint directory; failures are only logged."""
  try:
    path.rmtree()
  except Exception:  # pylint: disable=broad-except
    logging.warning("Could not remove %s.", path)


def structure_diff(saved: Any, target: Any) -> List[str]:
  """Differences in array names and shapes between a checkpoint and a state.

  Args:
    saved: the checkpoint's state metadata (leaves with `.shape`).
    target: the abstract state to restore into.

  Returns:
    Readable differences ("params/model/x: shape (32,) saved, (64,) now"),
    empty when the two hold the same arrays.
  """
  def shapes(tree):
    return {k: tuple(x.shape) for k, x in state_lib.named_leaves(tree).items()
            if hasattr(x, "shape")}
  a, b = shapes(saved), shapes(target)
  out = [f"{k}: only in the checkpoint" for k in sorted(set(a) - set(b))]
  out += [f"{k}: not in the checkpoint" for k in sorted(set(b) - set(a))]
  out += [f"{k}: shape {a[k]} saved, {b[k]} now"
          for k in sorted(set(a) & set(b)) if a[k] != b[k]]
  return out


def with_saved_dtypes(saved: Any, target: Any) -> Tuple[Any, List[str]]:
  """`target` with each array's dtype as the checkpoint stores it.

  A run resumed with another `param_dtype` or `optimizer.mu_dtype` restores
  (and verifies) the arrays as they were written, then casts them.

  Args:
    saved: the checkpoint's state metadata (leaves with `.dtype`).
    target: the abstract state to restore into (ShapeDtypeStructs with
      shardings), of the same names and shapes (`structure_diff` is empty).

  Returns:
    (the restore target, "name: saved -> now" for each array cast).
  """
  stored = {k: x.dtype for k, x in state_lib.named_leaves(saved).items()
            if hasattr(x, "dtype")}
  changed = []

  def leaf(path, t):
    name = state_lib.path_name(path)
    dtype = stored.get(name, t.dtype)
    if np.dtype(dtype) == np.dtype(t.dtype):
      return t
    changed.append(f"{name}: {np.dtype(dtype).name} -> {np.dtype(t.dtype).name}")
    return jax.ShapeDtypeStruct(t.shape, dtype, sharding=t.sharding)

  return jax.tree_util.tree_map_with_path(leaf, target), changed


# -- the checkpointer -------------------------------------------------------------


_KNOWN_REASONS = ("No space left on device", "Read-only file system",
                  "Disk quota exceeded", "Permission denied",
                  "Input/output error")


def is_storage_error(error: BaseException) -> bool:
  """Whether an exception (OSError, or a TF / tensorstore status carrying no
  Python type) says that writing to storage failed."""
  text = str(error)
  return (isinstance(error, OSError) or "os_error_code" in text
          or any(reason in text for reason in _KNOWN_REASONS))


# Errors of the moment (memory, access, an object store's hiccup), not of
# the bytes stored: a checkpoint that raises one is not damaged.
_TRANSIENT = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
              "Permission denied", "DEADLINE_EXCEEDED", "UNAVAILABLE",
              "Connection reset", "Too many open files")


def is_transient_error(error: BaseException) -> bool:
  """Whether restoring failed for a reason of the moment (out of memory,
  no permission, storage unavailable) rather than damaged bytes."""
  return (isinstance(error, (MemoryError, PermissionError))
          or any(reason in str(error) for reason in _TRANSIENT))


def error_reason(error: BaseException) -> str:
  """A short reason from an orbax / tensorstore / TF error ("No space ...")."""
  text = str(error)
  code = re.search(r"os_error_code='?(\d+)", text)
  if code:
    return os.strerror(int(code.group(1)))
  for reason in _KNOWN_REASONS:
    if reason in text:
      return reason
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  first = text.strip().split("\n", 1)[0]
  return first[:200] + ("..." if len(first) > 200 else "")


class _OrbaxErrorFilter:
  """Keeps orbax's background-save error tracebacks out of the log.

  The failure is reported once, as one line, by `Checkpointer.poll`; the
  first error message is kept for that line.
  """

  def __init__(self):
    self.first: Optional[str] = None

  def filter(self, record) -> bool:
    if record.levelno >= logging.ERROR and "orbax" in (record.pathname or ""):
      message = record.getMessage()
      # Orbax also logs slow saves at this level; keep the first real error.
      if self.first is None and (is_storage_error(RuntimeError(message)) or
                                 "exception" in message.lower()):
        self.first = message
      return False
    return True


class _OrbaxTaskFilter:
  """Drops asyncio's "exception was never retrieved" for orbax write tasks.

  They are printed when the failed tasks of a background save are garbage
  collected, long after `Checkpointer.poll` reported the failure.
  """

  def filter(self, record) -> bool:
    return "orbax" not in record.getMessage()


pylogging.getLogger("asyncio").addFilter(_OrbaxTaskFilter())


def saved_extra(directory: str, step: int) -> Dict[str, Any]:
  """The host extras saved with checkpoint `step`, read without restoring
  its state (cheap: checks before compiling).

  Args:
    directory: the checkpoint directory.
    step: a committed step.

  Returns:
    The extras ({} when the checkpoint has none or they do not load; the
    restore that follows finds a damaged checkpoint).
  """
  path = epath.Path(directory) / str(step) / _META
  try:
    meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path)
  except Exception:  # pylint: disable=broad-except
    return {}
  return (meta.get("extra") or {}) if isinstance(meta, dict) else {}


def saved_state_metadata(directory: str, step: int) -> Any:
  """The array names, shapes and dtypes of checkpoint `step`'s state, read
  without restoring it (cheap: checks before compiling).

  Args:
    directory: the checkpoint directory.
    step: a committed step.

  Returns:
    The state's metadata tree, or None when it does not load (the restore
    that follows finds a damaged checkpoint).
  """
  path = epath.Path(directory) / str(step) / "state"
  try:
    return ocp.StandardCheckpointHandler().metadata(path)
  except Exception:  # pylint: disable=broad-except
    return None


class Checkpointer:
  """Wraps `ocp.CheckpointManager` with the items 'state', 'data' and 'meta'."""

  def __init__(self, directory: str, *, max_to_keep: int = 3,
               save_every_steps: int = 1000, async_save: bool = True,
               read_only: bool = False):
    """Creates (or reopens) the checkpoint directory.

    Args:
      directory: where checkpoints live (usually WORKDIR/checkpoints).
      max_to_keep: number of most recent committed checkpoints kept.
      save_every_steps: save interval (the final step is always saved).
      async_save: write in a background thread after the device-to-host copy.
      read_only: for tools that read another run's checkpoints (sampling,
        encoding, warm starts): nothing is deleted or moved aside, and a
        checkpoint that does not restore is an error (a run's own training
        sets it aside; here it may only not fit this machine).
    """
    self.read_only = read_only
    self.directory = epath.Path(directory).absolute()
    self.save_every_steps = save_every_steps
    self.max_to_keep = max_to_keep
    # Steps whose save failed (their partial directories are removed).
    self._failed_steps = set()
    # Step of the save in flight, and the newest committed or verified step.
    self._pending: Optional[int] = None
    self.last_good_step: Optional[int] = None
    self._filter = _OrbaxErrorFilter()
    logging.get_absl_logger().addFilter(self._filter)
    array_handler.gate_replica_parallel_saves()
    self.manager = ocp.CheckpointManager(
        self.directory,
        item_names=("state", "data", _META),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler(),
                       _META: ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            # Old steps are deleted by `_commit`, after a newer one is safe.
            max_to_keep=None,
            enable_async_checkpointing=async_save,
            # A reader (sample, encode, a warm start) creates nothing in
            # the run it reads (was an empty checkpoints/, or an OSError on
            # a read-only mount instead of "no checkpoint").
            create=not read_only, read_only=read_only,
            # What orbax would set itself for a reader, with a warning.
            save_interval_steps=0 if read_only else 1))
    if not read_only and jax.process_index() == 0:
      # Saves cut short by a crash: <step>.orbax-checkpoint-tmp-* on a local
      # disk, an unfinalized <step>/ on GCS (which a rerun reaching that
      # step again would have to save over). Removed now, before anything
      # is saved (orbax's own cleanup option runs in the background until
      # the first save); a reader leaves them.
      for tmp in ocp.step.all_temporary_paths(self.directory):
        # On GCS every folder without a commit file counts: steps only.
        if tmp.get().name.split(".", 1)[0].isdigit():
          _remove(tmp.get())

  # -- saving ---------------------------------------------------------------

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step, or None."""
    return self.manager.latest_step()

  def is_save_step(self, step: int) -> bool:
    """Whether `step` is on the save interval."""
    return step % self.save_every_steps == 0

  def save(self, step: int, state: Any, data_iterator: Any,
           force: bool = False, extra: Optional[Dict[str, Any]] = None
           ) -> bool:
    """Starts saving at `step` if it is a save step (or `force`).

    Args:
      step: the state's step.
      state: the train state (sharded jax arrays).
      data_iterator: the grain iterator, positioned after the last batch used.
      force: save even off the interval (end of run, preemption).
      extra: JSON-ready host values saved with it (returned by `restore`).

    Returns:
      Whether a save was started.

    Raises:
      CheckpointWriteError: this or the previous save failed.
    """
    if not force and not self.is_save_step(step):
      return False
    if step == self.manager.latest_step():
      return False
    self.poll(wait=True)
    prints, finite = fingerprint_lib.fingerprint(state)
    if not finite:
      # The trainer checks the metrics first; this guards other callers.
      raise FloatingPointError(f"the state at step {step} is not finite; not "
                               "saving it")
    meta = {"fingerprint": prints, "extra": extra or {}}
    try:
      started = self.manager.save(
          step, force=True, args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=grain.checkpoint.CheckpointSave(data_iterator),
              **{_META: ocp.args.JsonSave(meta)}))
    except Exception as e:  # pylint: disable=broad-except
      self._pending = step
      self._fail(step, e)
    if started:
      self._pending = step
    return started

  def poll(self, wait: bool = False) -> None:
    """Commits a finished background save, or raises if it failed.

    Called once per step, so a failed save surfaces one step later.

    Args:
      wait: block until the save in flight is done.

    Raises:
      CheckpointWriteError: the save in flight failed.
    """
    if self._pending is None:
      return
    if wait:
      try:
        self.manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        self._fail(self._pending, e)
    elif self.manager.is_saving_in_progress():
      return
    step, self._pending = self._pending, None
    path = self.directory / str(step)
    if not (path.exists() and finalized(path)):
      self._pending = step
      self._fail(step, None)
    self.last_good_step = step
    self._collect(step)

  def _fail(self, step: int, error: Optional[BaseException]):
    reason = (error_reason(error) if error is not None else
              error_reason(RuntimeError(self._filter.first or
                                         "the save did not complete")))
    # The partial directory only takes space (often the space that ran out).
    # Writer threads still in flight can recreate it: close() removes it
    # again once the manager has stopped them.
    self._failed_steps.add(step)
    self._remove_tmp(step)
    self._pending = None
    self.manager.reload()
    good = (f"the last good checkpoint is step {self.last_good_step}"
            if self.last_good_step is not None else "no checkpoint was written")
    raise CheckpointWriteError(
        f"checkpoint {step} could not be written: {reason}; {good} in "
        f"{self.directory}. Fix the cause and rerun to resume.")

  def _remove_tmp(self, step: int) -> None:
    for tmp in self.directory.glob(f"{step}{_TMP}*"):
      _remove(tmp)

  def _collect(self, newest: int) -> None:
    """Deletes steps beyond `max_to_keep` and leftover temporary dirs."""
    if jax.process_index() == 0:
      for tmp in self.directory.glob(f"*{_TMP}*"):
        head = tmp.name.split(".", 1)[0]
        if head.isdigit() and int(head) < newest:
          _remove(tmp)
    steps = sorted(self.manager.all_steps())
    old = [s for s in (steps[:-self.max_to_keep] if self.max_to_keep else [])
           if s < newest]
    if jax.process_count() == 1:
      for step in old:
        self.manager.delete(step)
      return
    # Several processes: orbax's delete ends in a device collective, and a
    # background save is committed (and collected) when each process sees
    # it finished, so processes a step apart would run different
    # collectives and hang (so would process 0 alone on an error path).
    # Process 0 removes the directories; each process forgets them.
    if old:
      if jax.process_index() == 0:
        for step in old:
          _remove(self.directory / str(step))
      self.manager.reload()

  def guarded(self, workdir: str, fn: Callable[..., Any], *args) -> Any:
    """Runs a metrics write; a storage failure becomes one StorageError line.

    On a full disk the checkpoint in flight usually fails too: waiting for
    it first reports that (with the last good step), which says more.

    Args:
      workdir: the run directory (named in the error).
      fn: the write (e.g. `writer.write_scalars`).
      *args: its arguments.

    Returns:
      What `fn` returns.
    """
    try:
      return fn(*args)
    except Exception as e:  # pylint: disable=broad-except
      if not is_storage_error(e):
        raise
      reason = error_reason(e)
      self.poll(wait=True)
      raise StorageError(
          f"metrics could not be written to {workdir}: {reason}; the last "
          f"good checkpoint is step {self.last_good_step}. Fix the cause and "
          "rerun to resume.") from None

  # -- restoring ------------------------------------------------------------

  def restore(self, abstract_state: Any, shardings: Any, data_iterator: Any,
              step: Optional[int] = None
              ) -> Tuple[Optional[int], Any, Dict[str, Any]]:
    """Restores the newest checkpoint that loads and verifies.

    A checkpoint that raises while loading, whose fingerprint differs from
    the saved one or whose state is not finite is moved to
    `corrupt_checkpoints/` beside the checkpoint directory, with a one-line
    warning, and the next older one is tried.

    Args:
      abstract_state: pytree of ShapeDtypeStructs of the state.
      shardings: matching pytree of NamedShardings.
      data_iterator: grain iterator whose position is restored in place;
        None restores the state only (sampling, evaluation, warm starts).
      step: restore this step only (for tools that need a given one; it is
        not moved aside when unusable).

    Returns:
      (step, state, extra), or (None, None, {}) when no checkpoint restores
      (the iterator is then back at its start) or `step` is not kept.

    Raises:
      ValueError: `step` is kept but unusable, or a checkpoint could not be
        read for a reason of the moment (out of memory, no permission,
        storage unavailable; `is_transient_error`): it is left in place.
    """
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state, shardings)
    start = data_iterator.get_state() if data_iterator is not None else None
    if step is not None:
      if step not in self.manager.all_steps():
        return None, None, {}
      problem, state, meta = self._try_restore(step, target, data_iterator)
      if problem is not None:
        raise ValueError(f"checkpoint {step} in {self.directory} is unusable:"
                         f" {problem}.")
      logging.info("Restored checkpoint at step %d of %s (verified).", step,
                   self.directory)
      return step, state, meta.get("extra", {})
    while True:
      step = self.manager.latest_step()
      if step is None:
        if data_iterator is not None:
          data_iterator.set_state(start)
        return None, None, {}
      problem, state, meta = self._try_restore(step, target, data_iterator)
      if problem is None:
        logging.info("Restored checkpoint at step %d of %s (verified).", step,
                     self.directory)
        self.last_good_step = step
        if not self.read_only:
          # Only now: with a lowered keep_checkpoints, collecting first
          # deleted the older ones this loop falls back to.
          self._collect(step)
        return step, state, meta.get("extra", {})
      if self.read_only:
        raise ValueError(
            f"checkpoint {step} in {self.directory} does not restore here: "
            f"{problem}; it is left in place (training the run again sets an "
            "unusable checkpoint aside and resumes from the one before).")
      moved = self._move_aside(step)
      logging.warning("Checkpoint %d is unusable (%s); moved it to %s and "
                      "trying the next older one.", step, problem, moved)

  def _try_restore(self, step, target, data_iterator):
    """(problem or None, state, meta) of restoring `step`.

    Raises:
      ValueError: the checkpoint holds another model (shapes or names
        differ): a configuration error, not a corrupt checkpoint.
    """
    state, meta, transient = None, {}, False
    try:
      saved = self.manager.item_metadata(step)["state"]
    except Exception as e:  # pylint: disable=broad-except
      return f"its metadata does not load: {error_reason(e)}", None, {}
    diffs = structure_diff(saved, target)
    if diffs:
      raise ValueError(
          f"checkpoint {step} in {self.directory} was saved for a different "
          f"model ({'; '.join(diffs[:3])}"
          f"{f'; {len(diffs) - 3} more' if len(diffs) > 3 else ''}); rerun "
          "with the config it was trained with or pass another --workdir.")
    as_saved, cast = with_saved_dtypes(saved, target)
    position = (data_position.carried(self.directory, step)
                if data_iterator is not None
                else None)
    try:
      items = {"state": ocp.args.StandardRestore(as_saved)}
      if data_iterator is not None and position is None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      state = self.manager.restore(step, args=ocp.args.Composite(**items))[
          "state"]
      if position is not None:
        data_iterator.set_state(position)
      if (self.directory / str(step) / _META).exists():
        meta = self.manager.restore(step, args=ocp.args.Composite(
            **{_META: ocp.args.JsonRestore()}))[_META]
      prints, finite = fingerprint_lib.fingerprint(state)
      problem = None
      if not finite:
        problem = "its state holds NaN or inf"
      elif meta.get("fingerprint") is not None and (
          meta["fingerprint"] != prints):
        bad = sum(a != b for a, b in zip(meta["fingerprint"], prints))
        problem = f"{bad} arrays differ from the fingerprint saved with it"
      if cast and problem is None:
        # Verified as written; now in the dtypes the config asks for.
        state = jax.tree.map(
            lambda x, t: x if x.dtype == t.dtype else jax.device_put(
                x.astype(t.dtype), t.sharding), state, target)
        logging.warning(
            "Checkpoint %d stores %d arrays in other dtypes than the config "
            "asks for (%s%s): cast on restore.", step, len(cast),
            "; ".join(cast[:2]), "; ..." if len(cast) > 2 else "")
    except Exception as e:  # pylint: disable=broad-except
      problem = f"it does not load: {error_reason(e)}"
      transient = is_transient_error(e)
    # 0: restored, 1: damaged, 2: could not be read just now.
    code = 2 if transient else int(problem is not None)
    if jax.process_count() > 1:
      # Every process must take the same branch.
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      code = int(np.max(multihost_utils.process_allgather(np.array(code))))
      if code and problem is None:
        problem = "another process could not restore it"
    if code == 2 and not self.read_only:
      # Not damage: setting the checkpoint aside would restart the run from
      # an older one (or step 0) for an error a rerun may not have.
      raise ValueError(
          f"checkpoint {step} in {self.directory} could not be read "
          f"({problem}); it is left in place: rerun once memory or storage "
          "allows (a damaged checkpoint is set aside and the one before "
          "used).")
    return problem, state, meta

  def _move_aside(self, step: int) -> str:
    dest = self.directory.parent / "corrupt_checkpoints" / (
        f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0:
      dest.parent.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"jaxgen_move_aside_{step}")
    self.manager.reload()
    return str(dest)

  # -- shutdown -------------------------------------------------------------

  def wait(self) -> None:
    """Blocks until the pending save is on disk (raises if it failed)."""
    self.poll(wait=True)

  def close(self, raise_errors: bool = True) -> None:
    """Waits for the pending save and releases the manager.

    Args:
      raise_errors: raise `CheckpointWriteError` for a failed pending save
        (False while another error is already propagating).
    """
    try:
      self.poll(wait=True)
    except CheckpointWriteError:
      if raise_errors:
        raise
    finally:
      try:
        self.manager.close()
      except Exception:  # pylint: disable=broad-except
        logging.warning("Closing the checkpoint manager failed.")
      self._remove_failed_tmp()
      logging.get_absl_logger().removeFilter(self._filter)

  def _remove_failed_tmp(self, attempts: int = 20) -> None:
    """Removes failed saves' partial directories, until they stay gone.

    A writer thread of the failed save can still be finishing a file (and
    recreating the directory) when the manager returns from close; on a
    loaded machine that took tens of milliseconds.
    """
    for _ in range(attempts):
      for step in sorted(self._failed_steps):
        self._remove_tmp(step)
      if not any(next(iter(self.directory.glob(f"{step}{_TMP}*")), None)
                 for step in self._failed_steps):
        return
      time.sleep(0.1)
