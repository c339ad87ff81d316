"""The in-memory batch path: small datasets batched with numpy, not grain.

At the smallest rungs of a sweep (16 px, ~10k parameters) a step takes ~15
ms, and grain's per-example Python (map, random_map, batch, threads) costs
half as much again. A split that fits in memory is decoded and preprocessed
once, as batches first need its examples (`Examples`); every batch is then
one gather, one vectorised flip and one scale.

Same semantics as the grain path (`jaxgen.data.pipeline`): the same
examples in the same order (grain's own index shuffle, per epoch, from the
same seed), the same per-process rows of each global batch, and the same
iterator state ({"next_index": examples this process has read}), so a run
checkpointed on one path resumes on the other at the same batch. Only the
flips are drawn differently: per global batch with numpy rather than per
example with grain's generator pool (still independent of the process
count and reproducible on resume).

A split decoded in full is also written to a disk cache
(`dataset.in_memory_cache_dir`), so that the next process (the next point
of a sweep, a rerun) reads it back instead of decoding it again. Its key
covers the stored files (names, sizes, modification times), the
preprocessing settings and code, and numpy's version; sources that cannot
name their files (arrays, folders) are not cached. Each write prunes the
cache to `dataset.in_memory_cache_max_gb`, least recently used files first
(a read marks its file used).
"""

import collections
import hashlib
import inspect
import io
import os
import threading
import time
import zipfile
from typing import Any, Dict, Optional, Tuple

from absl import logging
import grain
import numpy as np

from jaxgen import jsonl
from jaxgen import paths
from jaxgen.data import preprocess

# Decoded splits kept by key: evaluation reopens its split every time.
_CACHE: "collections.OrderedDict[Tuple, Examples]" = (
    collections.OrderedDict())
_CACHE_SIZE = 4
_LOCK = threading.Lock()


def nbytes(num_examples: int, size: int, channels: int,
           num_frames: Optional[int], float_pixels: bool) -> int:
  """Bytes of a preprocessed split held in memory."""
  per = size * size * channels * (num_frames or 1) * (4 if float_pixels
                                                       else 1)
  return num_examples * per


class Examples:
  """A split's preprocessed examples, decoded on first use.

  The arrays are allocated for the whole split up front; an example is read
  from the source and preprocessed (deterministically: centre crop and
  resize, no flip) the first time a batch needs it, a batch's missing
  examples in one `__getitems__` call. The first epoch thus costs what a
  grain pass costs, spread over its batches, and nothing delays the first
  step; later epochs are pure numpy.
  """

  def __init__(self, source: Any, transform: preprocess.Preprocess,
               disk_path: Optional[str] = None, cache_max_gb: float = 0.0):
    """Creates the (empty, or read from `disk_path`) split.

    Args:
      source: `jaxgen.data.sources.Source`.
      transform: the pipeline's `Preprocess`.
      disk_path: the split's file in the disk cache (read if present,
        written once every example is decoded); None: no disk cache.
      cache_max_gb: size cap of the disk cache, applied after the write
        (`prune`); 0: none.
    """
    self.source, self.transform = source, transform
    self.key = transform.pixel_key
    self.size = len(source.data)
    self.pixels: Optional[np.ndarray] = None
    self.labels = np.zeros((self.size,), np.int32)
    self.filled = np.zeros((self.size,), bool)
    self._lock = threading.Lock()
    self.disk_path = disk_path
    self._cache_max_gb = cache_max_gb
    self.from_disk = bool(disk_path) and self._read(disk_path)

  def take(self, index: np.ndarray) -> Dict[str, np.ndarray]:
    """{pixel_key: pixels[index], "label": labels[index]}.

    Args:
      index: int array of example indices.

    Returns:
      The examples, preprocessed (uint8 or float pixels, int32 labels).
    """
    with self._lock:
      missing = np.unique(index[~self.filled[index]])
      if missing.size:
        self._fill(missing)
    return {self.key: self.pixels[index], "label": self.labels[index]}

  def _fill(self, indices: np.ndarray) -> None:
    data = self.source.data
    getitems = getattr(data, "__getitems__", None)
    indices = [int(i) for i in indices]
    examples = getitems(indices) if getitems else [data[i] for i in indices]
    for i, example in zip(indices, examples):
      out = self.transform(example)
      value = out[self.key]
      if self.pixels is None:
        self.pixels = np.empty((self.size,) + value.shape, value.dtype)
      self.pixels[i] = value
      self.labels[i] = out["label"]
    self.filled[indices] = True
    if self.disk_path and not self.from_disk and self.filled.all():
      self._write(self.disk_path)

  def _read(self, path: str) -> bool:
    """Takes every example from a cache file; False if there is none."""
    try:
      with np.load(path, allow_pickle=False) as f:
        pixels, labels = f["pixels"], f["labels"]
    except (FileNotFoundError, NotADirectoryError):  # Not written yet.
      return False
    except (OSError, ValueError, KeyError, EOFError,
            zipfile.BadZipFile) as e:  # Unreadable (cut short): decode again.
      logging.warning("Decoded-split cache %s is unreadable (%s); decoding "
                      "the split again.", path, e)
      return False
    if len(pixels) != self.size or len(labels) != self.size:
      return False
    self.pixels, self.labels = pixels, labels.astype(np.int32)
    self.filled[:] = True
    try:
      os.utime(path)  # Used now: pruned after the ones unused longer.
    except OSError:  # A cache shared read-only: it is not pruned here.
      pass
    return True

  def _write(self, path: str) -> None:
    """Writes the decoded split atomically (`jsonl.write_atomic`: a reader
    never sees a partial file); a failure is one warning."""
    buffer = io.BytesIO()
    np.savez(buffer, pixels=self.pixels, labels=self.labels)
    try:
      jsonl.write_atomic(path, buffer.getvalue())
    except OSError as e:
      logging.warning("Cannot write the decoded-split cache in %s (%s); the "
                      "next run decodes the split again.",
                      os.path.dirname(path), e.strerror or e)
    else:
      try:
        prune(os.path.dirname(path), self._cache_max_gb, keep=path)
      except OSError as e:  # A listing that fails (NFS): the run goes on.
        logging.warning("Cannot prune the decoded-split cache in %s (%s).",
                        os.path.dirname(path), e.strerror or e)
    self.disk_path = None  # One attempt.


