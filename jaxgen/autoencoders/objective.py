"""The autoencoder objective (family "autoencoder"): DC-AE and Cosmos AEs.

loss = l1_weight * |x - D(E(x))|  +  lpips_weight * LPIPS(x, D(E(x)))
       + se_weight * L_SE  +  kl_weight * KL  +  lambda * gan_weight * L_G

L_SE is the scale-equivariance regulariser of Skorokhodov et al. 2025
("diffusability"): d(Down_f(x), D(Down_f(E(x)))) with bilinear downsampling
by f drawn uniformly from {2, 4} each step and d the same L1 (+ LPIPS)
reconstruction loss. LPIPS needs `autoencoder.lpips_weights`
(jaxgen.eval.convert --vgg16); with weight 0 it is off.

KL (optional, `kl_weight` > 0) makes the encoder variational: it emits a
mean and a log-variance, z is sampled by reparameterisation, and
KL(q(z|x) || N(0, I)) is averaged over latent elements (as L1 is over
pixels, so weights are not SD-VAE's per-image sums). `encode` returns the mean.

The GAN term (`gan_weight` > 0) trains a patch discriminator
(`adversarial.PatchDiscriminator`) with R3GAN's losses ("rpgan", "gan") or
taming's "hinge", optionally with R1 + R2 (`gan_gamma`), from step
`gan_start_step`. lambda is taming's adaptive weight at the decoder's last
layer (the reconstruction gradient there includes the SE and KL terms when
they are on); the discriminator steps on the same, detached reconstructions.
"loss" is the autoencoder's full loss; "d_loss" the discriminator's.

BatchNorm decoders (the in/mix DC-AEs) keep their running statistics in
`state.model_state["batch_stats"]`. They update only when every parameter
trains (no phase / phase1), from the global batch (jit's global view
synchronises them over the data axes); phases 2 and 3 use the running
statistics, so frozen layers stay bit-identical.

The objective has `reconstruct(state, batch)`, so `config.eval.sample_metrics`
logs eval_psnr / eval_ssim / eval_lpips / eval_rfid for it, and
`encode(state, x)` / `decode(state, z)` for the latent tools.
"""

import dataclasses
import functools
from typing import Any, Dict

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen import config_lib
from jaxgen import registry
from jaxgen.autoencoders import adversarial
from jaxgen.autoencoders import cosmos
from jaxgen.autoencoders import dc_ae
from jaxgen.eval import perceptual
from jaxgen.gan import losses as gan_losses
from jaxgen.nn import linear
from jaxgen.train import flops as flops_lib
from jaxgen.train import objective as objective_lib
from jaxgen.train import state as state_lib

MODEL, DISC = "model", "discriminator"
SE_FACTORS = (2, 4)
# DC-AE's decoupled high-resolution adaptation: the parameters each phase
# trains (regexes over "/"-joined parameter paths; None = all). Phase 2
# tunes the layers next to the latent, phase 3 the decoder head.
PHASES = {
    "": None,
    "phase1": None,
    "phase2": (r"^encoder/conv_out/", r"^decoder/conv_in/",
               r"^encoder/quant_conv/", r"^decoder/post_quant_conv/"),
    "phase3": (r"^decoder/norm_out/", r"^decoder/conv_out/"),
}


ARCHITECTURES = ("dc_ae", "cosmos")


