"""Tests of the malloc settings for XLA:CPU's temporary buffers."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# Runs a program whose temporary buffer (two live [4096, 4096] float32
# intermediates, 128 MB, behind optimization barriers) is beyond glibc's
# mmap threshold, and counts the minor page faults of each execution. With
# the settings the heap grows to its high-water mark over the first
# executions (an occasional later one still lands on fresh pages, so the
# median is compared); without them every execution faults its buffer in.
_SCRIPT = """
import json, resource, statistics
from jaxgen.train import host_malloc
applied = host_malloc.configure()
import jax, jax.numpy as jnp

@jax.jit
def f(x):
  a, b = jax.lax.optimization_barrier((jnp.sin(x), jnp.cos(x)))
  c, d = jax.lax.optimization_barrier((jnp.exp(a) * b, jnp.tanh(b) + a))
  return jnp.sum(c) + jnp.sum(d)

x = jnp.ones((4096, 4096)) * 1e-3
faults = []
for _ in range(40):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "backend": host_malloc.cpu_backend(),
                  "faults_per_run": statistics.median(faults[10:])}))
"""


def _run(script=_SCRIPT, **env):
  """Runs `script` in a fresh process; returns its last line's JSON."""
  out = subprocess.run(
      [sys.executable, "-c", script], cwd=ROOT, capture_output=True,
      text=True, check=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT, **env))
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_temporary_buffers_are_reused_instead_of_faulted_in_again():
  pages = 4096 * 4096 * 4 // 4096  # One [4096, 4096] float32 intermediate.
  on = _run(JAX_PLATFORMS="cpu", JAXGEN_MALLOC="1")
  off = _run(JAX_PLATFORMS="cpu", JAXGEN_MALLOC="0")
  assert on["applied"] and on["backend"] and not off["applied"]
  # Without the settings each execution faults its buffers in afresh.
  assert off["faults_per_run"] > pages
  assert on["faults_per_run"] < 0.05 * off["faults_per_run"]


# Frees a 3 GiB block at the top of the heap (never touched: no resident
# memory) and reports how far the program break moved back down.
_TRIM_SCRIPT = """
import ctypes, json
from jaxgen.train import host_malloc
applied = host_malloc.configure()
libc = ctypes.CDLL(None)
libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, (ctypes.c_ssize_t,)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
start = libc.sbrk(0)
block = libc.malloc(3 << 30)
grown = libc.sbrk(0)
libc.free(block)
print(json.dumps({"applied": applied, "grown": grown - start,
                  "trimmed": grown - libc.sbrk(0)}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_heap_top_is_never_trimmed_even_past_2_gib():
  # mallopt's largest positive trim threshold (2^31 - 1) still gave a
  # R3GAN `cifar10` step's 6.4 GB buffer back to the OS after every step.
  got = _run(_TRIM_SCRIPT, JAX_PLATFORMS="cpu", JAXGEN_MALLOC="1")
  assert got["applied"]
  assert got["grown"] >= 3 << 30  # Served from the heap, not an mmap.
  assert got["trimmed"] == 0


@pytest.mark.parametrize("platforms,malloc,applied", [
    ("cuda,cpu", "1", False),   # An accelerator run: not applied.
    ("tpu", "1", False),
    ("cpu", "0", False),        # Turned off.
    ("cpu", "1", True),
])
def test_only_cpu_runs_get_them(platforms, malloc, applied):
  # Decided from the configuration alone: no backend is started.
  out = subprocess.run(
      [sys.executable, "-c", "from jaxgen.train import host_malloc; "
       "print(host_malloc.cpu_backend(), host_malloc.configure())"],
      cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS=platforms,
               JAXGEN_MALLOC=malloc))
  backend, got = out.stdout.split()
  assert backend == str(platforms == "cpu") and got == str(applied)
