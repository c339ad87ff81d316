"""The R3GAN objective: RpGAN + R1 + R2 with burn-in schedules.

Registered as family "r3gan". One `TrainState` holds
params {"generator", "discriminator"}, one Adam (β1 = 0) state per network in
`opt_state`, and an EMA copy of the generator in `ema_params` (used by
`sample`). Each `train_step` is one iteration of the reference loop:

  1. D update: fakes G(z₁) (detached); loss = adv(D(real), D(fake))
     + γ/2 · (R1 + R2), where R1/R2 come from the very same D forward passes
     (double backprop through ∇ₓD; see `losses.logits_and_penalty`).
  2. G update with the *updated* D and fresh z₂; the RpGAN G loss also reads
     D(real) (no gradient flows into it).
  3. EMA of G with β = 0.5^(batch / half-life).

With `gan.g_own_real_batch` (on in every preset, as in the reference loop)
the G phase reads its own real batch and labels: the objective declares
`batches_per_step = 2`, the trainer's pipeline yields 2 x batch_size images a
step and `split_batch` hands one half to each phase. Images seen (the burn-in
clock, examples_seen) count D's batch, as the paper's kimg does. Off, both
phases share one batch. Fake images take the labels of their phase's real
batch, i.e. classes drawn from the data distribution, so the i-th real/fake
pair shares a class.

Schedules (learning rate, γ, Adam β2, EMA half-life and the augmentation
probability p) are the reference's cosine burn-in in images seen:
  v(n) = v₀ + (v₁ − v₀) · (1 − cos(π · min(n / T, 1))) / 2,  n = step · batch.
The optimizers get lr and β2 through `optax.inject_hyperparams`, so the
schedule state is part of the checkpointed optimizer state.

Metrics: "loss" is the full D loss (adversarial + γ/2·(R1+R2)), the quantity
D minimises; "d_adv" its adversarial part, "g_loss"
the G loss, "r1"/"r2" the raw penalties, "grad_norm" the global norm of
both networks' gradients. Training computes them through the augmentation
(once p > 0); the held-out ones (`eval_step`) see the images unaugmented,
so a train / held-out gap then mixes D's overfitting with the augmentation.
"""

import math
from typing import Any, Callable, Dict, Tuple, Union

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen import config_lib
from jaxgen import registry
from jaxgen.gan import augment
from jaxgen.gan import losses
from jaxgen.gan import networks
from jaxgen.train import objective as objective_lib
from jaxgen.train import state as state_lib

GEN, DISC = "generator", "discriminator"


def burn_in_schedule(start: float, end: float,
                     burn_in_examples: Union[float, Callable[[], Any]],
                     batch_size: int) -> Callable[[jax.Array], jax.Array]:
  """The reference's `cosine_decay_with_warmup` as a function of the step.

  Args:
    start: value at step 0.
    end: value from `burn_in_examples` images on.
    burn_in_examples: length T of the ramp in images (0: `end` throughout),
      or a function returning it when the schedule is evaluated (a fraction
      of the run, whose length is a runtime value of the compiled step).
    batch_size: images per step.

  Returns:
    step -> float32 value.
  """
  start, end = float(start), float(end)

  def schedule(step):
    if callable(burn_in_examples):
      burn_in = burn_in_examples()
    else:
      burn_in = float(burn_in_examples)
      if burn_in <= 0:
        return jnp.asarray(end, jnp.float32)
    if start == end:
      return jnp.asarray(end, jnp.float32)
    t = jnp.minimum(jnp.asarray(step, jnp.float32) * batch_size / burn_in,
                    1.0)
    return start + (end - start) * 0.5 * (1.0 - jnp.cos(math.pi * t))
  return schedule


