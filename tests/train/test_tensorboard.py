"""TensorBoard events written without TensorFlow, read back by TensorBoard."""

import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from jaxgen.train import tensorboard


def test_scalars_images_and_hparams_read_back(tmp_path):
  w = tensorboard.TensorBoardWriter(str(tmp_path))
  w.write_hparams({"batch_size": 32, "model": "a\nb"})
  w.write_scalars(1, {"loss": 0.5, "lr": np.float32(1e-3)})
  w.write_scalars(2, {"loss": 0.25})
  rng = np.random.default_rng(0)
  grid = rng.integers(0, 256, (1, 12, 10, 3), dtype=np.uint8)
  w.write_images(2, {"samples": grid})
  w.write_images(3, {"pair": rng.random((2, 4, 4, 1))})
  w.close()
  acc = event_accumulator.EventAccumulator(
      str(tmp_path), size_guidance={event_accumulator.IMAGES: 0})
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 0.5),
                                                               (2, 0.25)]
  np.testing.assert_allclose(acc.Scalars("lr")[0].value, 1e-3, rtol=1e-6)
  (image,) = acc.Images("samples")
  assert (image.step, image.height, image.width) == (2, 12, 10)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
  np.testing.assert_array_equal(decoded, grid[0])
  assert {t for t in acc.Tags()["images"]} == {"samples", "pair/0", "pair/1"}
  (text,) = acc.Tensors("hparams")
  table = text.tensor_proto.string_val[0].decode()
  assert "| batch_size | 32 |" in table and "| model | a<br>b |" in table


def test_object_store_file_is_rewritten_whole_on_flush(tmp_path, monkeypatch):
  """gs:// cannot append: the events are written whole at every flush."""
  monkeypatch.setattr(tensorboard.workdir_lib, "is_local", lambda p: False)
  w = tensorboard.TensorBoardWriter(str(tmp_path))
  w.write_scalars(1, {"loss": 1.0})
  w.flush()
  w.write_scalars(2, {"loss": 2.0})
  w.close()
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  assert [e.value for e in acc.Scalars("loss")] == [1.0, 2.0]
  assert len(list(tmp_path.iterdir())) == 1


def test_a_resumed_run_hides_what_the_attempt_before_logged_past_it(
    tmp_path, monkeypatch):
  # Killed after logging steps 4 and 5 with checkpoint 3: metrics.jsonl
  # drops those rows and the rerun logs them again; TensorBoard showed both.
  first = tensorboard.TensorBoardWriter(str(tmp_path))
  for step in range(1, 6):
    first.write_scalars(step, {"loss": float(step)})
  first.close()
  # A later event file (named by the time in seconds).
  monkeypatch.setattr(tensorboard.time, "time", lambda: 4e9)
  again = tensorboard.TensorBoardWriter(str(tmp_path), purge_step=4)
  for step in (4, 5, 6):
    again.write_scalars(step, {"loss": 10.0 * step})
  again.close()
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars("loss")] == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]
