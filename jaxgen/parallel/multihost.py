"""Multi-host launch and global batches built from per-process data.

On a TPU pod or a GPU cluster every host runs the same command; each process
reads its own shard of the data and the global batch is assembled with
`jax.make_array_from_process_local_data`. On CPU (tests, 2 processes on
127.0.0.1) the collectives go through gloo.
"""

import json
import os
from typing import Any, Callable, Dict, Mapping, Optional

from absl import logging
import jax
import numpy as np

from jaxgen.parallel import mesh as mesh_lib

# Variables that say a launcher wants jax.distributed (see `want_distributed`).
_ENV_COORDINATOR = "JAXGEN_COORDINATOR"      # host:port of process 0
_ENV_NUM_PROCESSES = "JAXGEN_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAXGEN_PROCESS_ID"


_LAUNCH_HINT = (f"set {_ENV_COORDINATOR}=host:port (of process 0), "
                f"{_ENV_NUM_PROCESSES}=N and {_ENV_PROCESS_ID}=0..N-1 on "
                "every process")


def want_distributed(flag: bool) -> bool:
  """Whether to call `jax.distributed.initialize` (flag or environment)."""
  return flag or any(v in os.environ for v in (
      _ENV_COORDINATOR, _ENV_NUM_PROCESSES, _ENV_PROCESS_ID))


def launch_settings(coordinator: Optional[str] = None,
                    num_processes: Optional[int] = None,
                    process_id: Optional[int] = None) -> Dict[str, Any]:
  """The arguments and environment of a launch, checked.

  Args:
    coordinator: "host:port" of process 0 (default: $JAXGEN_COORDINATOR).
    num_processes: number of processes (default: $JAXGEN_NUM_PROCESSES).
    process_id: this process's index (default: $JAXGEN_PROCESS_ID).

  Returns:
    `jax.distributed.initialize`'s keyword arguments ({}: JAX detects the
    cluster, e.g. Cloud TPU or SLURM).

  Raises:
    ValueError: a one-line message for settings that cannot work (JAX
      raises an IndexError or waits minutes for some of them).
  """
  coordinator = coordinator or os.environ.get(_ENV_COORDINATOR)
  values = {}
  for name, value, env in (("num_processes", num_processes,
                            _ENV_NUM_PROCESSES),
                           ("process_id", process_id, _ENV_PROCESS_ID)):
    if value is None and env in os.environ:
      try:
        value = int(os.environ[env])
      except ValueError:
        raise ValueError(f"{env}={os.environ[env]!r} is not an integer; "
                         f"{_LAUNCH_HINT}.") from None
    values[name] = value
  n, i = values["num_processes"], values["process_id"]
  if not coordinator:
    if n is not None or i is not None:
      raise ValueError(f"{_ENV_NUM_PROCESSES} / {_ENV_PROCESS_ID} are set "
                       f"but {_ENV_COORDINATOR} is not; {_LAUNCH_HINT}.")
    return {}
  host, _, port = coordinator.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"{_ENV_COORDINATOR}={coordinator!r} is not host:port "
                     "(e.g. 10.0.0.1:1234, the address of process 0).")
  if n is None or i is None or n < 1 or not 0 <= i < n:
    raise ValueError(f"{_ENV_COORDINATOR} needs {_ENV_NUM_PROCESSES} >= 1 "
                     f"and {_ENV_PROCESS_ID} in 0..{_ENV_NUM_PROCESSES}-1 "
                     f"(got {n} and {i}); {_LAUNCH_HINT}.")
  return dict(coordinator_address=coordinator, num_processes=n,
              process_id=i)


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

  Raises:
    ValueError: settings that cannot work, or no cluster to detect.
  """
  if jax.distributed.is_initialized():
    return
  kwargs = launch_settings(coordinator, num_processes, process_id)
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if kwargs:
    # JAX says nothing until every process has connected (or its timeout,
    # minutes later, has passed).
    logging.info("Process %d waiting for all %d processes at %s...",
                 kwargs["process_id"], kwargs["num_processes"],
                 kwargs["coordinator_address"])
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:
    if kwargs:
      raise
    raise ValueError(f"--multihost found no cluster to join ({e}); "
                     f"{_LAUNCH_HINT}.") from None
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


def check_batch_layout(mesh: jax.sharding.Mesh, batch_size: int,
                       process_count: Optional[int] = None,
                       process_of: Optional[Callable[[Any], int]] = None
                       ) -> None:
  """Refuses a mesh on which the processes do not split the batch.

  The data×fsdp axes must give each process its own b = batch / processes
  rows: a `tensor` axis that spans processes makes them copies of each
  other along the batch (the global array came out smaller than the batch
  and failed in the step, after compiling). Rows out of process order (a
  TPU pod's topological device order) train the same and are one warning:
  the held-out and sample-metric readers count rows in process order.

  Args:
    mesh: the run's mesh.
    batch_size: the global batch.
    process_count: processes (default: jax.process_count()).
    process_of: device -> its process (default: `device.process_index`).

  Raises:
    ValueError: one line saying what to change.
  """
  count = jax.process_count() if process_count is None else process_count
  if count == 1:
    return
  process_of = process_of or (lambda d: d.process_index)
  b = batch_size // count
  rows = {}
  indices = mesh_lib.batch_sharding(mesh, 1).devices_indices_map(
      (batch_size,))
  for device, (index,) in indices.items():
    start, stop, _ = index.indices(batch_size)
    rows.setdefault(process_of(device), set()).update(range(start, stop))
  if any(len(rows.get(p, ())) != b for p in range(count)):
    # Processes that hold the same rows: the global array came out smaller
    # than the batch and the step failed, after compiling.
    local = len(mesh.devices.flat) // count
    raise ValueError(
        f"the mesh {dict(mesh.shape)} does not give each of the {count} "
        f"processes its own {b} rows of the batch (data×fsdp shares rows "
        f"between them): keep config.mesh.tensor within one host's {local} "
        "devices, so that data×fsdp splits the batch by host.")
  if not all(rows[p] == set(range(p * b, (p + 1) * b)) for p in range(count)):
    # A device order by physical topology (TPU pods): training is the same
    # (a batch's rows only move between processes), but the held-out and
    # sample-metric readers count rows in process order.
    logging.warning(
        "The mesh's device order does not put the processes' batch rows in "
        "process order (process p holding rows p*%d to (p+1)*%d): "
        "evaluations read their rows in another order, and the padding of a "
        "last short held-out batch may be counted where real rows belong.",
        b, b)


# Fields each host may set for itself: local paths and input threads.
_PER_HOST_FIELDS = ("dataset.data_dir", "dataset.num_threads",
                    "dataset.prefetch_buffer_size", "dataset.worker_count")


def check_same_config(config: Any) -> None:
  """Refuses processes started with other configs than process 0's.

  They would train with other batches, lengths or models and hang in, or
  silently corrupt, the collectives. Process 0's config (as JSON) is
  broadcast; a process that differs names the fields, process 0 names the
  processes.

  Args:
    config: this process's run config (an ml_collections.ConfigDict).

  Raises:
    ValueError: on every process, when any of them differs.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  own = {k: v for k, v in config_lib.flatten(
      json.loads(config.to_json_best_effort())).items()
         if not k.startswith(_PER_HOST_FIELDS)}
  text = json.dumps(own, sort_keys=True, default=str).encode()
  sizes = np.asarray(multihost_utils.process_allgather(
      np.array(len(text), np.int32))).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:len(text)] = np.frombuffer(text, np.uint8)
  first = bytes(np.asarray(multihost_utils.broadcast_one_to_all(
      padded)).astype(np.uint8)[:int(sizes[0])])
  problem = None
  if first != text:
    ref = json.loads(first)
    changes = [f"{k}: {ref.get(k)!r} on process 0, {own.get(k)!r} here"
               for k in sorted(set(ref) | set(own)) if ref.get(k) != own.get(k)]
    problem = (
        f"process {jax.process_index()} was started with another config than "
        f"process 0 ({'; '.join(changes[:3])}"
        f"{'; ...' if len(changes) > 3 else ''}); start every process with "
        "the same flags.")
  raise_on_every_process(problem, lambda which: (
      f"process(es) {which} were started with another config than this "
      "process 0 (their error names the fields); start every process with "
      "the same flags."))


