r"""IsoFLOP sweep specs for DC-AE autoencoders (fitted on the held-out
reconstruction loss, or `eval_psnr` with config.eval.sample_metrics).

Presets (the word after the colon):
  cpu    32px embedded shapes, f8c8 DC-AEs (the family's tiny shape: two
         ResBlock and two EfficientViT stages) with every stage's width
         scaled, 30k-330k parameters; 3 budgets x 4 sizes.
  tiny   a seconds-long sweep for tests: 2 budgets x 2 very small DC-AEs.
  paper  ImageNet 256px, f32c32 DC-AEs (the dc_ae_f32c32_in shape) with
         widths scaled 0.5-2x, budgets 1e19-1e21 on one host of 8 H100 per
         point; plan it with --dry-run.

  python -m scaling.run --sweep=configs/scaling/autoencoder.py:cpu \
      --workdir=workdirs/scaling_ae --parallel=2

The spec's fields: `scaling.specs.base_spec`.
"""

import ml_collections

from jaxgen import config_lib
from scaling import specs

PRESETS = ("cpu", "tiny", "paper")


def dc_ae_rung(widths, head_dim: int) -> ml_collections.ConfigDict:
  """One rung: the same stage widths in the encoder and the decoder.

  Args:
    widths: channels per stage, highest resolution first (the EfficientViT
      stages' widths must be multiples of `head_dim`).
    head_dim: attention head size of the EfficientViT stages.

  Returns:
    `config.model` fields.
  """
  return ml_collections.ConfigDict(dict(
      encoder_block_out_channels=tuple(widths),
      decoder_block_out_channels=tuple(widths),
      attention_head_dim=head_dim))


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the sweep spec for `arg` = "preset"."""
  arg = config_lib.parse_arg(arg, PRESETS)
  base = "dc_ae_f32c32_in" if arg.preset == "paper" else "tiny"
  c = specs.base_spec(f"autoencoder_{arg.preset}", "autoencoder",
                      f"configs/autoencoder.py:{base}")
  # Autoencoders have no embedding tables, and no EMA field.
  c.embedding_params = ()
  del c.run.ema_decay
  c.learning_rate = 1e-3
  c.batch_size = 16
  if arg.preset in ("cpu", "tiny"):
    # The 512 test images once.
    c.run.eval_batches = 32
  if arg.preset == "cpu":
    # A first sweep with a moving window of x0.5-x2 found every budget's
    # minimum at its smallest size: four rungs x0.25-x1 at every budget.
    for scale in (0.25, 0.5, 0.75, 1):
      widths = [int(w * scale) for w in (16, 32, 32, 64)]
      c.sizes[f"x{scale:g}".replace(".", "p")] = dc_ae_rung(widths, 8)
    specs.cpu_preset(c)
    c.points_per_budget = 4
    c.window_shift = 0.0
  elif arg.preset == "tiny":
    specs.tiny_preset(c)
    for scale in (0.25, 0.5):
      widths = [int(w * scale) for w in (16, 32, 32, 64)]
      c.sizes[f"x{scale:g}".replace(".", "p")] = dc_ae_rung(widths, 8)
    c.budgets = (1e9, 2e9)
  else:
    for scale in (0.5, 0.75, 1, 1.5, 2):
      widths = [int(w * scale) for w in (128, 256, 512, 512, 1024, 1024)]
      c.sizes[f"x{scale:g}".replace(".", "p")] = dc_ae_rung(widths, 32)
    c.batch_size = 256
    c.learning_rate = 6.4e-5
    # ImageNet at the base preset's 256 px (its default data is the embedded
    # shapes); reconstructions scored on the validation split.
    c.run.dataset = ml_collections.ConfigDict(dict(
        name="tfds:imagenet2012", eval_split="validation"))
    specs.accelerator_preset(c, budgets=(1e19, 3e19, 1e20, 3e20, 1e21),
                             device_kind="H100", devices_per_point=8)
  return c
