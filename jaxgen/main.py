r"""Command line: `python -m jaxgen.main --config=configs/<family>.py:<preset> --workdir=DIR`.

Kept thin on purpose: everything else is importable and tested. Overrides use
ml_collections syntax, e.g. `--config.batch_size=64 --config.total_flops=1e15`.
On a pod, pass `--multihost` (or set JAXGEN_COORDINATOR etc.) on every host.
"""

import os
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxgen import config_lib
from jaxgen.train import compile_cache
from jaxgen.train import durations
from jaxgen.train import host_malloc

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
flags.DEFINE_bool("multihost", False,
                  "Call jax.distributed.initialize() before touching devices.")
compile_cache.define_flag()
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/simple_diffusion.py:tiny.",
    lock_config=True)


def main(argv):
  config_lib.check_no_arguments(argv)
  try:
    config = FLAGS.config  # Loaded (and overridden) on first access.
    config.keys()  # A config that failed to load raises only when used.
    # `--config.total_flops=...` on a preset with `total_steps` replaces it.
    overrides = config_flags.get_override_values(FLAGS["config"])
    config_lib.check_recorded_fields(overrides)
    durations.command_line_length(config, overrides)
  except Exception as e:  # pylint: disable=broad-except
    print(f"error: {config_lib.error_line(e)}", file=sys.stderr)
    sys.exit(2)
  # Before JAX starts its backend (and threads): XLA:CPU's per-step
  # temporary buffers are then reused instead of page-faulted in again.
  host_malloc.configure()
  import jax  # pylint: disable=g-import-not-at-top
  # Registers every model family under its config.family name.
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.parallel import multihost  # pylint: disable=g-import-not-at-top
  from jaxgen.train import checkpoint  # pylint: disable=g-import-not-at-top
  from jaxgen.train import checks  # pylint: disable=g-import-not-at-top
  from jaxgen.train import preemption  # pylint: disable=g-import-not-at-top
  from jaxgen.train import run_record  # pylint: disable=g-import-not-at-top
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top
  from jaxgen.train import logs  # pylint: disable=g-import-not-at-top
  logs.quiet_libraries(FLAGS.verbosity)
  logs.one_line_warnings()
  # Before anything compiles: JAX decides once whether the cache is used.
  cache_dir = compile_cache.enable(FLAGS.compilation_cache)
  if multihost.want_distributed(FLAGS.multihost):
    try:
      multihost.initialize()
    except ValueError as e:  # Launch settings: one line, not a trace.
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
  # Only multi-host jobs need it in the log: a one-process run's stderr then
  # holds just the error line when a check fails.
  logging.log(logging.INFO if jax.process_count() > 1 else logging.DEBUG,
              "JAX process %d / %d, devices: %s", jax.process_index(),
              jax.process_count(), jax.devices())
  try:
    result = trainer.train_and_evaluate(config, FLAGS.workdir)
    c = compile_cache.counts() if cache_dir else {}
    if c.get("requests"):  # A finished run's rerun compiles nothing.
      logging.info("Compilation cache %s: %d of %d programs read, %d "
                   "compiled.", cache_dir, c["hits"], c["requests"],
                   c["misses"])
    if jax.process_index() == 0:
      print(run_record.summary_line(result, FLAGS.workdir,
                                    samples=bool(config.num_samples)))
  except preemption.Preempted as e:
    # A clean stop that a rerun continues: not a failure.
    print(str(e), file=sys.stderr)
    sys.exit(0)
  except KeyboardInterrupt as e:
    # A second Ctrl-C: one line, and no interpreter shutdown (background
    # checkpoint writes would print pages); committed checkpoints are whole.
    ckpt_dir = os.path.join(FLAGS.workdir, "checkpoints")
    try:
      steps = checks.committed_steps(ckpt_dir)
    except OSError:  # Unreadable storage: say what is known, still exit.
      steps = None
    if steps is None:
      kept = (f"the last committed checkpoint in {ckpt_dir} is kept: rerun "
              "the same command to continue from it.")
    elif steps:
      kept = (f"checkpoint {max(steps)} in {ckpt_dir} is kept: rerun the "
              "same command to continue from it.")
    else:
      kept = (f"no checkpoint was committed yet in {ckpt_dir}: a rerun "
              "starts from step 0.")
    print(f"{e or 'interrupted'}; {kept}", file=sys.stderr, flush=True)
    os._exit(130)  # pylint: disable=protected-access
  except (ValueError, FloatingPointError) as e:
    # Configuration and numerics errors are one readable line, not a trace;
    # --verbosity=1 adds the trace (a ValueError from a model being written).
    if FLAGS.verbosity >= 1:
      traceback.print_exc()
    print(f"error: {config_lib.with_notes(e)}", file=sys.stderr)
    sys.exit(1)
  except (checkpoint.StorageError, OSError) as e:
    # Storage failures: everything that could be written is closed by now;
    # skip interpreter shutdown, where orbax's failed background writes would
    # print pages of "exception was never retrieved".
    text = (f"{e.strerror or e}: {e.filename or ''}; the last committed "
            "checkpoint is kept." if isinstance(e, OSError) else None)
    print(f"error: {config_lib.with_notes(e, text)}", file=sys.stderr,
          flush=True)
    os._exit(1)  # pylint: disable=protected-access


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=config_lib.parse_flags)
