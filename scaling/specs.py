"""Building blocks of the sweep specs in `configs/scaling/`.

Every family's spec starts from `base_spec` (the fields `scaling.sweep` and
`scaling.run` read, with their defaults and what each means) and sets its
ladder, budgets and presets on top; `cluster_config` is the section the
`--dry-run` device-hour estimate and the slurm executor read.

  spec = specs.base_spec("r3gan_cpu", "r3gan", "configs/r3gan.py:tiny")
  spec.sizes.w32 = dict(widths=(32, 32, 16))
  spec.budgets = (1e11, 2e11, 4e11)
"""

import importlib.metadata
import re
from typing import Optional, Tuple

import ml_collections

# Pins every point's XLA:CPU to one compute thread: with --parallel=2 on 2
# cores that is faster than two multi-threaded processes fighting for them.
# (No bare `intra_op_parallelism_threads=1`: XLA's flag parser ignores
# every flag after a token without "--", and fails on one that comes first.)
CPU_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"
# XLA:CPU settings for programs that compile more than they run (the test
# suite, `tiny` sweeps), with JAX_DISABLE_MOST_OPTIMIZATIONS=1: ~40% less
# compile time (the tiny autoencoder's GAN + SE step: 12-15 s -> 7-9 s) for
# the same results. The older loop emitters instead of the fusion emitters,
# no XNNPACK for dots and convolutions, and one LLVM module per program
# (parallel codegen only adds work when every core is busy). Not for
# optimised builds: there they made the `tiny` run compile 27 s, not 17.
# XLA dropped the first flag in jaxlib 0.11 (the loop emitters went with
# it), and an unknown flag in XLA_FLAGS aborts the process, so it is passed
# only to the jaxlib that knows it; decided from the installed package's
# version, without importing JAX (these flags must be set before it starts).


def jaxlib_version() -> Tuple[int, ...]:
  """The installed jaxlib's (major, minor, patch); (0,) if none is."""
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return (0,)
  return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def cpu_fast_compile_flags(version: Tuple[int, ...]) -> str:
  """CPU_FAST_COMPILE for a jaxlib version: only flags its XLA knows."""
  flags = ["--xla_cpu_use_xnnpack=false",
           "--xla_cpu_parallel_codegen_split_count=1"]
  if version < (0, 11):
    flags.insert(0, "--xla_cpu_use_fusion_emitters=false")
  return " ".join(flags)


CPU_FAST_COMPILE = cpu_fast_compile_flags(jaxlib_version())


def cluster_config(device_kind: str = "", devices_per_point: int = 1,
                   hosts_per_point: int = 1, mfu: float = 0.4,
                   partition: str = "", account: str = "",
                   time_limit_min: int = 60,
                   cpus_per_task: int = 0) -> ml_collections.ConfigDict:
  """Where the points run: the dry run's estimate and the slurm executor.

  Args:
    device_kind: accelerator the points run on, as jax names it ("TPU v5p",
      "H100", ...; matched like `jaxgen.train.flops.PEAK_BF16_FLOPS`); ""
      for CPU (no device-hour estimate).
    devices_per_point: accelerators per point (all its hosts together).
    hosts_per_point: processes (hosts) per point; > 1 runs the point's
      trainer with --multihost.
    mfu: the model-FLOPs utilisation the estimate assumes.
    partition: slurm partition.
    account: slurm account ("" = the user's default).
    time_limit_min: slurm time limit per job.
    cpus_per_task: slurm CPUs per task (per host; 0 = the site's default,
      often 1, which starves the input pipeline and XLA's compiles).

  Returns:
    The spec's `cluster` section.
  """
  c = ml_collections.ConfigDict()
  # Accelerator kind of every point ("" = CPU): its dense bf16 peak and
  # `mfu` turn a point's FLOPs into device-hours in --dry-run.
  c.device_kind = device_kind
  # Accelerators per point, over all of its hosts.
  c.devices_per_point = int(devices_per_point)
  # Hosts (processes) per point; > 1 starts the trainer with --multihost.
  c.hosts_per_point = int(hosts_per_point)
  # Assumed model-FLOPs utilisation (measure it with jaxgen.bench).
  c.mfu = float(mfu)
  # Slurm: partition, account and the time limit of each job (minutes).
  c.partition = partition
  c.account = account
  c.time_limit_min = int(time_limit_min)
  # Slurm CPUs per task, i.e. per host (0 = the site's default).
  c.cpus_per_task = int(cpus_per_task)
  return c


