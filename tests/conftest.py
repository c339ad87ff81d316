"""Test setup: 8 fake CPU devices, forced before JAX initialises its backend."""

import os
import tempfile

from scaling import specs  # Imports no JAX.

# Must run before jax is imported anywhere in the test process. The
# compile-time settings of test sweeps apply to every test (see
# scaling.specs.CPU_FAST_COMPILE): these programs compile more than they run.
os.environ["XLA_FLAGS"] = " ".join(
    (os.environ.get("XLA_FLAGS", ""), specs.CPU_FAST_COMPILE,
     "--xla_force_host_platform_device_count=8")).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compile time dominates these small CPU tests; XLA's optimisations roughly
# double it and change no result the tests check (also for subprocesses).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Keep TensorFlow (imported by clu and tfds) off any accelerator and quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No host_malloc settings in the tests or the commands they start: they
# compile far more than they run, and one malloc arena makes XLA's compiles
# slower (tests/train/test_host_malloc.py turns them on where it tests them).
os.environ.setdefault("JAXGEN_MALLOC", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Commands the tests start (jaxgen.main, scaling.run workers) share one
# persistent compilation cache, outside the user's ~/.cache.
os.environ.setdefault("JAXGEN_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), "jaxgen_test_jax_cache"))
# And one decoded-split cache (dataset.in_memory_cache_dir="auto").
os.environ.setdefault("JAXGEN_DECODED_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), "jaxgen_test_decoded"))

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_threefry_partitionable", True)

# The test processes use that cache too: many tests train the same tiny
# configs, and a program compiled once is read back in every other test
# (and xdist worker) that builds it.
from jaxgen.train import compile_cache  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

compile_cache.enable(os.environ["JAXGEN_COMPILATION_CACHE_DIR"])

# The families register by import, as jaxgen.main does it.
from jaxgen import families  # noqa: E402,F401  pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
