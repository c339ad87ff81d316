r"""IsoFLOP sweep specs for pyramidal flow matching (and, with `baseline`,
plain flow matching: `configs/scaling/flow_matching.py`).

Presets (the word after the colon):
  cpu    16px embedded shapes, class-conditional (the resolution of the
         simple-diffusion and R3GAN cpu sweeps), 3-stage pyramid at patch 2
         (2x2, 4x4, 8x8 tokens); DiTs of 7k-240k parameters; 3 budgets x 5
         sizes, run with --parallel=2 in under 30 min on 2 cores.
  tiny   a seconds-long sweep for tests: 2 budgets x 2 very small DiTs.
  paper  16-frame 384px video latents (the sd3_medium preset's data and
         temporal pyramid), DiTs from 768 x 12 to the miniFLUX shape, budgets
         1e20-1e22 on 8 hosts x 8 H100 per point; plan it with --dry-run.
Option `baseline`: the same sweep with full-resolution flow matching.

  python -m scaling.run --sweep=configs/scaling/pyramidal_flow.py:cpu \
      --workdir=workdirs/scaling_pf --parallel=2

The spec's fields: `scaling.specs.base_spec`.
"""

import ml_collections

from jaxgen import config_lib
from scaling import specs

PRESETS = ("cpu", "tiny", "paper")


def dit_rung(width: int, depth: int) -> ml_collections.ConfigDict:
  """One rung of the DiT ladder: 16-dimensional heads at every width.

  Args:
    width: the DiT's width (a multiple of 16).
    depth: its blocks.

  Returns:
    `config.model` fields.
  """
  return ml_collections.ConfigDict(dict(
      width=width, depth=depth, num_heads=max(1, width // 16),
      freq_dim=max(32, width // 2)))


def build(arg: str, family: str) -> ml_collections.ConfigDict:
  """The spec of `arg` = "preset" for the pyramid or its baseline.

  Args:
    arg: the preset (see the module docstring).
    family: "pyramidal_flow" or "flow_matching".

  Returns:
    The sweep spec.
  """
  arg = config_lib.parse_arg(arg, PRESETS)
  option = ",baseline" if family == "flow_matching" else ""
  base = {"paper": "sd3_medium"}.get(arg.preset, "tiny")
  c = specs.base_spec(f"{family}_{arg.preset}", family,
                      f"configs/pyramidal_flow.py:{base}{option}")
  # The class-embedding table (the DiT's positions are RoPE: no parameters).
  c.embedding_params = ("class_embedding", "label_embedding")
  c.learning_rate = 1e-3
  if arg.preset in ("cpu", "tiny"):
    c.run.dataset = ml_collections.ConfigDict()
    # 16px, patch 2: 8x8 tokens at full resolution, 2x2 at the lowest stage.
    c.run.dataset.image_size = 16
    # The test split's 512 images, 2 passes (batches of 32).
    c.run.eval_batches = 32
  if arg.preset == "cpu":
    for width, depth in ((16, 1), (24, 1), (32, 2), (48, 2), (64, 3)):
      c.sizes[f"w{width}d{depth}"] = dit_rung(width, depth)
    # A first sweep with a moving window of 43k-1.2M at 2e11-8e11 found
    # every budget's minimum at its smallest size: all five rungs (7k-240k)
    # at every budget, half the budgets, and batch 64 (tiny DiTs cost a
    # fixed ~25 ms a step on CPU, so fewer, larger steps). Flow matching's
    # examples cost 2.6x more (every example at full resolution).
    specs.cpu_preset(c, budgets=(1e11, 2e11, 4e11))
    # The committed sweeps (experiments/scaling_families) embedded the
    # global noise level, the default until 2026-12-03: kept so that their
    # rerun reproduces them and resumes their workdirs (the baseline's one
    # stage reads no timestep windows either way).
    c.run.pyramid = ml_collections.ConfigDict(
        {"timestep_embedding": "global"})
    c.batch_size = 64
    c.points_per_budget = 5
    c.window_shift = 0.0
    if family == "flow_matching":
      # Twice the budgets and no 240k rung: >= 116 steps a point.
      del c.sizes["w64d3"]
      c.budgets = (2e11, 4e11, 8e11)
      c.points_per_budget = 4
  elif arg.preset == "tiny":
    specs.tiny_preset(c)
    for width in (16, 32):
      c.sizes[f"w{width}d1"] = dit_rung(width, 1)
    c.budgets = (2e8, 4e8)
  else:
    for width, depth in ((768, 12), (1024, 16), (1280, 20), (1536, 24),
                         (1920, 24)):
      rung = dit_rung(width, depth)
      rung.num_heads = width // 64
      rung.freq_dim = 256
      c.sizes[f"w{width}d{depth}"] = rung
    c.batch_size = 1024
    c.learning_rate = 5e-5
    c.warmup_fraction = 0.01
    specs.accelerator_preset(c, budgets=(1e20, 3e20, 1e21, 3e21, 1e22),
                             device_kind="H100", devices_per_point=64,
                             hosts_per_point=8)
  return c


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the sweep spec for `arg` = "preset"."""
  return build(arg, "pyramidal_flow")
