r"""A benchmark table of the paper-size presets, for the first lent GPU.

  python -m jaxgen.bench_suite                      # the GPU suite
  python -m jaxgen.bench_suite --suite=cpu --steps=2 # the same code on tiny presets

Runs `jaxgen.bench.run` (the trainer's compiled, sharded step on synthetic
batches) for every entry of the suite, one after another in this process,
and prints a markdown table: batch, parameters, compile time, step time,
examples/s, TFLOP/s per device, MFU and compiled memory. An entry whose
compiled step needs more than the device's memory is not run: it is
compiled again at the power-of-two batch its memory analysis predicts
fits (an out-of-memory at run time halves the batch); both stop at
`--min_batch`. One that fails otherwise gets its one-line error in the
table. With `--compile_workers` above 1 and the persistent compilation
cache on, every entry is first compiled that many at a time (the batch
search included) and the timed runs then read their programs back (on
the H200 six compiles at once took longer than one after another, so the
default is 1: compile, time, next). Entries that would start after
`--budget_s` seconds are skipped (listed as such), so the whole suite
stays inside a short device lease. `--out=FILE` also writes the table
(and FILE.json with every measurement).
"""

from concurrent import futures
import json
import math
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags

from jaxgen import bench
from jaxgen import config_lib
from jaxgen import jsonl
from jaxgen import paths
from jaxgen.train import logs

# (name, config file:arg, overrides, first batch to try). The GPU batches
# are for one 141 GB H200 (XLA gets 132.8 GiB at a 0.95 memory fraction),
# all measured to fit there (README "GPU suite"): imagenet256 at 256 needs
# 77.4 GiB (512 is predicted at ~118 GiB, not tried); R3GAN imagenet64 did
# not fit at 128 with the old penalty passes (93.1 GiB at 64; now 63.5, so
# 128 is predicted at ~124 GiB, not tried); the pyramidal DiT did not fit
# at 32 and needs 81.7 GiB at 16.
SUITES: Dict[str, Sequence[Tuple[str, str, Dict[str, Any], int]]] = {
    "gpu": (
        ("simple_diffusion imagenet256", "configs/simple_diffusion.py:"
         "imagenet256", {"remat": "full"}, 256),
        ("r3gan cifar10", "configs/r3gan.py:cifar10", {}, 512),
        ("r3gan imagenet64", "configs/r3gan.py:imagenet64", {}, 64),
        ("dc_ae f32c32_in", "configs/autoencoder.py:dc_ae_f32c32_in", {}, 32),
        ("pyramidal_flow sd3_medium", "configs/pyramidal_flow.py:sd3_medium",
         {"model.attention_impl": "cudnn"}, 16),
        ("flow_matching sd3_medium (full sequence)",
         "configs/pyramidal_flow.py:sd3_medium,baseline",
         {"model.attention_impl": "cudnn", "remat": "full"}, 8),
    ),
    "cpu": (
        ("simple_diffusion tiny", "configs/simple_diffusion.py:tiny", {}, 8),
        ("pyramidal_flow tiny", "configs/pyramidal_flow.py:tiny", {}, 32),
    ),
}

FLAGS = flags.FLAGS


def _define_flags():
  """The suite's own flags, defined only when it runs as a program: at
  import they would clash with other modules' (`scaling.fit` has an
  --out) in one process such as the tests'. --steps (timed steps per
  entry) and --compilation_cache come from jaxgen.bench, imported above."""
  flags.DEFINE_enum("suite", "gpu", list(SUITES), "Which presets to run.")
  flags.DEFINE_integer("min_batch", 1, "Smallest batch to retry at.",
                       lower_bound=1)
  flags.DEFINE_float("budget_s", 420.0, "Start no entry after this many s "
                     "(0: list the entries, run none).", lower_bound=0.0)
  flags.DEFINE_string("out", "", "Also write the table here (+ .json).")
  # On the lent H200 (16 host cores) six entries compiled at once took
  # 335 s where one at a time they take ~280 s: each XLA:GPU compile (and
  # its autotuning) already keeps the host busy. Hence 1 (no pre-compile).
  flags.DEFINE_integer("compile_workers", 1, "Entries compiled at once "
                       "before the timed runs (needs the compilation cache; "
                       "1: none).", lower_bound=1)


