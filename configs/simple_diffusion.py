r"""Simple diffusion (Hoogeboom et al. 2023; SiD2 options) on the jaxgen trainer.

Presets (the word after the colon):
  tiny         CPU smoke run: 32px embedded shapes, small U-ViT, ~3 min on 2 cores.
  shapes64     64px embedded shapes, a small U-ViT (experiments on CPU).
  shapes128    128px embedded shapes, a small U-ViT (experiments on CPU).
  imagenet128  an ImageNet 128 U-ViT of the paper's described structure, sizes
               inferred (~2.47B parameters; see uvit.py notes).
  imagenet256  ImageNet 256, UViT/2.
  imagenet512  ImageNet 512, UViT/4.
Options: `sid2` switches to SiD2's recipe (sigmoid weighting, residual skips,
guidance interval).

  python -m jaxgen.main --config=configs/simple_diffusion.py:tiny --workdir=/tmp/sd
  python -m jaxgen.main --config=configs/simple_diffusion.py:imagenet256,sid2 \
      --config.mesh.fsdp=8 --workdir=gs://bucket/sd256
"""

import ml_collections

from jaxgen import config_lib
from jaxgen.data import config as data_config
from jaxgen.diffusion import schedules
from jaxgen.diffusion import uvit

PRESETS = ("tiny", "shapes64", "shapes128", "imagenet128", "imagenet256",
           "imagenet512")


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the config for `arg` = "preset[,sid2]"."""
  arg = config_lib.parse_arg(arg, PRESETS, sid2=False)
  c = config_lib.base_config()
  c.family = "simple_diffusion"
  # The preset this config was built from: a record (config.json, the
  # logs); choose a preset with --config=FILE:PRESET, not by setting this.
  c.preset = arg.preset

  c.dataset = data_config.default_dataset_config()
  # Number of classes for conditioning (the shapes dataset has 8 kinds).
  c.dataset.num_classes = 8
  # Pixels per side (the model must divide it by its total downsampling).
  c.dataset.image_size = 32

  # The U-ViT: every field of jaxgen.diffusion.uvit.UViT (channels per level,
  # ResBlocks per level, transformer width/depth/heads, patch_size,
  # downsample "patch"|"haar", skip_style "unet"|"residual", dropout_rate and
  # the largest resolution it applies at, scan_layers (the transformer as
  # one nn.scan: on for the 36-block presets), ...; the compute dtype is
  # config.dtype), filled from a row of uvit.UVIT_PRESETS; override any of
  # them with --config.model.<field>.
  c.model = ml_collections.ConfigDict(uvit.preset_fields(
      {"shapes64": "tiny", "shapes128": "tiny"}.get(arg.preset, arg.preset)))

  c.diffusion = ml_collections.ConfigDict()
  # logSNR schedule: "cosine" | "shifted" (+2·log(noise_size/d)) | "interpolated".
  c.diffusion.schedule = "shifted"
  # Keyword arguments of every schedule, one section each, defaults from its
  # signature; only the selected schedule's section is used, so switching
  # schedules never passes it foreign keywords. E.g.
  # --config.diffusion.schedules.shifted.noise_size=32.
  c.diffusion.schedules = ml_collections.ConfigDict({
      name: schedules.schedule_keywords(name)
      for name in schedules.SCHEDULES.names()})
  # Loss weighting on the ε-MSE: "none" (SiD) | "sigmoid" (SiD2).
  c.diffusion.weighting = "none"
  # Bias b of the sigmoid weighting sigmoid(b − λ).
  c.diffusion.sigmoid_bias = -3.0
  # Also multiply the weight by −dλ/dt (the SiD2 paper's form is uncertain).
  c.diffusion.weight_dlogsnr_dt = False
  # SiD multiscale loss over scales min_size…d (paper: useful above 256px),
  # each scale's term its per-pixel MSE weighted by 1/s; normalize: the 1/s
  # weights rescaled to sum to 1 (one scale is then the plain ε-MSE; False
  # keeps the bare 1/s, ~21x smaller at 64 px, which changes what gradient
  # clipping does). See jaxgen.diffusion.losses.multiscale_mse.
  c.diffusion.multiscale = False
  c.diffusion.multiscale_min_size = 32
  c.diffusion.multiscale_normalize = True
  # Train class-conditional, dropping labels with this probability for CFG.
  c.diffusion.class_conditional = True
  c.diffusion.label_dropout = 0.1
  # Sampler for grids/eval: "ddpm" (the paper's ancestral) | "ddim"; its steps.
  c.diffusion.sampler = "ddpm"
  c.diffusion.sample_steps = 128
  # Classifier-free guidance weight (1 = off) and the logSNR interval where it
  # applies (empty = everywhere; SiD2 uses an interval).
  c.diffusion.guidance_scale = 1.0
  c.diffusion.guidance_interval = ()

  c.optimizer = config_lib.optimizer_config(
      learning_rate=1e-4, b1=0.9, b2=0.99, warmup_steps=1000, grad_clip=1.0)
  # EMA decay of the parameters used for sampling (0 = no EMA).
  c.ema_decay = 0.9999
  c.batch_size = 2048
  c.total_steps = 500_000

  if arg.preset == "tiny":
    c.batch_size = 32
    c.total_steps = 400
    c.optimizer.learning_rate = 2e-3
    c.optimizer.warmup_steps = 20
    c.ema_decay = 0.99
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200
    c.sample_every_steps = 400
    c.eval_batches = 2
    c.eval_every_steps = 200
    c.num_samples = 16
    c.diffusion.sample_steps = 64
  elif arg.preset in ("shapes64", "shapes128"):
    size = int(arg.preset[len("shapes"):])
    c.dataset.image_size = size
    # Small CPU U-ViTs whose transformer runs at 8x8: 64px -> patch 2 and two
    # levels; 128px -> patch 4 and two levels (the paper's "downsample
    # immediately" at high resolution).
    c.model.patch_size = size // 32
    c.model.channels = (64, 128)
    c.model.transformer_width = 128
    c.model.num_heads = 4
    c.model.cond_dim = 128
    c.model.freq_dim = 64
    c.batch_size = 32
    c.total_steps = 1000
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 50
    c.ema_decay = 0.995
    c.log_every_steps = 25
    c.eval_batches = 4
    c.eval_every_steps = 250
    c.checkpoint_every_steps = 500
    c.sample_every_steps = 1000
    c.diffusion.sample_steps = 128
  else:
    size = int(arg.preset[len("imagenet"):])
    c.dataset.name = "tfds:imagenet2012"
    c.dataset.num_classes = 1000
    c.dataset.image_size = size
    c.dataset.eval_split = "validation"
    # config.dtype stays "auto": bf16 on accelerators, f32 on CPU.
    # DDPM steps as other papers' tables report them: SiD 1000 (SiD2: 512,
    # below).
    c.diffusion.sample_steps = 1000
    c.diffusion.guidance_scale = 2.0
    c.mesh.fsdp = -1
    c.mesh.data = 1
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5000
    c.sample_every_steps = 10000
    c.eval_batches = 16
    c.eval_every_steps = 10000
    c.num_samples = 64

  if arg.sid2:
    # SiD2: sigmoid weighting on the ε-loss, one residual skip per level,
    # guidance only at intermediate noise levels.
    c.diffusion.weighting = "sigmoid"
    c.model.skip_style = "residual"
    c.diffusion.guidance_interval = (-5.0, 5.0)
    if arg.preset.startswith("imagenet"):
      c.diffusion.sample_steps = 512
  return c
