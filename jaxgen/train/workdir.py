"""The run directory: checked writable before anything compiles, and locked.

One trainer per workdir: a second one would overwrite the first one's
checkpoints and metrics. `Lock` holds an exclusive `flock` on `WORKDIR/.lock`
(one lock file per process index, so the N processes of one multi-host job
never block each other, while a second job of any size is refused). The
lock dies with its process, so a stale lock file left by a killed run is
simply taken over; the file records the holder (host, pid, start time) for
the error message.
"""

import errno
import fcntl
import json
import os
import socket
import time
from typing import Optional

from absl import logging
import etils.epath as epath


def is_local(path: str) -> bool:
  """Whether `path` is on a local filesystem (not gs://, s3://, ...)."""
  return "://" not in str(path)


def prepare(workdir: str) -> None:
  """Creates `workdir` and checks that files can be written in it.

  Args:
    workdir: the run directory.

  Raises:
    ValueError: one line saying what is wrong and what to change.
  """
  if not workdir:
    raise ValueError("no --workdir given; pass a directory for checkpoints "
                     "and metrics.")
  if not is_local(workdir):
    # An object store (gs://...): create it and write a probe through epath.
    probe = epath.Path(workdir) / (
        f".write_test.{socket.gethostname()}.{os.getpid()}")
    try:
      probe.parent.mkdir(parents=True, exist_ok=True)
      probe.write_text("ok")
      probe.unlink()
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"workdir {workdir} is not writable: "
                       f"{str(e).splitlines()[0] if str(e) else e!r}; pass "
                       "a --workdir you can write to.") from None
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir {workdir} is a file, not a directory; pass "
                     "another --workdir.")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create workdir {workdir}: "
                     f"{e.strerror or e}; pass a --workdir you can write "
                     "to.") from None
  probe = os.path.join(
      workdir, f".write_test.{socket.gethostname()}.{os.getpid()}")
  try:
    with open(probe, "w", encoding="utf-8") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"workdir {workdir} is not writable: "
                     f"{e.strerror or e}; pass a --workdir you can write "
                     "to.") from None


def _describe(holder: str) -> str:
  try:
    h = json.loads(holder)
    return f"pid {h['pid']} on host {h['host']} (since {h['since']})"
  except (ValueError, KeyError, TypeError):
    return "another process"


class Lock:
  """Exclusive lock of a workdir for the lifetime of a run (context manager).
  """

  def __init__(self, workdir: str, process_index: int = 0):
    name = ".lock" if process_index == 0 else f".lock.{process_index}"
    self.path = os.path.join(workdir, name)
    self._fd: Optional[int] = None

  def __enter__(self) -> "Lock":
    if not is_local(self.path):
      logging.warning("Cannot lock %s (an object store has no locks): make "
                      "sure no other trainer uses this workdir.", self.path)
      return self
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
      os.close(fd)
      raise ValueError(
          f"workdir {os.path.dirname(self.path)} is in use by another trainer"
          f", {_describe(holder)}; wait for it to end or pass another "
          "--workdir.") from None
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        os.close(fd)
        raise
      logging.warning("Cannot lock %s (%s): make sure no other trainer uses "
                      "this workdir.", self.path, e.strerror)
    previous = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    if previous:
      logging.info("Took over the workdir lock of %s, which is no longer "
                   "running.", _describe(previous))
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                         "since": time.strftime("%Y-%m-%d %H:%M:%S")})
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      # Leave an empty file: a later run then has no holder to report.
      os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