def raise_on_every_process(problem: Optional[str],
                           others: Callable[[str], str]) -> None:
  """Raises `problem` here, and on every process without one the line
  `others(the processes with one)`: a refusal on one process alone would
  leave the others waiting in a collective.

  Args:
    problem: this process's one-line error, or None.
    others: builds the error of a process without one from the list of
      those with one ("1, 3").

  Raises:
    ValueError: on every process, when any of them has a problem.
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    bad = np.flatnonzero(np.asarray(multihost_utils.process_allgather(
        np.int32(problem is not None))).reshape(-1))
    if len(bad) and problem is None:
      problem = others(", ".join(map(str, bad)))
  if problem:
    raise ValueError(problem)


# DatasetInfo fields every process must agree on: each host may read its own
# copy of the data (dataset.data_dir), and a copy of another size gives it
# another run length (epochs), schedule and shuffle.
_SAME_DATA_FIELDS = ("num_examples", "image_size", "channels", "num_classes",
                     "num_frames", "batches_per_epoch")


def check_same_data(info: Any) -> None:
  """Refuses processes whose training data differ (a host's copy of the
  dataset incomplete, say), before compiling.

  Args:
    info: this process's `DatasetInfo`.

  Raises:
    ValueError: the same line on every process, naming the field and each
      process's value.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  own = [int(getattr(info, f) or 0) for f in _SAME_DATA_FIELDS]
  # As two int32 halves: without jax_enable_x64 an int64 would be cut to
  # 32 bits on the way (datasets of over 2^31 examples exist).
  halves = np.array([[v >> 31, v & (2**31 - 1)] for v in own], np.int32)
  every = np.asarray(multihost_utils.process_allgather(halves)).reshape(
      -1, len(own), 2).astype(np.int64)
  every = (every[..., 0] << 31) + every[..., 1]
  for i, field in enumerate(_SAME_DATA_FIELDS):
    if (every[:, i] != every[0, i]).any():
      values = ", ".join(f"{int(v)} on process {p}"
                         for p, v in enumerate(every[:, i]))
      raise ValueError(
          f"the processes read different training data ({field}: {values}); "
          "point every host's config.dataset.data_dir at the same, complete "
          "copy.")