# Age past which a temporary cache file is a killed writer's.
_STALE_TMP_S = 24 * 3600


def prune(directory: str, max_gb: float, keep: str = "") -> int:
  """Deletes the least recently used decoded splits until `directory` holds
  at most `max_gb` of them.

  Recency is the modification time, which a read refreshes (atime is not
  kept on many mounts). Another process reading a file deleted here keeps
  its open copy; one opening it later decodes the split again. Temporary
  files of writers killed mid-write (`<key>.npz.*.tmp`, a day old) go
  first, whatever the cap.

  Args:
    directory: the decoded-split cache.
    max_gb: the cap in GB (1e9 bytes); 0: no cap.
    keep: a file never deleted (the one just written, even if bigger).

  Returns:
    How many files were deleted.
  """
  if not max_gb:
    return 0
  entries, deleted = [], 0
  stale = time.time() - _STALE_TMP_S
  for name in os.listdir(directory):
    path = os.path.join(directory, name)
    is_tmp = ".npz." in name and name.endswith(".tmp")
    if not (name.endswith(".npz") or is_tmp):
      continue
    try:
      st = os.stat(path)
      if is_tmp:
        # A write takes seconds: a day-old one's writer is gone.
        if st.st_mtime < stale:
          os.remove(path)
          deleted += 1
        continue
    except OSError:  # Pruned by another process meanwhile.
      continue
    entries.append((st.st_mtime_ns, path, st.st_size))
  total = sum(size for _, _, size in entries)
  for _, path, size in sorted(entries):
    if total <= max_gb * 1e9:
      break
    if os.path.basename(path) == os.path.basename(keep):
      continue
    try:
      os.remove(path)
    except FileNotFoundError:
      pass
    except OSError as e:
      logging.warning("Cannot prune the decoded-split cache in %s (%s).",
                      directory, e.strerror or e)
      break
    total -= size
    deleted += 1
  if deleted:
    logging.info("Decoded-split cache: deleted %d file(s) (the least "
                 "recently used, to stay under dataset.in_memory_cache_max_gb"
                 "=%g, and killed writers' temporary ones).", deleted, max_gb)
  return deleted


ENV_VAR = "JAXGEN_DECODED_CACHE_DIR"


def cache_dir(dataset_config: Any) -> str:
  """The decoded-split cache directory `dataset.in_memory_cache_dir` names
  ("auto": $JAXGEN_DECODED_CACHE_DIR, else ~/.cache/jaxgen/decoded; "":
  none)."""
  value = dataset_config.get("in_memory_cache_dir", "auto")
  if value != "auto":
    return value
  if os.environ.get(ENV_VAR) is not None:
    return os.environ[ENV_VAR]
  return paths.user_cache_dir("decoded")


