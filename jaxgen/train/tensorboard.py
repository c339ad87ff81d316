"""TensorBoard event files without TensorFlow.

clu's `SummaryWriter` writes through `tf.summary`, and importing TensorFlow
costs ~3 s of every run's start-up and ~1 s of its exit. The same event
files are TensorBoard protocol buffers in TFRecord framing, which
TensorBoard's `RecordWriter` (the one PyTorch's writer uses) writes without
TensorFlow; this wraps it in clu's `MetricWriter` methods for what the
trainer logs: scalars, images and the run's hyperparameters (as a text
table). Local files are appended to; on an object store (gs://...) the file
is rewritten whole at each flush, like metrics.jsonl.
"""

import io
import os
import socket
import time
from typing import Any, Mapping, Optional

import etils.epath as epath
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.proto import tensor_pb2
from tensorboard.compat.proto import tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.summary.writer import record_writer

from jaxgen.train import metrics
from jaxgen.train import workdir as workdir_lib

_TEXT = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))


def _png(image: np.ndarray) -> bytes:
  """PNG bytes of an HWC image (uint8, or floats in [0, 1])."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  out = io.BytesIO()
  Image.fromarray(image).save(out, format="PNG")
  return out.getvalue()


def _text_value(tag: str, text: str) -> summary_pb2.Summary.Value:
  tensor = tensor_pb2.TensorProto(
      dtype=types_pb2.DT_STRING, string_val=[text.encode("utf-8")],
      tensor_shape=tensor_shape_pb2.TensorShapeProto())
  return summary_pb2.Summary.Value(tag=tag, metadata=_TEXT, tensor=tensor)


class TensorBoardWriter(metrics.WriterBase):
  """Writes scalars, images and text to `logdir`'s event file.

  Has clu's `MetricWriter` methods; summaries, videos, audio, histograms and
  point clouds (which jaxgen does not log) are dropped.
  """

  def __init__(self, logdir: str, purge_step: Optional[int] = None):
    """Opens a new event file in `logdir`.

    Args:
      logdir: the run directory.
      purge_step: a resumed run's first step: TensorBoard then hides what
        earlier event files logged from this step on (the rows of the
        attempt after its last checkpoint, logged again now), as PyTorch's
        `purge_step` does with a SessionLog START.
    """
    name = (f"events.out.tfevents.{int(time.time()):010d}."
            f"{socket.gethostname()}.{os.getpid()}.v2")
    self.path = epath.Path(logdir) / name
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._remote = not workdir_lib.is_local(str(logdir))
    self._buffer = io.BytesIO()
    # Records go to the file (local) or to the buffer, written whole on
    # flush (object stores cannot append).
    sink = self._buffer if self._remote else self.path.open("ab")
    self._records = record_writer.RecordWriter(sink)
    self._records.write(event_pb2.Event(
        wall_time=time.time(), file_version="brain.Event:2"
    ).SerializeToString())
    if purge_step is not None:
      self._records.write(event_pb2.Event(
          wall_time=time.time(), step=int(purge_step),
          session_log=event_pb2.SessionLog(
              status=event_pb2.SessionLog.START)).SerializeToString())

  def _add(self, step: int, values) -> None:
    self._records.write(event_pb2.Event(
        wall_time=time.time(), step=int(step),
        summary=summary_pb2.Summary(value=list(values))).SerializeToString())

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._add(step, [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                     for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """Each value is [N, H, W, C]; image i of tag t goes to "t" (N = 1) or
    "t/i"."""
    values = []
    for tag, batch in images.items():
      batch = np.asarray(batch)
      for i, image in enumerate(batch):
        values.append(summary_pb2.Summary.Value(
            tag=tag if len(batch) == 1 else f"{tag}/{i}",
            image=summary_pb2.Summary.Image(
                height=image.shape[0], width=image.shape[1],
                colorspace=image.shape[2] if image.ndim == 3 else 1,
                encoded_image_string=_png(image))))
    self._add(step, values)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    self._add(step, [_text_value(k, v) for k, v in texts.items()])

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """The hyperparameters as a markdown table under the "hparams" tag."""
    rows = ["| name | value |", "|---|---|"] + [
        f"| {k} | {str(v).replace(chr(10), '<br>')} |"
        for k, v in sorted(hparams.items())]
    self.write_texts(0, {"hparams": "\n".join(rows)})

  def flush(self) -> None:
    if self._remote:
      self.path.write_bytes(self._buffer.getvalue())
    else:
      self._records.flush()

  def close(self) -> None:
    self.flush()
    if not self._remote:
      self._records.close()
