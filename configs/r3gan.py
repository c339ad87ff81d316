r"""R3GAN (Huang et al., NeurIPS 2024) on the jaxgen trainer.

Presets (the word after the colon):
  tiny        CPU smoke run: 16px embedded shapes, class-conditional, narrow
              G/D; ~1 min on 2 cores (300 steps).
  cifar10     CIFAR-10 32px, conditional, widths 768 x4 (~21M params each).
  ffhq64      FFHQ 64px, unconditional, 768 x4 + 384.
  ffhq256     FFHQ 256px, unconditional, 768 x4 + 384, 192, 96.
  imagenet32  ImageNet 32px, conditional, widths 1536 x4, group width 32.
  imagenet64  ImageNet 64px, conditional, widths 1536 x5, group width 32.
Options: `gan` switches to the non-relativistic GAN loss (baseline); `r1only`
drops R2.

Paper numbers (Table 9 and the official train.py presets) are used for widths,
γ, batch, duration, burn-in, EMA half-life, lr, β2 and the ADA-style
augmentation probability of D's inputs (`gan.augment_p`, ramped from 0 with
the burn-in's cosine; jaxgen/gan/augment.py). Not reproduced here: the data
sets themselves (FFHQ is read from an image folder you provide; ImageNet at 32/64 px is
resized from `imagenet2012` by the pipeline, whereas the paper uses the
standard downsampled ImageNet, whose box-filter resize differs slightly).

  python -m jaxgen.main --config=configs/r3gan.py:tiny --workdir=/tmp/r3gan
  python -m jaxgen.main --config=configs/r3gan.py:cifar10 \
      --config.mesh.data=8 --workdir=gs://bucket/r3gan_cifar
"""

import ml_collections

from jaxgen import config_lib
from jaxgen.data import config as data_config

PRESETS = ("tiny", "cifar10", "ffhq64", "ffhq256", "imagenet32",
           "imagenet64")