def base_spec(name: str, family: str, base: str,
              open_sections=()) -> ml_collections.ConfigDict:
  """A sweep spec with every field at its default.

  Args:
    name: the sweep's name (recorded in every results row).
    family: the model family (config.family of every point).
    base: the family config file and preset every point starts from.
    open_sections: sections of the base config whose new keys are allowed.

  Returns:
    The spec; the caller adds sizes and budgets.
  """
  c = ml_collections.ConfigDict()
  # Sweep name, recorded in every results row.
  c.name = name
  # Model family (config.family of every run); one sweep, one family.
  c.family = family
  # The family config file and preset every point starts from.
  c.base = base
  # Sections of the base config whose new keys are allowed (for a base whose
  # section holds only some of a network's fields; every family's config
  # holds all of them today, so a typo is an unknown-field error).
  c.open_sections = tuple(open_sections)

  # Run-config fields shared by every point (a partial config tree).
  c.run = ml_collections.ConfigDict()
  # No sample grids: sampling is not part of the measured loss or FLOPs.
  c.run.num_samples = 0
  # No EMA: the eval loss uses the raw parameters; EMA only costs time.
  c.run.ema_decay = 0.0
  # Logged loss is the mean over this many steps.
  c.run.log_every_steps = 10
  # Rows go to metrics.jsonl; no TensorBoard events (nothing reads them).
  c.run.tensorboard = False
  # Checkpoints let an interrupted point resume; keep one.
  c.run.checkpoint_every_steps = 500
  c.run.keep_checkpoints = 1
  # Held-out batches for eval_loss at the end of each point.
  c.run.eval_batches = 64

  # Global batch size of every point (steps = ceil(C / (F * batch))).
  c.batch_size = 32
  # Peak learning rate, linear warmup over this fraction of the run, then
  # cosine decay to end_lr_fraction x peak at the run's last step (families
  # with schedules of their own, R3GAN, set theirs in `run`).
  c.learning_rate = 2e-3
  c.warmup_fraction = 0.05
  c.end_lr_fraction = 0.0
  # Learning-rate schedule of the points: "cosine" (one full run per point,
  # the cosine ending at its last step) or "wsd" (warmup-stable-decay: one
  # constant-rate run per size and, per budget, a cooldown branched from it;
  # scaling/wsd.py). Families with schedules of their own (R3GAN) only
  # run "cosine" sweeps.
  c.schedule = "cosine"
  # wsd: each point's linear cooldown, as a fraction of its run.
  c.decay_fraction = 0.2
  # Final train loss = mean of the last k logged losses.
  c.final_loss_window = 5
  # A run whose final train loss is above this multiple of its first logged
  # loss has not trained (it blew up and stayed there); it is recorded as
  # "diverged" like a non-finite one. 0 turns the check off (GAN losses do
  # not fall as a model learns).
  c.diverged_loss_ratio = 1.0
  # Warn about points shorter than this many steps (too short to mean much).
  c.min_steps = 50
  # Parameter-path regexes counted as embeddings (params_non_embedding
  # excludes them).
  c.embedding_params = ()
  # Environment variables for every point's process.
  c.env = ml_collections.ConfigDict()
  # The metric `scaling.fit` / `scaling.compare` fit by default.
  c.metric = "eval_loss"

  # The size ladder: name -> `config.model` fields, ordered by parameters.
  c.sizes = ml_collections.ConfigDict()
  # Budgets C in FLOPs (training FLOPs, from the objective).
  c.budgets = ()
  # Sizes per budget: a window of this many consecutive rungs ...
  c.points_per_budget = 4
  # ... that moves up this many rungs per budget (0: the same window).
  c.window_shift = 0.0
  # Where the points run (dry-run device-hours, slurm executor).
  c.cluster = cluster_config()
  return c


# Budgets of the cpu sweeps of R3GAN, the autoencoder and the flows: at the
# same 16px (32px for the autoencoder) a point takes under a minute on one
# core, so a sweep of 9 points takes minutes with --parallel=2.
CPU_BUDGETS = (2e11, 4e11, 8e11)


def cpu_preset(spec: ml_collections.ConfigDict,
               budgets=CPU_BUDGETS) -> None:
  """CPU sweeps: 3 budgets, a window of 3 sizes one rung up per budget, and
  one XLA compute thread per point (see CPU_ONE_THREAD).

  Args:
    spec: the spec to change (its ladder needs len(budgets) + 2 rungs).
    budgets: the budgets in FLOPs, each twice the one before.
  """
  spec.budgets = tuple(budgets)
  spec.points_per_budget = 3
  spec.window_shift = 1.0
  spec.env.XLA_FLAGS = CPU_ONE_THREAD


def tiny_preset(spec: ml_collections.ConfigDict,
                batch_size: int = 8) -> None:
  """Test sweeps of seconds: log every step, one eval batch, no checks."""
  spec.run.log_every_steps = 1
  spec.run.checkpoint_every_steps = 1000
  spec.run.eval_batches = 1
  spec.batch_size = batch_size
  spec.final_loss_window = 2
  spec.diverged_loss_ratio = 0.0
  spec.min_steps = 1
  spec.points_per_budget = 2
  # Compiling dominates these runs; XLA's optimisations do not pay off.
  spec.env.JAX_DISABLE_MOST_OPTIMIZATIONS = "1"
  spec.env.XLA_FLAGS = " ".join((spec.env.get("XLA_FLAGS", ""),
                                 CPU_FAST_COMPILE)).strip()


def accelerator_preset(spec: ml_collections.ConfigDict, *, budgets,
                       device_kind: str,
                       devices_per_point: int, hosts_per_point: int = 1,
                       mfu: float = 0.4, partition: str = "",
                       time_limit_min: int = 24 * 60,
                       eval_batches: Optional[int] = 16) -> None:
  """Paper-scale sweeps: budgets, where they run and coarser logging.

  Each budget gets a window of 3 sizes that moves up one rung every second
  budget (every decade of compute).

  Args:
    spec: the spec to change.
    budgets: the budgets in FLOPs.
    device_kind: accelerator kind (see `cluster_config`).
    devices_per_point: accelerators per point.
    hosts_per_point: hosts per point.
    mfu: assumed MFU of the device-hour estimate.
    partition: slurm partition.
    time_limit_min: slurm time limit per job.
    cpus_per_task: slurm CPUs per task (per host; 0 = the site's default,
      often 1, which starves the input pipeline and XLA's compiles).
    eval_batches: held-out batches of each point's final evaluation.
  """
  spec.budgets = tuple(budgets)
  spec.points_per_budget = 3
  spec.window_shift = 0.5
  spec.cluster = cluster_config(
      device_kind=device_kind, devices_per_point=devices_per_point,
      hosts_per_point=hosts_per_point, mfu=mfu, partition=partition,
      time_limit_min=time_limit_min)
  spec.run.log_every_steps = 100
  spec.run.checkpoint_every_steps = 2000
  spec.run.eval_batches = eval_batches
  spec.min_steps = 1000
