"""Where jaxgen keeps files: its own between runs (the user cache), and the
output files and folders a command is about to write."""

import contextlib
import os
import tempfile
from typing import List, Tuple

import etils.epath as epath


def user_cache_dir(*parts: str) -> str:
  """`$XDG_CACHE_HOME/jaxgen/<parts>`, by default `~/.cache/jaxgen/<parts>`.

  Args:
    *parts: path components below the jaxgen cache directory.

  Returns:
    The path (not created).
  """
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jaxgen", *parts)


def prepare_output(path: str, flag: str = "--out",
                   suffix: str = "") -> None:
  """Creates an output file's folder and checks it can be written there.

  For commands that work long before they write (training a network,
  converting weights): a bad path is reported before that work, not after.

  Args:
    path: the file to write (local or an object store).
    flag: its flag, for the message.
    suffix: the ending the file must have ("" for any): the commands that
      read it back tell file kinds by their ending.

  Raises:
    ValueError: one line saying what to change.
  """
  if suffix and not path.endswith(suffix):
    raise ValueError(f"{flag}={path} does not end in {suffix}; the commands "
                     f"that read it take {suffix} files: pass "
                     f"{flag}={path}{suffix}.")
  try:
    epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
  except Exception as e:  # pylint: disable=broad-except
    # OSError locally; object stores raise their own errors.
    raise ValueError(f"cannot create the folder of {flag}={path}: "
                     f"{getattr(e, 'strerror', None) or e}; pass a {flag} "
                     "you can write to.") from None
  if "://" in path:
    return  # Object stores have no cheap local permission check.
  if os.path.isdir(path):
    raise ValueError(f"{flag}={path} is a folder; pass a file name.")
  if not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
    raise ValueError(f"{flag}={path} is not writable: permission denied; "
                     f"pass a {flag} you can write to.")


def check_output_dir(path: str, flag: str = "--out") -> None:
  """Refuses an output folder that could not be created or written, before
  any work (nothing is created).

  Args:
    path: the folder (it and its parents may not exist yet).
    flag: its flag, for the message.

  Raises:
    ValueError: one line saying what to change.
  """
  probe = os.path.abspath(path)
  while not os.path.exists(probe) and os.path.dirname(probe) != probe:
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    if probe == os.path.abspath(path):
      raise ValueError(f"{flag}={path} is a file, not a folder; pass a "
                       f"folder.")
    raise ValueError(f"{flag}={path} cannot be created: {probe} is a file; "
                     f"pass another {flag}.")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise ValueError(f"{flag}={path} is not writable ({probe}: permission "
                     f"denied); pass a {flag} you can write to.")


def probe_output_dir(path: str, flag: str = "--out") -> None:
  """Creates an output folder and writes a probe file in it, before work.

  For commands whose work comes before any file is written (a fit's
  bootstrap): permission bits cannot tell everything (root ignores them,
  immutable or read-only-mounted folders refuse anyway), a write can.

  Args:
    path: the folder (local; object stores are not probed).
    flag: its flag, for the message.

  Raises:
    ValueError: one line saying what to change.
  """
  if "://" in path:
    return  # Object stores: created on write, no local check applies.
  check_output_dir(path, flag)
  try:
    os.makedirs(path, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=path, prefix=".write_probe")
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"{flag}={path} is not writable ({e.strerror or e}); "
                     f"pass a {flag} you can write to.") from None


def missing_folders(path: str) -> List[str]:
  """The folders creating `path` would create, innermost first ([] for an
  object store or an existing folder): what `remove_empty` may undo."""
  created = []
  if "://" not in path:
    folder = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
      created.append(folder)
      folder = os.path.dirname(folder)
  return created


def remove_empty(created: List[str], ignore: Tuple[str, ...] = ()) -> None:
  """Removes folders a failed command created, innermost first, while they
  hold nothing (but files named in `ignore`, e.g. its own lock).

  Args:
    created: `missing_folders` of the path, taken before it was created.
    ignore: file names removed with the folder that holds only them.
  """
  for folder in created:
    try:
      names = os.listdir(folder)
      if any(n not in ignore for n in names):
        return  # Written results stay.
      for name in names:
        os.remove(os.path.join(folder, name))
      os.rmdir(folder)
    except OSError:
      return


@contextlib.contextmanager
def probed_output_dir(path: str, flag: str = "--out"):
  """`probe_output_dir` around a command's work: the folders it created
  are removed again (while still empty) when the work fails, so a failed
  fit leaves no empty --out behind.

  Args:
    path: the folder.
    flag: its flag, for the message.

  Yields:
    None, once the folder exists and is writable.

  Raises:
    ValueError: one line saying what to change (before the work).
  """
  created = missing_folders(path)
  probe_output_dir(path, flag)
  try:
    yield
  except BaseException:
    remove_empty(created)
    raise
