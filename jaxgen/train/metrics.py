"""Metric writers: clu (TensorBoard + log) plus a machine-readable JSONL file.

`WORKDIR/metrics.jsonl` holds one JSON object per logged step; the scaling
harness and the experiment reports read it. On resume, lines past the restored
step (written by a run that died before its next checkpoint, and recomputed
identically now) are dropped so the file describes one consistent run. A run
that starts from scratch in a workdir with rows never deletes them: they are
rotated to `metrics.jsonl.1` (older rotations move up to `.2`, ...).

The writers follow clu's `MetricWriter` interface. TensorBoard events
(`config.tensorboard`) need TensorFlow, whose import costs seconds of every
run's start-up; without them nothing here imports it (nor clu's
`metric_writers`, which does).
"""

import json
import math
import os
import threading
from typing import Any, Mapping, Optional

from absl import logging
import etils.epath as epath
import jax
import numpy as np

from jaxgen import jsonl
from jaxgen.train import workdir as workdir_lib


class JsonlWriter:
  """A clu-style writer (`clu.metric_writers.MetricWriter`'s methods)
  appending `{"step": s, **scalars}` lines to a file.

  Local files are appended to. Object stores (gs://...) cannot append: the
  writer keeps the file's text and rewrites the whole object on `flush`
  (metrics files are small).
  """

  def __init__(self, path: str, append: Optional[bool] = None):
    """Opens (or creates) the file.

    Args:
      path: the metrics.jsonl path, local or e.g. gs://bucket/run/...
      append: append to the file (default: when the path is local).
    """
    self.path = epath.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._append = workdir_lib.is_local(path) if append is None else append
    self._file = None
    self._text, self._pending = "", []
    if self._append:
      self._file = self.path.open("a")
    elif self.path.exists():
      self._text = self.path.read_text()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {"step": int(step)}
    for k, v in scalars.items():
      row[k] = _to_json(v)
    line = json.dumps(row) + "\n"
    if self._file is not None:
      self._file.write(line)
    else:
      self._pending.append(line)

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_pointcloud(self, step, point_clouds, *, point_colors=None,
                       configs=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    if self._file is not None:
      self._file.flush()
    elif self._pending:
      self._text += "".join(self._pending)
      self._pending = []
      self.path.write_text(self._text)

  def close(self):
    self.flush()
    if self._file is not None:
      self._file.close()


def _to_json(v: Any) -> Any:
  if isinstance(v, str):
    return v
  v = float(np.asarray(v))
  return v if math.isfinite(v) else str(v)


def truncate_jsonl(path: str, last_step: int) -> int:
  """Keeps only rows with step <= last_step (the run resumes from there).

  Args:
    path: the metrics.jsonl file (missing is fine; local or remote).
    last_step: the step the run resumes from.

  Returns:
    The number of rows dropped.
  """
  path = epath.Path(path)
  if not path.exists():
    return 0
  keep, dropped = [], 0
  for line in path.read_text().splitlines(keepends=True):
    try:
      if json.loads(line)["step"] <= last_step:
        keep.append(line)
        continue
    except (ValueError, KeyError):
      pass
    dropped += 1
  if dropped:
    jsonl.write_atomic(path, "".join(keep))
  return dropped


def read_rows(path: str) -> list:
  """The rows of a metrics.jsonl file ([] if missing; torn lines skipped)."""
  return jsonl.read(path, missing_ok=True, skip_bad=True)


def rotate_jsonl(path: str) -> Optional[str]:
  """Moves a non-empty `path` to `path.1`, shifting older copies up.

  Args:
    path: the metrics.jsonl file of a run that starts from scratch.

  Returns:
    Where the earlier rows went, or None if there were none.
  """
  path = epath.Path(path)
  if not path.exists() or not path.read_text():
    return None
  copy = lambda i: path.parent / f"{path.name}.{i}"
  n = 1
  while copy(n).exists():
    n += 1
  for i in range(n, 1, -1):
    copy(i - 1).replace(copy(i))
  path.replace(copy(1))
  return str(copy(1))


class LogWriter(JsonlWriter):
  """Logs scalars as one INFO line per step (clu's `LoggingWriter` format);
  everything else is dropped."""

  def __init__(self):  # pylint: disable=super-init-not-called
    pass

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    values = ", ".join(f"{k}={_to_json(v)}" for k, v in sorted(
        scalars.items()))
    logging.info("[%d] %s", step, values)

  def flush(self):
    pass

  def close(self):
    pass


class MultiWriter:
  """Forwards every call to each writer (clu's `MultiWriter`, without
  importing clu's writers)."""

  def __init__(self, writers):
    self.writers = list(writers)

  def __getattr__(self, name):
    if name.startswith("_"):
      raise AttributeError(name)

    def call(*args, **kwargs):
      for w in self.writers:
        getattr(w, name)(*args, **kwargs)
    return call


def tensorboard_writer(workdir: str):
  """clu's TensorBoard + logging writer, with TensorFlow kept off the GPUs.

  Imports TensorFlow (seconds): only runs that write TensorBoard events
  call this.
  """
  os.environ.setdefault("CUDA_VISIBLE_DEVICES_FOR_TF", "")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # TensorFlow must not take accelerator memory from JAX.
  tf.config.set_visible_devices([], "GPU")
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  return metric_writers.create_default_writer(workdir, asynchronous=False)


class BackgroundWriter:
  """A writer built in a thread; calls before it is ready are queued.

  TensorFlow's import (seconds) then overlaps the run's first steps instead
  of delaying them. `flush` and `close` wait for the writer and replay the
  queue, so nothing is lost or reordered; an error building it surfaces at
  the first call after it happened.
  """

  def __init__(self, factory):
    self._writer, self._error, self._queue = None, None, []
    self._thread = threading.Thread(target=self._build, args=(factory,),
                                    name="tensorboard-writer", daemon=True)
    self._thread.start()

  def _build(self, factory):
    try:
      self._writer = factory()
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e

  def _ready(self, wait: bool):
    if wait:
      self._thread.join()
    elif self._thread.is_alive():
      return None
    if self._error is not None:
      raise self._error
    queue, self._queue = self._queue, []
    for name, args, kwargs in queue:
      getattr(self._writer, name)(*args, **kwargs)
    return self._writer

  def __getattr__(self, name):
    if name.startswith("_"):
      raise AttributeError(name)

    def call(*args, **kwargs):
      writer = self._ready(wait=name in ("flush", "close"))
      if writer is None:
        self._queue.append((name, args, kwargs))
      else:
        getattr(writer, name)(*args, **kwargs)
    return call


def create_writer(workdir: str, tensorboard: bool = True):
  """The run's writer: logging everywhere; on process 0 also metrics.jsonl
  and, if `tensorboard`, TensorBoard events (built in the background).

  Args:
    workdir: the run directory.
    tensorboard: write TensorBoard events (imports TensorFlow).

  Returns:
    A writer with clu's `MetricWriter` methods.
  """
  if jax.process_index() > 0:
    return LogWriter()
  first = (BackgroundWriter(lambda: tensorboard_writer(workdir))
           if tensorboard else LogWriter())
  return MultiWriter([first,
                      JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


def first_non_finite(metrics: Mapping[str, Any]) -> Optional[str]:
  """Name of the first metric (sorted) with a NaN/inf value, else None."""
  for k in sorted(metrics):
    v = np.asarray(metrics[k])
    if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
      return k
  return None
