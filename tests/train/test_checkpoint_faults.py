"""Checkpoints that are corrupt, half-written or of another model.

A corrupt newest checkpoint (truncated, bit-flipped, random bytes, missing
manifest) is moved aside and the next older one restores; its fingerprint is
checked against an independent numpy computation; a changed model is a
config error, not corruption; old steps and temporary dirs are collected
only after a newer checkpoint committed.
"""

import glob
import json
import os
import shutil

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.train import checkpoint as checkpoint_lib
from jaxgen.train import trainer
from tests.train import common


def _state(seed):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(size=(64, 64)).astype(np.float32)),
          "b": jnp.asarray(rng.normal(size=(7,)).astype(np.float32)),
          "step": jnp.asarray(seed, jnp.int32)}


def _abstract(state):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return (jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       state),
          jax.tree.map(lambda _: sharding, state))


def _iterator():
  return iter(grain.MapDataset.range(100).to_iter_dataset())


def _save_steps(directory, steps, **kwargs):
  ckpt = checkpoint_lib.Checkpointer(str(directory), save_every_steps=1,
                                     **kwargs)
  it = _iterator()
  for step in steps:
    next(it)
    ckpt.save(step, _state(step), it)
    ckpt.wait()
  ckpt.close()


def _data_files(step_dir):
  return [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d",
                                            "*"), recursive=True)
          if os.path.isfile(f)]


def _biggest_data_file(step_dir):
  return max(_data_files(step_dir), key=os.path.getsize)


def _truncate(step_dir):
  path = _biggest_data_file(step_dir)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _flip_bit(step_dir):
  path = _biggest_data_file(step_dir)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)[0]
    f.seek(-1, 1)
    f.write(bytes([byte ^ 0x10]))


def _random_bytes(step_dir):
  # Every data file: OCDBT files may hold bytes no array refers to, and a
  # single spot could land there.
  rng = np.random.default_rng(0)
  for path in _data_files(step_dir):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
      f.seek(size // 3)
      f.write(rng.bytes(min(256, size - size // 3)))


def _no_manifest(step_dir):
  for path in glob.glob(os.path.join(step_dir, "state", "**",
                                     "manifest.ocdbt"), recursive=True):
    os.remove(path)


@pytest.mark.parametrize("corrupt", [_truncate, _flip_bit, _random_bytes,
                                     _no_manifest])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(
    tmp_path, corrupt):
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1, 2])
  corrupt(str(directory / "2"))
  ckpt = checkpoint_lib.Checkpointer(str(directory))
  it = _iterator()
  step, state, _ = ckpt.restore(*_abstract(_state(0)), it)
  ckpt.close()
  assert step == 1 and ckpt.last_good_step == 1
  np.testing.assert_array_equal(state["w"], _state(1)["w"])
  assert next(it) == 1  # The data position of step 1 came with it.
  # Moved aside, not deleted.
  (moved,) = os.listdir(tmp_path / "corrupt_checkpoints")
  assert moved.startswith("2-") and sorted(os.listdir(directory)) == ["1"]


def _numpy_fingerprint(x):
  words = x.view(np.uint32).astype(np.uint64).ravel()
  weights = (np.arange(words.size, dtype=np.uint64) * 2654435761 * 2 + 1)
  return int(np.sum((words * weights) % 2**32) % 2**32)


def test_fingerprint_matches_a_numpy_computation():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5)).astype(np.float32)
  expected = _numpy_fingerprint(x)
  (got,), finite = checkpoint_lib.fingerprint([jnp.asarray(x)])
  assert got == expected and finite
  # Leaves of one shape share their weights, each with its own sum.
  leaves = [x, rng.normal(size=(3, 5)).astype(np.float32),
            rng.normal(size=(5, 3)).astype(np.float32), x[0]]
  got, finite = checkpoint_lib.fingerprint([jnp.asarray(a) for a in leaves])
  assert got == [_numpy_fingerprint(a) for a in leaves] and finite
  # Any single changed word changes it; NaN is reported.
  y = x.copy()
  y[2, 4] = np.nextafter(y[2, 4], np.float32(np.inf))
  assert checkpoint_lib.fingerprint([jnp.asarray(y)])[0][0] != expected
  y[0, 0] = np.nan
  assert not checkpoint_lib.fingerprint([jnp.asarray(y)])[1]


def test_a_checkpoint_of_another_model_is_a_config_error(tmp_path):
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1])
  other = dict(_state(0), w=jnp.zeros((64, 32)))
  ckpt = checkpoint_lib.Checkpointer(str(directory))
  with pytest.raises(ValueError, match=r"different model \(w: shape "
                     r"\(64, 64\) saved, \(64, 32\) now\)") as e:
    ckpt.restore(*_abstract(other), _iterator())
  ckpt.close()
  assert "\n" not in str(e.value)
  assert os.listdir(directory) == ["1"]  # Not treated as corrupt.


def test_old_steps_and_leftover_tmp_dirs_go_after_a_newer_commit(tmp_path):
  directory = tmp_path / "checkpoints"
  os.makedirs(directory / "1.orbax-checkpoint-tmp-1234")
  _save_steps(directory, [2, 3, 4], max_to_keep=2)
  assert sorted(os.listdir(directory)) == ["3", "4"]


def test_random_bytes_in_the_newest_checkpoint_resume_from_the_older_one(
    tmp_path, tmp_path_factory):
  """The fault as reported: it used to restore silently and end in NaN."""
  cfg = dict(total_steps=6, checkpoint_every_steps=2)
  ref_dir = tmp_path_factory.mktemp("reference")
  trainer.train_and_evaluate(common.tiny_config(**cfg), str(ref_dir))
  trainer.train_and_evaluate(common.tiny_config(**cfg), str(tmp_path))
  # As if the run had died after writing checkpoint 4 and 4 got corrupted.
  shutil.rmtree(tmp_path / "checkpoints" / "6")
  _random_bytes(str(tmp_path / "checkpoints" / "4"))
  trainer.train_and_evaluate(common.tiny_config(**cfg), str(tmp_path))
  read = lambda d: [json.loads(l) for l in open(os.path.join(d,
                                                             "metrics.jsonl"))]
  got, ref = read(tmp_path), read(ref_dir)
  assert [r["step"] for r in got] == list(range(1, 7))
  np.testing.assert_allclose([r["loss"] for r in got],
                             [r["loss"] for r in ref], rtol=1e-6)
  assert os.listdir(tmp_path / "corrupt_checkpoints")[0].startswith("4-")


def test_storage_errors_are_recognised_and_summarised():
  tf_like = RuntimeError("FlushSummaryWriter /x/events; No space left on "
                         "device\n\tFailed to flush 9 events")
  ts_like = ValueError("RESOURCE_EXHAUSTED: Failed to write 346 bytes "
                       "[os_error_code='28'] [tensorstore_spec=...]")
  for error in (tf_like, ts_like, OSError(28, "No space left on device")):
    assert checkpoint_lib.is_storage_error(error)
    assert checkpoint_lib.error_reason(error) == "No space left on device"
  assert not checkpoint_lib.is_storage_error(ValueError("shape mismatch"))
