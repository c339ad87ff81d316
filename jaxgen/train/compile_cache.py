"""The persistent XLA compilation cache, on by default for every entry point.

A scaling sweep starts hundreds of short runs whose programs repeat: the same
size at another budget compiles the same train step (the run length is a
runtime value), and a rerun or a resumed point compiles everything again.
With the cache, those compiles become reads from disk.

  compile_cache.enable()          # ~/.cache/jaxgen/xla, see default_dir()
  compile_cache.enable("/tmp/c")  # a directory of one's own
  compile_cache.enable("none")    # off

`enable` must run before the first compilation of the process (JAX decides
once whether the cache is used). An unwritable directory is a one-line
warning and no cache, never an error: the cache only saves time. Entries
are never evicted (JAX's size-bounded mode cannot read a directory written
without it); deleting the directory at any time is safe.
"""

import os
import sys
import tempfile
import threading
from typing import Dict, Optional

from jaxgen import paths

# Overrides the default directory (and is what the sweep passes to points).
ENV_VAR = "JAXGEN_COMPILATION_CACHE_DIR"
# Values of the directory that turn the cache off.
OFF = ("", "none", "off", "false", "0")

_ZERO = {"requests": 0, "hits": 0}
_counts = dict(_ZERO)
_lock = threading.Lock()
# The same counts per thread: JAX reports a compilation's events on the
# thread that compiles, so concurrent compiles (jaxgen.bench_suite's
# pre-compiling) can each tell their own hits from the others'.
_thread_counts = threading.local()
_listening = False


def define_flag() -> None:
  """Defines --compilation_cache (once per process: several command-line
  modules use it and may be imported together)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "compilation_cache" not in flags.FLAGS:
    flags.DEFINE_string(
        "compilation_cache", None,
        "Persistent XLA compilation cache directory, shared by runs "
        f"(default: ${ENV_VAR} or ~/.cache/jaxgen/xla; 'none' = off).")


def default_dir() -> str:
  """$JAXGEN_COMPILATION_CACHE_DIR, else JAX's own $JAX_COMPILATION_CACHE_DIR,
  else the user cache's jaxgen/xla (~/.cache/jaxgen/xla)."""
  for var in (ENV_VAR, "JAX_COMPILATION_CACHE_DIR"):
    if os.environ.get(var) is not None:
      return os.environ[var]
  return paths.user_cache_dir("xla")


def _writable(directory: str) -> Optional[str]:
  """None if files can be created in `directory` (made if missing), else
  the reason they cannot."""
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe"):
      pass
  except OSError as e:
    return e.strerror or str(e)
  return None


def _on_event(event: str, **kwargs) -> None:
  del kwargs
  key = {"/jax/compilation_cache/compile_requests_use_cache": "requests",
         "/jax/compilation_cache/cache_hits": "hits"}.get(event)
  if key:
    with _lock:
      _counts[key] += 1
    mine = getattr(_thread_counts, "counts", None)
    if mine is None:
      mine = _thread_counts.counts = dict(_ZERO)
    mine[key] += 1


def enable(directory: Optional[str] = None) -> Optional[str]:
  """Turns on the persistent compilation cache for this process.

  Every program is cached, however quick to compile: on CPU the small ones
  are most of a short run's start-up.

  Args:
    directory: the cache directory; None means `default_dir()`; one of
      `OFF` ("none", "off", ...) turns the cache off.

  Returns:
    The directory in use, or None when the cache is off (asked, or the
    directory is not writable: then one warning line goes to stderr).
  """
  global _listening
  import jax  # pylint: disable=g-import-not-at-top  (command lines import
  # this module before parsing flags; JAX loads only when the cache is set)
  directory = default_dir() if directory is None else directory
  if directory.strip().lower() in OFF:
    return None
  directory = os.path.abspath(os.path.expanduser(directory))
  problem = _writable(directory)
  if problem:
    print(f"warning: compilation cache off: {directory} is not writable "
          f"({problem}); pass --compilation_cache=DIR (or set {ENV_VAR}) to "
          "use another directory.", file=sys.stderr)
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  if not _listening:
    jax.monitoring.register_event_listener(_on_event)
    _listening = True
  return directory


def counts(this_thread: bool = False) -> Dict[str, int]:
  """Compilations of this process through the cache so far.

  Args:
    this_thread: count only the compilations of the calling thread.

  Returns:
    {"requests": programs looked up, "hits": found in the cache,
    "misses": compiled (and written)}; all 0 while the cache is off.
  """
  if this_thread:
    out = dict(getattr(_thread_counts, "counts", None) or _ZERO)
  else:
    with _lock:
      out = dict(_counts)
  out["misses"] = out["requests"] - out["hits"]
  return out
