r"""Autoencoders (DC-AE, Chen et al. 2025) on the jaxgen trainer.

Presets (the word after the colon):
  tiny                 CPU: 32px embedded shapes, a small SANA-style DC-AE
                       (f8, 8 latent channels, RMSNorm everywhere).
  dc_ae_f32c32_sana    the released SANA DC-AE (trainable).
  dc_ae_f32c32_in      the released in/mix DC-AEs (batch-norm decoders,
  dc_ae_f64c128_in     running statistics in state.model_state).
  dc_ae_f128c512_in
  cosmos_ci8x8         Cosmos continuous image tokenizers (Haar patch 4,
  cosmos_ci16x16       SD-VAE blocks, 16 latent channels), 8x / 16x.
  cosmos_cv4x8x8       Cosmos continuous causal video tokenizer, 4x in time,
                       8x in space (1 + 4k frames; 9 on the embedded clips).
  tiny_cosmos          CPU: a small Cosmos image AE (f8, 8 channels) on 32px
                       shapes.
  tiny_video           CPU: a small causal video AE (4x time, 4x space) on
                       5-frame 32px jaxgen_shapes_video clips.
Options: `se` turns on the scale-equivariance regulariser (weight 0.25),
`gan` the patch-discriminator GAN term (weight 0.5, hinge, adaptive weight),
`kl` a variational encoder with a KL term (weight 1e-4), `phase2` / `phase3`
DC-AE's later phases (the layers next to the latent / the decoder head, GAN
on), with a community reproduction's resolution and optimizer on the dc_ae
presets; start them from the previous phase's run (config.init_from).

  python -m jaxgen.main --config=configs/autoencoder.py:tiny --workdir=/tmp/ae
"""

import dataclasses

import ml_collections

from jaxgen import config_lib
from jaxgen.autoencoders import cosmos
from jaxgen.autoencoders import dc_ae
from jaxgen.data import config as data_config

PRESETS = ("tiny", "dc_ae_f32c32_sana", "dc_ae_f32c32_in", "dc_ae_f64c128_in",
           "dc_ae_f128c512_in", "cosmos_ci8x8", "cosmos_ci16x16",
           "cosmos_cv4x8x8", "tiny_cosmos", "tiny_video")

# Cosmos tokenizers (NVIDIA/Cosmos-Tokenizer networks/configs.py): patch 4,
# width 128 x (2, 4, 4), 2 ResNet blocks, attention at 32 px features of
# the model's resolution 1024 (so only the middle blocks attend), 16 latent
# channels; the video model normalises per frame. The tiny presets place
# attention for 32 px, their training size.
COSMOS = {
    "cosmos_ci8x8": cosmos.CosmosArch(spatial_compression=8),
    "cosmos_ci16x16": cosmos.CosmosArch(spatial_compression=16),
    "cosmos_cv4x8x8": cosmos.CosmosArch(
        spatial_compression=8, temporal_compression=4, video=True,
        num_groups=1),
    "tiny_cosmos": cosmos.CosmosArch(
        latent_channels=8, channels=16, channels_mult=(1, 2, 4),
        num_res_blocks=1, attn_resolutions=(4,), resolution=32,
        patch_size=2, spatial_compression=8),
    "tiny_video": cosmos.CosmosArch(
        latent_channels=8, channels=16, channels_mult=(1, 2),
        num_res_blocks=1, attn_resolutions=(8,), resolution=32,
        patch_size=2, spatial_compression=4, temporal_compression=4,
        video=True, num_groups=1),
}


