r"""Pyramidal Flow Matching (Jin et al. 2024) and its flow-matching baseline.

Presets (the word after the colon):
  tiny          CPU: 32px embedded shapes, 3-stage image pyramid (4x4, 8x8,
                16x16 tokens at patch 2), a small DiT, ~3 min on 2 cores.
  shapes64      64px embedded shapes, patch 4 (experiments on CPU).
  shapes_video  32px 8-frame jaxgen_shapes_video clips, temporal pyramid
                (autoregressive frames, compressed history), patch 4.
  sd3_medium    paper-shaped: the SD3-medium DiT shape (24 blocks, width
                1536, 24 heads) on 16-channel video latents, 16 latent frames
                of 48x48 (384 px square, 8x VAE), temporal pyramid. jaxgen's
                DiT is single-stream without a text stream: 1.03B
                parameters, not the paper's ~2B MM-DiT.
  miniflux      the released miniFLUX shape (24 blocks of width 1920, 30
                heads) on the same latents; single-stream, 1.60B (miniFLUX:
                ~2B with its 8 double-stream blocks).
Options: `baseline` trains plain full-resolution flow matching instead
(family flow_matching; full-sequence bidirectional video for clips).

  python -m jaxgen.main --config=configs/pyramidal_flow.py:tiny --workdir=/tmp/pf
  python -m jaxgen.main --config=configs/pyramidal_flow.py:tiny,baseline \
      --workdir=/tmp/fm
"""

import ml_collections

from jaxgen import config_lib
from jaxgen.data import config as data_config

