"""JSON-lines files (metrics.jsonl, results.jsonl), local or on object stores.

One reader and one appender for every JSONL file the project writes, both
through `etils.epath` so a `gs://` path works like a local one. Local files
are appended to and fsync'ed; an object store cannot append, so `append`
rewrites the object (these files are small: one row per eval or per run).
Kept free of JAX / TensorFlow imports: the scaling fits read results files
with it.
"""

import json
import os
import tempfile
from typing import Any, Dict, Iterable, List, Union

import etils.epath as epath

from jaxgen.train import workdir as workdir_lib


def read(path, *, missing_ok: bool = False,
         skip_bad: bool = False) -> List[Dict[str, Any]]:
  """The JSON objects of a JSON-lines file, one per non-blank line.

  Args:
    path: a .jsonl file, local or e.g. gs://bucket/sweep/results.jsonl.
    missing_ok: return [] instead of raising when the file does not exist.
    skip_bad: skip lines that are not JSON (a torn last line of a killed
      writer) instead of raising.

  Returns:
    The decoded rows, in file order.

  Raises:
    FileNotFoundError: the file is missing and not `missing_ok`.
    ValueError: a line that is not JSON (naming the file and line), unless
      `skip_bad`.
  """
  path = epath.Path(path)
  if missing_ok and not path.exists():
    return []
  rows = []
  for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(),
                                1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if not skip_bad:
        raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None
  return rows


def append(path, rows: Iterable[Dict[str, Any]]) -> None:
  """Appends rows durably (fsync'ed locally, a whole-object rewrite remotely).

  Args:
    path: the .jsonl file; it and its directory are created if missing.
    rows: JSON-serialisable dicts, one line each.
  """
  text = "".join(json.dumps(r) + "\n" for r in rows)
  if not text:
    return
  if workdir_lib.is_local(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    return
  path = epath.Path(path)
  old = path.read_text(encoding="utf-8") if path.exists() else ""
  if old and not old.endswith("\n"):
    old += "\n"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(old + text, encoding="utf-8")


def _umask() -> int:
  """The process umask, read without changing it where the OS allows."""
  try:
    # Linux: reading it from /proc leaves the umask alone (setting it to
    # read it back would briefly apply 0 to files other threads create).
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def write_atomic(path, content: Union[str, bytes]) -> None:
  """Writes a whole file so a reader never sees half of it.

  Locally through a temporary file of this writer's own (concurrent writers
  of one path each rename a complete file) and a rename; an object-store
  write is already all-or-nothing.

  Args:
    path: the file, local or remote.
    content: its new content (text is written as UTF-8).
  """
  path = epath.Path(path)
  data = content.encode("utf-8") if isinstance(content, str) else content
  path.parent.mkdir(parents=True, exist_ok=True)
  if not workdir_lib.is_local(path):
    path.write_bytes(data)
    return
  fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=path.name + ".",
                             suffix=".tmp")
  try:
    # mkstemp creates the file 0600; give it the mode a plain open() would
    # (0666 less the umask), so results are as readable as the PNGs beside
    # them.
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, str(path))
  finally:
    if os.path.exists(tmp):  # The write or the rename failed.
      os.remove(tmp)
