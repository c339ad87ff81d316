"""Tests for `build_input`: batches, seeds, sharding, state, augmentation."""

import itertools

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxgen.data import config as config_lib
from jaxgen.data import pipeline
from jaxgen.data import preprocess
from jaxgen.data import shapes


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  # Same directory as in test_shapes_dataset.py: prepared once per session.
  path = str(tmp_path_factory.getbasetemp() / "tensorflow_datasets")
  shapes.prepare("image_16", path)
  return path


def _config(data_dir=None, **overrides):
  config = config_lib.default_dataset_config()
  config.data_dir = data_dir
  config.image_size = 16
  config.random_flip = False
  config.update(overrides)
  return config


def _build(config, *, batch=8, seed=0, index=0, count=1, **kwargs):
  return pipeline.build_input(config, global_batch_size=batch, seed=seed,
                              process_index=index, process_count=count,
                              **kwargs)


# Both batch paths: grain, and numpy over a split held in memory.
MODES = pytest.mark.parametrize("mode", ["never", "always"])


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def _indexed_arrays(n, size=8, seed=0):
  """Random (asymmetric) images whose label is their index."""
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
          "label": np.arange(n)}


def _scaled(images):
  return images.astype(np.float32) / np.float32(127.5) - np.float32(1)


def test_shapes_batches(data_dir):
  iterator, info = _build(_config(data_dir, random_flip=True), batch=16,
                          count=2)
  assert info == pipeline.DatasetInfo(
      kind="image", num_examples=8192, image_size=16, channels=3,
      num_classes=len(shapes.SHAPE_NAMES), num_frames=None,
      batches_per_epoch=512)
  batch = next(iterator)
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (8, 16, 16, 3)
  assert batch["image"].dtype == np.float32
  assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
  assert batch["image"].min() < -0.5 and batch["image"].max() > 0.5
  assert batch["label"].dtype == np.int32
  assert ((0 <= batch["label"]) & (batch["label"] < info.num_classes)).all()


def test_seed_determines_sequence(data_dir):
  config = _config(data_dir, random_flip=True, random_crop=True)
  first = _take(_build(config, seed=5)[0], 3)
  _assert_batches_equal(first, _take(_build(config, seed=5)[0], 3))
  other = _take(_build(config, seed=6)[0], 3)
  assert not np.array_equal(first[0]["image"], other[0]["image"])


@MODES
def test_processes_read_disjoint_shards(mode):
  arrays = _indexed_arrays(72)
  config = _config(name="arrays", in_memory=mode)

  def epoch(index, count):
    iterator, info = _build(config, batch=12, index=index, count=count,
                            arrays=arrays)
    batches = _take(iterator, info.batches_per_epoch)
    return np.concatenate([b["label"] for b in batches])

  whole = epoch(0, 1)
  assert sorted(whole) == list(range(72))
  assert list(whole) != list(range(72))  # Shuffled.
  first, second = epoch(0, 2), epoch(1, 2)
  assert len(first) == len(second) == 36
  assert not set(first) & set(second)
  assert set(first) | set(second) == set(whole)


@MODES
def test_epochs_are_reshuffled(mode):
  iterator, info = _build(_config(name="arrays", in_memory=mode), batch=8,
                          arrays=_indexed_arrays(16))
  labels = [b["label"] for b in _take(iterator, 3 * info.batches_per_epoch)]
  epochs = np.concatenate(labels).reshape(3, 16)
  for epoch in epochs:
    assert sorted(epoch) == list(range(16))
  assert not np.array_equal(epochs[0], epochs[1])


def test_state_round_trip(data_dir):
  config = _config(data_dir, random_flip=True, random_crop=True)
  iterator, _ = _build(config, seed=1)
  _take(iterator, 3)
  state = iterator.get_state()
  expected = _take(iterator, 2)
  restored, _ = _build(config, seed=1)
  restored.set_state(state)
  _assert_batches_equal(expected, _take(restored, 2))


