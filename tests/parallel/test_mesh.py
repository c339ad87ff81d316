"""Mesh construction from config and its one-line errors."""

import functools
import logging

import jax
from jax.sharding import AxisType
import ml_collections
import numpy as np
import pytest

from jaxgen.parallel import mesh as mesh_lib
from jaxgen.parallel import multihost
from jaxgen.parallel import sharding as sharding_lib


def _cfg(data, fsdp, tensor):
  return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


@pytest.mark.parametrize("sizes,expected", [
    ((-1, 1, 1), (8, 1, 1)), ((2, 2, 2), (2, 2, 2)), ((1, -1, 2), (1, 4, 2)),
    ((2, 4, -1), (2, 4, 1))])
def test_mesh_shape_resolves_minus_one(sizes, expected):
  assert mesh_lib.mesh_shape(_cfg(*sizes), 8) == expected


@pytest.mark.parametrize("sizes,match", [
    ((2, 2, 1), "4 devices but 8"), ((-1, -1, 1), "At most one"),
    ((3, -1, 1), "do not divide"), ((0, 8, 1), "positive")])
def test_mesh_shape_errors(sizes, match):
  with pytest.raises(ValueError, match=match):
    mesh_lib.mesh_shape(_cfg(*sizes), 8)


def test_make_mesh_is_auto_typed_and_batch_sharding_splits_rows():
  mesh = mesh_lib.make_mesh(_cfg(2, 2, 2))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert mesh_lib.data_parallel_size(mesh) == 4
  x = jax.device_put(np.arange(16.).reshape(8, 2),
                     mesh_lib.batch_sharding(mesh, 2))
  # 4-way split of 8 rows -> 2 rows per shard, replicated over tensor.
  assert {s.data.shape for s in x.addressable_shards} == {(2, 2)}


def test_rules_from_config_turns_lists_into_tuples():
  rules = sharding_lib.rules_from_config([["a", ["data", "fsdp"]],
                                          ["b", "tensor"], ["c", None]])
  assert rules == (("a", ("data", "fsdp")), ("b", "tensor"), ("c", None))


def test_one_off_options_only_for_small_states(monkeypatch):
  small = {"w": jax.ShapeDtypeStruct((1024, 1024), np.float32)}
  # 2**28 elements: never allocated, only counted.
  large = {"w": jax.ShapeDtypeStruct((2**14, 2**14), np.float32)}
  assert sharding_lib.one_off_options(small) == (
      sharding_lib.ONE_OFF_COMPILER_OPTIONS.get(jax.default_backend()))
  assert sharding_lib.one_off_options(large) is None
  monkeypatch.setattr(sharding_lib, "ONE_OFF_MAX_ELEMENTS", 1024 * 1024 - 1)
  assert sharding_lib.one_off_options(small) is None