M = 1_000_000  # One "Mimg" of the paper.


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the config for `arg` = "preset[,gan][,r1only]"."""
  arg = config_lib.parse_arg(arg, PRESETS, gan=False, r1only=False)
  c = config_lib.base_config()
  c.family = "r3gan"
  # The preset this config was built from: a record (config.json, the
  # logs); choose a preset with --config=FILE:PRESET, not by setting this.
  c.preset = arg.preset

  c.dataset = data_config.default_dataset_config()
  # Number of classes (conditioning needs > 0; the shapes dataset has 8).
  c.dataset.num_classes = 8
  # Pixels per side; must be 4·2^(len(model.widths) − 1).
  c.dataset.image_size = 32
  # Random x-flips of the data (D's ADA-style augmentation is
  # gan.augment_p below).
  c.dataset.random_flip = True

  c.model = ml_collections.ConfigDict()
  # Stream width per resolution stage, from 4x4 upwards (G's order; D uses
  # the reverse). One stage per resolution.
  c.model.widths = (768,) * 4
  # Channels per group of the grouped 3x3 conv (16 CIFAR/FFHQ, 32 ImageNet).
  c.model.group_width = 16
  # Residual blocks per stage (2 in every paper preset).
  c.model.blocks_per_stage = 2
  # Inverted-bottleneck expansion: hidden width = expansion × stream width.
  c.model.expansion = 2
  # Dimension of z ~ N(0, I) (64 in every paper preset; not normalised).
  c.model.noise_dim = 64
  # Width of G's class embedding, concatenated to z (64 in the paper).
  c.model.cond_dim = 64
  # How many of the highest-resolution stages run in the compute dtype
  # config.dtype, the others in float32 (-1: the reference's choice, 3 for
  # <= 32 px and 4 above, the 4x4 stage always float32).
  c.model.low_precision_stages = -1
  # Grouped 3x3 conv implementation: "lax" (one grouped convolution),
  # "taps" (shifted views + one group-batched matmul, residual blocks run
  # channels first; XLA:CPU runs its double backprop >10x faster) or "auto"
  # (taps on CPU, lax on accelerators). Same function, same parameters.
  c.model.conv_impl = "auto"

  c.gan = ml_collections.ConfigDict()
  # Adversarial loss: "rpgan" (relativistic pairing) | "gan" (baseline) |
  # "hinge" (taming-style).
  c.gan.loss = "rpgan"
  # Zero-centred gradient penalties on real (R1) and fake (R2) data, applied
  # every step with weight γ/2 each.
  c.gan.r1 = True
  c.gan.r2 = True
  # γ at the start and after the burn-in.
  c.gan.gamma = 0.05
  c.gan.end_gamma = 0.005
  # Class-conditional G (embedding into z) and projection D.
  c.gan.class_conditional = True
  # Burn-in length T in images: lr, γ, β2 and EMA half-life follow a cosine
  # from their start to their end values over T, then stay.
  c.gan.burn_in_examples = 20 * M
  # Burn-in as this fraction of the run instead (0: burn_in_examples). The
  # scaling sweeps set it, so a budget sets the ramp's length like the run's.
  c.gan.burn_in_fraction = 0.0
  # EMA half-life of G (in images) after the burn-in; it ramps from 0.
  c.gan.ema_half_life_examples = 5 * M
  # EMA half-life as this fraction of the run's images instead (0:
  # ema_half_life_examples). The scaling sweeps set it, so that every
  # budget samples a generator of the same age relative to its run.
  c.gan.ema_half_life_fraction = 0.0
  # ADA-style augmentation of D's inputs (jaxgen/gan/augment.py): the
  # probability after the burn-in; it ramps from 0 with the same cosine.
  # 0 turns it off. Paper values (Table 9): CIFAR-10 0.55, FFHQ 0.3,
  # ImageNet-32 0.5, ImageNet-64 0.4.
  c.gan.augment_p = 0.55
  # The G phase reads its own real batch and labels, as the reference loop
  # does (the train pipeline then yields 2 x batch_size images a step);
  # False shares D's batch.
  c.gan.g_own_real_batch = True

  c.optimizer = ml_collections.ConfigDict()
  # Adam for both G and D; lr and β2 ramp over the burn-in.
  c.optimizer.learning_rate = 2e-4
  c.optimizer.end_learning_rate = 5e-5
  c.optimizer.b1 = 0.0
  c.optimizer.b2 = 0.9
  c.optimizer.end_b2 = 0.99
  c.optimizer.eps = 1e-8
  # Adam's first moment's dtype: "float32" | "bfloat16" (half its memory).
  c.optimizer.mu_dtype = "float32"

  c.batch_size = 512
  c.total_examples = 250 * M

  if arg.preset == "tiny":
    # No augmentation in the CPU preset (its runs are far too short for D
    # to overfit).
    c.gan.augment_p = 0.0
    # 16px: stages 4, 8, 16 with one block each (the paper has two).
    c.model.widths = (32, 32, 16)
    c.model.blocks_per_stage = 1
    c.model.cond_dim = 16
    c.dataset.image_size = 16
    c.model.noise_dim = 32
    c.batch_size = 32
    c.total_examples = 0
    c.total_steps = 300
    # A compressed burn-in over the first half of the run; γ in the range of
    # the paper's low-resolution presets.
    c.gan.burn_in_examples = 150 * 32
    c.gan.gamma = 1.0
    c.gan.end_gamma = 0.1
    c.gan.ema_half_life_examples = 2000
    c.optimizer.learning_rate = 1e-3
    c.optimizer.end_learning_rate = 2e-4
    c.log_every_steps = 25
    c.checkpoint_every_steps = 150
    c.sample_every_steps = 150
    c.num_samples = 16
    c.eval_batches = 1
    c.eval_every_steps = 150
  elif arg.preset == "cifar10":
    c.dataset.name = "tfds:cifar10"
    c.dataset.num_classes = 10
    # config.dtype stays "auto": bf16 on accelerators, f32 on CPU.
    # Already set above: γ 0.05 -> 0.005, batch 512, 250 Mimg, burn-in
    # 20 Mimg, EMA half-life 0 -> 5 Mimg (issue #19: --kimg=250000).
  elif arg.preset in ("ffhq64", "ffhq256"):
    # Placeholder path: an image folder of FFHQ (thumbnails or 1024px; the
    # pipeline resizes). FFHQ is not in TFDS.
    c.dataset.name = "folder:/data/ffhq"
    c.dataset.num_classes = 0
    c.dataset.eval_split = "train"
    c.gan.class_conditional = False
    c.batch_size = 256
    c.gan.ema_half_life_examples = M // 2
    c.gan.augment_p = 0.3
    # config.dtype stays "auto": bf16 on accelerators, f32 on CPU.
    if arg.preset == "ffhq64":
      c.dataset.image_size = 64
      c.model.widths = (768, 768, 768, 768, 384)
      c.gan.gamma, c.gan.end_gamma = 2.0, 0.2
      c.total_examples = 100 * M
    else:
      c.dataset.image_size = 256
      c.model.widths = (768, 768, 768, 768, 384, 192, 96)
      c.gan.gamma, c.gan.end_gamma = 150.0, 15.0
      c.total_examples = 200 * M
  else:
    size = int(arg.preset[len("imagenet"):])
    c.dataset.name = "tfds:imagenet2012"
    c.dataset.num_classes = 1000
    c.dataset.image_size = size
    c.dataset.eval_split = "validation"
    c.model.widths = (1536,) * (4 if size == 32 else 5)
    # 96 groups at hidden width 3072: group width 32.
    c.model.group_width = 32
    # config.dtype stays "auto": bf16 on accelerators, f32 on CPU.
    c.batch_size = 4096
    c.total_examples = 1000 * M
    c.gan.burn_in_examples = 200 * M
    c.gan.ema_half_life_examples = 50 * M
    c.gan.gamma, c.gan.end_gamma = (0.5, 0.05) if size == 32 else (1.0, 0.1)
    c.gan.augment_p = 0.5 if size == 32 else 0.4

  if arg.preset != "tiny":
    # Paper-scale runs: FSDP over all devices, infrequent logging/saving.
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5000
    c.sample_every_steps = 5000
    c.num_samples = 64
    c.eval_batches = 0

  if arg.gan:
    c.gan.loss = "gan"
  if arg.r1only:
    c.gan.r2 = False
  return c