@MODES
def test_orbax_checkpoint_round_trip(data_dir, tmp_path, mode):
  config = _config(data_dir, random_flip=True, in_memory=mode)
  iterator, _ = _build(config, seed=2)
  _take(iterator, 4)
  manager = ocp.CheckpointManager(
      tmp_path / "ckpt",
      options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
  manager.save(4, args=ocp.args.Composite(
      data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = _take(iterator, 2)

  restored, _ = _build(config, seed=2)
  manager.restore(4, args=ocp.args.Composite(
      data=grain.checkpoint.CheckpointRestore(restored)))
  _assert_batches_equal(expected, _take(restored, 2))
  manager.close()


def _by_label(batches):
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  return images, labels


@pytest.mark.parametrize("flip,crop,mode", [
    (False, False, "never"), (True, False, "never"), (False, True, "never"),
    (False, False, "always"), (True, False, "always")])
def test_augmentation_only_when_enabled(flip, crop, mode):
  arrays = _indexed_arrays(32)
  config = _config(name="arrays", random_flip=flip, random_crop=crop,
                   image_size=8, in_memory=mode)
  images, labels = _by_label(_take(_build(config, arrays=arrays)[0], 4))
  original = _scaled(arrays["image"][labels])
  same = np.all(images == original, axis=(1, 2, 3))
  mirrored = np.all(images == original[:, :, ::-1], axis=(1, 2, 3))
  if not flip and not crop:
    assert same.all()
  elif flip:
    assert (same | mirrored).all() and same.any() and mirrored.any()
  else:
    assert not (same | mirrored).any()
  # Evaluation never augments.
  images, labels = _by_label(_take(
      _build(config, arrays=arrays, train=False)[0], 4))
  np.testing.assert_array_equal(images, _scaled(arrays["image"][labels]))


@MODES
def test_eval_is_one_ordered_pass(mode):
  arrays = _indexed_arrays(30)
  config = _config(name="arrays", random_flip=True, in_memory=mode)
  iterator, info = _build(config, batch=8, arrays=arrays, train=False)
  batches = list(iterator)
  assert info.batches_per_epoch == len(batches) == 3
  np.testing.assert_array_equal(_by_label(batches)[1], np.arange(24))
  iterator, info = _build(config, batch=8, index=1, count=2, arrays=arrays,
                          train=False)
  batches = list(iterator)
  assert info.batches_per_epoch == len(batches) == 3
  # Process p of P reads rows [p*b, (p+1)*b) of every global batch (b = 4).
  expected = np.concatenate([np.arange(g * 8 + 4, g * 8 + 8) for g in range(3)])
  np.testing.assert_array_equal(_by_label(batches)[1], expected)
  # repeat=True keeps evaluation going past the end.
  iterator, _ = _build(config, batch=8, arrays=arrays, train=False,
                       repeat=True)
  assert len(list(itertools.islice(iterator, 7))) == 7


def test_synthetic_info_of_the_stored_clip_length_is_the_pipelines(data_dir):
  # num_frames=0 reads the stored clips: the info built without opening the
  # data (benchmarks, sweeps, sampling without the data) said "image".
  config = _config(data_dir, name="jaxgen_shapes_video", num_frames=0)
  _, info = _build(config, batch=4, train=False)
  synthetic = pipeline.DatasetInfo.synthetic(config)
  assert (synthetic.kind, synthetic.num_frames) == (info.kind,
                                                    info.num_frames)
  assert info.kind == "video" and info.num_frames == 8


def test_shapes_video(data_dir):
  config = _config(data_dir, name="jaxgen_shapes_video", num_frames=4,
                   random_flip=True)
  iterator, info = _build(config, batch=4, train=False)
  assert info.kind == "video" and info.num_frames == 4
  assert info.num_examples == 256
  batch = next(iterator)
  assert batch["video"].shape == (4, 4, 16, 16, 3)
  assert batch["video"].dtype == np.float32
  assert -1.0 <= batch["video"].min() <= batch["video"].max() <= 1.0


def test_tfds_scheme_reads_prepared_shapes(data_dir):
  config = _config(data_dir, name="tfds:jaxgen_shapes/image_16:test")
  iterator, info = _build(config, batch=8)
  assert info.num_examples == 512 and info.num_classes == 8
  assert next(iterator)["image"].shape == (8, 16, 16, 3)
  with pytest.raises(ValueError, match="Unknown split 'val'") as e:
    _build(config, split="val")
  assert "\n" not in str(e.value)


def test_tfds_shapes_without_a_config_read_the_default_one():
  # tfds alone would read the first config listed (image_16), or call the
  # default one unprepared.
  from tests.train import common  # pylint: disable=g-import-not-at-top
  default = shapes.JaxgenShapes.DEFAULT_CONFIG_NAME
  batches = [next(_build(_config(common.DATA_DIR, name=name), batch=8,
                         train=False)[0])["image"]
             for name in ("tfds:jaxgen_shapes:test",
                          f"tfds:jaxgen_shapes/{default}:test")]
  np.testing.assert_array_equal(*batches)


@MODES
def test_global_batches_do_not_depend_on_the_process_count(mode):
  """Training batches of 2 processes, stacked, equal the 1-process batches."""
  config = _config(name="arrays", random_flip=True, in_memory=mode,
                   random_crop=mode == "never")
  arrays = _indexed_arrays(40)
  one = _take(_build(config, batch=8, arrays=arrays)[0], 12)
  parts = [_take(_build(config, batch=8, index=p, count=2,
                        arrays=arrays)[0], 12) for p in range(2)]
  for step in range(12):
    for key in ("image", "label"):
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][key], parts[1][step][key]]),
          one[step][key])
  # And the two processes never read the same example within a batch.
  assert not set(parts[0][0]["label"]) & set(parts[1][0]["label"])


def test_examples_the_model_cannot_take_are_named():
  image = preprocess.Preprocess(pixel_key="image", label_key=None, size=8)
  # uint16 pixels passed unscaled (up to 65535) and unresized.
  with pytest.raises(ValueError, match=r"^dataset examples of dtype uint16: "
                     "jaxgen reads uint8 images"):
    image({"image": np.zeros((8, 8, 3), np.uint16)})
  assert image({"image": np.zeros((4, 4, 3), np.float32)})["image"].shape == (
      4, 4, 3)  # Latents pass as they are.
  video = preprocess.Preprocess(pixel_key="video", label_key=None, size=8,
                                num_frames=4)
  # A short clip was a shape error when the batch was stacked.
  with pytest.raises(ValueError, match=r"^a clip of 3 frames, fewer than "
                     r"dataset.num_frames=4"):
    video({"video": np.zeros((3, 8, 8, 3), np.uint8)})
  assert video({"video": np.zeros((5, 8, 8, 3), np.uint8)})["video"].shape == (
      4, 8, 8, 3)
