"""Inception features of image sets, sharded over the devices in batches.

  extractor = FeatureExtractor.from_file("inception_fid.npz")
  feats, logits = extractor(images)              # [-1, 1] floats or uint8
  feats, logits = extractor.of_batches(iterator, num=50_000)

The network's parameters are replicated and every batch is split over all
devices along its leading dimension (a 1-D "data" mesh, or the batch axes of
a mesh the caller gives, e.g. the trainer's). Batches are padded to a
multiple of the device count, so any number of images works.
"""

import sys
import time
from typing import Any, Callable, Iterable, Optional, Tuple

from absl import logging
import jax
import numpy as np

from jaxgen.eval import inception
from jaxgen.parallel import mesh as mesh_lib


# Names already warned about (once per image set, not per batch).
_WARNED_UNIT_RANGE = set()


def validate_images(images: np.ndarray, what: str = "images") -> None:
  """Checks images' layout and values without converting them.

  Args:
    images: [B, H, W, 3 or 1] uint8 (0..255) or floats in [-1, 1].
    what: how to name the images in errors.

  Raises:
    ValueError: one line for a wrong rank, channel count, NaN or inf
      values, or a value range.
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"{what} have shape {images.shape}; expected [N, H, W, "
                     "3] RGB (or 1-channel, repeated to RGB).")
  if images.dtype == np.uint8 or not images.size:
    return
  finite = np.concatenate([  # In chunks: a float set can be many GB.
      np.isfinite(images[i:i + 256].reshape(-1, images[0].size)).all(1)
      for i in range(0, len(images), 256)])
  if not finite.all():
    # NaN passed the range check (its comparisons are false) and became
    # NaN statistics, or black pixels once quantised.
    raise ValueError(f"{what}: {int(np.sum(~finite))} of {len(images)} "
                     "images hold NaN or inf values; drop them (a diverged "
                     "model or sampler?).")
  lo, hi = float(images.min()), float(images.max())
  if lo < -1.001 or hi > 1.001:
    raise ValueError(
        f"{what} range from {lo:.3g} to {hi:.3g}; expected floats in "
        "[-1, 1] (or uint8 0..255): scale with x / 127.5 - 1.")
  if lo >= 0 and len(images) > 1 and what not in _WARNED_UNIT_RANGE:
    # [0, 1] images pass the range check but are read as mid-grey to
    # white: the metrics would be wrong without any error.
    _WARNED_UNIT_RANGE.add(what)
    logging.warning("%s have no value below 0 (%.3g to %.3g): if they are "
                    "[0, 1] images, scale them with 2 * x - 1; the metrics "
                    "read floats as [-1, 1].", what, lo, hi)


def check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
  """Validates a batch (`validate_images`) and returns it as float32 in
  [-1, 1].

  Args:
    images: [B, H, W, 3] uint8 (0..255) or floats in [-1, 1].
    what: how to name the images in errors.

  Returns:
    float32 [B, H, W, 3] in [-1, 1].

  Raises:
    ValueError: one line for a wrong rank, channel count, NaN or inf
      values, or a value range.
  """
  images = np.asarray(images)
  validate_images(images, what)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 127.5 - 1.0
  else:
    images = images.astype(np.float32)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images


class Progress:
  """A one-line progress bar with rate and ETA on stderr."""

  def __init__(self, total: int, what: str, stream=None):
    self.total, self.what = total, what
    self.stream = stream or sys.stderr
    self.start = time.time()
    self.done = 0

  def update(self, n: int) -> None:
    self.done += n
    elapsed = time.time() - self.start
    rate = self.done / max(elapsed, 1e-9)
    eta = (self.total - self.done) / max(rate, 1e-9)
    self.stream.write(f"\r{self.what}: {self.done}/{self.total} "
                      f"({rate:.1f}/s, ETA {eta:.0f}s)   ")
    self.stream.flush()

  def close(self) -> None:
    self.stream.write("\n")
    self.stream.flush()


class StreamExtractor:
  """Features and logits of images in batches of `batch_size`, in memory or
  from a stream; subclasses give `batch_size` and `_batch(images)` (one
  forward pass on float32 [B, H, W, 3] in [-1, 1])."""

  batch_size: int

  def _batch(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    raise NotImplementedError

  def __call__(self, images, what: str = "images"
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Features and logits of an in-memory set of images.

    Args:
      images: [N, H, W, 3] uint8 or floats in [-1, 1].
      what: how to name the images in errors.

    Returns:
      (features [N, D], logits [N, K]); Inception: D = 2048, K = 1008.
    """
    images = check_images(images, what)
    return self.of_batches(
        (images[i:i + self.batch_size]
         for i in range(0, len(images), self.batch_size)), len(images), what,
        progress=False)

  def of_batches(self, batches: Iterable[np.ndarray], num: int,
                 what: str = "images", progress: bool = True,
                 transform: Optional[Callable[[Any], np.ndarray]] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Features of the first `num` images of a stream of batches.

    Args:
      batches: iterable of image batches (or of items `transform` turns
        into batches, e.g. pipeline dicts).
      num: images to embed; fewer is an error.
      what: name for errors and the progress bar.
      progress: print a progress bar with ETA on stderr.
      transform: applied to each item to get [B, H, W, 3] images.

    Returns:
      (features [num, D], logits [num, K]); Inception: float32, D = 2048,
      K = 1008.

    Raises:
      ValueError: the stream ends before `num` images.
    """
    feats, logits, have = [], [], 0
    bar = Progress(num, what) if progress else None
    pending = np.zeros((0,), np.float32)
    for item in batches:
      images = check_images(transform(item) if transform else item, what)
      pending = images if not len(pending) else np.concatenate(
          [pending, images])
      while len(pending) >= self.batch_size or (
          len(pending) and have + len(pending) >= num):
        take = min(self.batch_size, num - have, len(pending))
        f, l = self._batch(pending[:take])
        pending = pending[take:]
        feats.append(f)
        logits.append(l)
        have += take
        if bar:
          bar.update(take)
        if have >= num:
          break
      if have >= num:
        break
    if bar:
      bar.close()
    if have < num:
      have += len(pending)  # The stream ended inside a batch.
      raise ValueError(f"{what}: only {have} images, {num} requested; pass "
                       f"--num={have} or a larger set.")
    return np.concatenate(feats), np.concatenate(logits)


class FeatureExtractor(StreamExtractor):
  """FID Inception features of image batches on all (or the given) devices."""

  def __init__(self, params: Any, weights_hash: str = "",
               mesh: Optional[jax.sharding.Mesh] = None,
               batch_size: int = 200):
    """Places the weights and compiles nothing yet.

    Args:
      params: the network's params tree (`inception.load_weights`).
      weights_hash: recorded in statistics files.
      mesh: mesh whose batch axes split the batch (default: all devices on
        one "data" axis).
      batch_size: images per device step (rounded up to the device count).
    """
    if mesh is None:
      mesh = jax.make_mesh((jax.device_count(), 1, 1),
                           ("data", "fsdp", "tensor"),
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)
    self.mesh = mesh
    self.weights_hash = weights_hash
    self.dp = mesh_lib.data_parallel_size(mesh)
    self.batch_size = -(-int(batch_size) // self.dp) * self.dp
    self.params = jax.device_put(params, mesh_lib.replicated(mesh))
    model = inception.InceptionV3()
    self._in = mesh_lib.batch_sharding(mesh, 4)
    # With several processes every one holds the whole batch (drawn or
    # read on each) and wants every feature back: split in, replicated out
    # (a split output spans other processes' devices).
    self._multi = jax.process_count() > 1
    self._ran_full = False  # Whether the full batch's program exists.
    out = (mesh_lib.replicated(mesh) if self._multi
           else mesh_lib.batch_sharding(mesh, 2))
    self._apply = jax.jit(
        lambda p, x: model.apply({"params": p}, x),
        in_shardings=(mesh_lib.replicated(mesh), self._in),
        out_shardings=(out, out))

  @classmethod
  def from_file(cls, path: str, **kwargs) -> "FeatureExtractor":
    """Loads `jaxgen.eval.convert`'s .npz (one-line ValueError if bad)."""
    params, digest = inception.load_weights(path)
    return cls(params, digest, **kwargs)

  def _batch(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    n = len(images)
    # A set's last, partial batch is padded to the full batch once a full
    # one has run: its program is compiled, and a new shape would cost a
    # whole Inception compile (longer than one batch's compute). A set
    # smaller than one batch keeps its own size (one compile either way).
    # Every image's features depend on that image only (eval mode).
    pad = (self.batch_size - n if self._ran_full and n < self.batch_size
           else -n % self.dp)
    if pad:
      images = np.concatenate([images, np.repeat(images[-1:], pad, 0)])
    if self._multi:
      # jit refuses host arrays for a split input across processes.
      images = jax.make_array_from_callback(images.shape, self._in,
                                            lambda index: images[index])
    feats, logits = self._apply(self.params, images)
    self._ran_full |= len(images) == self.batch_size
    return np.asarray(feats)[:n], np.asarray(logits)[:n]