def load_config(spec: str, overrides: Dict[str, Any], batch: int):
  """The config `file:arg` with dotted overrides and a global batch."""
  config = config_lib.load_config_file(spec)
  config_lib.apply_overrides(config, dict(overrides, batch_size=batch))
  return config


def _over_budget(name: str) -> Dict[str, str]:
  """The row of an entry that would start after the time budget."""
  return {"name": name, "skipped": "skipped: over the time budget"}


def predicted_batch(batch: int, memory: Dict[str, Any],
                    limit_bytes: float) -> int:
  """The power-of-two batch that a compiled step's memory predicts fits.

  Everything but the temporaries (parameters, optimizer state, the batch
  itself) is taken as fixed and the temporaries as proportional to the
  batch. XLA's temporaries also hold a batch-independent part (gradients,
  and buffers its scheduler sizes per program), so from a batch well over
  the limit the prediction can still not fit: the caller then predicts
  again from the smaller batch's memory (on the H200, R3GAN `imagenet64`
  went 256 -> 128 -> 64).

  Args:
    batch: the global batch that was compiled.
    memory: its `memory_*` measurements (bench.run's keys).
    limit_bytes: device memory.

  Returns:
    A power of two below `batch`; 1 if even that is predicted not to fit
    (the prediction over-counts), 0 if the fixed part alone is over the
    limit (no batch fits) or `batch` is 1 already.
  """
  temp = memory.get("memory_temp_bytes", 0)
  fixed = memory.get("memory_total_bytes", 0) - temp
  room = limit_bytes - fixed
  if batch <= 1 or room <= 0:
    return 0
  if temp <= 0:
    return batch // 2
  fits = min(batch * room / temp, batch - 1)
  return 2**int(math.floor(math.log2(max(fits, 1))))


def _shrinking(name: str, spec: str, overrides: Dict[str, Any], batch: int,
               attempt, min_batch: int, log,
               memory_limit_bytes: Optional[float],
               deadline: Optional[float] = None) -> Dict[str, Any]:
  """`attempt(config)` at `batch`, then at smaller batches while it does not
  fit; its dict plus "name", {"name", "batch_size", "error"}, or
  {"name", "skipped"} once `deadline` (a time.time()) has passed."""
  while True:
    if deadline is not None and time.time() > deadline:
      return _over_budget(name)
    try:
      out = attempt(load_config(spec, overrides, batch))
      out["name"] = name
      return out
    except Exception as e:  # pylint: disable=broad-except
      if isinstance(e, bench.DoesNotFit):
        smaller = predicted_batch(batch, e.memory, memory_limit_bytes)
      else:
        smaller = batch // 2
      if bench.out_of_memory(e) and min_batch <= smaller < batch:
        log(f"{name}: batch {batch} does not fit; trying {smaller}")
        batch = smaller
        continue
      line = str(e).strip().splitlines()[0][:200] if str(e).strip() else (
          type(e).__name__)
      log(f"{name}: failed: {line}")
      return {"name": name, "batch_size": batch, "error": line}


def run_entry(name: str, spec: str, overrides: Dict[str, Any], batch: int,
              steps: int, min_batch: int = 1, log=print,
              memory_limit_bytes: Optional[float] = None) -> Dict[str, Any]:
  """Benchmarks one entry, shrinking the batch while it does not fit.

  Args:
    name: the row's name.
    spec: "configs/x.py:arg".
    overrides: dotted config overrides.
    batch: first global batch to try.
    steps: timed steps.
    min_batch: stop shrinking below this.
    log: progress lines.
    memory_limit_bytes: device memory; a compiled step over it is not run
      and the batch goes straight to the one its memory predicts.

  Returns:
    bench.run's measurements plus "name", or {"name", "error"}.
  """
  t = time.time()
  out = _shrinking(
      name, spec, overrides, batch,
      lambda c: bench.run(c, steps, memory_limit_bytes=memory_limit_bytes),
      min_batch, log, memory_limit_bytes)
  if "error" not in out:
    log(f"{name}: batch {out['batch_size']}, "
        f"{out['step_time_s'] * 1e3:.1f} ms/step ({time.time() - t:.0f} s)")
  return out


