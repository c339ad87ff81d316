r"""Autoencoders (DC-AE, Chen et al. 2025) on the jaxgen trainer.

Presets (the word after the colon):
  tiny                 CPU: 32px embedded shapes, a small SANA-style DC-AE
                       (f8, 8 latent channels, RMSNorm everywhere).
  dc_ae_f32c32_sana    the released SANA DC-AE (trainable).
  dc_ae_f32c32_in      the released in/mix DC-AEs (batch-norm decoders:
  dc_ae_f64c128_in     conversion and inference; training them is refused
  dc_ae_f128c512_in    before compiling).
Options: `se` turns on the scale-equivariance regulariser (weight 0.25).

  python -m jaxgen.main --config=configs/autoencoder.py:tiny --workdir=/tmp/ae
"""

import dataclasses

import ml_collections

from jaxgen import config_lib
from jaxgen.autoencoders import dc_ae
from jaxgen.data import config as data_config

PRESETS = ("tiny", "dc_ae_f32c32_sana", "dc_ae_f32c32_in", "dc_ae_f64c128_in",
           "dc_ae_f128c512_in")


def _model(arch: dc_ae.Arch) -> ml_collections.ConfigDict:
  fields = dataclasses.asdict(arch)
  del fields["in_channels"]  # From config.dataset.channels.
  return ml_collections.ConfigDict(fields)


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the config for `arg` = "preset[,se]"."""
  arg = config_lib.parse_arg(arg, PRESETS, se=False)
  c = config_lib.base_config()
  c.family = "autoencoder"
  # The preset this config was built from (for logs and sweeps).
  c.preset = arg.preset

  c.dataset = data_config.default_dataset_config()
  c.dataset.image_size = 256
  c.dataset.random_flip = True

  # DC-AE architecture: the fields of diffusers' AutoencoderDC config
  # (jaxgen.autoencoders.dc_ae.Arch); per-stage tuples.
  if arg.preset == "tiny":
    c.model = _model(dc_ae.Arch(
        latent_channels=8, attention_head_dim=8,
        encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock",
                             "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock",
                             "EfficientViTBlock"),
        encoder_block_out_channels=(16, 32, 32, 64),
        decoder_block_out_channels=(16, 32, 32, 64),
        encoder_layers_per_block=(1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        encoder_qkv_multiscales=((), (), (5,), (5,)),
        decoder_qkv_multiscales=((), (), (5,), (5,)),
        decoder_norm_types="rms_norm", decoder_act_fns="silu"))
  else:
    c.model = _model(dc_ae.released(arg.preset[len("dc_ae_"):]))

  c.autoencoder = ml_collections.ConfigDict()
  # Reconstruction loss weights: L1 and LPIPS (LPIPS needs lpips_weights,
  # the .npz of `python -m jaxgen.eval.convert --vgg16`; 0 turns it off).
  c.autoencoder.l1_weight = 1.0
  c.autoencoder.lpips_weight = 0.0
  c.autoencoder.lpips_weights = ""
  # Scale-equivariance regulariser weight (0 = off; Skorokhodov et al.).
  c.autoencoder.se_weight = 0.25 if arg.se else 0.0
  # DC-AE training phase: "" / "phase1" (everything), "phase2" (the layers
  # next to the latent), "phase3" (the decoder head); 2 and 3 start from the
  # previous phase's run (config.init_from).
  c.autoencoder.phase = ""

  c.optimizer = config_lib.optimizer_config(
      learning_rate=6.4e-5, b1=0.9, b2=0.999, weight_decay=0.1,
      schedule="constant", warmup_steps=0)
  c.batch_size = 32
  c.total_steps = 100_000
  # Autoencoders do not sample: reconstructions are scored by
  # eval.sample_metrics (PSNR / SSIM / LPIPS / rFID) and eval_loss.
  c.num_samples = 0
  c.eval_batches = 4
  c.dataset.eval_split = "test"

  if arg.preset == "tiny":
    c.dataset.image_size = 32
    c.batch_size = 16
    c.total_steps = 300
    c.log_every_steps = 25
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 100
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 0.0
  return c
