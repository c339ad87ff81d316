"""XLA flag sets of the sweep specs: only flags the installed XLA knows."""

import os
import subprocess
import sys

from scaling import specs


def test_fusion_emitter_flag_only_for_jaxlib_before_0_11():
  old = specs.cpu_fast_compile_flags((0, 10, 2))
  assert old.startswith("--xla_cpu_use_fusion_emitters=false ")
  for version in ((0, 11, 2), (0, 12, 0), (1, 0)):
    flags = specs.cpu_fast_compile_flags(version)
    assert "fusion_emitters" not in flags
    assert flags == old.replace("--xla_cpu_use_fusion_emitters=false ", "")


def test_installed_xla_accepts_the_flag_sets():
  # An unknown flag in XLA_FLAGS aborts the process at backend start.
  flags = " ".join((specs.CPU_FAST_COMPILE, specs.CPU_ONE_THREAD))
  out = subprocess.run(
      [sys.executable, "-c",
       "import jax.numpy as jnp; print(float((jnp.ones(3) * 2).sum()))"],
      capture_output=True, text=True, timeout=120, check=False,
      env=dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0 and out.stdout.strip() == "6.0", out.stderr[-800:]