def network_kwargs(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """Constructor arguments shared by `Generator` and `Discriminator`.

  Args:
    config: run config (`config.model`, `config.dataset`, `config.gan`).

  Returns:
    Dict of keyword arguments; G-only ones are added by the objective.
  """
  m = config.model
  size = int(config.dataset.image_size)
  lps = int(m.low_precision_stages)
  if lps < 0:
    # The reference: 3 stages for 32 px models, 4 above; its lowest (4x4)
    # stage always stays float32, so fewer stages (16 px) keep theirs too.
    lps = min(3 if size <= 32 else 4, len(m.widths) - 1)
  impl = m.get("conv_impl", "auto")
  if impl == "auto":
    impl = "taps" if jax.default_backend() == "cpu" else "lax"
  if impl not in ("lax", "taps"):
    raise ValueError(f"unknown config.model.conv_impl {impl!r}; use 'auto', "
                     "'lax' or 'taps'.")
  return dict(widths=tuple(int(w) for w in m.widths),
              group_width=int(m.group_width),
              blocks_per_stage=int(m.blocks_per_stage),
              expansion=int(m.expansion),
              num_classes=(int(config.dataset.get("num_classes", 0) or 0)
                           if config.gan.class_conditional else 0),
              low_precision_stages=lps, conv_impl=impl,
              dtype=config_lib.compute_dtype(config))


def _after_augment(d_fn, key: jax.Array, p: Any):
  """x -> D(Aug(x)): the augment pipe between the images and D."""
  return lambda x: d_fn(augment.augment(key, x, p))


@registry.OBJECTIVES.register("r3gan")
class R3GAN(objective_lib.Objective):
  """R3GAN (Huang et al. 2024): RpGAN + R1 + R2, ResNeXt G and D."""

  @classmethod
  def follows_run_length(cls, config) -> bool:
    """lr, γ, β2 and EMA follow the burn-in, not optimizer.schedule: it
    scales with the run only as a fraction of it (gan.burn_in_fraction)."""
    return float(config.gan.get("burn_in_fraction", 0.0)) > 0

  def __init__(self, config, total_steps=None, *, generator=None,
               discriminator=None):
    """Builds the objective.

    Args:
      config: the run config.
      total_steps: run length (read by the schedules only with
        gan.burn_in_fraction > 0).
      generator: a Flax module `(z, labels) -> images` to use instead of the
        configured ResNeXt G (e.g. an MLP in experiments).
      discriminator: a Flax module `(images, labels) -> logits` instead of
        the configured D.
    """
    super().__init__(config, total_steps)
    g = config.gan
    self.kwargs = network_kwargs(config)
    self.num_classes = self.kwargs["num_classes"]
    self.image_size = int(config.dataset.image_size)
    self.channels = int(config.dataset.get("channels", 3))
    self.noise_dim = int(config.model.noise_dim)
    self.cond_dim = int(config.model.cond_dim)
    self.batch_size = int(config.batch_size)
    self.d_loss_fn, self.g_loss_fn, self.g_needs_real = losses.get_losses(
        g.loss)
    self.use_r1, self.use_r2 = bool(g.r1), bool(g.r2)
    # The G phase reads its own reals (see the module docstring).
    self.batches_per_step = 2 if g.get("g_own_real_batch", False) else 1
    self.generator = generator or networks.Generator(
        cond_dim=self.cond_dim, channels=self.channels, **self.kwargs)
    self.discriminator = discriminator or networks.Discriminator(
        **self.kwargs)
    burn_in, batch = float(g.burn_in_examples), self.batch_size
    self.burn_in_fraction = float(g.get("burn_in_fraction", 0.0))
    if self.burn_in_fraction > 0:
      # A share of the run (images seen = steps x D's batch), read when the
      # schedules are evaluated: budgets of a sweep ramp alike.
      burn_in = lambda: (self.burn_in_fraction * batch *  # pylint: disable=g-long-lambda
                         jnp.asarray(self.run_length(), jnp.float32))
    o = config.optimizer
    self.lr_fn = burn_in_schedule(o.learning_rate, o.end_learning_rate,
                                  burn_in, batch)
    self.b2_fn = burn_in_schedule(o.b2, o.end_b2, burn_in, batch)
    self.gamma_fn = burn_in_schedule(g.gamma, g.end_gamma, burn_in, batch)
    self.half_life_fraction = float(g.get("ema_half_life_fraction", 0.0))
    if self.half_life_fraction > 0:
      # A share of the run's images (as the burn-in can be): the sampled
      # EMA generator is equally old, relative to the run, at every budget
      # of a sweep (a fixed half-life in images averaged a short run over
      # most of it and a long run over its end).
      ramp = burn_in_schedule(0.0, 1.0, burn_in, batch)
      self.half_life_fn = lambda step: ramp(step) * (
          self.half_life_fraction * batch
          * jnp.asarray(self.run_length(), jnp.float32))
    else:
      self.half_life_fn = burn_in_schedule(0.0, g.ema_half_life_examples,
                                           burn_in, batch)
    # ADA-style augmentation of D's inputs; p ramps from 0 over the burn-in.
    self.augment_p = float(g.get("augment_p", 0.0))
    self.augment_fn = burn_in_schedule(0.0, self.augment_p, burn_in, batch)
    # Same lr and β2 for G and D, as in the reference; no clipping, no decay.
    self.tx = optax.inject_hyperparams(optax.adam)(
        learning_rate=self.lr_fn, b1=float(o.b1), b2=self.b2_fn,
        eps=float(o.eps),
        mu_dtype=jnp.dtype(o.get("mu_dtype", "float32")))

  @property
  def unconditional_flags(self) -> tuple[str, ...]:
    """Flags besides `dataset.num_classes=0` an unconditional run needs
    (named by the trainer's error on a dataset without labels)."""
    return (("--config.gan.class_conditional=false",)
            if self.config.gan.class_conditional else ())

  # -- configuration checks ---------------------------------------------------

  def validate(self, num_devices_data_parallel: int) -> None:
    del num_devices_data_parallel
    check, m, g = config_lib.check_range, self.config.model, self.config.gan
    # Sizes a zero of which divides by zero (group_width) or builds nothing.
    for name in ("group_width", "blocks_per_stage", "expansion", "noise_dim",
                 "cond_dim"):
      check(f"config.model.{name}", m[name], low=1, integer=True)
    for w in self.kwargs["widths"]:
      check("config.model.widths entry", w, low=1, integer=True)
    for name in ("gamma", "end_gamma", "burn_in_examples",
                 "ema_half_life_examples"):
      check(f"config.gan.{name}", g[name], low=0)
    check("config.gan.augment_p", self.augment_p, low=0, high=1)
    if not 0.0 <= self.burn_in_fraction <= 1.0:
      raise ValueError(f"config.gan.burn_in_fraction={self.burn_in_fraction}"
                       " must be in [0, 1] (0: use gan.burn_in_examples).")
    if not 0.0 <= self.half_life_fraction <= 1.0:
      raise ValueError(
          f"config.gan.ema_half_life_fraction={self.half_life_fraction} must "
          "be in [0, 1] (0: use gan.ema_half_life_examples).")
    widths = self.kwargs["widths"]
    expected = 4 * 2 ** (len(widths) - 1)
    if self.image_size != expected:
      raise ValueError(
          f"config.model.widths has {len(widths)} stages, which make "
          f"{expected}px images, but config.dataset.image_size="
          f"{self.image_size}; give log2(image_size) - 1 widths.")
    gw = self.kwargs["group_width"]
    bad = [w for w in widths if (w * self.kwargs["expansion"]) % gw]
    if bad:
      raise ValueError(
          f"config.model.widths {bad} times expansion "
          f"{self.kwargs['expansion']} are not multiples of "
          f"config.model.group_width={gw}.")
    if self.config.gan.class_conditional and not self.num_classes:
      raise ValueError("config.gan.class_conditional needs "
                       "config.dataset.num_classes > 0; set "
                       "--config.gan.class_conditional=false for an "
                       "unconditional model.")

  # -- state ------------------------------------------------------------------

  def _labels(self, batch, n=None):
    if not self.num_classes:
      return None
    labels = batch["label"].astype(jnp.int32)
    return labels if n is None else labels[:n]

  def init(self, rng, batch):
    g_rng, d_rng = jax.random.split(rng)
    x = batch["image"][:1]
    labels = self._labels(batch, 1)
    z = jnp.zeros((1, self.noise_dim), jnp.float32)
    g_params = self.generator.init({"params": g_rng}, z, labels)["params"]
    d_params = self.discriminator.init({"params": d_rng}, x,
                                       labels)["params"]
    params = state_lib.cast_floating({GEN: g_params, DISC: d_params},
                                     config_lib.param_dtype(self.config))
    g_params = params[GEN]
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={k: self.tx.init(v) for k, v in params.items()},
        ema_params={GEN: state_lib.ema_init(g_params)})

  def num_params(self, state) -> Dict[str, int]:
    """G + D as "params", and each network separately."""
    count = lambda t: int(sum(x.size for x in jax.tree.leaves(t)))
    g, d = count(state.params[GEN]), count(state.params[DISC])
    return {"params": g + d, "generator_params": g,
            "discriminator_params": d}

  # -- losses -----------------------------------------------------------------

  def generate(self, g_params, z, labels):
    """G(z, labels) with the given parameters, f32[B, H, W, C]."""
    return self.generator.apply({"params": g_params}, z, labels)

  def _d_fn(self, d_params, labels):
    return lambda x: self.discriminator.apply({"params": d_params}, x, labels)

  def d_loss(self, d_params, x_real, x_fake, labels, gamma, aug=None):
    """Full D loss and its parts.

    Args:
      d_params: discriminator parameters.
      x_real: real images f[B, H, W, C].
      x_fake: generated images (detached).
      labels: i32[B] or None.
      gamma: penalty weight γ (the loss adds γ/2 · (R1 + R2)).
      aug: None, or (rng, p): D sees independently augmented reals and
        fakes; R1 / R2 are the gradients of D(Aug(x)) w.r.t. the images
        before augmentation, from the same forward pass as the adversarial
        logits (the reference's augment pipe sits between sample and D).

    Returns:
      (loss, aux dict of scalars).
    """
    d_fn = self._d_fn(d_params, labels)
    x_fake = jax.lax.stop_gradient(x_fake)
    zero = jnp.zeros((), jnp.float32)
    d_real_fn = d_fake_fn = d_fn
    if aug is not None:
      real_key, fake_key = jax.random.split(aug[0])
      d_real_fn = _after_augment(d_fn, real_key, aug[1])
      d_fake_fn = _after_augment(d_fn, fake_key, aug[1])
    if self.use_r1:
      d_real, r1 = losses.logits_and_penalty(d_real_fn, x_real)
    else:
      d_real, r1 = d_real_fn(x_real), zero
    if self.use_r2:
      d_fake, r2 = losses.logits_and_penalty(d_fake_fn, x_fake)
    else:
      d_fake, r2 = d_fake_fn(x_fake), zero
    adv = self.d_loss_fn(d_real, d_fake)
    loss = adv + 0.5 * gamma * (r1 + r2)
    return loss, {"d_adv": adv, "r1": r1, "r2": r2,
                  "logits_real": jnp.mean(d_real),
                  "logits_fake": jnp.mean(d_fake)}

  def g_loss(self, g_params, d_params, x_real, z, labels, aug=None):
    """G loss against a fixed D (D(real) carries no gradient).

    Args:
      g_params: generator parameters.
      d_params: discriminator parameters.
      x_real: real images (read only by the relativistic loss).
      z: noise f[B, noise_dim].
      labels: i32[B] or None.

    Returns:
      Scalar loss.
    """
    d_fn = self._d_fn(d_params, labels)
    x_fake = self.generate(g_params, z, labels)
    if aug is not None:
      real_key, fake_key = jax.random.split(aug[0])
      x_real = augment.augment(real_key, x_real, aug[1])
      x_fake = augment.augment(fake_key, x_fake, aug[1])
    d_fake = d_fn(x_fake)
    d_real = (jax.lax.stop_gradient(d_fn(x_real)) if self.g_needs_real
              else jnp.zeros_like(d_fake))
    return self.g_loss_fn(d_real, d_fake)

  # -- training ---------------------------------------------------------------

  def train_step(self, state, batch, rng) -> Tuple[Any, Dict[str, jax.Array]]:
    d_batch, g_batch = (self.split_batch(batch) if self.batches_per_step == 2
                        else (batch, batch))
    x_real, labels = d_batch["image"], self._labels(d_batch)
    x_real_g, labels_g = g_batch["image"], self._labels(g_batch)
    n = x_real.shape[0]
    aug_d = aug_g = None
    if self.augment_p:
      rng, d_key, g_key = jax.random.split(rng, 3)
      p = self.augment_fn(state.step)
      aug_d, aug_g = (d_key, p), (g_key, p)
    z_d, z_g = jax.random.normal(rng, (2, n, self.noise_dim), jnp.float32)
    gamma = self.gamma_fn(state.step)
    g_params, d_params = state.params[GEN], state.params[DISC]

    # 1. Discriminator.
    x_fake = jax.lax.stop_gradient(self.generate(g_params, z_d, labels))
    (d_loss, aux), d_grads = jax.value_and_grad(self.d_loss, has_aux=True)(
        d_params, x_real, x_fake, labels, gamma, aug_d)
    d_updates, d_opt = self.tx.update(d_grads, state.opt_state[DISC],
                                      d_params)
    d_params = optax.apply_updates(d_params, d_updates)

    # 2. Generator, against the updated discriminator.
    g_loss, g_grads = jax.value_and_grad(self.g_loss)(
        g_params, d_params, x_real_g, z_g, labels_g, aug_g)
    g_updates, g_opt = self.tx.update(g_grads, state.opt_state[GEN], g_params)
    g_params = optax.apply_updates(g_params, g_updates)

    # 3. EMA of G; half-life 0 gives β = 0, i.e. a copy.
    half_life = self.half_life_fn(state.step)
    beta = jnp.where(half_life > 0,
                     0.5 ** (self.batch_size / jnp.maximum(half_life, 1e-8)),
                     0.0)
    ema = {GEN: state_lib.ema_update(state.ema_params[GEN], g_params, beta)}

    d_norm, g_norm = (state_lib.global_norm(d_grads),
                      state_lib.global_norm(g_grads))
    metrics = dict(
        aux, loss=d_loss, g_loss=g_loss,
        grad_norm=jnp.sqrt(d_norm ** 2 + g_norm ** 2),
        d_grad_norm=d_norm, g_grad_norm=g_norm,
        learning_rate=self.lr_fn(state.step), b2=self.b2_fn(state.step),
        gamma=gamma, ema_beta=beta,
        augment_p=self.augment_fn(state.step))
    new_state = state.replace(
        step=state.step + 1, params={GEN: g_params, DISC: d_params},
        opt_state={GEN: g_opt, DISC: d_opt}, ema_params=ema)
    return new_state, metrics

  def eval_step(self, state, batch, rng) -> Dict[str, jax.Array]:
    """Losses and penalties of the current G and D on a held-out batch,
    without augmentation (the training metrics go through it once p > 0).

    Args:
      state: train state.
      batch: held-out batch.
      rng: PRNG key for z.

    Returns:
      {"loss" (full D loss), "d_adv", "g_loss", "r1", "r2", ...}.
    """
    x_real = batch["image"]
    labels = self._labels(batch)
    z = jax.random.normal(rng, (x_real.shape[0], self.noise_dim))
    g_params, d_params = state.params[GEN], state.params[DISC]
    gamma = self.gamma_fn(state.step)
    x_fake = self.generate(g_params, z, labels)
    d_loss, aux = self.d_loss(d_params, x_real, x_fake, labels, gamma)
    g_loss = self.g_loss(g_params, d_params, x_real, z, labels)
    return dict(aux, loss=d_loss, g_loss=g_loss)

  # -- sampling ---------------------------------------------------------------

  def sample(self, state, rng, num: int, labels=None) -> jax.Array:
    """Samples from the EMA generator.

    Args:
      state: train state.
      rng: PRNG key.
      num: number of images.
      labels: i32[num] classes (default: classes in turn).

    Returns:
      f32[num, H, W, C], clipped to [-1, 1].
    """
    params = (state.ema_params or state.params)[GEN]
    if self.num_classes and labels is None:
      labels = jnp.arange(num, dtype=jnp.int32) % self.num_classes
    z = jax.random.normal(rng, (num, self.noise_dim), jnp.float32)
    return jnp.clip(self.generate(params, z, labels), -1.0, 1.0)

  # -- accounting -------------------------------------------------------------

  def forward_flops(self) -> Tuple[float, float]:
    """(G, D) forward FLOPs per example: 2 × multiply-accumulates."""
    kw = dict(group_width=self.kwargs["group_width"],
              blocks_per_stage=self.kwargs["blocks_per_stage"],
              expansion=self.kwargs["expansion"])
    g = networks.generator_macs(
        self.kwargs["widths"], noise_dim=self.noise_dim,
        cond_dim=self.cond_dim if self.num_classes else 0,
        channels=self.channels, **kw)
    d = networks.discriminator_macs(
        self.kwargs["widths"], num_classes=self.num_classes,
        channels=self.channels, **kw)
    return 2.0 * g, 2.0 * d

  def sampling_flops_per_example(self) -> float:
    """One generator forward pass per image."""
    return self.forward_flops()[0]

  def flops_per_example(self) -> float:
    """Analytic training FLOPs per example, in units of G/D forward passes.

    Per linear layer a forward costs 1 unit, an input-gradient 1 and a
    weight-gradient 1. With F_G, F_D the forward FLOPs:
      D update: G forward for the fakes (1·F_G); per D pass with a penalty
        (real with R1, fake with R2): forward 1 + input gradient 1, then the
        outer backward through both, which for y = Wx and gₓ = Wᵀg_y needs
        W̄ and x̄ for the first and W̄ and ḡ_y for the second: 4 → 6·F_D
        (3·F_D for a pass without penalty).
      G update: G forward + backward 3·F_G; D on fakes forward + input
        gradient only 2·F_D; D on reals forward 1·F_D (RpGAN only).
    RpGAN + R1 + R2: 4·F_G + 15·F_D; GAN + R1 + R2: 4·F_G + 14·F_D.
    Augmentation (`gan.augment_p` > 0) sits in front of the same passes
    (the penalties are taken through it), so the count is unchanged; its
    own arithmetic is not counted.
    """
    f_g, f_d = self.forward_flops()
    d_step = f_g + sum(6.0 * f_d if p else 3.0 * f_d
                       for p in (self.use_r1, self.use_r2))
    g_step = 3.0 * f_g + 2.0 * f_d + (f_d if self.g_needs_real else 0.0)
    return d_step + g_step
