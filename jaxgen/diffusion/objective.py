"""The simple-diffusion objective: U-ViT + v-prediction with the ε-loss.

Registered as family "simple_diffusion". The network predicts v; the loss is
the ε-MSE with ε̂ = σ·z + α·v̂ (SiD), optionally with SiD2's sigmoid weighting
and SiD's multiscale loss; labels are dropped with probability
`config.diffusion.label_dropout` so the model also learns the unconditional
score for classifier-free guidance. Samples come from the EMA parameters.
"""

from typing import Any, Dict, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import config_lib
from jaxgen import registry
from jaxgen.autoencoders import latent_decode
from jaxgen.diffusion import losses
from jaxgen.diffusion import samplers
from jaxgen.diffusion import schedules
from jaxgen.diffusion import uvit
from jaxgen.train import objective as objective_lib


def model_kwargs(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """U-ViT constructor arguments from `config.model` (all fields present).

  Args:
    config: run config; `config.model` holds every UViT field (see
      `uvit.preset_fields`), the class count comes from the dataset.

  Returns:
    Keyword arguments for `uvit.UViT`.
  """
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in config.model.items()}
  kwargs["dtype"] = config_lib.compute_dtype(config)
  # A memory lever of the trainer config, not a model field.
  kwargs["remat"] = str(config.get("remat", "none"))
  kwargs["num_classes"] = int(config.dataset.get("num_classes", 0)) if (
      config.diffusion.class_conditional) else 0
  return kwargs


