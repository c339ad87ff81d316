"""Tests for dataset specs, config validation, folder, arrays and latents
sources."""

import errno
import json
import os
import shutil

from array_record.python import array_record_module
import numpy as np
from PIL import Image
import pytest

from jaxgen.data import config as config_lib
from jaxgen.data import folders
from jaxgen.data import pipeline
from jaxgen.data import sources


def _config(**overrides):
  config = config_lib.default_dataset_config()
  config.update(overrides)
  return config


def _build(config, *, batch=4, index=0, count=1, **kwargs):
  return pipeline.build_input(config, global_batch_size=batch, seed=0,
                              process_index=index, process_count=count,
                              **kwargs)


def _write_png(path, rng, height, width):
  pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(path)


def test_parse_spec():
  assert config_lib.parse_spec("jaxgen_shapes") == config_lib.Spec(
      "jaxgen_shapes", "jaxgen_shapes")
  assert config_lib.parse_spec("tfds:imagenet_resized/32x32:train[:90%]") == (
      config_lib.Spec("tfds", "imagenet_resized/32x32", "train[:90%]"))
  assert config_lib.parse_spec("tfds:mnist") == config_lib.Spec(
      "tfds", "mnist")
  assert config_lib.parse_spec("folder:/a/b") == config_lib.Spec(
      "folder", "/a/b")


@pytest.mark.parametrize("name", ["imagenet", "tfds:", "folder:", "arrays:x",
                                  "tfds", "shapes:32"])
def test_bad_spec_lists_choices(name):
  with pytest.raises(ValueError, match="jaxgen_shapes") as error:
    config_lib.validate_dataset_config(_config(name=name))
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("overrides,kwargs,match", [
    ({}, {"global_batch_size": 10, "process_count": 4}, "multiple"),
    ({}, {"global_batch_size": 0}, "multiple"),
    ({"image_size": 2048}, {}, "16...1024"),
    ({"image_size": 8}, {}, "16...1024"),
    ({"name": "jaxgen_shapes_video", "image_size": 128}, {}, "16...64"),
    ({"name": "jaxgen_shapes_video", "num_frames": 32}, {}, "num_frames"),
    ({"num_frames": -1}, {}, "num_frames"),
    ({"random_crop_scale": 0.5}, {}, "random_crop_scale"),
])
def test_validation_errors(overrides, kwargs, match):
  with pytest.raises(ValueError, match=match) as error:
    config_lib.validate_dataset_config(_config(**overrides), **kwargs)
  assert "\n" not in str(error.value)


def test_default_config_is_valid():
  config = _config()
  spec = config_lib.validate_dataset_config(config, global_batch_size=64,
                                            process_count=8)
  assert spec.scheme == "jaxgen_shapes"
  for field in ("name", "image_size", "data_dir", "split", "eval_split",
                "random_crop", "random_flip", "num_frames"):
    assert field in config


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  config = _config(name="tfds:mnist", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="not prepared.*tfds build mnist") as e:
    _build(config)
  assert "\n" not in str(e.value)
  # TFDS's own messages end "Here are 10 BuilderConfigs whose name closely
  # match:" with the list on later lines (cut off) or none at all.
  for name, match in (
      ("tfds:no_such_dataset", "Dataset no_such_dataset not found"),
      ("tfds:mnistt", "mnistt not found. Did you mean 'mnist'"),
      ("tfds:jaxgen_shapes/image_7",
       r"it has no config 'image_7'.*; its configs: image_16, image_32, "),
      ("tfds:jaxgen_shapes/image_33:test",
       r"no config 'image_33' \(did you mean 'image_32'"),
      ("tfds:mnist/foo", "it has no configs; name it 'mnist' alone.")):
    with pytest.raises(ValueError, match=match) as e:
      _build(_config(name=name, data_dir=str(tmp_path)))
    assert "\n" not in str(e.value) and "closely match" not in str(e.value)


def test_folder_with_class_subfolders(tmp_path):
  rng = np.random.default_rng(0)
  for name, count in (("cat", 3), ("dog", 5)):
    (tmp_path / name).mkdir()
    for i in range(count):
      # Odd, non-square sizes: the pipeline resizes and centre-crops.
      _write_png(tmp_path / name / f"{i}.png", rng, 20 + i, 30)
  (tmp_path / "empty").mkdir()
  config = _config(name=f"folder:{tmp_path}", image_size=16,
                   random_crop=True)
  iterator, info = _build(config, batch=4)
  assert (info.num_examples, info.num_classes, info.image_size) == (8, 2, 16)
  batches = [next(iterator) for _ in range(4)]
  labels = np.concatenate([b["label"] for b in batches])
  assert set(labels) == {0, 1}
  for batch in batches:
    assert batch["image"].shape == (4, 16, 16, 3)
    assert batch["image"].dtype == np.float32
  iterator, _ = _build(config, batch=8, train=False, split="train")
  np.testing.assert_array_equal(next(iterator)["label"], [0] * 3 + [1] * 5)


