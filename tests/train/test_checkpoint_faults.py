"""Checkpoints that are corrupt, half-written or of another model.

A corrupt newest checkpoint (truncated, bit-flipped, random bytes, missing
manifest) is moved aside and the next older one restores; its fingerprint is
checked against an independent numpy computation; a changed model is a
config error, not corruption; old steps and temporary dirs are collected
only after a newer checkpoint committed; small replicated arrays are saved
without one slicing program per replica.
"""

import glob
import json
import os
from unittest import mock

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.metadata import array_metadata_store
import pytest

from jaxgen.train import array_handler
from jaxgen.train import checkpoint as checkpoint_lib
from jaxgen.train import compile_cache
from jaxgen.train import fingerprint as fingerprint_lib


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


@pytest.mark.parametrize("error", [
    RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"),
    PermissionError(13, "Permission denied"),
    MemoryError()])
def test_a_checkpoint_that_cannot_be_read_now_is_not_set_aside(
    tmp_path, monkeypatch, error):
  # Out of memory on restore set the newest checkpoint aside as corrupt and
  # the run went on from the one before (or from step 0), silently.
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1, 2])
  ckpt = checkpoint_lib.Checkpointer(str(directory))

  def fails(*args, **kwargs):
    raise error

  monkeypatch.setattr(ckpt.manager, "restore", fails)
  with pytest.raises(ValueError, match=(
      rf"^checkpoint 2 in {directory} could not be read \(it does not "
      r"load: .*\); it is left in place: rerun once memory or storage "
      r"allows \(a damaged checkpoint is set aside and the one before "
      r"used\)\.$")):
    ckpt.restore(*_abstract(_state(0)), _iterator())
  monkeypatch.undo()
  ckpt.close()
  assert sorted(os.listdir(directory)) == ["1", "2"]
  assert not (tmp_path / "corrupt_checkpoints").exists()


def test_a_lowered_keep_collects_only_after_the_newest_verifies(tmp_path):
  # keep_checkpoints lowered to 1 on a rerun: the older steps were deleted
  # before the newest was verified, so a corrupt newest left none to fall
  # back to (the run restarted from step 0).
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1, 2, 3])
  _truncate(str(directory / "3"))
  ckpt = checkpoint_lib.Checkpointer(str(directory), max_to_keep=1)
  step, state, _ = ckpt.restore(*_abstract(_state(0)), None)
  ckpt.close()
  assert step == 2
  np.testing.assert_array_equal(state["w"], _state(2)["w"])
  assert sorted(os.listdir(directory)) == ["2"]


@pytest.mark.parametrize("index", [0, 1])
def test_several_processes_collect_old_steps_without_a_collective(
    tmp_path, monkeypatch, index):
  # orbax's delete ends in a device collective, entered when each process
  # sees a background save finished: processes a step apart hung.
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1, 2, 3], max_to_keep=5)
  ckpt = checkpoint_lib.Checkpointer(str(directory), max_to_keep=2)
  monkeypatch.setattr(checkpoint_lib.jax, "process_count", lambda: 2)
  monkeypatch.setattr(checkpoint_lib.jax, "process_index", lambda: index)
  monkeypatch.setattr(ckpt.manager, "delete",
                      lambda step: pytest.fail("orbax delete"))
  ckpt._collect(3)  # pylint: disable=protected-access
  # Process 0 removes the directory; every process forgets the step.
  assert sorted(os.listdir(directory)) == (["2", "3"] if index == 0
                                           else ["1", "2", "3"])
  if index == 0:
    assert sorted(ckpt.manager.all_steps()) == [2, 3]
  monkeypatch.undo()
  ckpt.close()


def test_a_read_only_restore_deletes_and_moves_nothing(tmp_path):
  # Tools (sampling, encoding, warm starts) read another run: its 5 kept
  # checkpoints stayed 3 (the default keep pruned them), and one that did
  # not restore here (say, out of memory) was moved to corrupt_checkpoints.
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1, 2, 3, 4, 5], max_to_keep=5)
  ckpt = checkpoint_lib.Checkpointer(str(directory), read_only=True)
  step, state, _ = ckpt.restore(*_abstract(_state(0)), None)
  assert step == 5
  np.testing.assert_array_equal(state["w"], _state(5)["w"])
  _truncate(str(directory / "5"))
  with pytest.raises(ValueError, match=(
      r"^checkpoint 5 in \S+ does not restore here: it does not load: .*; "
      r"it is left in place \(training the run again sets an unusable "
      r"checkpoint aside and resumes from the one before\)\.$")):
    ckpt.restore(*_abstract(_state(0)), None)
  ckpt.close()
  assert sorted(os.listdir(directory)) == ["1", "2", "3", "4", "5"]
  assert not (tmp_path / "corrupt_checkpoints").exists()
  # Nor does it create anything: a run with no checkpoints got an empty
  # checkpoints/ (and on a read-only mount an OSError, not "no checkpoint").
  empty = tmp_path / "untrained" / "checkpoints"
  reader = checkpoint_lib.Checkpointer(str(empty), read_only=True)
  assert reader.latest_step() is None
  reader.close()
  assert not empty.exists()