def test_create_sharded_values_do_not_depend_on_the_one_off_options(
    monkeypatch):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  def init_fn(rng):
    return nn.Dense(64).init(rng, np.zeros((1, 32), np.float32))

  mesh = mesh_lib.make_mesh(_cfg(-1, 1, 1))
  shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh),
                           jax.eval_shape(init_fn, jax.random.key(0)))
  fast_compile = sharding_lib.create_sharded(init_fn, shardings,
                                             jax.random.key(3))
  monkeypatch.setattr(sharding_lib, "ONE_OFF_MAX_ELEMENTS", 0)
  assert sharding_lib.one_off_options(fast_compile) is None
  default = sharding_lib.create_sharded(init_fn, shardings, jax.random.key(3))
  for a, b in zip(jax.tree.leaves(fast_compile), jax.tree.leaves(default)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_batch_layout_must_split_the_rows_by_process(caplog):
  # Two pretend processes of 4 devices each (ids 0-3 and 4-7).
  process_of = lambda d: d.id // 4  # noqa: E731
  check = functools.partial(multihost.check_batch_layout, batch_size=16,
                            process_count=2, process_of=process_of)
  for data, fsdp, tensor in ((8, 1, 1), (4, 2, 1), (2, 2, 2), (1, 4, 2)):
    check(jax.make_mesh((data, fsdp, tensor), mesh_lib.MESH_AXES,
                        axis_types=(AxisType.Auto,) * 3))
  # A tensor axis across the processes: both hold every row.
  with pytest.raises(ValueError) as e:
    check(jax.make_mesh((1, 1, 8), mesh_lib.MESH_AXES,
                        axis_types=(AxisType.Auto,) * 3))
  assert str(e.value) == (
      "the mesh {'data': 1, 'fsdp': 1, 'tensor': 8} does not give each of "
      "the 2 processes its own 8 rows of the batch (data×fsdp shares rows "
      "between them): keep config.mesh.tensor within one host's 4 devices, "
      "so that data×fsdp splits the batch by host.")
  # Process 1's devices first (a topological order): it trains the same,
  # one warning for the evaluations' row order.
  assert not caplog.records
  devices = np.array(jax.devices()[4:] + jax.devices()[:4]).reshape(8, 1, 1)
  with caplog.at_level(logging.WARNING):
    check(jax.sharding.Mesh(devices, mesh_lib.MESH_AXES))
  assert ["process order" in r.getMessage() for r in caplog.records] == [True]
  # One process: nothing to check.
  multihost.check_batch_layout(
      jax.make_mesh((1, 1, 8), mesh_lib.MESH_AXES,
                    axis_types=(AxisType.Auto,) * 3), 16)


def test_uneven_shardings_are_one_line_errors_naming_the_array():
  mesh = jax.make_mesh((1, 6, 1), mesh_lib.MESH_AXES, devices=jax.devices()[:6],
                       axis_types=(AxisType.Auto,) * 3)
  spec = jax.sharding.PartitionSpec(None, ("fsdp", "tensor"))
  shardings = {"params": {"embed": jax.sharding.NamedSharding(mesh, spec)}}
  fits = {"params": {"embed": jax.ShapeDtypeStruct((9, 60), np.float32)}}
  sharding_lib.check_divisible(fits, shardings)
  uneven = {"params": {"embed": jax.ShapeDtypeStruct((9, 64), np.float32)}}
  with pytest.raises(ValueError) as e:
    sharding_lib.check_divisible(uneven, shardings)
  assert str(e.value) == (
      "params/embed (9, 64): dimension 1 (64) is split 6 ways over mesh axes "
      "fsdp×tensor; choose config.mesh sizes that divide it, or map its "
      "logical axis to None in config.logical_axis_rules.")


@pytest.mark.parametrize("rules,message", [
    ([("embed", "fsdb")], "config.logical_axis_rules[0]=('embed', 'fsdb'): "
     "'fsdb' is no mesh axis; use data, fsdp, tensor or None."),
    ([("batch", ["data", "fsdp"]), ("mlp", ("tensor", "model"))],
     "config.logical_axis_rules[1]=('mlp', ('tensor', 'model')): 'model' is "
     "no mesh axis; use data, fsdp, tensor or None."),
    ([("embed", "fsdp", "tensor")], "config.logical_axis_rules[0]=('embed', "
     "'fsdp', 'tensor'): each rule is a pair (logical name, mesh axis or axes "
     "or None), e.g. ('embed', 'fsdp')."),
])
def test_bad_axis_rules_are_one_line_errors(rules, message):
  with pytest.raises(ValueError) as e:
    sharding_lib.rules_from_config(rules)
  assert str(e.value) == message


def test_axis_rules_become_flax_tuples():
  assert sharding_lib.rules_from_config(
      [["batch", ["data", "fsdp"]], ("embed", "fsdp"), ("heads", None)]) == (
          ("batch", ("data", "fsdp")), ("embed", "fsdp"), ("heads", None))
