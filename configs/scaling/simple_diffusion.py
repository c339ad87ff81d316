r"""IsoFLOP sweep specs for the simple-diffusion family (Chinchilla approach 2).

Presets (the word after the colon):
  cpu   the committed CPU sweep (experiments/scaling_simple_diffusion): 16px
        embedded shapes, U-ViTs of 13k-599k parameters, 3 budgets x 4 sizes,
        about 35 min of CPU time (see the experiment's report.md).
  tiny  a seconds-long sweep for tests: 2 budgets x 2 very small U-ViTs.

  python -m scaling.run --sweep=configs/scaling/simple_diffusion.py:cpu \
      --workdir=workdirs/scaling_sd --parallel=2

A sweep spec is not a run config: `scaling.sweep` turns each (budget, size)
point into one, starting from `base` (a family config file) and applying, in
order, `run`, the spec's optimizer fields, the size's `model` fields and the
runner's --set overrides; then it derives the steps from the budget and the
objective's FLOPs per example and sets the cosine horizon to that length.
"""

import ml_collections

from jaxgen import config_lib

PRESETS = ("cpu", "tiny")


def uvit_rung(width: int, depth: int) -> ml_collections.ConfigDict:
  """One rung of the U-ViT ladder: everything grows with the width.

  The two conv levels have width/4 and width/2 channels, the transformer
  (at 4 x 4 tokens for 16px images) has `width` and `depth` blocks with
  16-dimensional heads, and the conditioning vector has `width` too, so the
  conv part (most FLOPs at 16px) and the transformer (most parameters) grow
  together instead of one of them dominating the ladder.

  Args:
    width: transformer width (a multiple of 16).
    depth: transformer blocks.

  Returns:
    `config.model` fields (they override the family's `tiny` preset row).
  """
  return ml_collections.ConfigDict(dict(
      channels=(width // 4, width // 2),
      num_res_blocks=(1, 1),
      transformer_width=width,
      transformer_depth=depth,
      num_heads=max(1, width // 16),
      cond_dim=width,
      freq_dim=32,
      # Fixed groups: GroupNorm then normalises over the same number of
      # groups at every rung (gcd with the channels keeps it valid).
      num_groups=8,
  ))


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the sweep spec for `arg` = "preset"."""
  arg = config_lib.parse_arg(arg, PRESETS)
  c = ml_collections.ConfigDict()
  # Sweep name, recorded in every results row.
  c.name = f"simple_diffusion_{arg.preset}"
  # Model family (config.family of every run); one sweep, one family.
  c.family = "simple_diffusion"
  # The family config file and preset every point starts from.
  c.base = "configs/simple_diffusion.py:tiny"
  # Sections of the base config whose new keys are allowed: the U-ViT's
  # `config.model` only holds a preset name, other fields override its row.
  c.open_sections = ("model",)

  # Run-config fields shared by every point (a partial config tree).
  c.run = ml_collections.ConfigDict()
  c.run.dataset = ml_collections.ConfigDict()
  # 16px: the smallest embedded shapes, 8192 train / 512 test images.
  c.run.dataset.image_size = 16
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
  # Held-out batches for eval_loss (test split, 4 passes over its 512
  # images with different noise: the isoFLOP differences are a few percent
  # of the loss, so the eval noise must be smaller than that).
  c.run.eval_batches = 64

  # Global batch size of every point (steps = ceil(C / (F * batch))).
  c.batch_size = 32
  # Peak learning rate, linear warmup over this fraction of the run, then
  # cosine decay to end_lr_fraction x peak at the run's last step.
  c.learning_rate = 2e-3
  c.warmup_fraction = 0.05
  c.end_lr_fraction = 0.0
  # Final train loss = mean of the last k logged losses.
  c.final_loss_window = 5
  # A run whose final train loss is above this multiple of its first logged
  # loss has not trained (it blew up and stayed there); it is recorded as
  # "diverged" like a non-finite one. 0 turns the check off.
  c.diverged_loss_ratio = 1.0
  # Warn about points shorter than this many steps (too short to mean much).
  c.min_steps = 50
  # Parameter-path regexes counted as embeddings (params_non_embedding
  # excludes them): the class-embedding table of the conditioning and the
  # transformer's learned position embeddings. The logSNR sinusoid has no
  # parameters; its MLP is counted as a normal layer.
  c.embedding_params = ("class_embedding", "pos_embedding")
  # Environment variables for every point's process.
  c.env = ml_collections.ConfigDict()

  # The size ladder: name -> `config.model` fields, ordered by parameters.
  c.sizes = ml_collections.ConfigDict()
  # Budgets C in FLOPs (training FLOPs = 3 x forward, from the objective).
  c.budgets = ()
  # Sizes per budget: a window of this many consecutive rungs ...
  c.points_per_budget = 4
  # ... that moves up this many rungs per budget (0: the same window).
  c.window_shift = 0.0

  if arg.preset == "cpu":
    # Seven rungs, N = 15k .. 1.4M (printed by --dry-run). A 1e12 pilot of
    # the 269k-2.2M rungs found loss rising with N (the optimum below 269k),
    # and a first sweep with one window (48k-599k) for every budget found the
    # two smaller budgets' minima at its smallest size; hence the small
    # rungs and the moving window below.
    for width, depth in ((16, 1), (24, 1), (32, 1), (48, 1), (64, 2),
                         (96, 2), (128, 3)):
      c.sizes[f"w{width}d{depth}"] = uvit_rung(width, depth)
    # Each doubling of the budget moves the 4-size window one rung up:
    # 2.5e11 -> w16..w48, 5e11 -> w24..w64, 1e12 -> w32..w96.
    c.budgets = (2.5e11, 5e11, 1e12)
    c.window_shift = 1.0
    # One compute thread per point: with --parallel=2 on 2 cores this is
    # faster than two multi-threaded processes fighting for the cores.
    c.env.XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false "
                       "intra_op_parallelism_threads=1")
  else:
    c.run.dataset.image_size = 16
    c.run.log_every_steps = 1
    c.run.checkpoint_every_steps = 1000
    c.run.eval_batches = 1
    c.batch_size = 8
    c.final_loss_window = 2
    c.diverged_loss_ratio = 0.0
    c.min_steps = 1
    for width in (16, 32):
      rung = uvit_rung(width, 1)
      # One conv level: the smallest graph, so compiling is quick.
      rung.channels = (8,)
      rung.num_res_blocks = (1,)
      c.sizes[f"w{width}d1"] = rung
    # 4-11 steps per point at batch 8.
    c.budgets = (3e8, 6e8)
    c.points_per_budget = 2
    # Compiling dominates these runs; XLA's optimisations do not pay off.
    c.env.JAX_DISABLE_MOST_OPTIMIZATIONS = "1"
  return c
