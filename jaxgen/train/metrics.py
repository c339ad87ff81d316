"""Metric writers: clu (TensorBoard + log) plus a machine-readable JSONL file.

`WORKDIR/metrics.jsonl` holds one JSON object per logged step; the scaling
harness and the experiment reports read it. On resume, lines past the restored
step (written by a run that died before its next checkpoint, and recomputed
identically now) are dropped so the file describes one consistent run. A run
that starts from scratch in a workdir with rows never deletes them: they are
rotated to `metrics.jsonl.1` (older rotations move up to `.2`, ...).
"""

import json
import math
import os
from typing import Any, Mapping, Optional

from clu import metric_writers
import jax
import numpy as np


class JsonlWriter(metric_writers.MetricWriter):
  """A clu writer appending `{"step": s, **scalars}` lines to a file."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {"step": int(step)}
    for k, v in scalars.items():
      row[k] = _to_json(v)
    self._file.write(json.dumps(row) + "\n")

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
    self._file.flush()

  def close(self):
    self._file.close()


def _to_json(v: Any) -> Any:
  if isinstance(v, str):
    return v
  v = float(np.asarray(v))
  return v if math.isfinite(v) else str(v)


def truncate_jsonl(path: str, last_step: int) -> int:
  """Keeps only rows with step <= last_step (the run resumes from there).

  Args:
    path: the metrics.jsonl file (missing is fine).
    last_step: the step the run resumes from.

  Returns:
    The number of rows dropped.
  """
  if not os.path.exists(path):
    return 0
  keep, dropped = [], 0
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        if json.loads(line)["step"] <= last_step:
          keep.append(line)
          continue
      except (ValueError, KeyError):
        pass
      dropped += 1
  if not dropped:
    return 0
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(keep)
  os.replace(tmp, path)
  return dropped


def read_rows(path: str) -> list:
  """The rows of a metrics.jsonl file ([] if missing; torn lines skipped)."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except ValueError:
        continue
  return rows


def rotate_jsonl(path: str) -> Optional[str]:
  """Moves a non-empty `path` to `path.1`, shifting older copies up.

  Args:
    path: the metrics.jsonl file of a run that starts from scratch.

  Returns:
    Where the earlier rows went, or None if there were none.
  """
  if not os.path.exists(path) or os.path.getsize(path) == 0:
    return None
  n = 1
  while os.path.exists(f"{path}.{n}"):
    n += 1
  for i in range(n, 1, -1):
    os.replace(f"{path}.{i - 1}", f"{path}.{i}")
  os.replace(path, f"{path}.1")
  return f"{path}.1"


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + logging + JSONL on process 0, logging only elsewhere."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(workdir, just_logging=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, asynchronous=False),
      JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
  ])


def first_non_finite(metrics: Mapping[str, Any]) -> Optional[str]:
  """Name of the first metric (sorted) with a NaN/inf value, else None."""
  for k in sorted(metrics):
    v = np.asarray(metrics[k])
    if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
      return k
  return None
