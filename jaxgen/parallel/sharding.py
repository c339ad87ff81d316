"""From logical axis names on parameters to `NamedSharding`s on the mesh.

Models box every parameter with `nn.with_logical_partitioning`; the objective's
`init` returns a state whose leaves are such boxes (optimizer moments and EMA
copies inherit them through `jax.tree.map`). The trainer evaluates `init`
abstractly, maps the names through `config.logical_axis_rules` and then creates
the state directly sharded, so no full copy ever lands on one device.
"""

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from jaxgen.parallel import mesh as mesh_lib


def rules_from_config(rules: Sequence[Sequence[Any]]) -> Tuple[Tuple[str, Any], ...]:
  """Normalises config rules (lists from ml_collections) to flax's tuples.

  Args:
    rules: sequence of (logical_name, mesh_axis or list of mesh axes or None).

  Returns:
    A tuple of (name, axis) pairs, lists turned into tuples.

  Raises:
    ValueError: a rule that is no (name, axes) pair, or names a mesh axis
      the mesh does not have (jax's "Resource axis ... not found in mesh"
      named no config field).
  """
  out = []
  for i, rule in enumerate(rules):
    shown = tuple(rule) if isinstance(rule, (list, tuple)) else repr(rule)
    where = f"config.logical_axis_rules[{i}]={shown}"
    if not isinstance(rule, (list, tuple)) or len(rule) != 2:
      raise ValueError(f"{where}: each rule is a pair (logical name, mesh "
                       "axis or axes or None), e.g. ('embed', 'fsdp').")
    name, axes = rule
    axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
    unknown = [a for a in (axes if isinstance(axes, tuple) else (axes,))
               if a is not None and a not in mesh_lib.MESH_AXES]
    if unknown:
      raise ValueError(f"{where}: {unknown[0]!r} is no mesh axis; use "
                       f"{', '.join(mesh_lib.MESH_AXES)} or None.")
    out.append((str(name), axes))
  return tuple(out)


def abstract_state_and_shardings(
    init_fn: Callable[..., Any], mesh: jax.sharding.Mesh,
    rules: Sequence[Tuple[str, Any]], *args) -> Tuple[Any, Any]:
  """Abstractly evaluates `init_fn(*args)` and derives its shardings.

  Args:
    init_fn: returns a (boxed) state pytree.
    mesh: the device mesh.
    rules: logical axis rules.
    *args: arguments of `init_fn` (arrays or ShapeDtypeStructs).

  Returns:
    (abstract_unboxed_state, shardings), two pytrees of the same structure;
    leaves without logical names are replicated.
  """
  boxed = jax.eval_shape(init_fn, *args)
  specs = nn.get_partition_spec(boxed)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  # Plain unboxing would apply a sharding constraint, which is meaningless
  # (and an error) on ShapeDtypeStructs.
  abstract = jax.tree.map(
      lambda x: x.unbox(apply_constraint=False)
      if isinstance(x, nn.Partitioned) else x,
      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  # Leaves that carried no names become PartitionSpec() -> replicated.
  shardings = jax.tree.map(
      lambda s: s if isinstance(s, NamedSharding)
      else NamedSharding(mesh, jax.sharding.PartitionSpec()),
      shardings, is_leaf=lambda x: isinstance(x, (NamedSharding,
                                                  jax.sharding.PartitionSpec)))
  # Optimizer states of frozen parameter subsets (optax.multi_transform)
  # hold empty MaskedNode()s; keep them in the shardings so both trees have
  # one structure.
  masked = lambda x: isinstance(x, optax.MaskedNode)
  shardings = jax.tree.map(lambda a, s: a if masked(a) else s, abstract,
                           shardings, is_leaf=masked)
  check_divisible(abstract, shardings)
  return abstract, shardings


def check_divisible(abstract: Any, shardings: Any) -> None:
  """Refuses shardings that split a dimension unevenly, before compiling.

  jax's own error ("array axis 1 is partitioned 6 times, but the dimension
  size is 64") names neither the array nor what to change.

  Args:
    abstract: the abstract state (ShapeDtypeStructs).
    shardings: its NamedShardings (same structure).

  Raises:
    ValueError: one line naming the first array, its dimension, the mesh
      axes and the config fields that decide them.
  """
  bad = []

  def visit(path, leaf, sharding):
    if not isinstance(sharding, NamedSharding) or bad:
      return
    for dim, (size, axes) in enumerate(zip(leaf.shape, sharding.spec)):
      names = (axes,) if isinstance(axes, str) else tuple(axes or ())
      ways = math.prod(sharding.mesh.shape[a] for a in names)
      if size % ways:
        bad.append(f"{jax.tree_util.keystr(path, simple=True, separator='/')}"
                   f" {tuple(leaf.shape)}: dimension {dim} ({size}) is split "
                   f"{ways} ways over mesh axes {'×'.join(names)}")
        return

  jax.tree_util.tree_map_with_path(
      visit, abstract, shardings,
      is_leaf=lambda x: isinstance(x, optax.MaskedNode))
  if bad:
    raise ValueError(f"{bad[0]}; choose config.mesh sizes that divide it, or "
                     "map its logical axis to None in "
                     "config.logical_axis_rules.")


# XLA options for programs that run once (state init): on CPU, backend
# optimisation level 0 halves their compile time (3.2 -> 1.8 s for the tiny
# U-ViT's init) and changes no value; but its unoptimised threefry code runs
# ~3.5x slower, which loses from about R3GAN cifar10's size on (42M params:
# 3.1 vs 3.3 s) and costs DC-AE f32c32_in (323M) 30.8 s instead of 18.7 s.
# So the options apply to states of at most ONE_OFF_MAX_ELEMENTS elements.
ONE_OFF_COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 0}}
ONE_OFF_MAX_ELEMENTS = 2**27