@registry.OBJECTIVES.register("simple_diffusion")
class SimpleDiffusion(objective_lib.SingleOptimizer, objective_lib.Objective):
  """Pixel-space diffusion (Hoogeboom et al. 2023; SiD2 options)."""

  def __init__(self, config, total_steps=None):
    super().__init__(config, total_steps)
    d = config.diffusion
    self.image_size = int(config.dataset.image_size)
    self.kwargs = model_kwargs(config)
    self.num_classes = self.kwargs["num_classes"]
    self.model = uvit.UViT(**self.kwargs)
    self.logsnr_fn = schedules.make_logsnr_fn(
        d.schedule, self.image_size,
        **dict(d.schedules.get(d.schedule, None) or {}))
    self.sampler = samplers.get_sampler(d.sampler)
    # Built once; an unknown weighting fails here, before compilation.
    self.loss_options = losses.LossOptions.from_config(d)

  # -- configuration checks ---------------------------------------------------

  def validate(self, num_devices_data_parallel: int) -> None:
    k = int(self.config.get("grad_accum_steps", 1))
    if k < 1 or self.config.batch_size % (k * num_devices_data_parallel):
      raise ValueError(
          f"config.batch_size={self.config.batch_size} is not divisible by "
          f"grad_accum_steps={k} x {num_devices_data_parallel} data-parallel "
          "devices; change one of them.")
    d, check = self.config.diffusion, config_lib.check_range
    check("config.diffusion.sample_steps", d.sample_steps, low=1,
          integer=True)
    check("config.diffusion.guidance_scale", d.guidance_scale, finite=True)
    interval = tuple(d.get("guidance_interval") or ())
    if interval:  # Else it fails deep in tracing the sampler.
      if len(interval) != 2:
        raise ValueError(
            f"config.diffusion.guidance_interval={interval} must be () "
            "(guide everywhere) or (lo, hi) in logSNR units, e.g. "
            "(-5.0, 5.0).")
      for v in interval:
        check("config.diffusion.guidance_interval", v)
      if interval[0] >= interval[1]:
        raise ValueError(
            f"config.diffusion.guidance_interval={interval} is empty (lo >= "
            "hi: no step would be guided); write it as (lo, hi) with lo < "
            "hi, or () to guide everywhere.")
    check("config.diffusion.label_dropout", d.label_dropout, low=0, high=1,
          high_open=True)
    # NaN made the loss NaN, +-inf weighted every sample 1 or 0 (no
    # learning): all three silently.
    check("config.diffusion.sigmoid_bias", d.get("sigmoid_bias", -3.0),
          finite=True)
    check("config.diffusion.multiscale_min_size", d.multiscale_min_size,
          low=1, integer=True)
    if d.multiscale:
      try:
        scales = losses.multiscale_scales(self.image_size,
                                          int(d.multiscale_min_size))
      except ValueError as e:
        raise ValueError(f"config.diffusion.multiscale: {e} Change "
                         "config.diffusion.multiscale_min_size.") from None
      if len(scales) == 1:
        # A valid smaller minimum: the side over a power of two.
        smaller = next((self.image_size // f for f in (4, 2)
                        if self.image_size % f == 0), None)
        logging.warning(
            "config.diffusion.multiscale=True at image side %d <= "
            "multiscale_min_size=%d is the plain per-pixel MSE; lower "
            "multiscale_min_size%s for coarser scales.", self.image_size,
            int(d.multiscale_min_size),
            f" (e.g. {smaller})" if smaller else "")
    self._warn_if_latent_shift()
    self.model.check_fields()  # Its errors name their own fields.
    if self.model.downsample == "haar" and self.model.patch_size == 1:
      logging.warning("config.model.downsample='haar' with patch_size=1 is "
                      "the same 3x3 stem as 'patch'; Haar levels need "
                      "patch_size >= 2.")
    try:
      self.model.validate(self.image_size, self.image_size)
    except ValueError as e:
      raise ValueError(
          f"config.dataset.image_size={self.image_size} / config.model do "
          f"not fit the U-ViT: {e}") from None

  def _warn_if_latent_shift(self) -> None:
    """One warning when SiD's pixel-derived resolution shift is taken at a
    latent side (it then shifts towards *less* noise: +4.2 at 8x8 against
    noise_size 64, the opposite of what Eq. 4 derives for large images)."""
    d = self.config.diffusion
    if (latent_decode.latent_dir(self.config.dataset) is None
        or d.schedule not in ("shifted", "interpolated")):
      return
    kw = dict(d.schedules.get(d.schedule, None) or {})
    ref = kw.get("noise_size", kw.get("noise_size_low", 64))
    shift = schedules.resolution_shift(self.image_size, ref)
    if shift <= 0:
      return  # Noise sizes set for the latents (or a shift towards noise).
    logging.warning(
        "config.diffusion.schedule=%r shifts logSNR by 2 log(noise_size / "
        "side), derived for pixels; on these latents (side %d) it is %+.2f "
        "at noise_size %d. Set config.diffusion.schedules.%s's noise size(s) "
        "for the latent space, or use schedule='cosine'.", d.schedule,
        self.image_size, shift, ref, d.schedule)

  # -- state ------------------------------------------------------------------

  def init(self, rng, batch):
    x = batch["image"][:1]
    # An unconditional U-ViT takes no labels (it refuses them).
    labels = jnp.zeros((1,), jnp.int32) if self.num_classes else None
    return self.new_state(self.model.init(
        {"params": rng}, x, jnp.zeros((1,)), labels, train=False)["params"])

  # -- training ---------------------------------------------------------------

  def _draws(self, batch, rng, train: bool):
    """All randomness of a step, per example, and the dropout key.

    Drawn for the whole batch before any micro-batching, so that gradient
    accumulation sees exactly the noise the whole batch would.
    """
    d = self.config.diffusion
    drop_rng, label_rng, noise_rng = jax.random.split(rng, 3)
    t_rng, eps_rng = jax.random.split(noise_rng)
    x = batch["image"]
    draws = {"x": x,
             "t": jax.random.uniform(t_rng, (x.shape[0],), jnp.float32),
             "eps": jax.random.normal(eps_rng, x.shape, jnp.float32)}
    if self.num_classes:
      labels = batch["label"].astype(jnp.int32)
      if train and d.label_dropout:
        drop = jax.random.uniform(label_rng, labels.shape) < d.label_dropout
        labels = jnp.where(drop, self.num_classes, labels)
      draws["labels"] = labels
    return draws, drop_rng

  def _loss_at(self, params, draws, drop_rng, train: bool):
    """Mean (weighted) diffusion loss and scalar metrics at given draws."""
    labels = draws.get("labels")

    def v_fn(z, logsnr):
      return self.model.apply({"params": params}, z, logsnr, labels,
                              train=train, rngs={"dropout": drop_rng})

    loss, aux = losses.diffusion_loss_at(
        v_fn, draws["x"], draws["t"], draws["eps"], logsnr_fn=self.logsnr_fn,
        options=self.loss_options)
    return loss, {"eps_mse": jnp.mean(aux["eps_mse"])}

  def train_step(self, state, batch, rng) -> Tuple[Any, Dict[str, jax.Array]]:
    draws, drop_rng = self._draws(batch, rng, train=True)
    return self.model_step(
        state, lambda p, dr, r: self._loss_at(p, dr, r, train=True), draws,
        drop_rng)

  def eval_step(self, state, batch, rng) -> Dict[str, jax.Array]:
    draws, drop_rng = self._draws(batch, rng, train=False)
    loss, aux = self._loss_at(state.params["model"], draws, drop_rng,
                              train=False)
    return {"loss": loss, "eps_mse": aux["eps_mse"]}

  # -- sampling ---------------------------------------------------------------

  def sample(self, state, rng, num: int, labels=None) -> jax.Array:
    """Samples `num` images with the configured sampler (EMA params if kept).

    Args:
      state: train state.
      rng: PRNG key; the same key gives the same images on any mesh.
      num: number of images.
      labels: int32 [num] class labels (default: classes in turn).

    Returns:
      f32 [num, H, W, C] in [-1, 1]; latents of a `latents:DIR` dataset are
      not clipped (they have unit variance, not a [-1, 1] range).
    """
    d = self.config.diffusion
    params = (state.ema_params or state.params)["model"]
    if self.num_classes and labels is None:
      labels = jnp.arange(num, dtype=jnp.int32) % self.num_classes

    def v_fn(z, logsnr, lab):
      return self.model.apply({"params": params}, z, logsnr,
                              lab if self.num_classes else None, train=False)

    shape = (num, self.image_size, self.image_size,
             int(self.config.dataset.get("channels", 3)))
    return self.sampler(
        v_fn, rng, shape, logsnr_fn=self.logsnr_fn,
        num_steps=int(d.sample_steps), labels=labels,
        null_label=self.num_classes if self.num_classes else None,
        guidance_scale=float(d.guidance_scale) if self.num_classes else 1.0,
        guidance_interval=tuple(d.guidance_interval) if d.guidance_interval
        else None,
        clip_x=latent_decode.latent_dir(self.config.dataset) is None)

  # -- accounting -------------------------------------------------------------

  def flops_per_example(self) -> float:
    """3 × the U-ViT forward FLOPs (backward ≈ 2 × forward)."""
    return 3.0 * self._forward_flops()

  def _forward_flops(self) -> float:
    # The data's channels: 32-channel latents make the first and last convs
    # ~10x wider than RGB's (they were counted as 3).
    return uvit.uvit_flops_per_example(
        self.kwargs, self.image_size,
        in_channels=int(self.config.dataset.get("channels", 3)))

  def sampling_flops_per_example(self) -> float:
    """U-ViT forward FLOPs x sampler steps, x2 with guidance (both branches
    at every step; with a guidance interval, an upper bound: steps outside
    it evaluate one branch)."""
    d = self.config.diffusion
    guided = self.num_classes and float(d.guidance_scale) != 1.0
    return (float(d.sample_steps) * (2 if guided else 1)
            * self._forward_flops())
