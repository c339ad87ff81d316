"""glibc malloc settings that let XLA:CPU reuse its temporary buffers.

XLA:CPU takes each execution's temporary buffer (every intermediate of the
program: 238 MB for the `tiny` U-ViT train step, 41 MB for two width-64
transformer blocks) from malloc and frees it when the execution ends.
glibc serves an allocation above its mmap threshold (at most 32 MiB) or
larger than a thread arena (64 MiB) with a fresh `mmap` and returns it with
`munmap`, so every step page-faults its whole temporary buffer in again:
58k minor faults per `tiny` U-ViT step, 20-25% of its time on one core
(470-500 -> 372-383 ms; experiments/performance/report.md).

`configure()` keeps such memory in malloc's heap instead: one arena (so the
buffer is not stranded in a worker thread's size-limited arena), no
mmap-backed chunks, and a trim threshold of -1, so the heap top is never
trimmed (the largest positive threshold, 2^31 - 1, still gave R3GAN
`cifar10`'s 6.4 GB step buffer back after every step, and the next step
faulted it in again). The costs: XLA's compiles are slower with one arena
(the `tiny` train step 7.7 -> 9.5 s), and memory the process frees is kept
for reuse rather than given back to the OS, so the resident size stays at
its peak. Long runs gain, compile-bound ones (the test suite) do not. It
is applied only where XLA's buffers live in host memory (the CPU backend),
and `JAXGEN_MALLOC=0` turns it off.
"""

import ctypes
import importlib.util
import os
import platform

ENV_VAR = "JAXGEN_MALLOC"
# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
             (_M_TRIM_THRESHOLD, -1), (_M_TOP_PAD, 256 << 20))
# Packages through which JAX reaches an accelerator; with none of them
# installed (and no platform forced) the backend can only be the CPU.
_ACCELERATOR_PLUGINS = ("jax_plugins", "jax_cuda12_plugin",
                        "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")


def cpu_backend() -> bool:
  """Whether JAX will run on the CPU, decided without starting a backend.

  Returns:
    True when `JAX_PLATFORMS` / `jax_platforms` names only `cpu`, or names
    nothing and no accelerator plugin is installed.
  """
  import jax  # pylint: disable=g-import-not-at-top
  platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
  names = [p.strip() for p in platforms.split(",") if p.strip()]
  if names:
    return names == ["cpu"]
  return not any(importlib.util.find_spec(m) for m in _ACCELERATOR_PLUGINS)


def configure() -> bool:
  """Applies the malloc settings when the run is on the CPU backend.

  Call it first thing in a process, before JAX starts its backend: threads
  that already allocated keep the arena they have.

  Returns:
    Whether the settings were applied (False: turned off by
    `JAXGEN_MALLOC=0`, an accelerator backend, or a C library that is not
    glibc).
  """
  if os.environ.get(ENV_VAR, "1").strip() in ("0", "false", "off"):
    return False
  if not cpu_backend():
    return False
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  return all(mallopt(param, value) == 1 for param, value in _SETTINGS)
