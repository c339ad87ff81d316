"""The autoencoder objective (family "autoencoder"): DC-AE reconstruction.

loss = l1_weight * |x - D(E(x))|  +  lpips_weight * LPIPS(x, D(E(x)))
       + se_weight * L_SE

L_SE is the scale-equivariance regulariser of Skorokhodov et al. 2025
("diffusability"): d(Down_f(x), D(Down_f(E(x)))) with bilinear downsampling
by f drawn uniformly from {2, 4} each step and d the same L1 (+ LPIPS)
reconstruction loss. LPIPS needs `autoencoder.lpips_weights`
(jaxgen.eval.convert --vgg16); with weight 0 it is off.

The objective has `reconstruct(state, batch)`, so `config.eval.sample_metrics`
logs eval_psnr / eval_ssim / eval_lpips / eval_rfid for it. Training needs
an RMSNorm decoder (SANA-style); the in/mix models' batch-norm decoders are
supported for conversion and inference only so far.
"""

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from jaxgen import registry
from jaxgen.autoencoders import dc_ae
from jaxgen.eval import perceptual
from jaxgen.train import objective as objective_lib
from jaxgen.train import state as state_lib

SE_FACTORS = (2, 4)
# DC-AE's decoupled high-resolution adaptation: the parameters each phase
# trains (regexes over "/"-joined parameter paths; None = all). Phase 2
# tunes the layers next to the latent, phase 3 the decoder head.
PHASES = {
    "": None,
    "phase1": None,
    "phase2": (r"^encoder/conv_out/", r"^decoder/conv_in/"),
    "phase3": (r"^decoder/norm_out/", r"^decoder/conv_out/"),
}


def arch_from_config(config) -> dc_ae.Arch:
  """`config.model` (the fields of `dc_ae.Arch`) as a normalised Arch."""
  fields = dict(config.model)
  fields["in_channels"] = int(config.dataset.get("channels", 3))
  return dc_ae.Arch.from_diffusers(fields)


def downsample(x: jax.Array, factor: int) -> jax.Array:
  """Bilinear (antialiased) downsampling of NHWC maps by `factor`."""
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, h // factor, w // factor, c), "bilinear",
                          antialias=True)


def se_loss(x: jax.Array, z: jax.Array, decode, distance,
            factor: int) -> jax.Array:
  """d(Down_f(x), decode(Down_f(z))): zero for a scale-equivariant decoder.
  """
  return distance(downsample(x, factor), decode(downsample(z, factor)))


def restore_run(workdir: str, config=None):
  """The newest checkpoint of an autoencoder run, for the tools.

  Args:
    workdir: the run directory.
    config: its config (default: WORKDIR/config.json).

  Returns:
    (config, trainer setup, step, state).

  Raises:
    ValueError: one line if it is not an autoencoder run or has no
      checkpoint.
  """
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top
  config = config or provenance.load_config(workdir)
  if config.family != "autoencoder":
    raise ValueError(f"{workdir} is a {config.family!r} run, not an "
                     "autoencoder.")
  s, step, state = trainer.restore(config, workdir)
  if state is None:
    raise ValueError(f"{workdir} has no checkpoint; train it first.")
  return config, s, step, state