def precompile(entries, *, workers: int, min_batch: int = 1, log=print,
               memory_limit_bytes: Optional[float] = None,
               deadline: Optional[float] = None) -> List[Dict[str, Any]]:
  """Compiles every entry's step, `workers` at a time, without running it.

  Compiling is most of a cold entry's time and runs on the host (XLA
  releases the GIL), so several compile at once while the device idles.
  With the persistent compilation cache on, the timed run that follows
  reads each program back instead of compiling it; the batch search
  (`predicted_batch`) also happens here, so entries that do not fit at
  their first batch cost no device time later.

  Args:
    entries: (name, spec, overrides, batch) tuples.
    workers: compiles at once.
    min_batch: smallest batch to try.
    log: progress lines.
    memory_limit_bytes: device memory (see `run_entry`).
    deadline: a time.time() after which no compile starts.

  Returns:
    Per entry, bench.run's compile-only dict (its "batch_size" fits),
    {"name", "batch_size", "error"} or {"name", "skipped"}.
  """
  def one(entry):
    name, spec, overrides, batch = entry
    t = time.time()
    out = _shrinking(
        name, spec, overrides, batch,
        lambda c: bench.run(c, compile_only=True,
                            memory_limit_bytes=memory_limit_bytes),
        min_batch, log, memory_limit_bytes, deadline)
    if "compile_s" in out:
      log(f"{name}: compiled at batch {out['batch_size']} "
          f"({time.time() - t:.0f} s)")
    return out

  with futures.ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
    return list(pool.map(one, entries))