def test_a_resume_in_other_dtypes_verifies_then_casts(tmp_path, caplog):
  # Another param_dtype or optimizer.mu_dtype on resume: the arrays were
  # restored straight into the new dtype, failed the fingerprint, and every
  # checkpoint was moved aside (the run restarted from step 0).
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1, 2])
  abstract, shardings = _abstract(_state(0))
  abstract["w"] = jax.ShapeDtypeStruct((64, 64), jnp.bfloat16)
  ckpt = checkpoint_lib.Checkpointer(str(directory))
  with caplog.at_level("WARNING"):
    step, state, _ = ckpt.restore(abstract, shardings, _iterator())
  ckpt.close()
  assert step == 2 and not (tmp_path / "corrupt_checkpoints").exists()
  assert state["w"].dtype == jnp.bfloat16 and state["b"].dtype == jnp.float32
  np.testing.assert_array_equal(state["w"], _state(2)["w"].astype(jnp.bfloat16))
  assert any("Checkpoint 2 stores 1 arrays in other dtypes than the config "
             "asks for (w: float32 -> bfloat16): cast on restore." in
             r.getMessage() for r in caplog.records)


def _as_saved_by_processes(step_dir, states):
  """Rewrites a checkpoint's data item as if `len(states)` processes saved it."""
  data = os.path.join(step_dir, "data")
  os.remove(os.path.join(data, "process_0-of-1.json"))
  for i, state in enumerate(states):
    with open(os.path.join(data, f"process_{i}-of-{len(states)}.json"),
              "w") as f:
      json.dump(state, f)


def test_a_checkpoint_of_another_process_count_restores_not_moved_aside(
    tmp_path):
  # A pod run resumed or sampled on one host: there is no file of this
  # process count. Every checkpoint used to be moved to corrupt_checkpoints.
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1, 2])
  # Two processes, 3 examples each: 6 examples of the global order read.
  _as_saved_by_processes(str(directory / "2"), [{"next_index": 3}] * 2)
  ckpt = checkpoint_lib.Checkpointer(str(directory))
  it = _iterator()
  step, state, _ = ckpt.restore(*_abstract(_state(0)), it)
  assert step == 2 and next(it) == 6
  np.testing.assert_array_equal(state["w"], _state(2)["w"])
  # A position that is more than an example count (grain workers) is a
  # one-line error, and the checkpoint stays where it is.
  _as_saved_by_processes(str(directory / "1"), [
      {"next_index_in_cycle": 0, "iterators_in_use_states": [{}]}] * 2)
  with pytest.raises(ValueError, match=r"^checkpoint 1 in .* was saved by 2 "
                     r"process\(es\) and its data position .* cannot be "
                     r"carried to 1; resume it with 2 process\(es\)\.$"):
    ckpt.restore(*_abstract(_state(0)), _iterator(), step=1)
  # Without an iterator (sampling, evaluation) only the state is restored.
  step, state, _ = ckpt.restore(*_abstract(_state(0)), None, step=1)
  ckpt.close()
  assert step == 1
  np.testing.assert_array_equal(state["w"], _state(1)["w"])
  assert not (tmp_path / "corrupt_checkpoints").exists()


def test_a_position_that_does_not_split_among_the_processes_says_so(
    tmp_path, monkeypatch):
  # 2 processes read 4 examples each (8): 3 processes cannot share them
  # (only after a batch change). The error blamed grain workers.
  from jaxgen.train import data_position  # pylint: disable=g-import-not-at-top
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1])
  _as_saved_by_processes(str(directory / "1"), [{"next_index": 4}] * 2)
  monkeypatch.setattr(data_position.jax, "process_count", lambda: 3)
  with pytest.raises(ValueError, match=r"^checkpoint 1 in .* was saved by 2 "
                     r"process\(es\) at 8 examples read, which do not split "
                     r"evenly among 3; resume it with 2 process\(es\)\.$"):
    data_position.carried(directory, 1)
  monkeypatch.setattr(data_position.jax, "process_count", lambda: 4)
  assert data_position.carried(directory, 1) == {"next_index": 2}


def _numpy_fingerprint(x):
  words = x.view(np.uint32).astype(np.uint64).ravel()
  weights = (np.arange(words.size, dtype=np.uint64) * 2654435761 * 2 + 1)
  return int(np.sum((words * weights) % 2**32) % 2**32)


