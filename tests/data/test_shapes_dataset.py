"""Tests for the embedded `jaxgen_shapes` TFDS builder."""

import glob
import os
import sys
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

from jaxgen.data import shapes


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  # One directory for the whole session (every test module derives the same
  # path): `prepare` skips prepared configs, so each is generated once.
  path = str(tmp_path_factory.getbasetemp() / "tensorflow_datasets")
  shapes.prepare("image_16", path)
  return path


def _tiny(name="tiny", seed=0, num_frames=0):
  return shapes.ShapesConfig(name=name, image_size=16, num_frames=num_frames,
                             num_train=48, num_test=8, seed=seed)


def _record_bytes(data_dir, config_name):
  files = sorted(glob.glob(os.path.join(
      data_dir, shapes.NAME, config_name, "*", "*.array_record*")))
  assert [os.path.basename(f).split(".")[0] for f in files] == [
      "jaxgen_shapes-test", "jaxgen_shapes-train"]
  return [open(f, "rb").read() for f in files]


def test_configs_cover_sizes():
  names = {c.name for c in shapes.JaxgenShapes.BUILDER_CONFIGS}
  for size in shapes.IMAGE_SIZES:
    assert shapes.image_config_name(size) in names
  for size in shapes.VIDEO_SIZES:
    for frames in shapes.VIDEO_FRAMES:
      assert shapes.video_config_name(size, frames) in names
  # Registered under its TFDS name, so tfds.builder finds it by string.
  assert tfds.builder_cls(shapes.NAME) is shapes.JaxgenShapes


def test_render_is_deterministic_and_varied():
  image, label = shapes.render_image(3, "train", 7, 32)
  again, label_again = shapes.render_image(3, "train", 7, 32)
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image, again)
  assert label == label_again
  assert not np.array_equal(image, shapes.render_image(3, "test", 7, 32)[0])
  assert not np.array_equal(image, shapes.render_image(4, "train", 7, 32)[0])
  labels = {shapes.render_image(0, "train", i, 16)[1] for i in range(200)}
  assert labels == set(range(len(shapes.SHAPE_NAMES)))


def test_render_video_moves_over_fixed_background():
  video, label = shapes.render_video(0, "train", 1, 32, 8)
  assert video.shape == (8, 32, 32, 3) and video.dtype == np.uint8
  assert 0 <= label < len(shapes.SHAPE_NAMES)
  changed = np.any(video[1:] != video[:-1], axis=(1, 2, 3))
  assert changed.all()  # The shape moves every frame.
  # ...but most pixels (the background) stay put.
  assert (video[0] == video[-1]).all(-1).mean() > 0.5


def test_prepared_image_config(data_dir):
  builder = shapes.builder("image_16", data_dir)
  assert builder.is_prepared()
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert builder.info.splits["train"].num_examples == 8192
  assert builder.info.splits["test"].num_examples == 512
  source = tfds.data_source("jaxgen_shapes/image_16", split="train",
                            data_dir=data_dir, download=False)
  assert len(source) == 8192
  examples = [source[i] for i in range(0, 8192, 41)]
  for example in examples:
    assert example["image"].shape == (16, 16, 3)
    assert example["image"].dtype == np.uint8
  labels = {int(e["label"]) for e in examples}
  assert labels == set(range(len(shapes.SHAPE_NAMES)))


def test_prepared_video_config(tmp_path):
  config = _tiny("tiny_video", num_frames=8)
  shapes.prepare(config, str(tmp_path))
  source = shapes.builder(config, str(tmp_path)).as_data_source("test")
  assert len(source) == 8
  example = source[0]
  assert example["video"].shape == (8, 16, 16, 3)
  assert example["video"].dtype == np.uint8
  assert 0 <= example["label"] < len(shapes.SHAPE_NAMES)


def test_same_seed_same_bytes(tmp_path):
  first, second, other = (str(tmp_path / d) for d in ("a", "b", "c"))
  shapes.prepare(_tiny(), first)
  shapes.prepare(_tiny(), second)
  shapes.prepare(_tiny(seed=1), other)
  assert _record_bytes(first, "tiny") == _record_bytes(second, "tiny")
  assert _record_bytes(first, "tiny") != _record_bytes(other, "tiny")


def test_concurrent_prepare_is_serialised(tmp_path):
  errors = []

  def run():
    try:
      shapes.prepare(_tiny(), str(tmp_path))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  stdout = sys.stdout
  threads = [threading.Thread(target=run) for _ in range(2)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors
  # Each thread silenced stdout while preparing; it is back as it was.
  assert sys.stdout is stdout
  assert shapes.builder(_tiny(), str(tmp_path)).is_prepared()
  # Exactly one prepared version, no leftover temporary directories.
  assert os.listdir(tmp_path / shapes.NAME / "tiny") == ["1.0.0"]


def test_preparing_prints_nothing_to_stdout_and_no_tfds_noise(tmp_path, capfd):
  # A run's stdout is its result line: TFDS' "Downloading and preparing"
  # prints, its progress bars and its warnings about the folder being
  # written stay out of it (and out of stderr).
  shapes.prepare(_tiny("quiet"), str(tmp_path))
  out, err = capfd.readouterr()
  assert out == ""
  assert "Variant folder" not in err and "examples/s" not in err, err
  assert shapes.builder(_tiny("quiet"), str(tmp_path)).is_prepared()


@pytest.mark.parametrize("shown", [False, True])
def test_preparing_keeps_the_callers_progress_bar_setting(tmp_path, shown):
  # Bars off for the preparation, then as the caller had them (a caller
  # that turned them off must not get them back).
  seen = []
  real = shapes.JaxgenShapes.download_and_prepare

  def spy(self, *args, **kwargs):
    seen.append(tqdm_utils._active)  # pylint: disable=protected-access
    return real(self, *args, **kwargs)

  tfds.display_progress_bar(shown)
  try:
    with pytest.MonkeyPatch.context() as mp:
      mp.setattr(shapes.JaxgenShapes, "download_and_prepare", spy)
      shapes.prepare(_tiny(f"bars{int(shown)}"), str(tmp_path))
    assert seen == [False]
    assert tqdm_utils._active is shown  # pylint: disable=protected-access
  finally:
    tfds.enable_progress_bar()
