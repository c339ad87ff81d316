r"""Benchmark one train step: `python -m jaxgen.bench --config=configs/x.py:preset`.

Compiles the sharded train step exactly as the trainer does, on synthetic
batches of the configured shape, and prints parameter count, step time (median
of several), examples/s, TFLOP/s per device, MFU and compiled memory. With
`--params_only` it prints parameter count and analytic FLOPs without compiling
(useful for the paper-sized presets on a laptop). `--compile_only` compiles
and reports XLA's memory analysis without allocating or running anything.
`--fit_memory=16` searches the largest per-device batch whose compiled step
needs at most 16 GiB per device (doubling, then bisection, in multiples of the
smallest batch the run accepts; compiles only), so paper-sized presets can be
sized for a device without having one.
"""

import json
import math
import re
import sys
import time
from typing import Any, Dict

from absl import app
from absl import flags
from ml_collections import config_flags

from jaxgen import config_lib
from jaxgen.train import compile_cache
from jaxgen.train import durations
from jaxgen.train import host_malloc
from jaxgen.train import logs

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 10, "Timed steps (after 2 warm-up steps).",
                     lower_bound=1)
flags.DEFINE_bool("params_only", False,
                  "Only count parameters and analytic FLOPs (no compile).")
flags.DEFINE_bool("compile_only", False,
                  "Compile and report memory, without running.")
flags.DEFINE_float("fit_memory", None, "GiB per device: find the largest "
                   "per-device batch whose compiled step fits (compiles only).",
                   lower_bound=0.0)
flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
compile_cache.define_flag()
config_flags.DEFINE_config_file("config", None, "Config file:preset.",
                                lock_config=True)


def out_of_memory(error: BaseException) -> bool:
  """Whether `error` says the device memory ran out (XLA's compile-time
  refusal on TPU, an allocation failure on GPU)."""
  text = str(error)
  return ("RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()
          or re.search(r"\bOOM\b", text) is not None)


class DoesNotFit(RuntimeError):
  """The compiled step needs more device memory than the limit given.

  Attributes:
    memory: bench.run's measurements so far (compile time, memory_* bytes).
  """

  def __init__(self, message: str, memory):
    super().__init__(message)
    self.memory = memory


def run(config, steps: int = 10, params_only: bool = False,
        compile_only: bool = False, memory_limit_bytes=None):
  """Benchmarks `config`'s train step.

  Args:
    config: a run config.
    steps: number of timed steps.
    params_only: skip compilation and timing.
    compile_only: compile and report memory, but allocate and run nothing.
    memory_limit_bytes: if given, a compiled step whose memory analysis
      needs more per device raises `DoesNotFit` before anything is
      allocated (an out-of-memory at run time would cost the same compile
      and leave the allocator fragmented).

  Returns:
    Dict of measurements (see module docstring).
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.data import pipeline as data_pipeline  # pylint: disable=g-import-not-at-top
  from jaxgen.train import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top
  from jaxgen.parallel import sharding as sharding_lib  # pylint: disable=g-import-not-at-top

  if not any(config.get(u) for u in ("total_steps", "total_examples",
                                     "total_epochs", "total_flops")):
    config.total_steps = 1000
  info = data_pipeline.DatasetInfo.synthetic(config.dataset)
  s = trainer.setup(config, data_info=info)
  init_rng, base_rng = jax.random.split(jax.random.key(config.seed))
  out = {"family": config.family, "devices": jax.device_count(),
         "device_kind": jax.devices()[0].device_kind,
         "batch_size": int(config.batch_size),
         "train_flops_per_example": s.flops_per_example}
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    if params_only:
      _, abstract, shardings = trainer.abstract_state(s, init_rng)
      out.update(s.objective.num_params(abstract))
      # Params + optimizer state + EMA on one device of the configured mesh.
      out["state_bytes_per_device"] = sharding_lib.abstract_bytes_per_device(
          abstract, shardings)
      return out
    t, before = time.time(), compile_cache.counts(this_thread=True)
    init_fn, _, shardings, step, batch_sh = trainer.compile_step(s, base_rng)
    out["compile_s"] = time.time() - t
    # A warm persistent cache makes compile_s a read from disk: the step was
    # looked up and nothing was compiled (this thread's counts, so other
    # threads compiling at the same time do not enter).
    after = compile_cache.counts(this_thread=True)
    out["compile_cached"] = (after["requests"] > before["requests"] and
                             after["misses"] == before["misses"])
    out.update({f"memory_{k}": v for k, v in
                flops_lib.memory_summary(step).items()})
    # Per device: XLA's cost analysis is of one partition of the program.
    out["xla_flops_per_step"] = flops_lib.compiled_flops(step)
    need = out.get("memory_total_bytes", 0)
    if memory_limit_bytes and need > memory_limit_bytes:
      raise DoesNotFit(
          f"RESOURCE_EXHAUSTED: the compiled step needs {need / 2**30:.1f} "
          f"GiB per device, over the {memory_limit_bytes / 2**30:.1f} GiB "
          "limit", out)
    if compile_only:
      return out
    # Where a cold entry's time goes besides the step's compile: the
    # one-off init program (compiled and run) and the first calls.
    t = time.perf_counter()
    state = jax.block_until_ready(
        sharding_lib.create_sharded(init_fn, shardings, init_rng))
    out["init_s"] = time.perf_counter() - t
    out.update(s.objective.num_params(state))
    batch = synthetic_batch(s, batch_sh)
    times = []
    for i in range(steps + 2):
      t = time.perf_counter()
      state, metrics = step(state, batch)
      jax.block_until_ready((state, metrics))
      if i == 0:
        out["first_step_s"] = time.perf_counter() - t
      if i >= 2:  # The first calls include transfers and autotuning.
        times.append(time.perf_counter() - t)
  step_time = float(np.median(times))
  eps = config.batch_size / step_time
  tput = flops_lib.throughput(s.flops_per_example, eps, jax.device_count(),
                              flops_lib.peak_flops_per_device())
  out.update(step_time_s=step_time, examples_per_sec=eps,
             loss=float(metrics["loss"]), **tput)
  return out


def synthetic_batch(s, shardings, seed: int = 0):
  """A device batch of the train step's shapes: pixels uniform in [-1, 1].

  Args:
    s: the trainer's setup (`trainer.setup`).
    shardings: the batch shardings `trainer.compile_step` returned.
    seed: numpy seed.

  Returns:
    {name: sharded jax.Array} matching `s.batch_spec`; labels (if any) are
    drawn from the dataset's classes.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  batch = {}
  for k, spec in s.batch_spec.items():
    if k == "label":
      value = rng.integers(0, max(s.data_info.num_classes, 1), spec.shape)
    else:
      value = rng.uniform(-1, 1, spec.shape)
    batch[k] = jax.device_put(value.astype(spec.dtype), shardings[k])
  return batch