@registry.OBJECTIVES.register("autoencoder")
class Autoencoder(objective_lib.Objective):
  """DC-AE trained on L1 (+ LPIPS) reconstruction (+ the SE regulariser)."""

  def __init__(self, config, total_steps=None):
    super().__init__(config, total_steps)
    self.arch = arch_from_config(config)
    self.model = dc_ae.DCAE(self.arch)
    self.image_size = int(config.dataset.image_size)
    a = config.autoencoder
    self.l1_weight = float(a.l1_weight)
    self.lpips_weight = float(a.lpips_weight)
    self.se_weight = float(a.se_weight)
    self.phase = str(a.get("phase", ""))
    self.lpips_params = None
    if self.lpips_weight:
      self.lpips_params = perceptual.load_weights(a.lpips_weights)
    self._tx = None

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
    if self.phase not in PHASES:
      raise ValueError(f"config.autoencoder.phase={self.phase!r}; use one of "
                       f"{sorted(p for p in PHASES if p)} or ''.")
    if self.phase in ("phase2", "phase3") and not self.config.get(
        "init_from"):
      raise ValueError(f"config.autoencoder.phase={self.phase} starts from "
                       "the previous phase: set config.init_from to that "
                       "run's workdir.")
    if "batch_norm" in self.arch.decoder_norm_types:
      raise ValueError("training batch-norm decoders (the in/mix DC-AEs) is "
                       "not supported yet; set config.model."
                       "decoder_norm_types='rms_norm' (SANA-style).")

  @property
  def tx(self) -> optax.GradientTransformation:
    if self._tx is None:
      if self.total_steps is None:
        raise ValueError("the run length is not set.")
      self._tx = state_lib.make_optimizer(self.config.optimizer,
                                          self.total_steps,
                                          trainable=PHASES[self.phase])
    return self._tx

  def init(self, rng, batch):
    params = self.model.init(rng, batch["image"][:1])["params"]
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params={"model": params},
        opt_state={"model": self.tx.init(params)}, ema_params={})

  # -- losses -----------------------------------------------------------------

  def _distance(self, x, y) -> jax.Array:
    d = self.l1_weight * jnp.mean(jnp.abs(x - y))
    if self.lpips_params is not None:
      d = d + self.lpips_weight * jnp.mean(perceptual.LPIPS().apply(
          {"params": self.lpips_params}, x, y))
    return d

  def _losses(self, params, x, rng) -> Tuple[jax.Array, Dict[str, Any]]:
    variables = {"params": params}
    z = self.model.apply(variables, x, method=self.model.encode)
    recon = self.model.apply(variables, z, method=self.model.decode)
    rec = self._distance(x, recon)
    aux = {"l1": jnp.mean(jnp.abs(x - recon)), "reconstruction": rec}
    loss = rec
    if self.se_weight:
      decode = lambda zz: self.model.apply(variables, zz,
                                           method=self.model.decode)

      def se_at(f):
        return lambda: se_loss(x, z, decode, self._distance, f)
      se = jax.lax.switch(
          jax.random.randint(rng, (), 0, len(SE_FACTORS)),
          [se_at(f) for f in SE_FACTORS])
      aux["se"] = se
      loss = loss + self.se_weight * se
    return loss, aux

  def train_step(self, state, batch, rng):
    params = state.params["model"]
    (loss, aux), grads = jax.value_and_grad(self._losses, has_aux=True)(
        params, batch["image"], rng)
    updates, opt_state = self.tx.update(grads, state.opt_state["model"],
                                        params)
    new_params = optax.apply_updates(params, updates)
    metrics = dict(aux, loss=loss, grad_norm=state_lib.global_norm(grads))
    return state.replace(step=state.step + 1, params={"model": new_params},
                         opt_state={"model": opt_state}), metrics

  def eval_step(self, state, batch, rng):
    loss, aux = self._losses(state.params["model"], batch["image"], rng)
    return dict(aux, loss=loss)

  def reconstruct(self, state, batch) -> jax.Array:
    """D(E(x)) clipped to [-1, 1] (for the reconstruction metrics)."""
    out = self.model.apply({"params": state.params["model"]}, batch["image"])
    return jnp.clip(out, -1.0, 1.0)

  def sample(self, state, rng, num: int, labels=None) -> jax.Array:
    raise ValueError("an autoencoder does not sample; set "
                     "config.num_samples=0 and use eval.sample_metrics.")

  # -- accounting -------------------------------------------------------------

  def flops_per_example(self) -> float:
    """3 x (encoder + decoder) forward FLOPs (backward = 2 x forward).

    With the SE regulariser, 3 x the expected decoder FLOPs at the
    downsampled latent sizes are added. LPIPS's VGG passes are not counted.
    """
    f = self.arch.compression
    fwd = (dc_ae.encoder_macs(self.arch, self.image_size)
           + dc_ae.decoder_macs(self.arch, self.image_size // f))
    if self.se_weight:
      fwd += sum(dc_ae.decoder_macs(self.arch, self.image_size // f // s)
                 for s in SE_FACTORS) / len(SE_FACTORS)
    return 3.0 * 2.0 * fwd

  def num_params(self, state) -> Dict[str, int]:
    return {"params": int(sum(x.size for x in
                              jax.tree.leaves(state.params["model"])))}
