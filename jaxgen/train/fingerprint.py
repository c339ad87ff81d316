"""Fingerprints of a train state: a position-weighted uint32 sum per array.

Saved with each checkpoint and recomputed on restore, they find a
checkpoint whose bytes changed (truncated, bit-flipped, partly rewritten)
even where the files still load. Small states held whole by this process
are summed with numpy, others with one device program; both give the same
numbers.
"""

from typing import Any, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np


def _words(x: jax.Array) -> jax.Array:
  """The array's bits as uint32 words (one per element, two for 64-bit)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = x.dtype.itemsize
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
  unsigned = {4: jnp.uint32, 2: jnp.uint16, 1: jnp.uint8}[size]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


# Odd multiplier of the position weights (Knuth's multiplicative hash).
_WEIGHT_MULTIPLIER = 2654435761


def _position_weights(shape: Tuple[int, ...]) -> jax.Array:
  """Odd weights w(i) = 2·i·K + 1 of the row-major index i of each word.

  Each weight is odd, hence invertible mod 2^32: any change of a single word
  changes the weighted sum. The index is built from per-axis iotas (no
  reshape), so a sharded array is reduced where it lives.
  """
  idx = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    iota = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
    idx = idx + iota * jnp.uint32(stride % 2**32)
    stride *= shape[axis]
  return idx * jnp.uint32(_WEIGHT_MULTIPLIER) * jnp.uint32(2) + jnp.uint32(1)


@jax.jit
def _summarise(state: Any) -> Tuple[List[jax.Array], jax.Array]:
  """(sum_i words[i] * w(i) mod 2^32 per leaf, all floating leaves finite)."""
  leaves = jax.tree.leaves(state)
  # One weight array per distinct shape: a state repeats its shapes (the
  # optimizer moments and the EMA mirror the parameters), and building the
  # weights per leaf made this program 4x longer to trace and compile.
  weights = {}
  prints = []
  for x in leaves:
    w = _words(x)
    if w.shape not in weights:
      weights[w.shape] = _position_weights(w.shape)
    prints.append(jnp.sum(w * weights[w.shape], dtype=jnp.uint32))
  finite = jnp.array(True)
  for x in leaves:
    if jnp.issubdtype(x.dtype, jnp.floating):
      finite = finite & jnp.all(jnp.isfinite(x))
  return prints, finite


# States up to this size held whole by this process are fingerprinted with
# numpy: the device program (one reduction per leaf, hundreds of kernels)
# takes 2.6 s to compile and 0.4 s to read back from the compilation cache
# for the 0.5M-parameter `tiny` U-ViT's state; numpy takes milliseconds.
# Both give the same numbers (tests/train/test_checkpoint_faults.py).
HOST_FINGERPRINT_BYTES = 64 << 20


def _host_words(x: np.ndarray) -> np.ndarray:
  """`_words` in numpy: the same uint32 words, in the same order."""
  if x.dtype == np.bool_:
    return x.astype(np.uint32)
  size = x.dtype.itemsize
  if size == 8:  # Little-endian halves, as XLA's bitcast to u32[..., 2].
    return np.ascontiguousarray(x).view(np.uint32).reshape(x.shape + (2,))
  unsigned = {4: np.uint32, 2: np.uint16, 1: np.uint8}[size]
  return np.ascontiguousarray(x).view(unsigned).astype(np.uint32)


def _host_summary(leaves: List[np.ndarray]) -> Tuple[List[int], bool]:
  """`_summarise` in numpy (uint32 arithmetic wraps mod 2^32 alike)."""
  weights = {}
  prints = []
  finite = True
  for x in leaves:
    w = _host_words(x)
    if w.size not in weights:
      idx = np.arange(w.size, dtype=np.uint32)
      weights[w.size] = idx * np.uint32(_WEIGHT_MULTIPLIER) * np.uint32(2) + 1
    prints.append(int(np.sum(w.ravel() * weights[w.size], dtype=np.uint32)))
    if jnp.issubdtype(x.dtype, jnp.floating):
      finite = finite and bool(np.all(np.isfinite(x)))
  return prints, finite


def _held_whole(leaves: List[Any]) -> bool:
  """Whether every leaf is a small enough array this process holds whole."""
  total = 0
  for x in leaves:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return False
    if not jnp.issubdtype(x.dtype, jax.dtypes.prng_key):  # Keys: 2 words.
      total += x.size * x.dtype.itemsize
  return total <= HOST_FINGERPRINT_BYTES


def fingerprint(state: Any) -> Tuple[List[int], bool]:
  """Per-leaf checksums of a (possibly sharded) pytree and whether it is
  finite.

  Small states held whole by this process are summed with numpy (no
  program to compile); others on device, where each shard is reduced where
  it lives. The two give identical checksums.

  Args:
    state: a pytree of jax arrays.

  Returns:
    ([uint32 checksum per leaf, in `jax.tree.leaves` order], all floating
    leaves finite).
  """
  leaves = jax.tree.leaves(state)
  if _held_whole(leaves):
    leaves = [jax.random.key_data(x) if jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x for x in leaves]
    return _host_summary([np.asarray(x) for x in jax.device_get(leaves)])
  prints, finite = jax.device_get(_summarise(state))
  return [int(p) for p in prints], bool(finite)
