r"""IsoFLOP sweep specs for the simple-diffusion family (Chinchilla approach 2).

Presets (the word after the colon):
  cpu    the committed CPU sweep (experiments/scaling_simple_diffusion): 16px
         embedded shapes, U-ViTs of 13k-599k parameters, 3 budgets x 4 sizes,
         12 min with --parallel=2 on 2 cores, 22 min of CPU time (see the
         experiment's report.md).
  tiny   a seconds-long sweep for tests: 2 budgets x 2 very small U-ViTs.
  paper  ImageNet 128px (the SiD U-ViT at patch 1), transformer widths
         512-2048, budgets 1e19-1e21 on TPU v5p slices of 64 chips; plan it
         with --dry-run (device-hours at the spec's assumed MFU).

  python -m scaling.run --sweep=configs/scaling/simple_diffusion.py:cpu \
      --workdir=workdirs/scaling_sd --parallel=2

A sweep spec is not a run config: `scaling.sweep` turns each (budget, size)
point into one, starting from `base` (a family config file) and applying, in
order, `run`, the spec's optimizer fields, the size's `model` fields and the
runner's --set overrides; then it derives the steps from the budget and the
objective's FLOPs per example and sets the cosine horizon to that length.
The fields and their meaning: `scaling.specs.base_spec`.
"""

import ml_collections

from jaxgen import config_lib
from scaling import specs

PRESETS = ("cpu", "tiny", "paper")


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
  base = ("configs/simple_diffusion.py:imagenet128" if arg.preset == "paper"
          else "configs/simple_diffusion.py:tiny")
  c = specs.base_spec(f"simple_diffusion_{arg.preset}", "simple_diffusion",
                      base)
  # Held-out batches for eval_loss (test split, 4 passes over its 512
  # images with different noise: the isoFLOP differences are a few percent
  # of the loss, so the eval noise must be smaller than that).
  c.run.eval_batches = 64
  # The class-embedding table of the conditioning and the transformer's
  # learned position embeddings. The logSNR sinusoid has no parameters; its
  # MLP is counted as a normal layer.
  c.embedding_params = ("class_embedding", "pos_embedding")

  if arg.preset in ("cpu", "tiny"):
    c.run.dataset = ml_collections.ConfigDict()
    # 16px: the smallest embedded shapes, 8192 train / 512 test images.
    c.run.dataset.image_size = 16
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
    specs.cpu_preset(c, budgets=(2.5e11, 5e11, 1e12))
    # Four sizes per budget (the committed sweep's).
    c.points_per_budget = 4
  elif arg.preset == "tiny":
    specs.tiny_preset(c)
    for width in (16, 32):
      rung = uvit_rung(width, 1)
      # One conv level: the smallest graph, so compiling is quick.
      rung.channels = (8,)
      rung.num_res_blocks = (1,)
      c.sizes[f"w{width}d1"] = rung
    # 4-11 steps per point at batch 8.
    c.budgets = (3e8, 6e8)
  else:
    # The SiD ImageNet U-ViT (128/256/512 conv channels at 128, 64, 32 px,
    # transformer at 16 x 16) with the transformer scaled: it holds most of
    # the parameters (2048 x 36: the inferred ~2.47B U-ViT of
    # configs/simple_diffusion.py, sizes unverified, see uvit.py).
    for width, depth in ((512, 8), (768, 12), (1024, 16), (1280, 20),
                         (1536, 24), (2048, 36)):
      c.sizes[f"t{width}d{depth}"] = ml_collections.ConfigDict(dict(
          transformer_width=width, transformer_depth=depth,
          num_heads=width // 128, cond_dim=width // 2))
    c.batch_size = 2048
    c.learning_rate = 1e-4
    c.warmup_fraction = 0.01
    specs.accelerator_preset(c, budgets=(1e19, 3e19, 1e20, 3e20, 1e21),
                             device_kind="TPU v5p", devices_per_point=64)
    # Four sizes per budget (the transformer ladder is finer).
    c.points_per_budget = 4
  return c
