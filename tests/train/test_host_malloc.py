"""Tests of the malloc settings for XLA:CPU's temporary buffers."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# Runs a program whose temporary buffer (~200 MB: five live [4096, 4096]
# float32 intermediates) is beyond glibc's mmap threshold, and counts the
# minor page faults of its later executions.
_SCRIPT = """
import json, resource, sys
from jaxgen.train import host_malloc
applied = host_malloc.configure()
import jax, jax.numpy as jnp

@jax.jit
def f(x):
  a = jnp.sin(x); b = jnp.cos(x); c = a @ b; d = jnp.exp(-c * c)
  return jnp.sum(d @ a + c) + jnp.sum(b)

x = jnp.ones((4096, 4096)) * 1e-3
f(x).block_until_ready()
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  f(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
print(json.dumps({"applied": applied, "backend": host_malloc.cpu_backend(),
                  "faults_per_run": faults}))
"""


def _run(**env):
  out = subprocess.run(
      [sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True,
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
