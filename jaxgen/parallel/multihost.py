"""Multi-host launch and global batches built from per-process data.

On a TPU pod or a GPU cluster every host runs the same command; each process
reads its own shard of the data and the global batch is assembled with
`jax.make_array_from_process_local_data`. On CPU (tests, 2 processes on
127.0.0.1) the collectives go through gloo.
"""

import os
from typing import Any, Mapping, Optional

from absl import logging
import jax
import numpy as np

from jaxgen.parallel import mesh as mesh_lib

# Variables that say a launcher wants jax.distributed (see `want_distributed`).
_ENV_COORDINATOR = "JAXGEN_COORDINATOR"      # host:port of process 0
_ENV_NUM_PROCESSES = "JAXGEN_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAXGEN_PROCESS_ID"


def want_distributed(flag: bool) -> bool:
  """Whether to call `jax.distributed.initialize` (flag or environment)."""
  return flag or _ENV_COORDINATOR in os.environ


def initialize(coordinator: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """Initialises `jax.distributed`, once, before any device is touched.

  With no arguments and no JAXGEN_* variables, JAX autodetects the cluster
  (Cloud TPU, SLURM, ...). On CPU the gloo collectives are selected so that
  several processes on one machine can really all-reduce.

  Args:
    coordinator: "host:port" of process 0 (default: $JAXGEN_COORDINATOR).
    num_processes: number of processes (default: $JAXGEN_NUM_PROCESSES).
    process_id: this process's index (default: $JAXGEN_PROCESS_ID).
  """
  if jax.distributed.is_initialized():
    return
  coordinator = coordinator or os.environ.get(_ENV_COORDINATOR)
  if num_processes is None and _ENV_NUM_PROCESSES in os.environ:
    num_processes = int(os.environ[_ENV_NUM_PROCESSES])
  if process_id is None and _ENV_PROCESS_ID in os.environ:
    process_id = int(os.environ[_ENV_PROCESS_ID])
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if coordinator:
    kwargs = dict(coordinator_address=coordinator,
                  num_processes=num_processes, process_id=process_id)
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d / %d, %d local / %d devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def global_batch(mesh: jax.sharding.Mesh,
                 local_batch: Mapping[str, np.ndarray]) -> Any:
  """Turns this process's slice of the batch into global sharded arrays.

  Args:
    mesh: the device mesh.
    local_batch: dict of numpy arrays whose leading dim is this process's share
      of the global batch (global_batch_size / process_count).

  Returns:
    Dict of `jax.Array`s with the global leading dim, sharded over data×fsdp.
  """
  return {
      k: jax.make_array_from_process_local_data(
          mesh_lib.batch_sharding(mesh, np.ndim(v)), np.asarray(v))
      for k, v in local_batch.items()
  }
