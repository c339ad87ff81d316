"""A checkpoint's data position, carried to another number of processes.

grain's orbax handler saves one iterator state per process, as
`STEP/data/process_I-of-N.json`, and restores only the file of the restoring
process and count. A run saved by N processes and resumed (or sampled,
evaluated, warm-started) by M has no file of its own; that is not corruption.
Every process reads the same number of rows of each global batch
(`jaxgen.data.pipeline`), so a position that only counts examples
({"next_index": k}, the same on every process) carries over as k·N/M.
"""

import json
import re
from typing import Any, Dict, Optional

from absl import logging
import etils.epath as epath
import jax

from jaxgen.parallel import multihost

_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


def _example_count(state: Any) -> Optional[int]:
  """k of a position that only counts examples ({"next_index": k}), else
  None (e.g. the per-worker positions of dataset.worker_count > 0)."""
  if (isinstance(state, dict) and set(state) == {"next_index"}
      and isinstance(state["next_index"], int)):
    return state["next_index"]
  return None


def _own_file(directory: epath.Path, step: int) -> epath.Path:
  """This process's data-position file in checkpoint `step`, as grain's
  handler names it."""
  return (epath.Path(directory) / str(step) / "data" /
          f"process_{jax.process_index()}-of-{jax.process_count()}.json")


def carried(directory: epath.Path, step: int,
            log: bool = True) -> Optional[Dict[str, Any]]:
  """This process's data position in checkpoint `step` of `directory`.

  Args:
    directory: the checkpoint directory (holding `<step>/data`).
    step: the checkpoint.
    log: say when a position is carried to another process count (off for
      `check_resumable`'s pre-check, which the restore repeats).

  Returns:
    None when grain restores the position itself (this process's own file
    exists, or the files are incomplete or unreadable, which grain's restore
    then reports as a broken checkpoint); otherwise the carried-over
    iterator state.

  Raises:
    ValueError: the position cannot be carried over (it is more than an
      example count, e.g. of grain workers, or does not divide).
  """
  count = jax.process_count()
  data = epath.Path(directory) / str(step) / "data"
  if _own_file(directory, step).exists():
    return None
  saved = {}
  for path in data.glob("process_*-of-*.json"):
    match = _FILE.fullmatch(path.name)
    if match:
      saved[int(match[1])] = (int(match[2]), path)
  counts = {n for n, _ in saved.values()}
  if len(counts) != 1 or set(saved) != set(range(next(iter(counts)))):
    return None
  n = counts.pop()
  try:
    states = [json.loads(saved[i][1].read_text()) for i in range(n)]
  except (OSError, ValueError):
    return None
  first = states[0] if isinstance(states[0], dict) else {}
  keys = ", ".join(sorted(map(str, first))) or "not a dict"
  k = _example_count(first)
  counted = k is not None and all(s == {"next_index": k} for s in states)
  if counted and k * n % count:
    # Only after the batch changed on resume (steps are whole batches).
    raise ValueError(
        f"checkpoint {step} in {directory} was saved by {n} process(es) at "
        f"{k * n} examples read, which do not split evenly among {count}; "
        f"resume it with {n} process(es).")
  if not counted:
    raise ValueError(
        f"checkpoint {step} in {directory} was saved by {n} process(es) and "
        f"its data position ({keys}; e.g. "
        f"of dataset.worker_count>0) cannot be carried to {count}; resume it "
        f"with {n} process(es).")
  if log:
    logging.info("Checkpoint %d was saved by %d process(es): data position "
                 "carried to %d.", step, n, count)
  return {"next_index": k * n // count}


def align(iterator: Any, global_batch: int, process_count: int) -> int:
  """Moves a restored position up to a whole global batch of this run.

  The pipelines map a process's position to global rows by whole batches;
  a run resumed at another batch size (allowed for runs measured in steps)
  at a position that is no multiple of the new batch would repeat some
  examples and skip others (several processes: mix them within a batch).
  The position moves to the next whole batch instead, skipping fewer
  examples than one batch, with a warning.

  Args:
    iterator: the restored train iterator (grain or in-memory).
    global_batch: examples per global pipeline batch of this run.
    process_count: processes reading it.

  Returns:
    Examples skipped (0: already whole, or a position that is not a plain
    example count, e.g. of grain workers).
  """
  count = _example_count(iterator.get_state())
  if count is None:
    return 0
  read = count * process_count
  skip = -read % global_batch
  if skip:
    iterator.set_state({"next_index": (read + skip) // process_count})
    logging.warning("The checkpoint's data position (%d examples read) is "
                    "not a whole batch of %d (the batch size changed): "
                    "skipping %d examples to the next whole batch.", read,
                    global_batch, skip)
  return skip


def check_resumable(directory: epath.Path, step: int, iterator: Any) -> None:
  """Before compiling: whether `iterator` can take checkpoint `step`'s data
  position (read without restoring: another process count's position is
  carried over silently here, said by the restore).

  Args:
    directory: the checkpoint directory.
    step: the checkpoint to resume.
    iterator: this run's new training iterator.

  Raises:
    ValueError: one line (see `carried` and `check_form`).
  """
  carried(directory, step, log=False)
  check_form(directory, step, iterator.get_state())


def _workers_of(state: Any) -> Optional[int]:
  """Grain workers an iterator state was written by (0: none), or None for
  a form not known here."""
  if _example_count(state) is not None:
    return 0
  if isinstance(state, dict) and isinstance(
      state.get("iterators_in_use_states"), list):
    return len(state["iterators_in_use_states"])
  return None


def check_form(directory: epath.Path, step: int, fresh: Any) -> None:
  """Refuses a resume whose iterator cannot take the saved data position.

  The position's form depends on the grain worker count (0: an example
  count; N: N workers' states), which each host of a multi-host run sets
  for itself. Restoring another form failed inside grain, and the restore
  took that for a damaged checkpoint: every checkpoint was set aside and
  the run restarted from step 0. Checked on every process before
  compiling, and raised on all of them if any differs.

  Args:
    directory: the checkpoint directory.
    step: the checkpoint to resume.
    fresh: this run's new iterator's state (`get_state()`), whose form the
      saved one must have.

  Raises:
    ValueError: one line saying what to change.
  """
  path = _own_file(directory, step)
  problem = None
  try:
    saved = _workers_of(json.loads(path.read_text())) if path.exists() else None
  except (OSError, ValueError):
    saved = None  # The restore reports an unreadable file.
  now = _workers_of(fresh)
  if saved is not None and now is not None and saved != now:
    problem = (f"checkpoint {step} in {directory} holds the data position of "
               f"{saved} grain worker(s) and this run reads with {now} "
               f"(dataset.worker_count, which each host sets): set it back to "
               f"{saved}, or start a new run in another workdir.")
  multihost.raise_on_every_process(problem, lambda which: (
      f"process(es) {which} cannot restore the data position of checkpoint "
      f"{step} with their dataset.worker_count (their error says which); "
      "set it back on those hosts."))