def batch_granule(config, dp: int) -> int:
  """The smallest per-device batch the run's checks accept (its multiples
  are the batches a run can take): 1, or e.g. the pyramid's stage-ratio sum
  times grad_accum_steps.

  Args:
    config: a run config.
    dp: data-parallel devices of its mesh (`mesh.data_parallel_size`).

  Returns:
    The granule (per device).

  Raises:
    ValueError: a check that fails for another reason than the batch.
  """
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.train import checks  # pylint: disable=g-import-not-at-top
  for granule in range(1, 257):
    c = config.copy_and_resolve_references()
    c.batch_size = granule * dp
    try:
      checks.check_config(c)
      return granule
    except ValueError as e:
      if "batch_size" not in str(e):
        raise
  raise ValueError("no per-device batch up to 256 passes the run's checks; "
                   "check config.grad_accum_steps and the objective's batch "
                   "fields.")


def largest_batch(config, limit_bytes: float, log=print):
  """The largest per-device batch whose compiled train step fits a device.

  Per-device batches g, 2g, 4g, ... (g: `batch_granule`) are compiled until
  one needs more than `limit_bytes` (XLA's memory analysis: arguments +
  outputs + temporaries - donated aliases), then the gap is bisected in
  multiples of g. Nothing is allocated.

  Args:
    config: a run config; its mesh and memory levers are used as given.
    limit_bytes: device memory.
    log: where one line per compiled batch goes.

  Returns:
    {"per_device_batch": largest fitting (0 if none), "global_batch",
    "total_bytes" at that batch, "tried": {per-device batch: bytes}}.

  Raises:
    ValueError: the backend reports no memory analysis (nothing to size
      by), or a check that fails for another reason than the batch.
  """
  from jaxgen.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  dp = mesh_lib.data_parallel_size(mesh_lib.make_mesh(config.mesh))
  granule = batch_granule(config, dp)
  tried = {}

  def need(multiple):
    per_device = multiple * granule
    if per_device not in tried:
      c = config.copy_and_resolve_references()
      c.batch_size = per_device * dp
      try:
        mem = run(c, compile_only=True)
      except Exception as e:  # pylint: disable=broad-except
        if not out_of_memory(e):
          raise
        # XLA refuses to compile a step over the device's memory (TPU):
        # that batch does not fit, the search narrows down.
        mem = {"memory_total_bytes": math.inf}
      if "memory_total_bytes" not in mem:
        # Every batch would "fit": the doubling would never end.
        raise ValueError("this backend reports no memory analysis of the "
                         "compiled step; --fit_memory cannot size it here.")
      tried[per_device] = mem["memory_total_bytes"]
      log(f"per-device batch {per_device}: "
          + (f"{tried[per_device] / 2**30:.2f} GiB"
             if math.isfinite(tried[per_device]) else
             "out of memory (XLA refused to compile it)"))
    return tried[per_device]

  lo, hi = 0, 1
  while need(hi) <= limit_bytes:
    lo, hi = hi, hi * 2
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if need(mid) <= limit_bytes else (lo, mid)
  return {"per_device_batch": lo * granule, "global_batch": lo * granule * dp,
          "total_bytes": tried.get(lo * granule, 0),
          # JSON has no infinity: a batch XLA refused is None.
          "tried": {b: v if math.isfinite(v) else None
                    for b, v in tried.items()}}