def test_flat_folder_is_unlabeled(tmp_path):
  rng = np.random.default_rng(1)
  for i in range(4):
    _write_png(tmp_path / f"{i}.jpg", rng, 16, 16)
  iterator, info = _build(_config(name=f"folder:{tmp_path}", image_size=16))
  assert info.num_classes == 0
  np.testing.assert_array_equal(next(iterator)["label"], np.zeros(4))


def test_folder_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    _build(_config(name=f"folder:{tmp_path / 'missing'}"))
  with pytest.raises(ValueError, match="has no"):
    _build(_config(name=f"folder:{tmp_path}"))


def test_arrays_uint8_resized():
  images = np.random.default_rng(0).integers(0, 256, (12, 20, 20, 3),
                                             dtype=np.uint8)
  iterator, info = _build(_config(name="arrays", image_size=16), batch=4,
                          arrays={"image": images, "label": np.arange(12) % 3})
  assert (info.num_classes, info.image_size, info.channels) == (3, 16, 3)
  assert next(iterator)["image"].shape == (4, 16, 16, 3)


def test_arrays_float_latents_pass_through():
  latents = np.random.default_rng(0).normal(size=(8, 4, 4, 6)).astype(
      np.float32) * 3
  config = _config(name="arrays", random_flip=False)
  iterator, info = _build(config, arrays={"image": latents}, train=False)
  assert (info.image_size, info.channels, info.num_classes) == (4, 6, 0)
  batch = next(iterator)
  np.testing.assert_array_equal(batch["image"], latents[:4])
  with pytest.raises(ValueError, match="random_crop"):
    _build(_config(name="arrays", random_crop=True), arrays={"image": latents})


def test_arrays_video():
  video = np.zeros((8, 3, 16, 16, 3), np.uint8)
  iterator, info = _build(_config(name="arrays", image_size=16),
                          arrays={"video": video})
  assert info.kind == "video" and info.num_frames == 3
  assert next(iterator)["video"].shape == (4, 3, 16, 16, 3)
  iterator, info = _build(_config(name="arrays", image_size=8, num_frames=2),
                          arrays={"video": video})
  assert info.num_frames == 2
  assert next(iterator)["video"].shape == (4, 2, 8, 8, 3)
  with pytest.raises(ValueError, match="exceeds the 3 frames"):
    _build(_config(name="arrays", num_frames=4), arrays={"video": video})
  with pytest.raises(ValueError, match="holds images"):
    _build(_config(name="arrays", num_frames=4),
           arrays={"image": video[:, 0]})


@pytest.mark.parametrize("arrays,match", [
    (None, "needs build_input"),
    ({"pixels": np.zeros((4, 8, 8, 3), np.uint8)}, "'image' or 'video'"),
    ({"image": np.zeros((4, 8, 8), np.uint8)}, "rank 4"),
    ({"image": np.zeros((4, 8, 8, 3), np.int32)}, "uint8 or float"),
    ({"image": np.zeros((4, 8, 8, 3), np.uint8), "label": np.zeros(3, int)},
     "label"),
])
def test_arrays_errors(arrays, match):
  with pytest.raises(ValueError, match=match):
    _build(_config(name="arrays"), arrays=arrays)


def test_too_few_examples_for_a_batch():
  arrays = {"image": np.zeros((6, 16, 16, 3), np.uint8)}
  with pytest.raises(ValueError, match="fewer than one global batch"):
    _build(_config(name="arrays"), batch=8, count=2, arrays=arrays)


