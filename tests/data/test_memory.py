"""The in-memory batch path against the grain pipeline it stands in for."""

import os
from unittest import mock

import numpy as np
import pytest

from jaxgen.data import config as config_lib
from jaxgen.data import memory
from jaxgen.data import pipeline
from jaxgen.data import shapes
from jaxgen.data import sources
from jaxgen.train import data_position
from tests.train import common


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.getbasetemp() / "tensorflow_datasets")
  shapes.prepare("image_16", path)
  return path


def _config(data_dir, **overrides):
  config = config_lib.default_dataset_config()
  config.data_dir = data_dir
  config.image_size = 16
  config.update(overrides)
  return config


def _build(config, *, batch=64, seed=3, index=0, count=1, **kwargs):
  return pipeline.build_input(config, global_batch_size=batch, seed=seed,
                              process_index=index, process_count=count,
                              **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_same_examples_in_the_same_order_as_grain(data_dir):
  # 300 batches of 64: more than two epochs of the 8192 training examples.
  grain_it, info = _build(_config(data_dir, in_memory="never"))
  memory_it, _ = _build(_config(data_dir, in_memory="always"))
  assert isinstance(memory_it, memory.InMemoryIterator)
  assert not isinstance(grain_it, memory.InMemoryIterator)
  assert 300 * 64 > 2 * info.num_examples
  for g, m in zip(_take(grain_it, 300), _take(memory_it, 300)):
    np.testing.assert_array_equal(g["label"], m["label"])
    same = np.all(g["image"] == m["image"], axis=(1, 2, 3))
    mirrored = np.all(g["image"] == m["image"][:, :, ::-1], axis=(1, 2, 3))
    assert (same | mirrored).all()
  assert grain_it.get_state() == memory_it.get_state()


def test_flips_are_half_and_reproducible(data_dir):
  config = _config(data_dir, in_memory="always", random_flip=True)
  plain = _take(_build(_config(data_dir, in_memory="always",
                               random_flip=False))[0], 20)
  first = _take(_build(config)[0], 20)
  np.testing.assert_array_equal(first[-1]["image"],
                                _take(_build(config)[0], 20)[-1]["image"])
  flips = np.concatenate([
      np.all(a["image"] == b["image"][:, :, ::-1], axis=(1, 2, 3))
      & ~np.all(a["image"] == b["image"], axis=(1, 2, 3))
      for a, b in zip(first, plain)])
  # 1280 fair coin flips (symmetric images excluded): 0.5 +- 4.5 sigma.
  assert 0.44 < flips.mean() < 0.56


def test_state_moves_between_paths(data_dir):
  """A grain checkpoint's iterator state resumes on the in-memory path."""
  grain_it, _ = _build(_config(data_dir, in_memory="never"), seed=7)
  _take(grain_it, 130)  # Past the first epoch (128 batches).
  state = grain_it.get_state()
  expected = _take(grain_it, 3)
  memory_it, _ = _build(_config(data_dir, in_memory="always"), seed=7)
  memory_it.set_state(state)
  for e, m in zip(expected, _take(memory_it, 3)):
    np.testing.assert_array_equal(e["label"], m["label"])


@pytest.mark.parametrize("in_memory", ["never", "always"])
@pytest.mark.parametrize("count", [1, 2])
def test_a_batch_change_on_resume_starts_at_a_whole_batch(data_dir,
                                                          in_memory, count):
  # 3 batches of 8 read, resumed at 16: the first batch was positions 16-31
  # (repeating 16-23) or, over 2 processes, a mix of 20-43; it is now the
  # next whole batch, 32-47, with the 8 examples between skipped.
  config = _config(data_dir, in_memory=in_memory, random_flip=False)
  reference = np.concatenate(
      [b["image"] for b in _take(_build(config, batch=8)[0], 6)][4:])
  rows = []
  for p in range(count):
    it, _ = _build(config, batch=8, index=p, count=count)
    _take(it, 3)
    state = it.get_state()
    resumed, _ = _build(config, batch=16, index=p, count=count)
    resumed.set_state(state)
    assert data_position.align(resumed, 16, count) == 8
    rows.append(next(resumed)["image"])
  np.testing.assert_array_equal(np.concatenate(rows), reference)
  # A whole batch already: nothing moves.
  it, _ = _build(config, batch=8)
  _take(it, 4)
  assert data_position.align(it, 16, 1) == 0


def test_auto_picks_memory_only_when_small_and_vectorisable(data_dir):
  small, info = _build(_config(data_dir))
  assert isinstance(small, memory.InMemoryIterator)
  mib = memory.nbytes(info.num_examples, 16, 3, None, False) / 2**20
  assert mib == pytest.approx(6.0)
  too_big, _ = _build(_config(data_dir, in_memory_max_mb=int(mib) // 2))
  cropped, _ = _build(_config(data_dir, random_crop=True))
  for it in (too_big, cropped):
    assert not isinstance(it, memory.InMemoryIterator)
  # Evaluation never crops, so it can use memory even then.
  evaluated, _ = _build(_config(data_dir, random_crop=True), train=False)
  assert isinstance(evaluated, memory.InMemoryIterator)


@pytest.mark.parametrize("overrides,match", [
    (dict(in_memory="sometimes"), "dataset.in_memory='sometimes'"),
    (dict(in_memory="always", random_crop=True), "in_memory='always' needs"),
])
def test_bad_in_memory_settings_are_one_line_errors(data_dir, overrides,
                                                    match):
  with pytest.raises(ValueError, match=match) as e:
    _build(_config(data_dir, **overrides))
  assert "\n" not in str(e.value)


def _epoch(config, batches):
  memory._CACHE.clear()  # A new process: nothing decoded in memory.
  iterator, _ = _build(config)
  assert isinstance(iterator, memory.InMemoryIterator)
  return _take(iterator, batches)


def test_a_split_decoded_in_full_is_read_back_from_the_disk_cache(
    data_dir, tmp_path, monkeypatch):
  cache = str(tmp_path / "decoded")
  config = _config(data_dir, in_memory="always", in_memory_cache_dir=cache)
  per_epoch = 8192 // 64
  first = _epoch(config, per_epoch + 5)
  (written,) = [f for f in tmp_path.joinpath("decoded").iterdir()]
  assert written.suffix == ".npz"  # No temporary file is left.

  def no_decoding(*args):
    raise AssertionError("decoded although the split is in the cache")
  monkeypatch.setattr(memory.Examples, "_fill", no_decoding)
  again = _epoch(config, per_epoch + 5)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  # A file cut short (a crash before it reached the disk) or emptied is
  # decoded again with a warning: it was a BadZipFile / EOFError traceback
  # at every later start.
  monkeypatch.undo()
  whole = written.read_bytes()
  for damaged in (whole[:len(whole) // 2], b""):
    written.write_bytes(damaged)
    with mock.patch.object(memory.logging, "warning") as warning:
      batches = _epoch(config, 3)
    assert "is unreadable" in warning.call_args_list[0].args[0]
    np.testing.assert_array_equal(batches[2]["image"], first[2]["image"])
  # Another size is another decoding: a different file.
  monkeypatch.undo()
  _epoch(_config(data_dir, in_memory="always", in_memory_cache_dir=cache,
                 image_size=32), per_epoch)
  assert len(list(tmp_path.joinpath("decoded").iterdir())) == 2


def test_no_cache_file_before_the_split_is_complete_or_when_disabled(
    data_dir, tmp_path):
  cache = tmp_path / "decoded"
  _epoch(_config(data_dir, in_memory="always", in_memory_cache_dir=str(cache)),
         10)
  assert not cache.exists() or not list(cache.iterdir())
  _epoch(_config(data_dir, in_memory="always", in_memory_cache_dir=""),
         8192 // 64)
  assert not cache.exists() or not list(cache.iterdir())


def test_prune_deletes_the_least_recently_used_splits_first(tmp_path):
  # The cache was never evicted: every size, dataset and preprocessing
  # change left its file behind for good.
  sizes = {"a.npz": 400, "b.npz": 300, "c.npz": 200, "d.npz": 100}
  for i, (name, size) in enumerate(sizes.items()):
    (tmp_path / name).write_bytes(b"x" * size)
    os.utime(tmp_path / name, ns=(i * 10**9, i * 10**9))  # a oldest.
  (tmp_path / "notes.txt").write_bytes(b"y" * 5000)  # Not a split: kept.
  assert memory.prune(str(tmp_path), 0.0) == 0  # No cap.
  # 1000 bytes over a 650-byte cap: a (400) goes; 600 is under it.
  assert memory.prune(str(tmp_path), 650e-9) == 1
  assert sorted(os.listdir(tmp_path)) == ["b.npz", "c.npz", "d.npz",
                                          "notes.txt"]
  # The file to keep survives a cap it alone exceeds; older ones go first.
  assert memory.prune(str(tmp_path), 50e-9, keep=str(tmp_path / "b.npz")) == 2
  assert sorted(os.listdir(tmp_path)) == ["b.npz", "notes.txt"]
  # A killed writer's temporary file goes once a day old, under any cap; a
  # fresh one may be a write in progress.
  old, fresh = tmp_path / "e.npz.x1.tmp", tmp_path / "f.npz.x2.tmp"
  for path in (old, fresh):
    path.write_bytes(b"z" * 10)
  os.utime(old, (1, 1))
  assert memory.prune(str(tmp_path), 1.0) == 1
  assert sorted(os.listdir(tmp_path)) == ["b.npz", "f.npz.x2.tmp",
                                          "notes.txt"]


def test_the_disk_cache_is_pruned_after_a_write_and_a_read_is_a_use(
    data_dir, tmp_path):
  cache = tmp_path / "decoded"
  config = _config(data_dir, in_memory="always", in_memory_cache_dir=str(cache))
  _epoch(config, 8192 // 64)
  (first,) = cache.iterdir()
  os.utime(first, ns=(10**9, 10**9))
  # Read back: marked used now.
  _epoch(config, 2)
  assert first.stat().st_mtime_ns > 10**18
  # Another size written under a cap of one file: the older one goes.
  size = first.stat().st_size
  _epoch(_config(data_dir, in_memory="always", in_memory_cache_dir=str(cache),
                 image_size=32, in_memory_cache_max_gb=size * 1.5e-9),
         8192 // 64)
  (second,) = cache.iterdir()
  assert second != first
  with pytest.raises(ValueError, match=(
      r"^dataset\.in_memory_cache_max_gb=-1\.0 must be >= 0")):
    _build(_config(data_dir, in_memory_cache_max_gb=-1.0))


def test_changed_dataset_files_change_the_cache_key(tmp_path):
  shard = tmp_path / "x-train.array_record-00000-of-00001"
  shard.write_bytes(b"abc")
  before = sources._files_identity(str(tmp_path), "train")
  assert sources._files_identity(str(tmp_path), "test") != before
  os.utime(shard, ns=(1, 1))
  assert sources._files_identity(str(tmp_path), "train") != before
  assert sources._files_identity(str(tmp_path / "gone"), "train") is None


def test_an_unwritable_cache_is_a_warning_and_batches_still_come(
    data_dir, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  config = _config(data_dir, in_memory="always",
                   in_memory_cache_dir=str(blocker / "decoded"))
  with mock.patch.object(memory.logging, "warning") as warning:
    batches = _epoch(config, 8192 // 64 + 1)
  assert len(batches) == 8192 // 64 + 1
  (call,) = warning.call_args_list
  assert "Cannot write the decoded-split cache" in call.args[0]


def test_the_in_process_cache_tells_the_schemes_apart():
  # "jaxgen_shapes" reads the 16 px variant and "tfds:jaxgen_shapes" the
  # default one resized: the second was served the first one's pixels.
  def first_batch(name):
    config = _config(common.DATA_DIR, name=name, in_memory="always")
    return next(_build(config, batch=8, split="test", train=False)[0])
  memory._CACHE.clear()
  want = first_batch("tfds:jaxgen_shapes:test")["image"]
  memory._CACHE.clear()
  other = first_batch("jaxgen_shapes:test")["image"]
  assert np.abs(other - want).max() > 0.05
  np.testing.assert_array_equal(first_batch("tfds:jaxgen_shapes:test")[
      "image"], want)