def run_fitting(config, *args) -> Dict[str, Any]:
  """`run`, with running out of device memory as a one-line ValueError
  that says what to change (it was a traceback)."""
  try:
    return run(config, *args)
  except Exception as e:  # pylint: disable=broad-except
    if not out_of_memory(e):
      raise
    first = str(e).strip().splitlines()[0][:160]
    raise ValueError(
        f"the step at config.batch_size={config.batch_size} does not fit "
        f"the device memory ({first}); find the largest batch that does "
        "with --fit_memory=GIB, or lower it (--config.batch_size, "
        "--config.remat=full).") from None


def _check_fake_devices(config) -> None:
  """Names the flag that fakes a mesh's devices on CPU, for the modes that
  only count parameters or memory (the mesh error says only the count)."""
  import jax  # pylint: disable=g-import-not-at-top
  sizes = {a: int(config.mesh[a]) for a in ("data", "fsdp", "tensor")}
  need = math.prod(s for s in sizes.values() if s != -1)
  have = jax.device_count()
  if need > have and jax.default_backend() == "cpu":
    raise ValueError(
        f"config.mesh {sizes} needs {need} devices and this machine has "
        f"{have}; to size it without them, prefix the command with "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={need} (fake CPU "
        "devices: parameters and memory per device, not speed).")


def main(argv):
  config_lib.check_no_arguments(argv)
  try:
    FLAGS.config.keys()  # A config that failed to load raises only when used.
    # `--config.total_flops=...` on a preset with `total_steps` replaces
    # it, as in jaxgen.main.
    overrides = config_flags.get_override_values(FLAGS["config"])
    config_lib.check_recorded_fields(overrides)
    durations.command_line_length(FLAGS.config, overrides)
  except Exception as e:  # pylint: disable=broad-except
    config_lib.usage_error(config_lib.error_line(e))
  if FLAGS.params_only and (FLAGS.compile_only or FLAGS.fit_memory):
    config_lib.usage_error("--params_only compiles nothing; drop it, or "
                           "--compile_only / --fit_memory.")
  if FLAGS.fit_memory is not None and FLAGS.fit_memory <= 0:
    config_lib.usage_error(f"--fit_memory={FLAGS.fit_memory:g} must be a "
                           "positive number of GiB per device.")
  logs.quiet_libraries(FLAGS.verbosity)
  host_malloc.configure()  # As jaxgen.main does: the same step speed on CPU.
  compile_cache.enable(FLAGS.compilation_cache)
  try:
    if FLAGS.params_only or FLAGS.compile_only or FLAGS.fit_memory:
      _check_fake_devices(FLAGS.config)
    if FLAGS.fit_memory is not None:
      # With --json stdout is one JSON object: progress goes to stderr.
      fit = largest_batch(FLAGS.config, FLAGS.fit_memory * 2**30,
                          log=(lambda line: print(line, file=sys.stderr))
                          if FLAGS.json else print)
      if not fit["per_device_batch"]:
        smallest = min(fit["tried"])
        need = fit["tried"][smallest]
        raise ValueError(
            f"a per-device batch of {smallest} needs "
            + (f"{need / 2**30:.2f} GiB" if need is not None else
               "more memory than the device has")
            + f", more than --fit_memory={FLAGS.fit_memory:g}; lower it "
            "with --config.remat=full, --config.optimizer.mu_dtype=bfloat16 "
            "or a larger mesh.fsdp, or pass more GiB.")
      print(json.dumps(fit) if FLAGS.json else
            f"largest per-device batch within {FLAGS.fit_memory:g} GiB: "
            f"{fit['per_device_batch']} (global {fit['global_batch']}, "
            f"{fit['total_bytes'] / 2**30:.2f} GiB)")
      return
    out = run_fitting(FLAGS.config, FLAGS.steps, FLAGS.params_only,
                      FLAGS.compile_only)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if FLAGS.json:
    print(json.dumps(out))
    return
  for k, v in out.items():
    if isinstance(v, float):
      v = f"{v:.4g}"
    elif isinstance(v, int) and k.endswith("bytes"):
      v = f"{v / 2**20:.1f} MiB"
    elif isinstance(v, int) and v >= 10**5:
      v = f"{v:,}"
    print(f"{k:28s} {v}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  # A config that does not load is one `error:` line, as in jaxgen.main.
  app.run(main, flags_parser=config_lib.parse_flags)