def arch_from_config(config):
  """`config.model` as a `dc_ae.Arch` or `cosmos.CosmosArch`, by
  `config.autoencoder.architecture`."""
  kind = str(config.autoencoder.get("architecture", "dc_ae"))
  fields = dict(config.model)
  fields["in_channels"] = int(config.dataset.get("channels", 3))
  if kind == "dc_ae":
    arch = dc_ae.Arch.from_diffusers(fields)
  elif kind == "cosmos":
    names = {f.name for f in dataclasses.fields(cosmos.CosmosArch)}
    unknown = sorted(set(fields) - names)
    if unknown:
      raise ValueError(f"config.model.{unknown[0]} is not a field of the "
                       "Cosmos autoencoder (jaxgen.autoencoders.cosmos."
                       "CosmosArch).")
    fields = {k: tuple(v) if isinstance(v, (list, tuple)) else v
              for k, v in fields.items()}
    if "resolution" not in fields:
      # A run written before the field existed placed its attention for
      # its training size: its checkpoints keep restoring.
      fields["resolution"] = int(config.dataset.image_size)
    arch = cosmos.CosmosArch(**fields).check()
  else:
    raise ValueError(f"config.autoencoder.architecture={kind!r}; use one of "
                     f"{ARCHITECTURES}.")
  # Sizes a network would divide by or build nothing from.
  config_lib.check_range("config.dataset.channels", arch.in_channels, low=1,
                         integer=True)
  if isinstance(arch, dc_ae.Arch):
    dc_ae.check_sizes(arch, variational=float(
        config.autoencoder.get("kl_weight", 0.0)) > 0)
  return arch


def build_model(arch, variational: bool = False, conv_impl: str = "lax",
                dtype: Any = jnp.float32):
  """The Flax module of an architecture (`DCAE` or `CosmosAE`).

  Args:
    arch: the architecture.
    variational: the encoder emits mean and log-variance.
    conv_impl: its 3x3 convs' `linear.Conv.impl`.
    dtype: compute dtype (`config.dtype`); latents and images come out in
      float32, and the linear attention and norms compute in float32.

  Returns:
    The module.
  """
  if isinstance(arch, cosmos.CosmosArch):
    return cosmos.CosmosAE(arch, variational=variational,
                           conv_impl=conv_impl, dtype=dtype)
  return dc_ae.DCAE(arch, variational=variational, conv_impl=conv_impl,
                    dtype=dtype)


def _load_lpips(path: str, weight: float):
  """LPIPS-VGG weights for `lpips_weight` > 0 (one-line errors naming
  config.autoencoder.lpips_weights)."""
  if not path:
    raise ValueError(
        f"config.autoencoder.lpips_weight={weight:g} needs "
        "config.autoencoder.lpips_weights, the .npz of `python -m "
        "jaxgen.eval.convert --vgg16=PTH --lpips_out=lpips_vgg.npz`; set it, "
        "or set lpips_weight=0.")
  try:
    return perceptual.load_weights(path)
  except ValueError as e:
    raise ValueError(f"config.autoencoder.lpips_weights={path!r}: {e}"
                     ) from None