def table(rows: List[Dict[str, Any]]) -> str:
  """A markdown table of the measurements (errors and skips in place)."""
  head = ("| preset | batch | params | compile s | init + first step s | "
          "step ms | examples/s | TFLOP/s/device | MFU | memory GiB |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  lines = [head]
  for r in rows:
    if "error" in r or "skipped" in r:
      lines.append(f"| {r['name']} | {r.get('batch_size', '')} | "
                   f"{r.get('error') or r['skipped']} | | | | | | | |")
      continue
    params = r.get("params", 0)  # every family's num_params has "params"
    mfu = r["mfu"]
    mfu = f"{mfu:.1%}" if isinstance(mfu, float) else mfu
    lines.append(
        f"| {r['name']} | {r['batch_size']} | {params / 1e6:,.1f}M | "
        f"{r['compile_s']:.0f} | "
        f"{r.get('init_s', 0) + r.get('first_step_s', 0):.0f} | "
        f"{r['step_time_s'] * 1e3:.1f} | "
        f"{r['examples_per_sec']:.1f} | {r['tflops_per_device']:.3g} | "
        f"{mfu} | {r.get('memory_total_bytes', 0) / 2**30:.1f} |")
  return "\n".join(lines)


def run_suite(entries, *, steps: int, budget_s: float, min_batch: int = 1,
              log=print, memory_limit_bytes: Optional[float] = None,
              compile_workers: int = 1,
              on_row=None) -> List[Dict[str, Any]]:
  """Runs the entries in order within a time budget.

  Args:
    entries: (name, spec, overrides, batch) tuples.
    steps: timed steps per entry.
    budget_s: entries that would start later than this (counted from the
      start, pre-compiling included) are skipped.
    min_batch: smallest batch to retry at.
    log: progress lines.
    memory_limit_bytes: device memory (see `run_entry`).
    compile_workers: above 1, every entry is first compiled (`precompile`,
      this many at once) and then run at the batch found there; only
      worth it with the persistent compilation cache on.
    on_row: called with the rows so far after each entry, so a lease that
      ends mid-suite still leaves the finished rows written.

  Returns:
    One dict per entry (measurements, {"error"} or {"skipped"}).
  """
  start, rows = time.time(), []
  entries = list(entries)
  if compile_workers > 1:
    compiled = precompile(entries, workers=compile_workers,
                          min_batch=min_batch, log=log,
                          memory_limit_bytes=memory_limit_bytes,
                          deadline=start + budget_s)
    log(f"compiled {len(entries)} entries in {time.time() - start:.0f} s")
    entries = [(e[0], e[1], e[2], c["batch_size"]) if "compile_s" in c
               else e for e, c in zip(entries, compiled)]
  else:
    compiled = [{}] * len(entries)
  for (name, spec, overrides, batch), done in zip(entries, compiled):
    if "error" in done or "skipped" in done:
      rows.append(done)
    elif time.time() - start > budget_s:
      rows.append(_over_budget(name))
    else:
      row = run_entry(name, spec, overrides, batch, steps, min_batch, log,
                      memory_limit_bytes)
      if ("compile_s" in done and "error" not in row and
          row.get("compile_cached") and not done.get("compile_cached")):
        # The timed run read back what the pre-compile compiled: the table
        # shows that compile (timed beside up to compile_workers - 1
        # others), the JSON keeps the read as well.
        row["cache_read_s"], row["compile_s"] = (row["compile_s"],
                                                 done["compile_s"])
        row["compiled_beside"] = compile_workers - 1
      rows.append(row)
    if on_row is not None:
      on_row(rows)
  return rows


# jaxgen.bench's flags that the suite, which picks its own presets, does not
# take (it imports that module, so they are defined; given, they did nothing).
_BENCH_ONLY = ("config", "params_only", "compile_only", "fit_memory", "json")


def main(argv):
  config_lib.check_no_arguments(argv)
  given = [f"--{name}" for name in _BENCH_ONLY if FLAGS[name].present]
  given += sorted({f"--{a.lstrip('-').split('=')[0]}" for a in sys.argv[1:]
                   if a.startswith("--config.")})
  if given:
    config_lib.usage_error(
        f"{', '.join(given)}: flags of jaxgen.bench, which the suite does not "
        "take (it runs the presets of --suite); run python -m jaxgen.bench "
        "for one config.")
  logs.quiet_libraries(FLAGS.verbosity)
  if FLAGS.out:
    # Before the suite runs: a lent device's minutes are not spent on a
    # table that cannot be written.
    try:
      paths.prepare_output(FLAGS.out)
      paths.prepare_output(FLAGS.out + ".json")
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.train import compile_cache  # pylint: disable=g-import-not-at-top
  cache = compile_cache.enable(FLAGS.compilation_cache)
  log = lambda line: print(line, file=sys.stderr, flush=True)  # pylint: disable=g-long-lambda
  device = jax.devices()[0]
  # The allocator's limit (XLA_PYTHON_CLIENT_MEM_FRACTION of the device);
  # backends without memory stats (CPU) run every batch as given.
  limit = (device.memory_stats() or {}).get("bytes_limit")
  log(f"{jax.device_count()} x {device.device_kind}" +
      (f", {limit / 2**30:.1f} GiB for XLA" if limit else ""))
  # Pre-compiling pays only if the timed runs can read the programs back.
  workers = FLAGS.compile_workers if cache else 1

  def write(rows):
    if FLAGS.out:
      jsonl.write_atomic(FLAGS.out, table(rows) + "\n")
      jsonl.write_atomic(FLAGS.out + ".json",
                         json.dumps(rows, indent=1, default=str))

  rows = run_suite(SUITES[FLAGS.suite], steps=FLAGS.steps,
                   budget_s=FLAGS.budget_s, min_batch=FLAGS.min_batch, log=log,
                   memory_limit_bytes=limit, compile_workers=workers,
                   on_row=write)
  print(table(rows))


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=config_lib.parse_flags)