def placed_as(tree: Any, dtypes: Any, shardings: Any) -> Any:
  """`tree`'s arrays cast to `dtypes` and laid out as `shardings`.

  Arrays split over several processes' devices (a run restored on a
  multi-host mesh) cannot be read on one host: the tree is cast and
  resharded on the devices, by one compiled copy over the same global
  devices (not one compile per array). A tree this process holds whole
  goes through the host, which also moves it onto another device set (a
  run restored on all devices, used on some).

  Args:
    tree: a pytree of jax.Arrays.
    dtypes: the dtypes wanted, a pytree of the same structure.
    shardings: the shardings wanted, a pytree of the same structure.

  Returns:
    The placed pytree.
  """
  if all(x.is_fully_addressable for x in jax.tree.leaves(tree)):
    return jax.tree.map(
        lambda x, t, s: jax.device_put(np.asarray(jax.device_get(x)).astype(t),
                                       s), tree, dtypes, shardings)
  cast = lambda xs: jax.tree.map(lambda x, t: x.astype(t), xs, dtypes)  # noqa: E731
  return jax.jit(cast, out_shardings=shardings)(tree)


def create_sharded(init_fn: Callable[..., Any], shardings: Any, *args) -> Any:
  """Runs `init_fn` under jit so its output is created already sharded.

  The program runs once, so a small state's program is compiled for compile
  speed (`ONE_OFF_COMPILER_OPTIONS` of the backend).

  Args:
    init_fn: returns a boxed state pytree.
    shardings: output shardings (from `abstract_state_and_shardings`).
    *args: arguments of `init_fn`.

  Returns:
    The unboxed state, laid out as `shardings` says.
  """
  lowered = jax.jit(lambda *a: nn.unbox(init_fn(*a)),
                    out_shardings=shardings).lower(*args)
  return lowered.compile(
      compiler_options=one_off_options(lowered.out_info))(*args)


def one_off_options(out_info: Any) -> Optional[Dict[str, Any]]:
  """Compiler options for a run-once program producing `out_info`.

  Args:
    out_info: a pytree of shaped values (e.g. `jax.stages.Lowered.out_info`).

  Returns:
    The backend's `ONE_OFF_COMPILER_OPTIONS` if the outputs hold at most
    `ONE_OFF_MAX_ELEMENTS` elements, else None (XLA's defaults).
  """
  elements = sum(math.prod(x.shape) for x in jax.tree.leaves(out_info))
  if elements > ONE_OFF_MAX_ELEMENTS:
    return None
  return ONE_OFF_COMPILER_OPTIONS.get(jax.default_backend())


def per_device_bytes(tree: Any) -> int:
  """Largest number of bytes of `tree` held by any one addressable device."""
  per_device = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      per_device[shard.device] = (per_device.get(shard.device, 0) +
                                  shard.data.size * shard.data.dtype.itemsize)
  return max(per_device.values()) if per_device else 0


def abstract_bytes_per_device(abstract: Any, shardings: Any) -> int:
  """Bytes of one device's shards of an abstract tree under `shardings`.

  Args:
    abstract: pytree of ShapeDtypeStructs.
    shardings: matching pytree of NamedShardings.

  Returns:
    Sum over leaves of the shard size times the item size (shards are of
    equal size; a replicated leaf counts in full).
  """
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(
      shardings, is_leaf=lambda x: isinstance(x, NamedSharding))):
    shard = sharding.shard_shape(leaf.shape)
    total += math.prod(shard) * jnp.dtype(leaf.dtype).itemsize
  return int(total)
