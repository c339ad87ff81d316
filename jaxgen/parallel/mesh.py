"""Device mesh from config: `data × fsdp × tensor`, one axis may be -1.

The mesh axis types are `Auto` explicitly: `jax.make_mesh` defaults to Explicit
axes since jax 0.9, while jaxgen's Linen models use logical rules and
`with_sharding_constraint`, which is the GSPMD (Auto) world.
"""

import math
from typing import Sequence, Tuple

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
# The batch dimension is split over these mesh axes.
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_config: ml_collections.ConfigDict,
               num_devices: int) -> Tuple[int, int, int]:
  """Resolves the (data, fsdp, tensor) sizes, filling in a single -1.

  Args:
    mesh_config: has integer fields `data`, `fsdp`, `tensor`.
    num_devices: devices available to the whole job.

  Returns:
    The three axis sizes, whose product is `num_devices`.

  Raises:
    ValueError: more than one -1, a non-positive size, or a product that does
      not match the number of devices.
  """
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  unknown = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
  if len(unknown) > 1:
    raise ValueError(
        f"At most one of config.mesh.{{data,fsdp,tensor}} may be -1; got "
        f"{dict(zip(MESH_AXES, sizes))}.")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"config.mesh sizes must be positive or -1; got "
                     f"{dict(zip(MESH_AXES, sizes))}.")
  known = math.prod(s for s in sizes if s != -1)
  if unknown:
    if num_devices % known:
      raise ValueError(
          f"config.mesh {dict(zip(MESH_AXES, sizes))}: the fixed axes "
          f"({known}) do not divide the {num_devices} devices; change "
          f"config.mesh so their product divides {num_devices}.")
    sizes[MESH_AXES.index(unknown[0])] = num_devices // known
  elif known != num_devices:
    raise ValueError(
        f"config.mesh {dict(zip(MESH_AXES, sizes))} has {known} devices but "
        f"{num_devices} are available; make the product {num_devices} or set "
        f"one axis to -1.")
  return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict,
              devices: Sequence[jax.Device] = None) -> jax.sharding.Mesh:
  """Builds the `data × fsdp × tensor` mesh with Auto axis types.

  Args:
    mesh_config: `config.mesh`.
    devices: devices to use (default: all devices of the job).

  Returns:
    A `jax.sharding.Mesh`.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, devices=devices,
                       axis_types=(AxisType.Auto,) * len(MESH_AXES))


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
  """Number of ways the batch is split (data × fsdp)."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int) -> NamedSharding:
  """Sharding of a batch array: leading dim over data×fsdp, rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Fully replicated sharding on `mesh`."""
  return NamedSharding(mesh, P())
