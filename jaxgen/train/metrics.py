"""Metric writers: clu (TensorBoard + log) plus a machine-readable JSONL file.

`WORKDIR/metrics.jsonl` holds one JSON object per logged step; the scaling
harness and the experiment reports read it. On resume, lines past the restored
step (written by a run that died before its next checkpoint, and recomputed
identically now) are dropped so the file describes one consistent run. A run
that starts from scratch in a workdir with rows never deletes them: they are
rotated to `metrics.jsonl.1` (older rotations move up to `.2`, ...).

The writers follow clu's `MetricWriter` interface without importing clu's
writers, which import TensorFlow (seconds of every run's start-up):
TensorBoard events are written by `jaxgen.train.tensorboard`.
"""

import json
import math
import os
from typing import Any, Mapping, Optional

from absl import logging
import etils.epath as epath
import jax
import numpy as np

from jaxgen import jsonl
from jaxgen.train import workdir as workdir_lib


class WriterBase:
  """clu's `MetricWriter` methods, each doing nothing: writers override what
  they record (jaxgen logs scalars, images and hyperparameters)."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    pass

  def write_images(self, step, images):
    pass

  def write_texts(self, step, texts):
    pass

  def write_hparams(self, hparams):
    pass

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_pointcloud(self, step, point_clouds, *, point_colors=None,
                       configs=None):
    pass

  def replace_row(self, step: int, scalars: Mapping[str, Any]):
    """Writes the row of `step` in place of any written from `step` on,
    where the writer can (a row written again with more fields replaces
    its first version); others write it as a new one. jaxgen's own
    method."""
    self.write_scalars(step, scalars)

  def flush(self):
    pass

  def close(self):
    pass


class JsonlWriter(WriterBase):
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
    line = _line(step, scalars)
    if self._file is not None:
      self._file.write(line)
    else:
      self._pending.append(line)

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

  def replace_row(self, step: int, scalars: Mapping[str, Any]):
    """Drops the rows from `step` on and writes this one in a single atomic
    rewrite: a kill leaves the old rows or the new one, never neither (a
    row completed on rerun was dropped first, and lost if the evaluation
    completing it was stopped)."""
    self.flush()
    line = _line(step, scalars)
    keep = lambda text: "".join(  # noqa: E731
        ln for ln in text.splitlines(keepends=True) if _step_of(ln) < step)
    if self._file is None:
      self._text = keep(self._text) + line
      self.path.write_text(self._text)
      return
    self._file.close()
    try:
      jsonl.write_atomic(self.path, keep(
          self.path.read_text() if self.path.exists() else "") + line)
    finally:
      # Open again even when the rewrite failed (a full disk): the error
      # then reaches the user as it is, not as a closed file's at close().
      self._file = self.path.open("a")


def _line(step: int, scalars: Mapping[str, Any]) -> str:
  """One metrics.jsonl line: {"step": step, **scalars}."""
  row = {"step": int(step)}
  for k, v in scalars.items():
    row[k] = _to_json(v)
  return json.dumps(row) + "\n"


def _step_of(line: str) -> float:
  """A metrics.jsonl line's step (inf for a line that is not a row)."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return math.inf


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
    if _step_of(line) <= last_step:
      keep.append(line)
    else:
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


class LogWriter(WriterBase):
  """Logs scalars as one INFO line per step (clu's `LoggingWriter` format);
  everything else is dropped."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    values = ", ".join(f"{k}={_short(_to_json(v))}" for k, v in sorted(
        scalars.items()))
    logging.info("[%d] %s", step, values)


def _short(v: Any) -> str:
  """4 significant digits for the log line (metrics.jsonl keeps all)."""
  if isinstance(v, float):
    # Counters (examples_seen, a step) stay whole numbers.
    return str(int(v)) if v.is_integer() and abs(v) < 1e7 else f"{v:.4g}"
  return str(v)


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


def record_only(writer, step: int, scalars: Mapping[str, Any]) -> None:
  """Writes a row to metrics.jsonl alone: not the log or TensorBoard.

  For the last step's row saved before its (long) evaluation: the
  evaluated row replaces it, and is the one logged.

  Args:
    writer: a `create_writer` writer.
    step: the step.
    scalars: the row.
  """
  for w in getattr(writer, "writers", ()):
    if isinstance(w, JsonlWriter):
      w.write_scalars(step, scalars)


def create_writer(workdir: str, tensorboard: bool = True,
                  purge_step: Optional[int] = None):
  """The run's writer: logging everywhere; on process 0 also metrics.jsonl
  and, if `tensorboard`, TensorBoard events (`jaxgen.train.tensorboard`).

  Args:
    workdir: the run directory.
    tensorboard: write TensorBoard events to `workdir`.
    purge_step: a resumed run's first step (TensorBoard hides the earlier
      attempt's events from there on, as metrics.jsonl drops its rows).

  Returns:
    A writer with clu's `MetricWriter` methods.
  """
  if jax.process_index() > 0:
    return LogWriter()
  writers = [LogWriter(), JsonlWriter(os.path.join(workdir, "metrics.jsonl"))]
  if tensorboard:
    from jaxgen.train import tensorboard as tensorboard_lib  # pylint: disable=g-import-not-at-top  (it subclasses WriterBase)
    writers.append(tensorboard_lib.TensorBoardWriter(workdir, purge_step))
  return MultiWriter(writers)


def first_non_finite(metrics: Mapping[str, Any]) -> Optional[str]:
  """Name of the first metric (sorted) with a NaN/inf value, else None."""
  for k in sorted(metrics):
    v = np.asarray(metrics[k])
    if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
      return k
  return None