def downsample(x: jax.Array, factor: int) -> jax.Array:
  """Bilinear (antialiased) downsampling of [..., H, W, C] maps (images or
  the frames of clips) by `factor`.

  At factor 2 this is the [1, 3, 3, 1] / 8 tent filter per axis, not
  torch's default bilinear (a 2 x 2 box there); the scale-equivariance
  paper's resampler is not in the reference notes, so this choice is
  unverified. Images and latents go through the same operator, so the
  term is self-consistent either way.
  """
  *lead, h, w, c = x.shape
  return jax.image.resize(x, (*lead, h // factor, w // factor, c),
                          "bilinear", antialias=True)


def frames(x: jax.Array) -> jax.Array:
  """Clips [B, T, H, W, C] as frames [B T, H, W, C]; images unchanged."""
  return x.reshape((-1,) + x.shape[2:]) if x.ndim == 5 else x


def se_loss(x: jax.Array, z: jax.Array, decode, distance,
            factor: int) -> jax.Array:
  """d(Down_f(x), decode(Down_f(z))): zero for a scale-equivariant decoder.
  """
  return distance(downsample(x, factor), decode(downsample(z, factor)))


def takes_frames(num_frames: int, temporal_compression: int) -> bool:
  """Whether the causal video autoencoder takes clips of `num_frames`:
  1 + k x its temporal compression (the first frame is encoded alone).

  Args:
    num_frames: frames per clip.
    temporal_compression: the architecture's `temporal_compression`.

  Returns:
    True for 1, 1 + tc, 1 + 2 tc, ...
  """
  return num_frames >= 1 and (num_frames - 1) % temporal_compression == 0


@registry.OBJECTIVES.register("autoencoder")
class Autoencoder(objective_lib.Objective):
  """An autoencoder (DC-AE or Cosmos, `config.autoencoder.architecture`)
  trained on L1 (+ LPIPS) reconstruction (+ SE, KL, GAN terms)."""

  models_video = True  # With config.dataset.num_frames > 0.

  def __init__(self, config, total_steps=None):
    super().__init__(config, total_steps)
    self.arch = arch_from_config(config)
    a = config.autoencoder
    self.kl_weight = float(a.get("kl_weight", 0.0))
    conv_impl = linear.resolve_conv_impl(
        str(a.get("conv_impl", "auto")), "config.autoencoder.conv_impl")
    self.image_size = int(config.dataset.image_size)
    self.model = build_model(self.arch, self.kl_weight > 0, conv_impl,
                             config_lib.compute_dtype(config))
    self.video = bool(getattr(self.arch, "video", False))
    # Clips are batch["video"] [B, T, H, W, C]; images batch["image"].
    self.key = "video" if self.video else "image"
    self.num_frames = int(config.dataset.get("num_frames", 0) or 0)
    self.l1_weight = float(a.l1_weight)
    self.lpips_weight = float(a.lpips_weight)
    self.se_weight = float(a.se_weight)
    self.phase = str(a.get("phase", ""))
    self.gan_weight = float(a.get("gan_weight", 0.0))
    self.gan_loss = str(a.get("gan_loss", "hinge"))
    self.gan_gamma = float(a.get("gan_gamma", 0.0))
    self.gan_start_step = int(a.get("gan_start_step", 0))
    self.adaptive = bool(a.get("adaptive_weight", True))
    # (d_loss, g_loss, g_needs_real); an unknown name fails in `validate`.
    self.gan_fns = (gan_losses.LOSSES.get(self.gan_loss)
                    if self.gan_loss in gan_losses.LOSSES.names() else None)
    self.batch_norm = "batch_norm" in getattr(self.arch,
                                              "decoder_norm_types", ())
    # Running statistics move only when every parameter trains.
    self.update_stats = self.batch_norm and PHASES.get(self.phase) is None
    self.lpips_params = None
    if self.lpips_weight:
      self.lpips_params = _load_lpips(str(a.get("lpips_weights") or ""),
                                      self.lpips_weight)
    if self.gan_weight:
      self.discriminator = adversarial.PatchDiscriminator(
          tuple(int(w) for w in a.get("disc_widths", (64, 128, 256))),
          dtype=config_lib.compute_dtype(config))
    self._tx = self._d_tx = None

  def validate(self, num_devices_data_parallel: int) -> None:
    del num_devices_data_parallel
    f = self.arch.compression
    need = f * (max(SE_FACTORS) if self.se_weight else 1)
    if self.image_size % need:
      raise ValueError(
          f"config.dataset.image_size={self.image_size} is not divisible by "
          f"{need} (compression {f}"
          + (f" x the SE factor {max(SE_FACTORS)}" if self.se_weight else "")
          + "); change the image size or the model's stages.")
    if not self.lpips_weight and self.config.autoencoder.get("lpips_weights"):
      # The file alone adds nothing to the loss; the weight is what turns
      # LPIPS on (a file set for eval_lpips belongs to the sample metrics).
      logging.warning(
          "config.autoencoder.lpips_weights is set but lpips_weight=0, so "
          "LPIPS is not in the loss; set config.autoencoder.lpips_weight > 0 "
          "(e.g. 1.0) to train with it, or config.eval.sample_metrics."
          "lpips_weights to score eval_lpips.")
    if self.lpips_weight:
      # The SE term compares images downsampled by its largest factor.
      smallest = self.image_size // (max(SE_FACTORS) if self.se_weight else 1)
      if smallest < perceptual.MIN_SIZE:
        raise ValueError(
            f"config.autoencoder.lpips_weight={self.lpips_weight:g}: LPIPS "
            f"needs images of at least {perceptual.MIN_SIZE} px, and "
            + (f"the SE factor {max(SE_FACTORS)} turns "
               f"{self.image_size} px into {smallest}" if self.se_weight else
               f"these are {self.image_size} px")
            + "; raise config.dataset.image_size or set lpips_weight=0.")
    if self.num_frames and not self.video:
      # Clips reached an image model as a KeyError traceback.
      raise ValueError(
          f"config.dataset.num_frames={self.num_frames}: clips need a video "
          "autoencoder (the causal Cosmos one, e.g. configs/autoencoder.py:"
          "tiny_video); set num_frames=0 for image data.")
    if self.video:
      tc = self.arch.temporal_compression
      if not takes_frames(self.num_frames, tc):
        raise ValueError(
            f"config.dataset.num_frames={self.num_frames}: the causal video "
            f"autoencoder needs 1 + k * {tc} frames (temporal compression "
            f"{tc}); e.g. --config.dataset.num_frames={1 + tc}.")
    if self.phase not in PHASES:
      raise ValueError(f"config.autoencoder.phase={self.phase!r}; use one of "
                       f"{sorted(p for p in PHASES if p)} or ''.")
    if self.phase in ("phase2", "phase3") and not self.config.get(
        "init_from"):
      raise ValueError(f"config.autoencoder.phase={self.phase} starts from "
                       "the previous phase: set config.init_from to that "
                       "run's workdir.")
    if self.gan_weight and self.gan_loss not in gan_losses.LOSSES.names():
      raise ValueError(f"config.autoencoder.gan_loss={self.gan_loss!r}; use "
                       f"one of {sorted(gan_losses.LOSSES.names())}.")
    self._validate_loss_fields()

  def _validate_loss_fields(self) -> None:
    """Ranges of the loss and discriminator fields (one line each)."""
    a = self.config.autoencoder
    check = config_lib.check_range
    for name in ("l1_weight", "lpips_weight", "se_weight", "kl_weight",
                 "gan_weight", "gan_gamma"):
      check(f"config.autoencoder.{name}", getattr(self, name), low=0)
    if not self.l1_weight and not self.lpips_weight:
      raise ValueError(
          "config.autoencoder.l1_weight=0 and lpips_weight=0 leave no "
          "reconstruction loss; set l1_weight (or lpips_weight) > 0.")
    check("config.autoencoder.gan_start_step",
          a.get("gan_start_step", 0), low=0, integer=True)
    widths = tuple(a.get("disc_widths", (64, 128, 256)))
    if not widths:
      raise ValueError("config.autoencoder.disc_widths=() needs at least one "
                       "width (one stride-2 discriminator stage each), e.g. "
                       "(64, 128, 256).")
    for i, w in enumerate(widths):
      check(f"config.autoencoder.disc_widths[{i}]", w, low=1, integer=True)
    check("config.autoencoder.disc_learning_rate",
          a.get("disc_learning_rate", 5.4e-5), low=0, low_open=True)
    for name in ("disc_b1", "disc_b2"):
      check(f"config.autoencoder.{name}", a.get(name), low=0, high=1,
            high_open=True)

  @property
  def tx(self) -> optax.GradientTransformation:
    if self._tx is None:
      self._tx = state_lib.make_optimizer(self.config.optimizer,
                                          self.run_length,
                                          trainable=PHASES[self.phase])
    return self._tx

  # step -> the autoencoder's learning rate (the schedule inside `tx`),
  # built once as the single-optimizer families build theirs.
  _lr = None
  lr_schedule = objective_lib.SingleOptimizer.lr_schedule

  @property
  def d_tx(self) -> optax.GradientTransformation:
    """The discriminator's Adam (constant rate; taming's betas 0.5, 0.9)."""
    if self._d_tx is None:
      a = self.config.autoencoder
      self._d_tx = state_lib.make_optimizer(
          ml_collections.ConfigDict(dict(
              name="adam", learning_rate=float(a.disc_learning_rate),
              b1=float(a.disc_b1), b2=float(a.disc_b2),
              schedule="constant")), self.total_steps or 1)
    return self._d_tx

  def init(self, rng, batch):
    ae_rng, d_rng = jax.random.split(rng)
    # One latent pixel's worth of image: no weight depends on the spatial
    # size (convolutions; attention without position embeddings, placed by
    # the configured resolution), and the one-off init then compiles and
    # runs in a fraction of the full size's time (DC-AE f32c32 at 512 px
    # took 71 s on an H200).
    f = self.arch.compression
    x = batch[self.key][:1, ..., :f, :f, :]
    variables = self.model.init(ae_rng, x)
    params = {MODEL: state_lib.cast_floating(
        variables["params"], config_lib.param_dtype(self.config))}
    if self.gan_weight:
      params[DISC] = self.discriminator.init(d_rng, frames(x))["params"]
    opt_state = {MODEL: self.tx.init(params[MODEL])}
    if self.gan_weight:
      opt_state[DISC] = self.d_tx.init(params[DISC])
    model_state = ({"batch_stats": variables["batch_stats"]}
                   if "batch_stats" in variables else {})
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
        ema_params={}, model_state=model_state)

  # -- the autoencoder --------------------------------------------------------

  @staticmethod
  def _variables(params, stats):
    return {"params": params, **({"batch_stats": stats} if stats else {})}

  def _encode(self, params, x, rng):
    """(z, mean, log-variance or None); z is sampled if variational."""
    mean, logvar = self.model.apply({"params": params}, x,
                                    method=self.model.moments)
    if logvar is None:
      return mean, mean, None
    eps = jax.random.normal(rng, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * eps, mean, logvar

  def _decode(self, params, stats, z, train: bool):
    """(images, batch statistics after this pass)."""
    variables = self._variables(params, stats)
    if train and self.update_stats:
      out, updates = self.model.apply(variables, z, True,
                                      method=self.model.decode,
                                      mutable=["batch_stats"])
      return out, updates["batch_stats"]
    return self.model.apply(variables, z, False,
                            method=self.model.decode), stats

  def encode(self, state, x: jax.Array) -> jax.Array:
    """Latents (the posterior mean) of images in [-1, 1]."""
    return self.model.apply({"params": state.params[MODEL]}, x,
                            method=self.model.encode)

  def decode(self, state, z: jax.Array) -> jax.Array:
    """Images (unclipped) of latents, with the running statistics."""
    return self._decode(state.params[MODEL],
                        state.model_state.get("batch_stats"), z, False)[0]

  # -- losses -----------------------------------------------------------------

  def _distance(self, x, y) -> jax.Array:
    x, y = frames(x), frames(y)
    d = self.l1_weight * jnp.mean(jnp.abs(x - y))
    if self.lpips_params is not None:
      d = d + self.lpips_weight * jnp.mean(perceptual.LPIPS().apply(
          {"params": self.lpips_params}, x, y))
    return d

  def _losses(self, params, stats, x, rng, train: bool):
    """(loss, (metrics, reconstruction, new batch statistics))."""
    z_rng, se_rng = jax.random.split(rng)
    z, mean, logvar = self._encode(params, x, z_rng)
    recon, new_stats = self._decode(params, stats, z, train)
    rec = self._distance(x, recon)
    aux = {"l1": jnp.mean(jnp.abs(x - recon)), "reconstruction": rec}
    loss = rec
    if logvar is not None:
      kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
      aux["kl"] = kl
      loss = loss + self.kl_weight * kl
    if self.se_weight:
      decode = lambda zz: self._decode(params, stats, zz, train)[0]

      def se_at(f):
        return lambda: se_loss(x, z, decode, self._distance, f)
      se = jax.lax.switch(
          jax.random.randint(se_rng, (), 0, len(SE_FACTORS)),
          [se_at(f) for f in SE_FACTORS])
      aux["se"] = se
      loss = loss + self.se_weight * se
    return loss, (aux, recon, new_stats)

  def _d_fn(self, d_params):
    # Clips are judged frame by frame.
    return lambda im: self.discriminator.apply({"params": d_params},
                                               frames(im))

  def _generator_adv(self, params, stats, d_params, x, rng):
    """The decoder's adversarial loss against a fixed discriminator."""
    z, _, _ = self._encode(params, x, jax.random.split(rng)[0])
    recon, _ = self._decode(params, stats, z, True)
    d_fn = self._d_fn(d_params)
    d_fake = d_fn(recon)
    d_real = (jax.lax.stop_gradient(d_fn(x)) if self.gan_fns[2]
              else jnp.zeros_like(d_fake))
    return self.gan_fns[1](d_real, d_fake)

  def _d_loss(self, d_params, x, recon):
    d_fn = self._d_fn(d_params)
    zero = jnp.zeros((), jnp.float32)
    if self.gan_gamma:
      d_real, r1 = gan_losses.logits_and_penalty(d_fn, x)
      d_fake, r2 = gan_losses.logits_and_penalty(d_fn, recon)
    else:
      (d_real, r1), (d_fake, r2) = (d_fn(x), zero), (d_fn(recon), zero)
    adv = self.gan_fns[0](d_real, d_fake)
    return adv + 0.5 * self.gan_gamma * (r1 + r2), {"d_adv": adv, "r1": r1,
                                                     "r2": r2}

  # -- steps ------------------------------------------------------------------

  def train_step(self, state, batch, rng):
    x = batch[self.key]
    params = state.params[MODEL]
    stats = state.model_state.get("batch_stats")
    (loss, (aux, recon, new_stats)), grads = jax.value_and_grad(
        self._losses, has_aux=True)(params, stats, x, rng, True)
    metrics = dict(aux)
    new_params, new_opt = dict(state.params), dict(state.opt_state)
    if self.gan_weight:
      d_params, d_opt = state.params[DISC], state.opt_state[DISC]

      def gan(grads, loss):
        g_adv, adv_grads = jax.value_and_grad(self._generator_adv)(
            params, stats, d_params, x, rng)
        weight = self.gan_weight * (
            adversarial.adaptive_weight(grads, adv_grads) if self.adaptive
            else jnp.ones((), jnp.float32))
        grads = jax.tree.map(lambda g, a: g + weight * a, grads, adv_grads)
        (d_loss, d_aux), d_grads = jax.value_and_grad(
            self._d_loss, has_aux=True)(d_params, x,
                                        jax.lax.stop_gradient(recon))
        d_updates, new_d_opt = self.d_tx.update(d_grads, d_opt, d_params)
        return grads, loss + weight * g_adv, (
            optax.apply_updates(d_params, d_updates), new_d_opt,
            dict(d_aux, g_adv=g_adv, gan_weight=weight, d_loss=d_loss,
                 d_grad_norm=state_lib.global_norm(d_grads)))

      if self.gan_start_step:
        # Before the start neither the GAN's G pass nor D's step runs
        # (computing them times 0 cost as much as the whole
        # reconstruction step), and D's optimizer state stays as it is.
        def off(grads, loss):
          shapes = jax.eval_shape(gan, grads, loss)[2][2]
          return grads, loss, (d_params, d_opt, jax.tree.map(
              lambda s: jnp.zeros(s.shape, s.dtype), shapes))

        grads, loss, (d_new, d_opt, gan_metrics) = jax.lax.cond(
            state.step >= self.gan_start_step, gan, off, grads, loss)
      else:
        grads, loss, (d_new, d_opt, gan_metrics) = gan(grads, loss)
      new_params[DISC], new_opt[DISC] = d_new, d_opt
      metrics.update(gan_metrics)
    updates, new_opt[MODEL] = self.tx.update(grads, state.opt_state[MODEL],
                                             params)
    new_params[MODEL] = optax.apply_updates(params, updates)
    model_state = ({"batch_stats": new_stats} if stats is not None
                   else state.model_state)
    metrics.update(loss=loss, grad_norm=state_lib.global_norm(grads),
                   update_norm=state_lib.global_norm(updates),
                   param_norm=state_lib.global_norm(new_params[MODEL]),
                   learning_rate=self.lr_schedule(state.step))
    return state.replace(step=state.step + 1, params=new_params,
                         opt_state=new_opt, model_state=model_state), metrics

  def eval_step(self, state, batch, rng):
    loss, (aux, _, _) = self._losses(
        state.params[MODEL], state.model_state.get("batch_stats"),
        batch[self.key], rng, False)
    return dict(aux, loss=loss)

  def reconstruct(self, state, batch) -> jax.Array:
    """D(E(x)) clipped to [-1, 1] (for the reconstruction metrics)."""
    return jnp.clip(self.decode(state, self.encode(state, batch[self.key])),
                    -1.0, 1.0)

  def preview_fn(self, config, mesh):
    """The trainer's grids for this run: reconstructions.

    Args:
      config: the run config (`num_samples` examples are shown).
      mesh: the run's mesh.

    Returns:
      `(state, rng) -> images` (`preview.reconstructions`).
    """
    from jaxgen.autoencoders import preview  # pylint: disable=g-import-not-at-top
    return preview.reconstructions(self, config, mesh)

  def sample(self, state, rng, num: int, labels=None) -> jax.Array:
    raise ValueError("an autoencoder run has nothing to sample (it "
                     "reconstructs); its metrics: config.eval.sample_metrics "
                     "(PSNR, SSIM, LPIPS, rFID).")

  # -- accounting -------------------------------------------------------------

  def forward_flops(self, part: str, size: int) -> float:
    """Forward FLOPs of one example through "encoder" (input `size` px) or
    "decoder" (latent `size`): DC-AE's per-layer formulas, or for Cosmos
    the matmuls and convolutions of the traced module
    (`flops.matmul_flops`) with direct (lax) convs, so that Winograd's fewer
    multiplies on CPU do not change the model FLOPs a budget is counted in.
    """
    if isinstance(self.arch, dc_ae.Arch):
      macs = (dc_ae.encoder_macs if part == "encoder"
              else dc_ae.decoder_macs)(self.arch, size)
      return 2.0 * macs
    model, variables, latent = self._flops_model
    if part == "encoder":
      x = self._abstract_input(size)
      return flops_lib.matmul_flops(
          lambda v, x: model.apply(v, x, method=model.encode), variables, x)
    z = jax.ShapeDtypeStruct(latent[:-3] + (size, size, latent[-1]),
                             jnp.float32)
    return flops_lib.matmul_flops(
        lambda v, z: model.apply(v, z, method=model.decode), variables, z)

  def _abstract_input(self, size: int) -> jax.ShapeDtypeStruct:
    """One example of `size` px (a clip of the run's frames for video)."""
    frames = (self.num_frames,) if self.video else ()
    return jax.ShapeDtypeStruct(
        (1,) + frames + (size, size, self.arch.in_channels), jnp.float32)

  @functools.cached_property
  def _flops_model(self):
    """(model with lax convs, its abstract variables, one example's latent
    shape at the run's size), traced once per objective: the parameters, the
    latent's frames and channels do not depend on the input size."""
    model = self.model.clone(conv_impl="lax")
    x = self._abstract_input(self.image_size)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    z = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.encode),
                       variables, x)
    return model, variables, tuple(z.shape)

  def flops_per_example(self) -> float:
    """3 x (encoder + decoder) forward FLOPs (backward = 2 x forward).

    With the SE regulariser, 3 x the expected decoder FLOPs at the
    downsampled latent sizes are added. LPIPS's VGG passes and the GAN term
    (discriminator, second autoencoder pass) are not counted.
    """
    latent = self.image_size // self.arch.compression
    fwd = (self.forward_flops("encoder", self.image_size)
           + self.forward_flops("decoder", latent))
    if self.se_weight:
      fwd += sum(self.forward_flops("decoder", latent // s)
                 for s in SE_FACTORS) / len(SE_FACTORS)
    return 3.0 * fwd

  def num_params(self, state) -> Dict[str, int]:
    """The autoencoder's parameters (and the discriminator's separately)."""
    count = lambda t: int(sum(x.size for x in jax.tree.leaves(t)))
    out = {"params": count(state.params[MODEL])}
    if DISC in state.params:
      out["discriminator_params"] = count(state.params[DISC])
    return out