PRESETS = ("tiny", "shapes64", "shapes_video", "sd3_medium", "miniflux")


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the config for `arg` = "preset[,baseline]"."""
  arg = config_lib.parse_arg(arg, PRESETS, baseline=False)
  c = config_lib.base_config()
  c.family = "flow_matching" if arg.baseline else "pyramidal_flow"
  # The preset this config was built from: a record (config.json, the
  # logs); choose a preset with --config=FILE:PRESET, not by setting this.
  c.preset = arg.preset

  c.dataset = data_config.default_dataset_config()
  # Classes for conditioning (the shapes datasets have 8 kinds).
  c.dataset.num_classes = 8
  # Pixels (or latent cells) per side; divisible by 2^(K-1) x patch.
  c.dataset.image_size = 32

  # The DiT (jaxgen.flow.dit.DiT) and its patchifier.
  c.model = ml_collections.ConfigDict()
  # Patch side in pixels / latent cells (tokens per frame = (size/patch)^2).
  c.model.patch_size = 2
  # Width, blocks, heads (head_dim = width / heads, even and >= 6 for RoPE).
  c.model.width = 128
  c.model.depth = 4
  c.model.num_heads = 4
  # MLP hidden width / width.
  c.model.mlp_ratio = 4.0
  # Positions: "rope" (3-D over frame, row, column) | "sincos" | "learned".
  c.model.positions = "rope"
  # RoPE base wavelength.
  c.model.rope_theta = 10_000.0
  # Size of the sinusoidal timestep embedding.
  c.model.freq_dim = 128
  # RMS-normalise queries and keys (QK-norm).
  c.model.qk_norm = True
  # Attention: "auto" (jax.nn.dot_product_attention picks; XLA today),
  # "xla", "cudnn" (the fused GPU kernel; bf16) or "einsum" (reference).
  c.model.attention_impl = "auto"
  # Attend segment by segment (the official per-stage loop; no wasted
  # cross-segment scores) or in one masked call over the packed row.
  c.model.segment_attention = True
  # The blocks as one nn.scan over layers: compile time flat in depth (the
  # paper-size presets); parameters are stacked, so checkpoints of the two
  # layouts differ.
  c.model.scan_layers = False

  c.flow = ml_collections.ConfigDict()
  # Training times: "uniform" (the official pyramid code) | "logit_normal".
  c.flow.time_sampling = "uniform"
  # Mean and std of the logit-normal (SD3: 0, 1). Times run from noise (0)
  # to data (1), the other way from SD3's: its mean m is -m here.
  c.flow.logit_mean = 0.0
  c.flow.logit_std = 1.0
  # Train class-conditional, dropping labels with this probability for CFG.
  c.flow.class_conditional = True
  c.flow.label_dropout = 0.1
  # Euler steps per stage, lowest resolution first (one entry for the
  # baseline); the official sampler uses 20 per stage for images.
  c.flow.sample_steps = (60,) if arg.baseline else (20, 20, 20)
  # Classifier-free guidance weight (1 = off).
  c.flow.guidance_scale = 1.0

  c.pyramid = ml_collections.ConfigDict()
  # K stages at full, 1/2, 1/4, ... resolution.
  c.pyramid.num_stages = 3
  # Examples per stage in each group of a batch, lowest first: "official"
  # ([1, 2, 1] for K = 3; uniform for other K), "uniform", or K ints,
  # e.g. "2,1,1". The batch must be divisible by their sum.
  c.pyramid.stage_ratios = "official"
  # 0: continuous windows (0, 1/3), (0.2, 2/3), (0.5, 1); 1000: cut on the
  # official code's 1000-step grid (0.1998, 0.4993).
  c.pyramid.num_train_timesteps = 0
  # The scalar the DiT embeds: "official" (the code's windows 1000 -> 744
  # -> 386 -> 1; exactly so, as released weights need, with
  # num_train_timesteps=1000: the continuous cuts give 1000 -> 743.85 ->
  # 385.23 -> 1) | "global" (1000 x the global noise level: the stages'
  # windows overlap there, (0, 1/3), (0.2, 2/3), (0.5, 1), so one timestep
  # means two stages with other targets, and RoPE does not tell the DiT
  # the grid size; the default until 2026-12-03).
  c.pyramid.timestep_embedding = "official"
  # Add the corrective block noise at the jumps (False: the ablation).
  c.pyramid.renoise = True
  # Video: the temporal pyramid (autoregressive frames with compressed
  # history); False trains full-sequence clips at every stage.
  c.pyramid.temporal = True
  # History frames kept per generated frame (-1: all earlier frames of the
  # clip, num_frames - 1).
  c.pyramid.history_frames = -1
  # Corruptive noise on the training history: strength ~ U[0, this].
  c.pyramid.history_corruption = 1.0 / 3.0

  # AdamW as in the paper's Table 4 (betas (0.9, 0.999), wd 1e-4, clip 1.0,
  # eps 1e-6, 1k warmup). Its constant rate is the paper presets'; the CPU
  # presets anneal with a cosine (short runs end lower).
  c.optimizer = config_lib.optimizer_config(
      learning_rate=1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=1e-4,
      warmup_steps=1000, grad_clip=1.0)
  # EMA decay of the parameters used for sampling (0 = no EMA).
  c.ema_decay = 0.9999
  c.batch_size = 256
  c.total_steps = 100_000

  if arg.preset in ("tiny", "shapes64", "shapes_video"):
    c.batch_size = 32
    c.total_steps = 400
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 20
    c.ema_decay = 0.99
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200
    c.sample_every_steps = 400
    c.eval_batches = 2
    c.eval_every_steps = 200
    c.num_samples = 16
  if arg.preset == "shapes64":
    c.dataset.image_size = 64
    c.model.patch_size = 4
    c.total_steps = 1000
    c.log_every_steps = 25
    c.eval_every_steps = 250
    c.checkpoint_every_steps = 500
    c.sample_every_steps = 1000
  elif arg.preset == "shapes_video":
    c.dataset.name = "jaxgen_shapes_video"
    c.dataset.num_frames = 8
    c.dataset.random_flip = False
    c.model.patch_size = 4
    c.batch_size = 16
    c.num_samples = 8
    c.flow.sample_steps = (24,) if arg.baseline else (8, 8, 8)
  elif arg.preset in ("sd3_medium", "miniflux"):
    c.model.scan_layers = True
    # 16-channel video latents of an 8x8x8 causal VAE (encode them with
    # jaxgen.autoencoders.encode and point dataset.name at latents:DIR).
    c.dataset.name = "latents:/path/to/video_latents"
    c.dataset.channels = 16
    c.dataset.image_size = 48
    c.dataset.num_frames = 16
    # config.dtype stays "auto": bf16 on accelerators, f32 on CPU.
    c.model.freq_dim = 256
    if arg.preset == "sd3_medium":
      c.model.width, c.model.depth, c.model.num_heads = 1536, 24, 24
    else:
      c.model.width, c.model.depth, c.model.num_heads = 1920, 24, 30
    c.batch_size = 64
    # Table 4's video stages: betas (0.9, 0.95), a constant rate; 5e-5 as
    # its 768p stage 3 and the released fine-tuning script.
    c.optimizer.schedule = "constant"
    c.optimizer.b2 = 0.95
    c.optimizer.learning_rate = 5e-5
    c.flow.sample_steps = (60,) if arg.baseline else (10, 10, 10)
    c.flow.guidance_scale = 5.0
    c.mesh.fsdp = -1
    c.mesh.data = 1
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    c.sample_every_steps = 10_000
    c.num_samples = 8
  return c