def _folder_with_bad_files(tmp_path):
  rng = np.random.default_rng(2)
  for i in range(8):
    _write_png(tmp_path / f"{i}.png", rng, 16, 16)
  (tmp_path / "3.png").write_bytes(rng.bytes(500))  # Not an image at all.
  good = (tmp_path / "5.png").read_bytes()
  (tmp_path / "5.png").write_bytes(good[:len(good) // 2])  # Truncated.
  return [str(tmp_path / "3.png"), str(tmp_path / "5.png")]


def test_an_unreadable_image_is_an_error_naming_it(tmp_path):
  bad = _folder_with_bad_files(tmp_path)
  config = _config(name=f"folder:{tmp_path}", image_size=16,
                   skip_bad_files=False)
  iterator, _ = _build(config, batch=8, train=False, split="train")
  with pytest.raises(ValueError, match=f"cannot decode image {bad[0]}: .*"
                     "skip_bad_files=true") as e:
    next(iterator)
  assert "\n" not in str(e.value)


def test_unreadable_images_are_skipped_and_counted(tmp_path, caplog):
  bad = _folder_with_bad_files(tmp_path)
  config = _config(name=f"folder:{tmp_path}", image_size=16)
  assert config.skip_bad_files  # The default.
  iterator, info = _build(config, batch=4)
  batches = [next(iterator) for _ in range(6)]  # Three epochs.
  assert all(b["image"].shape == (4, 16, 16, 3) for b in batches)
  assert sorted(info.skipped_files()) == bad
  # One warning per file, however often it is read.
  warned = [r for r in caplog.records if "Skipping unreadable" in r.message]
  assert len(warned) == 2
  # The next readable file takes a bad one's place: 3 -> 4, 5 -> 6.
  iterator, _ = _build(config, batch=8, train=False, split="train")
  images = next(iterator)["image"]
  np.testing.assert_array_equal(images[3], images[4])
  np.testing.assert_array_equal(images[5], images[6])


def test_storage_errors_are_raised_not_skipped(tmp_path, monkeypatch):
  # EIO (a failing disk) or ESTALE (a lost NFS mount) on one file was taken
  # for a bad image: skipped, remembered as bad, and during an outage every
  # file of the folder was tried in turn.
  _folder_with_bad_files(tmp_path)
  config = _config(name=f"folder:{tmp_path}", image_size=16)
  iterator, _ = _build(config, batch=8, train=False, split="train")
  tried = []

  def failing(path, channels=3):
    tried.append(path)
    raise OSError(errno.EIO, "Input/output error", str(path))
  monkeypatch.setattr(folders, "decode_image", failing)
  with pytest.raises(OSError, match="Input/output error") as e:
    next(iterator)
  # Each read (grain reads several at once) failed once: no file was tried
  # in another's place.
  assert e.value.errno == errno.EIO and len(tried) == len(set(tried))
  # One file's own OS errors (gone, not readable) stay skippable.
  assert not folders.storage_error(FileNotFoundError(errno.ENOENT, "gone"))
  assert not folders.storage_error(OSError("image file is truncated"))
  assert folders.storage_error(OSError(errno.ESTALE, "Stale file handle"))


def write_latent_split(root, latents, scaling_factor, producer):
  """A finished split as `jaxgen.autoencoders.encode` writes one: one shard
  (every example of class 1) and latents.json with `producer`."""
  os.makedirs(root)
  writer = array_record_module.ArrayRecordWriter(
      os.path.join(root, "latents-00000.array_record"), "group_size:1")
  for z in latents:
    writer.write(sources.encode_latent_record(z, 1))
  writer.close()
  with open(os.path.join(root, sources.LATENTS_META), "w",
            encoding="utf-8") as f:
    json.dump({"shape": list(latents.shape[1:]),
               "num_examples": len(latents), "num_classes": 2,
               "scaling_factor": scaling_factor,
               "shards": ["latents-00000.array_record"],
               "producer": producer}, f)


def _latent_split(root, latents, scaling_factor, **producer):
  write_latent_split(root, latents, scaling_factor, dict(
      dict(autoencoder="/runs/ae", autoencoder_step=2, image_size=64,
           num_frames=0), **producer))


def test_latents_encoded_again_into_the_same_dir_are_read_again(tmp_path):
  # The in-process decoded-split cache was keyed by DIR and split alone: a
  # notebook's second run got the first encoding's latents and scale.
  rng = np.random.default_rng(1)
  first, second = (rng.normal(size=(4, 2, 2, 3)).astype(np.float32)
                   for _ in range(2))
  root = tmp_path / "z" / "train"
  config = _config(name=f"latents:{tmp_path / 'z'}", channels=3)
  _latent_split(str(root), first, 0.5)
  batch = next(_build(config, split="train", train=False)[0])
  np.testing.assert_allclose(batch["image"], first * 0.5, rtol=1e-6)
  shutil.rmtree(root)
  _latent_split(str(root), second, 2.0)
  batch = next(_build(config, split="train", train=False)[0])
  np.testing.assert_allclose(batch["image"], second * 2.0, rtol=1e-6)


def test_latent_splits_share_the_train_factor_and_must_agree(tmp_path):
  rng = np.random.default_rng(0)
  train, test = (rng.normal(size=(4, 2, 2, 3)).astype(np.float32)
                 for _ in range(2))
  _latent_split(str(tmp_path / "a" / "train"), train, 0.5)
  _latent_split(str(tmp_path / "a" / "test"), test, 2.0)
  config = _config(name=f"latents:{tmp_path / 'a'}", channels=3)
  for split, raw in (("train", train), ("test", test)):
    batch = next(_build(config, split=split, train=False)[0])
    np.testing.assert_allclose(batch["image"], raw * 0.5, rtol=1e-6)
  meta = sources.latents_meta(str(tmp_path / "a"), "test")
  assert (meta["scaling_factor"], meta["split_scaling_factor"]) == (0.5, 2.0)
  # Without a train split, a split keeps its own factor.
  _latent_split(str(tmp_path / "b" / "test"), test, 2.0)
  batch = next(_build(_config(name=f"latents:{tmp_path / 'b'}"),
                      split="test", train=False)[0])
  np.testing.assert_allclose(batch["image"], test * 2.0, rtol=1e-6)
  # A split of another autoencoder step or image size than train: one line
  # when it is opened (the trainer opens its eval split before compiling).
  # Weights digests are compared when both splits record one (a run
  # replaced at the same path and step between the two encodes).
  for name, change, why in (
      ("c", {"autoencoder_step": 3},
       "autoencoder_step: 2 (train) vs 3 (test)"),
      ("d", {"image_size": 32}, "image_size: 64 (train) vs 32 (test)"),
      ("e", {"autoencoder_weights": "bb"},
       "autoencoder_weights: 'aa' (train) vs 'bb' (test)")):
    _latent_split(str(tmp_path / name / "train"), train, 0.5,
                  autoencoder_weights="aa")
    _latent_split(str(tmp_path / name / "test"), test, 2.0, **change)
    with pytest.raises(ValueError) as e:
      _build(_config(name=f"latents:{tmp_path / name}"), split="test",
             train=False)
    assert str(e.value) == (
        f"{tmp_path / name / 'test'} and {tmp_path / name / 'train'} hold "
        f"latents of different autoencoder runs/steps/weights/sizes ({why}); "
        "re-encode split 'test' with the train split's run, step and "
        "--image_size, or pass another latents:DIR.")
    _build(_config(name=f"latents:{tmp_path / name}"), split="train",
           train=False)
  # A folder's held-out images encoded at another fraction than the train
  # split's overlap with it (unrecorded means none held out): the fix is
  # one fraction for both, not the train split's 0 (which is refused).
  _latent_split(str(tmp_path / "g" / "train"), train, 0.5)
  _latent_split(str(tmp_path / "g" / "test"), test, 2.0,
                holdout_fraction=0.25)
  with pytest.raises(ValueError) as e:
    _build(_config(name=f"latents:{tmp_path / 'g'}"), split="test",
           train=False)
  assert str(e.value) == (
      f"{tmp_path / 'g' / 'test'} and {tmp_path / 'g' / 'train'} hold a "
      "folder's splits encoded at different holdout fractions "
      "(holdout_fraction: 0.0 (train) vs 0.25 (test)): they are complements "
      "only at one (a train split encoded at 0 holds the held-out images "
      "too); encode both at one --holdout_fraction, or pass another "
      "latents:DIR.")
  # A split encoded before digests were recorded agrees on the rest.
  _latent_split(str(tmp_path / "f" / "train"), train, 0.5,
                autoencoder_weights="aa")
  _latent_split(str(tmp_path / "f" / "test"), test, 2.0)
  batch = next(_build(_config(name=f"latents:{tmp_path / 'f'}"),
                      split="test", train=False)[0])
  np.testing.assert_allclose(batch["image"], test * 0.5, rtol=1e-6)


def test_evaluation_passes_start_no_grain_workers():
  # held_out_input repeats without training: it started worker_count
  # processes at every evaluation, and which rows the eval loss covered
  # depended on the worker count.
  config = _config(name="jaxgen_shapes", image_size=16, worker_count=2,
                   in_memory="never")
  held_out, _ = _build(config, batch=8, split="test", train=False,
                       repeat=True)
  # An example count: read in this process (a worker pool's state lists
  # its workers' states; tests/data/test_folders.py reads through one).
  assert held_out.get_state() == {"next_index": 0}