@pytest.mark.parametrize("on_device", [False, True])
def test_fingerprint_matches_a_numpy_computation_on_both_paths(
    monkeypatch, on_device):
  # Small states are summed with numpy, others on device: same numbers.
  if on_device:
    monkeypatch.setattr(fingerprint_lib, "HOST_FINGERPRINT_BYTES", -1)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5)).astype(np.float32)
  expected = _numpy_fingerprint(x)
  (got,), finite = fingerprint_lib.fingerprint([jnp.asarray(x)])
  assert got == expected and finite
  # Leaves of one shape share their weights, each with its own sum.
  leaves = [x, rng.normal(size=(3, 5)).astype(np.float32),
            rng.normal(size=(5, 3)).astype(np.float32), x[0]]
  got, finite = fingerprint_lib.fingerprint([jnp.asarray(a) for a in leaves])
  assert got == [_numpy_fingerprint(a) for a in leaves] and finite
  # Any single changed word changes it; NaN is reported.
  y = x.copy()
  y[2, 4] = np.nextafter(y[2, 4], np.float32(np.inf))
  assert fingerprint_lib.fingerprint([jnp.asarray(y)])[0][0] != expected
  y[0, 0] = np.nan
  assert not fingerprint_lib.fingerprint([jnp.asarray(y)])[1]


def test_host_and_device_fingerprints_agree_for_every_dtype(monkeypatch):
  rng = np.random.default_rng(1)
  mesh = jax.make_mesh((8,), ("x",))
  sharded = jax.device_put(
      rng.normal(size=(16, 3)).astype(np.float32),
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x")))
  state = {"bf16": jnp.asarray(rng.normal(size=(4, 3)), jnp.bfloat16),
           "int8": jnp.asarray(rng.integers(-128, 127, (7,)), jnp.int8),
           "uint8": jnp.asarray(rng.integers(0, 255, (2, 5)), jnp.uint8),
           "int32": jnp.asarray(rng.integers(-9, 9, (3, 2)), jnp.int32),
           "bool": jnp.asarray(rng.integers(0, 2, (5,)), bool),
           "key": jax.random.key(3), "scalar": jnp.float32(2.5),
           "sharded": sharded}
  host = fingerprint_lib.fingerprint(state)
  monkeypatch.setattr(fingerprint_lib, "HOST_FINGERPRINT_BYTES", -1)
  device = fingerprint_lib.fingerprint(state)
  assert host == device and host[1]
  assert len(set(host[0])) == len(state)  # Nothing trivially zero or equal.
  # The float32 leaf also matches the independent numpy reference.
  leaves = jax.tree.leaves(state)
  i = next(i for i, a in enumerate(leaves) if a is sharded)
  assert host[0][i] == _numpy_fingerprint(np.asarray(sharded))


def test_storage_errors_are_recognised_and_summarised():
  tf_like = RuntimeError("FlushSummaryWriter /x/events; No space left on "
                         "device\n\tFailed to flush 9 events")
  ts_like = ValueError("RESOURCE_EXHAUSTED: Failed to write 346 bytes "
                       "[os_error_code='28'] [tensorstore_spec=...]")
  for error in (tf_like, ts_like, OSError(28, "No space left on device")):
    assert checkpoint_lib.is_storage_error(error)
    assert checkpoint_lib.error_reason(error) == "No space left on device"
  assert not checkpoint_lib.is_storage_error(ValueError("shape mismatch"))


def _replicated(shapes, seed=0):
  """Arrays of `shapes` replicated over all 8 devices."""
  sharding = jax.sharding.NamedSharding(
      jax.make_mesh((8,), ("data",)), jax.sharding.PartitionSpec())
  rng = np.random.default_rng(seed)
  return {f"a{i}": jax.device_put(rng.normal(size=s).astype(np.float32),
                                  sharding) for i, s in enumerate(shapes)}


def _programs_while_saving(directory, state):
  """Programs compiled or read from the cache while saving `state`."""
  before = compile_cache.counts()["requests"]
  ckpt = checkpoint_lib.Checkpointer(str(directory), save_every_steps=1)
  ckpt.save(1, state, _iterator())
  ckpt.wait()
  ckpt.close()
  return compile_cache.counts()["requests"] - before


def test_small_replicated_arrays_are_saved_without_slicing_programs(
    tmp_path):
  # Orbax's default splits every replicated array into one slice per
  # replica, each an eager program: 8 per array on 8 devices (along an axis
  # that 8 divides). Shapes no other test uses, so no program is already in
  # memory; the gated save has shapes of its own too.
  small = _replicated([(24, 3), (40,), (3, 5, 56)])
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(
          array_metadata_store=array_metadata_store.Store()), override=True)
  try:
    # (Checkpointer re-registers the gate; keep orbax's for this save.)
    with mock.patch.object(array_handler, "gate_replica_parallel_saves"):
      assert _programs_while_saving(tmp_path / "default", small) >= 24
  finally:
    gated = array_handler.gate_replica_parallel_saves()
  assert gated
  other = _replicated([(32, 3), (48,), (3, 5, 64)])
  assert _programs_while_saving(tmp_path / "gated", other) == 0
  # An array whose slices reach the gate is still written in 8 parts.
  big = _replicated([(8, 1 << 16)])  # 256 KiB slices.
  assert _programs_while_saving(tmp_path / "big", big) >= 8
  # Either way round, a checkpoint restores the same values.
  for name, state in (("default", small), ("gated", other)):
    ckpt = checkpoint_lib.Checkpointer(str(tmp_path / name))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                            state)
    _, restored, _ = ckpt.restore(
        abstract, jax.tree.map(lambda x: x.sharding, state), _iterator())
    ckpt.close()
    for k in state:
      np.testing.assert_array_equal(restored[k], state[k])


