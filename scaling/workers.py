"""The sweep runner's processes: locks, adoption, core pinning, lifetimes.

Each point (or wsd chain) runs in its own worker process; these keep two
runners or two workers off the same directory (flock locks that die with
their process), let a restarted runner wait for workers an earlier one left
running, pin workers to disjoint cores, and stop workers whose runner died.
"""

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from typing import List, Optional

from jaxgen import paths
from jaxgen.train import workdir as workdir_lib


# Attempts to take a lock, 50 ms apart (see `exclusive`).
_TRIES = 4


@contextlib.contextmanager
def exclusive(path: str, busy: str):
  """Holds an exclusive flock on `path`; ValueError(`busy`) if taken.

  The lock goes with the process (also when it is killed), so a stale lock
  file never blocks a restart. The holder's pid is written into the file (a
  restarted runner names the worker it adopts).
  """
  with open(path, "a+", encoding="utf-8") as f:
    # `holder` probes by taking the lock for an instant: a few tries tell
    # such a probe from a real holder.
    for attempt in range(_TRIES):
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if attempt == _TRIES - 1:
          raise ValueError(f"{busy}; wait for it or use another --workdir"
                           ) from None
        time.sleep(0.05)
    try:
      f.truncate(0)
      f.write(str(os.getpid()))
      f.flush()
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def holder(path: str) -> Optional[int]:
  """The pid holding the flock on `path`, or None if nobody holds it."""
  if not os.path.exists(path):
    return None
  with open(path, "a+", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      text = f.read().strip()
      return int(text) if text.isdigit() else -1
    fcntl.flock(f, fcntl.LOCK_UN)
  return None


class Adopted:
  """A worker left running by an earlier runner, watched through its lock.

  It has the two members of `subprocess.Popen` that the runner uses.
  """

  def __init__(self, lock: str):
    self.lock = lock
    self.returncode: Optional[int] = None

  def poll(self) -> Optional[int]:
    if self.returncode is None and holder(self.lock) is None:
      self.returncode = 0  # Its result.json (if any) says how it ended.
    return self.returncode

  def send_signal(self, sig) -> None:
    pid = holder(self.lock)
    if pid and pid > 0:
      try:
        os.kill(pid, sig)
      except ProcessLookupError:
        pass  # It ended since: its lock goes with it.

  def wait(self, timeout=None):
    deadline = time.time() + (timeout or 1e9)
    while self.poll() is None:
      if time.time() > deadline:
        raise subprocess.TimeoutExpired("adopted worker", timeout)
      time.sleep(0.2)
    return self.returncode

  def kill(self) -> None:
    self.send_signal(signal.SIGKILL)


def die_with_runner() -> None:
  """In a worker: SIGTERM when the runner that started it dies (Linux).

  So neither kill -9 nor a crash of the runner leaves orphans; the trainer
  turns the SIGTERM into a saved checkpoint. The runner passes its pid in
  $JAXGEN_RUNNER_PID; if it is already gone, the worker stops at once.
  """
  runner = os.environ.get("JAXGEN_RUNNER_PID")
  if not runner:
    return
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG
  except (OSError, AttributeError):
    return
  if os.getppid() != int(runner):
    os.kill(os.getpid(), signal.SIGTERM)


def local_dir(workdir: str, given: Optional[str] = None) -> str:
  """Where a sweep keeps what must be local: locks, logs, compilation cache.

  Args:
    workdir: the sweep directory, local or e.g. gs://bucket/sweep.
    given: --local_dir, if passed.

  Returns:
    `given`, else `workdir` itself when it is local, else a directory under
    ~/.cache/jaxgen/sweeps named after `workdir`.
  """
  if given:
    return os.path.abspath(given)
  if workdir_lib.is_local(workdir):
    return os.path.abspath(workdir)
  name = "".join(c if c.isalnum() or c in "-_." else "_"
                 for c in str(workdir).replace("://", "_"))
  return paths.user_cache_dir("sweeps", name)


def core_slots(parallel: int) -> Optional[List[frozenset]]:
  """Disjoint core sets for `parallel` workers, or None if there are fewer
  cores than workers (or a single worker: it gets them all anyway).

  Args:
    parallel: workers running at once.

  Returns:
    `parallel` frozensets of this process's allowed cores, as equal as they
    can be, or None.
  """
  cores = sorted(os.sched_getaffinity(0))
  if parallel < 2 or len(cores) < parallel or not shutil.which("taskset"):
    return None
  per, extra = divmod(len(cores), parallel)
  slots, i = [], 0
  for k in range(parallel):
    n = per + (k < extra)
    slots.append(frozenset(cores[i:i + n]))
    i += n
  return slots


def slot_of(pid: int, slots: Optional[List[frozenset]]
            ) -> Optional[frozenset]:
  """The slot a running worker is pinned to (an adopted one keeps its
  cores: the next worker must not be pinned beside it), or None.

  Args:
    pid: the worker's pid.
    slots: `core_slots` of this runner (None: no pinning).

  Returns:
    The slot equal to the worker's affinity, else None (unpinned, or pinned
    by a runner with other slots).
  """
  if not slots or pid <= 0:
    return None
  try:
    cores = frozenset(os.sched_getaffinity(pid))
  except OSError:  # It ended since.
    return None
  return cores if cores in slots else None


def fmt_cores(cores) -> str:
  """A core set as text: "0-3" or "2"."""
  c = sorted(cores)
  return f"{c[0]}-{c[-1]}" if len(c) > 1 else str(c[0])


def failure_reason(log: str, returncode: Optional[int] = None) -> str:
  """Why a worker ended without a result, for the runner's one line.

  Args:
    log: the worker's log file.
    returncode: its exit status (negative: the signal that killed it).

  Returns:
    "killed by SIGKILL ..." for a worker a signal ended (its last log line
    is then only where it was), else the log's last `error` line, else its
    last line, else "no output".
  """
  if returncode is not None and returncode < 0:
    try:
      name = signal.Signals(-returncode).name
    except ValueError:
      name = f"signal {-returncode}"
    hint = (" (often the out-of-memory killer: see dmesg)"
            if -returncode == signal.SIGKILL else "")
    return f"killed by {name}{hint}"
  tail = ""
  if os.path.exists(log):
    with open(log, encoding="utf-8", errors="replace") as f:
      lines = [ln.rstrip() for ln in f if ln.strip()]
    tail = next((ln for ln in reversed(lines) if ln.startswith("error")),
                lines[-1] if lines else "")
  return tail or "no output"