def _model(arch) -> ml_collections.ConfigDict:
  fields = dataclasses.asdict(arch)
  del fields["in_channels"]  # From config.dataset.channels.
  return ml_collections.ConfigDict(fields)


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the config for `arg` = "preset[,se][,gan][,kl][,phase2|3]"."""
  arg = config_lib.parse_arg(arg, PRESETS, se=False, gan=False, kl=False,
                             phase2=False, phase3=False)
  if arg.phase2 and arg.phase3:
    raise ValueError("config options phase2 and phase3 exclude each other; "
                     "give one (each starts from the previous phase's run).")
  c = config_lib.base_config()
  c.family = "autoencoder"
  # The preset this config was built from: a record (config.json, the
  # logs); choose a preset with --config=FILE:PRESET, not by setting this.
  c.preset = arg.preset

  # Convolution kernels shard over their output channels only (on tensor x
  # fsdp, the same memory per device as the default's fsdp x tensor split):
  # with both kernel dims sharded, XLA's SPMD partitioner (jax 0.10) returns
  # wrong input gradients for x + conv(x) when the batch is sharded too
  # (tests/autoencoders/test_objective.py compares meshes).
  c.logical_axis_rules = tuple(
      r for r in config_lib.default_logical_axis_rules() if r[0] != "conv_in")

  c.dataset = data_config.default_dataset_config()
  c.dataset.image_size = 256
  c.dataset.random_flip = True

  c.autoencoder = ml_collections.ConfigDict()
  # "dc_ae": config.model holds the fields of diffusers' AutoencoderDC
  # config (jaxgen.autoencoders.dc_ae.Arch; per-stage tuples); "cosmos": the
  # fields of jaxgen.autoencoders.cosmos.CosmosArch.
  c.autoencoder.architecture = "cosmos" if arg.preset in COSMOS else "dc_ae"
  # How the dense 3x3 convs run: "auto" = "winograd" on CPU (Winograd's
  # F(2x2, 3x3), 1.5-2x faster there, float32 only), "lax" on GPU / TPU;
  # the same parameters either way (jaxgen.nn.linear.Conv.impl).
  c.autoencoder.conv_impl = "auto"
  if arg.preset in COSMOS:
    c.model = _model(COSMOS[arg.preset])
  elif arg.preset == "tiny":
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
  c.autoencoder.phase = ("phase2" if arg.phase2 else
                         "phase3" if arg.phase3 else "")
  # KL(q(z|x) || N(0, I)) weight, averaged over latent elements; > 0 makes
  # the encoder variational (mean and log-variance channels).
  c.autoencoder.kl_weight = 1e-4 if arg.kl else 0.0
  # GAN term on the decoder (0 = off; DC-AE phase 3 uses 0.5): a patch
  # discriminator, its loss ("hinge" as taming, "rpgan" / "gan" as R3GAN),
  # R1 + R2 weight gamma (the D loss adds gamma / 2 (R1 + R2); 0 = off),
  # the first step it acts, and taming's adaptive weight at the last layer.
  c.autoencoder.gan_weight = 0.5 if arg.gan or arg.phase3 else 0.0
  c.autoencoder.gan_loss = "hinge"
  c.autoencoder.gan_gamma = 0.0
  c.autoencoder.gan_start_step = 0
  c.autoencoder.adaptive_weight = True
  # Patch discriminator widths (one stride-2 4x4 conv each) and its Adam.
  c.autoencoder.disc_widths = (64, 128, 256)
  c.autoencoder.disc_learning_rate = 5.4e-5
  c.autoencoder.disc_b1 = 0.5
  c.autoencoder.disc_b2 = 0.9

  c.optimizer = config_lib.optimizer_config(
      learning_rate=6.4e-5, b1=0.9, b2=0.999, weight_decay=0.1,
      schedule="constant", warmup_steps=0)
  c.batch_size = 32
  c.total_steps = 100_000
  # Autoencoders do not sample: the grids (samples/step_N.png, TensorBoard)
  # show this many held-out examples, each followed by its reconstruction
  # (jaxgen.autoencoders.preview); reconstructions are scored by
  # eval.sample_metrics (PSNR / SSIM / LPIPS / rFID) and eval_loss.
  c.num_samples = 8
  c.eval_batches = 4
  c.dataset.eval_split = "test"

  if arg.preset == "cosmos_cv4x8x8":
    # The embedded clips (64 px at most, 16 frames); point dataset.name at
    # real video for real use (Cosmos trains on 17+ frame clips).
    c.dataset.name = "jaxgen_shapes_video"
    c.dataset.image_size = 64
    c.dataset.num_frames = 9
    c.batch_size = 8
  if arg.preset.startswith("tiny"):
    c.dataset.image_size = 32
    c.batch_size = 16
    c.total_steps = 300
    c.log_every_steps = 25
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 100
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 0.0
    c.autoencoder.disc_widths = (16, 32)
    c.autoencoder.disc_learning_rate = 2e-4
  if arg.preset == "tiny_video":
    c.dataset.name = "jaxgen_shapes_video"
    c.dataset.num_frames = 5
    c.dataset.random_flip = False
    c.batch_size = 8
  if arg.preset.startswith("dc_ae_") and arg.phase2:
    # A community reproduction's phase 2 (lavinal712/AutoencoderKL, dc-ae
    # branch; DC-AE published no training code): 512 px, lr 1.6e-5, wd 1e-3.
    c.dataset.image_size = 512
    c.optimizer.learning_rate = 1.6e-5
    c.optimizer.weight_decay = 1e-3
  if arg.preset.startswith("dc_ae_") and arg.phase3:
    # Its phase 3: 256 px, lr 5.4e-5, betas (0.5, 0.9), no weight decay,
    # the GAN term from the first step. (Both add 0.25 LPIPS: set
    # autoencoder.lpips_weight with its weights file.)
    c.optimizer.learning_rate = 5.4e-5
    c.optimizer.b1, c.optimizer.b2 = 0.5, 0.9
    c.optimizer.weight_decay = 0.0
  return c