def disk_path(cache_dir: str, source: Any,
              transform: preprocess.Preprocess) -> Optional[str]:
  """The split's file in the decoded-split cache, or None if not cached.

  Args:
    cache_dir: the cache directory ("" or None: no disk cache).
    source: the split's `Source`; its `identity()` names the stored files
      (None: the source cannot be cached).
    transform: the preprocessing applied to every example.

  Returns:
    `<cache_dir>/<sha256 of what the decoded values depend on>.npz`.
  """
  if not cache_dir:
    return None
  identity = source.identity()
  if not identity:
    return None
  settings = dict(sorted(vars(transform).items()))
  digest = hashlib.sha256("\n".join([
      identity, repr(settings), inspect.getsource(preprocess),
      np.__version__]).encode()).hexdigest()
  return os.path.join(cache_dir, digest[:32] + ".npz")


def examples(source: Any, transform: preprocess.Preprocess,
             key: Optional[Tuple] = None,
             cache_dir: Optional[str] = None,
             cache_max_gb: float = 0.0) -> Examples:
  """The split's `Examples`, shared by every iterator of the same `key`.

  Args:
    source: `jaxgen.data.sources.Source`.
    transform: the pipeline's `Preprocess`.
    key: identifies the split and its preprocessing; None: not shared.
    cache_dir: the decoded-split disk cache ("" or None: none).
    cache_max_gb: its size cap (`prune`); 0: none.

  Returns:
    `Examples` (decoded so far by earlier iterators of the same key, or
    read from the disk cache).
  """
  with _LOCK:
    if key is not None and key in _CACHE:
      _CACHE.move_to_end(key)
      return _CACHE[key]
    found = Examples(source, transform,
                     disk_path(cache_dir, source, transform), cache_max_gb)
    if key is not None:
      _CACHE[key] = found
      while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
  return found


class InMemoryIterator(grain.DatasetIterator):
  """This process's batches of an in-memory split (see module docstring).

  A grain `DatasetIterator` without parents, so grain's orbax handler saves
  and restores its state like the grain pipeline's.
  """

  def __init__(self, data: Examples, *, pixel_key: str,
               seed: int, shuffle: bool, repeat: bool, random_flip: bool,
               process_index: int, process_count: int, batch_size: int):
    """Creates the iterator, positioned at the first batch.

    Args:
      data: the split's `Examples`.
      pixel_key: "image" or "video".
      seed: the shuffle and flip seed (the pipeline's).
      shuffle: a fresh permutation per epoch (training).
      repeat: loop over the data forever.
      random_flip: mirror left-right with probability 1/2.
      process_index: this process.
      process_count: processes reading the global batch.
      batch_size: this process's rows per batch.
    """
    super().__init__()
    self._data, self._key = data, pixel_key
    self._n = data.size
    self._seed, self._shuffle, self._repeat = seed, shuffle, repeat
    self._flip = random_flip
    self._p, self._b = process_index, batch_size
    self._global = batch_size * process_count
    # Whole global batches per pass, as grain's _ProcessRows reads them.
    self._batches = self._n // self._global
    self._order_epoch, self._order = None, None
    self._next = 0  # Examples of this process read so far.

  def get_state(self) -> Dict[str, Any]:
    return {"next_index": self._next}

  def set_state(self, state: Dict[str, Any]) -> None:
    self._next = int(state["next_index"])

  def _epoch_order(self, epoch: int) -> np.ndarray:
    """The example order of one epoch: grain's index shuffle of it."""
    if self._order_epoch != epoch:
      if self._shuffle:
        # The same shuffle, seed and epoch folding as the grain pipeline:
        # only the indices are computed, no example is read.
        ds = grain.MapDataset.range(self._n).seed(self._seed).shuffle()
        ds = ds.repeat()
        base = epoch * self._n
        self._order = np.fromiter((ds[base + i] for i in range(self._n)),
                                  np.int64, self._n)
      else:
        self._order = np.arange(self._n)
      self._order_epoch = epoch
    return self._order

  def __next__(self) -> Dict[str, np.ndarray]:
    g = self._next // self._b  # The global batch.
    if not self._repeat and g >= self._batches:
      raise StopIteration
    # Global positions of this process's rows, in the repeated dataset.
    start = g * self._global + self._p * self._b
    positions = np.arange(start, start + self._b)
    epochs, within = np.divmod(positions, self._n)
    index = np.empty(self._b, np.int64)
    for epoch in np.unique(epochs):
      rows = epochs == epoch
      index[rows] = self._epoch_order(int(epoch))[within[rows]]
    batch = self._data.take(index)
    pixels = batch[self._key]
    if self._flip:
      # One draw per global batch, sliced per process: the flips do not
      # depend on the process count.
      rng = np.random.default_rng([self._seed, g])
      flips = rng.random(self._global)[self._p * self._b:
                                       (self._p + 1) * self._b] < 0.5
      pixels = np.where(flips.reshape((-1,) + (1,) * (pixels.ndim - 1)),
                        pixels[..., ::-1, :], pixels)
    self._next += self._b
    return preprocess.to_model_input({self._key: pixels,
                                      "label": batch["label"]})