def test_a_handler_registered_with_other_options_is_kept():
  mine = ocp.type_handlers.ArrayHandler(
      array_metadata_store=array_metadata_store.Store(), primary_host=None,
      replica_id=None, use_replica_parallel=False)
  ocp.type_handlers.register_type_handler(jax.Array, mine, override=True)
  try:
    assert not array_handler.gate_replica_parallel_saves()
    assert ocp.type_handlers.get_type_handler(jax.Array) is mine
  finally:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            array_metadata_store=array_metadata_store.Store()), override=True)
    gated = array_handler.gate_replica_parallel_saves()
  assert gated


def test_a_step_folder_orbax_did_not_finalize_is_not_committed(
    tmp_path, monkeypatch):
  # On GCS orbax writes into <step>/ and marks the end with a commit file;
  # a save cut short left <step>/ that counted as committed (a rerun took
  # the unfinished final checkpoint as "already finished").
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  from orbax.checkpoint._src.path import atomicity_defaults  # pylint: disable=g-import-not-at-top
  from jaxgen.train import checks  # pylint: disable=g-import-not-at-top
  from scaling import rows as rows_lib  # pylint: disable=g-import-not-at-top
  ckpt = tmp_path / "run" / "checkpoints"
  for step in (3, 7):
    (ckpt / str(step) / "state").mkdir(parents=True)
  assert sorted(checks.committed_steps(str(ckpt))) == [3, 7]  # Local rename.
  monkeypatch.setattr(atomicity_defaults, "get_default_temporary_path_class",
                      lambda *a, **k: atomicity.CommitFileTemporaryPath)
  (ckpt / "3" / atomicity.COMMIT_SUCCESS_FILE).write_text("")
  assert checks.committed_steps(str(ckpt)) == [3]
  assert not checkpoint_lib.finalized(ckpt / "7")
  assert rows_lib.latest_checkpoint(str(tmp_path / "run")) == 3


def test_a_writer_removes_saves_cut_short_and_a_reader_leaves_them(
    tmp_path, monkeypatch):
  # An unfinalized <step>/ on GCS was never removed (a rerun reaching that
  # step again had to save over it); nor was a local temporary directory
  # older than the newest step a rerun wrote.
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  from orbax.checkpoint._src.path import atomicity_defaults  # pylint: disable=g-import-not-at-top
  local = tmp_path / "local"
  (local / "3" / "state").mkdir(parents=True)
  (local / "5.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)
  checkpoint_lib.Checkpointer(str(local), read_only=True).close()
  assert sorted(os.listdir(local)) == ["3", "5.orbax-checkpoint-tmp-1234"]
  writer = checkpoint_lib.Checkpointer(str(local))
  writer.close()
  assert sorted(os.listdir(local)) == ["3"]
  monkeypatch.setattr(atomicity_defaults, "get_default_temporary_path_class",
                      lambda *a, **k: atomicity.CommitFileTemporaryPath)
  gcs = tmp_path / "gcs"
  for step in (3, 7):
    (gcs / str(step) / "state").mkdir(parents=True)
  (gcs / "3" / atomicity.COMMIT_SUCCESS_FILE).write_text("")
  (gcs / "notes").mkdir()  # No commit file either, but not a step: kept.
  checkpoint_lib.Checkpointer(str(gcs), read_only=True).close()
  assert sorted(os.listdir(gcs)) == ["3", "7", "notes"]
  checkpoint_lib.Checkpointer(str(gcs)).close()
  assert sorted(os.listdir(gcs)) == ["3", "notes"]
