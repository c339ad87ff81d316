r"""IsoFLOP sweep specs for R3GAN (fitted on a sample metric: GAN losses do
not measure sample quality).

Presets (the word after the colon):
  cpu    16px embedded shapes, class-conditional (the resolution of the
         simple-diffusion and flow cpu sweeps); G and D of three stages
         (4, 8, 16 px) from 8 to 64 channels; 3 budgets x 3 sizes.
  tiny   a seconds-long sweep for tests: 2 budgets x 2 very small G/D.
  paper  ImageNet 32px (the imagenet32 preset: batch 4096, group width 32),
         stage widths 384-1536, budgets 1e19-1e21 on TPU v5p slices of 32
         chips; plan it with --dry-run.

The burn-in (lr, gamma, beta2 and EMA half-life ramps) is a fraction of each
point's run (`gan.burn_in_fraction`), so a budget sets its length like any
other family's. The fitted metric is a sample metric: on CPU the shape
classifier's Fréchet distance (`eval_fd_shapes`; experiments/
scaling_families/run.sh), at scale `eval_fid` with the Inception weights
and statistics:

  python -m jaxgen.eval.classifier --image_size=16 --steps=4000 \
      --out=shapes16.msgpack
  python -m scaling.run --sweep=configs/scaling/r3gan.py:cpu \
      --workdir=workdirs/scaling_r3gan --parallel=2 \
      --set=eval.sample_metrics.enabled=True \
      --set=eval.sample_metrics.features=shape_classifier \
      --set=eval.sample_metrics.classifier_weights=$PWD/shapes16.msgpack \
      --set=eval.sample_metrics.num_samples=512

The spec's fields: `scaling.specs.base_spec`.
"""

import ml_collections

from jaxgen import config_lib
from scaling import specs

PRESETS = ("cpu", "tiny", "paper")


def gan_rung(widths) -> ml_collections.ConfigDict:
  """One rung: G's stage widths from 4x4 up (D mirrors them).

  Args:
    widths: channels per stage; expansion x width must be a multiple of
      the group width.

  Returns:
    `config.model` fields.
  """
  return ml_collections.ConfigDict(dict(widths=tuple(widths)))


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the sweep spec for `arg` = "preset"."""
  arg = config_lib.parse_arg(arg, PRESETS)
  base = "imagenet32" if arg.preset == "paper" else "tiny"
  c = specs.base_spec(f"r3gan_{arg.preset}", "r3gan",
                      f"configs/r3gan.py:{base}")
  # G's class embedding and D's projection table (both "class_embed").
  c.embedding_params = ("class_embed",)
  # Burn-in over the first half of every point's run (the tiny preset's
  # share), so the ramps end at the same place of every run.
  c.run.gan = ml_collections.ConfigDict()
  c.run.gan.burn_in_fraction = 0.5
  # The EMA generator is what samples: keep the family's EMA (its half-life
  # ramps over the burn-in) at a half-life of 5% of each point's images,
  # the imagenet32 preset's 50 of 1000 Mimg. A fixed half-life in images
  # sampled short runs from an EMA over most of their training (0.96 of a
  # 65-step cpu point) and long ones from their end.
  del c.run.ema_decay
  c.run.gan.ema_half_life_fraction = 0.05
  # Adversarial losses do not fall as the model learns: no divergence test
  # on them (non-finite losses still count as diverged).
  c.diverged_loss_ratio = 0.0
  # Start learning rate of G and D (the end value stays the family's).
  c.learning_rate = 1e-3
  c.metric = "eval_fid"
  if arg.preset in ("cpu", "tiny"):
    c.metric = "eval_fd_shapes"
    # D's losses on the 512 test images.
    c.run.eval_batches = 16
  if arg.preset == "cpu":
    for widths in ((16, 16, 8), (24, 24, 16), (32, 32, 16), (48, 48, 24),
                   (64, 64, 32)):
      c.sizes["w" + "-".join(map(str, widths))] = gan_rung(widths)
    specs.cpu_preset(c)
  elif arg.preset == "tiny":
    specs.tiny_preset(c)
    for widths in ((8, 8, 8), (16, 16, 8)):
      c.sizes["w" + "-".join(map(str, widths))] = gan_rung(widths)
    c.budgets = (1e9, 2e9)
  else:
    for width in (384, 512, 768, 1024, 1536):
      c.sizes[f"w{width}"] = gan_rung((width,) * 4)
    # The imagenet32 preset's: 200 of 1000 Mimg.
    c.run.gan.burn_in_fraction = 0.2
    c.batch_size = 4096
    c.learning_rate = 2e-4
    specs.accelerator_preset(c, budgets=(1e19, 3e19, 1e20, 3e20, 1e21),
                             device_kind="TPU v5p", devices_per_point=32,
                             eval_batches=0)
  return c
