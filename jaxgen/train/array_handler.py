"""The jax.Array handler orbax writes checkpoints with: replica slices gated.

Orbax writes an array replicated over R devices as R slices, one written by
each replica, which spreads the copies and writes of large arrays. Each slice
is an eager device op, compiled once per shape and position; for small
arrays the programs cost far more than the parallel write saves.
`gate_replica_parallel_saves` (called by every `checkpoint.Checkpointer`)
re-registers orbax's default handler with a minimum slice size.
"""

import logging as pylogging

from absl import logging
import jax
import orbax.checkpoint as ocp

# The smallest slice a replica writes. Ungated, a tiny run on 8 devices
# sliced its 27 arrays into 216 programs: its first save took 3.4 s (0.75 s
# gated). With R replicas, arrays under R x 256 KiB are written whole by one
# replica (2 MiB on 8 devices, 64 MiB on 256).
MIN_REPLICA_SLICE_BYTES = 1 << 18


class _DropOverrideWarning(pylogging.Filter):
  """Drops orbax's warning that a type handler is being replaced."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return "overriding" not in str(record.msg)


# ArrayHandler attributes that must hold orbax's defaults for the gate to
# replace the handler (anything else was configured by the user).
_DEFAULT_ARRAY_HANDLER = (
    "_metadata_key", "_primary_host", "_replica_id", "_use_replica_parallel",
    "_min_slice_bytes_for_replica_parallel",
    "_max_replicas_for_replica_parallel", "_enable_write_sharding_file",
    "_enable_replica_parallel_separate_folder", "_dispatcher")


def gate_replica_parallel_saves(min_bytes: int = MIN_REPLICA_SLICE_BYTES
                                ) -> bool:
  """Registers orbax's jax.Array handler with a minimum replica-slice size.

  Only orbax's own default handler is replaced (a handler registered with
  any other option stays), by one equal to it but for the gate, with the
  same kind of array-metadata store (it records typed PRNG keys). Checkpoints
  written with or without the gate restore alike; only their chunk layout
  differs. Every process of a run must agree (each `Checkpointer` calls
  this): with the layouts of two processes differing, orbax's metadata check
  fails the save.

  Args:
    min_bytes: the smallest part of a replicated array written by each
      replica; smaller arrays are written whole by replica 0.

  Returns:
    Whether the gated handler is registered.
  """
  current = ocp.type_handlers.get_type_handler(jax.Array)
  if type(current) is not ocp.type_handlers.ArrayHandler:  # pylint: disable=unidiomatic-typecheck
    return False
  try:  # Private modules and attributes: without them keep orbax's handler.
    from orbax.checkpoint._src.metadata import array_metadata_store  # pylint: disable=g-import-not-at-top
    store = array_metadata_store.Store
    gated = ocp.type_handlers.ArrayHandler(
        array_metadata_store=store(), min_slice_bytes_for_replica_parallel=(
            min_bytes))
    default = ocp.type_handlers.ArrayHandler(array_metadata_store=store())
    options = lambda h: [getattr(h, a) for a in _DEFAULT_ARRAY_HANDLER]  # noqa: E731
    if options(current) == options(gated):
      return True
    if (options(current) != options(default) or
        type(getattr(current, "_array_metadata_store")) is not store):  # pylint: disable=unidiomatic-typecheck
      return False
  except (ImportError, AttributeError, TypeError):
    return False
  quiet = _DropOverrideWarning()
  absl_logger = logging.get_absl_logger()
  absl_logger.addFilter(quiet)
  try:
    ocp.type_handlers.register_type_handler(jax.Array, gated, override=True)
  finally:
    absl_logger.removeFilter(quiet)
  return True
