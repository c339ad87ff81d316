"""A PyTorch replica of jaxgen's R3GAN networks and train step (benchmark peer).

Not part of the library: it exists to time jaxgen's G+D train step against
PyTorch at identical shapes, and to check that both compute the same thing
(tests/gan/test_torch_peer.py loads jaxgen parameters and compares outputs).

It mirrors `jaxgen/gan/networks.py` (ResNeXt residual blocks with a grouped
3x3 conv, fix-up init, [1,3,3,1] resampling with zero borders written as
shifted adds, class embedding into z for G and a projection head for D) in
NCHW, and `jaxgen/gan/objective.py`'s `train_step`: the D update
(relativistic pairing loss + γ/2·(R1 + R2) by double backprop) followed by
the G update against the updated D, both with Adam, then the EMA of G, with
the same burn-in schedules for lr, Adam β2, γ and the EMA half-life.

Everything computes in float32 (jaxgen's `low_precision_stages` are not
replicated); TF32 use is left to the caller (`torch.backends`). The ADA-style
augmentation (`gan.augment_p` > 0) is not replicated.
"""

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0 / (1.0 + LRELU_SLOPE ** 2))


def _shift(x, dim, offset):
  """y[i] = x[i + offset] along `dim`, zero where out of range."""
  n = x.shape[dim]
  pad = [0, 0] * (x.ndim - dim)  # F.pad lists the last dim first.
  pad[-1 if offset > 0 else -2] = abs(offset)
  return F.pad(x, pad).narrow(dim, max(offset, 0), n)


def upsample_2x(x):
  """2x bilinear upsampling of NCHW `x` ([1,3,3,1] filter, zero borders)."""
  for dim in (2, 3):
    even = 0.25 * _shift(x, dim, -1) + 0.75 * x
    odd = 0.75 * x + 0.25 * _shift(x, dim, 1)
    x = torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)
  return x


def downsample_2x(x):
  """2x filtered downsampling of NCHW `x` ([1,3,3,1]/8 at stride 2)."""
  for dim in (2, 3):
    pairs = x.unflatten(dim, (x.shape[dim] // 2, 2))
    a, b = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
    x = (_shift(b, dim, -1) + 3.0 * (a + b) + _shift(a, dim, 1)) * 0.125
  return x


def _msr_(weight, gain, fan_in=None):
  """N(0, (gain/√fan_in)²) in place; fan_in defaults to prod(shape[1:])."""
  fan_in = fan_in or math.prod(weight.shape[1:])
  with torch.no_grad():
    return weight.normal_(0.0, gain / math.sqrt(fan_in))


def _conv(c_in, c_out, gain=1.0, k=1, groups=1):
  """Bias-free (grouped) SAME conv; `_msr_` init (gain 0: zeros)."""
  conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False)
  _msr_(conv.weight, gain)
  return conv


class BiasedActivation(nn.Module):
  """lrelu(x + b, 0.2) over the channels of NCHW `x`."""

  def __init__(self, channels):
    super().__init__()
    self.bias = nn.Parameter(torch.zeros(channels))

  def forward(self, x):
    return F.leaky_relu(x + self.bias[:, None, None], LRELU_SLOPE)


class ResidualBlock(nn.Module):
  """x + 1x1(lrelu(b2 + grouped 3x3(lrelu(b1 + 1x1(x))))), fix-up init."""

  def __init__(self, c, group_width, expansion, num_blocks):
    super().__init__()
    hidden = c * expansion
    gain = LRELU_GAIN * num_blocks ** -0.25
    self.conv_expand = _conv(c, hidden, gain)
    self.act_expand = BiasedActivation(hidden)
    self.conv_group = _conv(hidden, hidden, gain, 3, hidden // group_width)
    self.act_group = BiasedActivation(hidden)
    self.conv_project = _conv(hidden, c, 0.0)

  def forward(self, x):
    h = self.act_expand(self.conv_expand(x))
    h = self.act_group(self.conv_group(h))
    return x + self.conv_project(h)


class Generator(nn.Module):
  """z f[B, noise_dim] (, labels i64[B]) -> images f[B, C, H, W]."""

  def __init__(self, widths, group_width=16, blocks_per_stage=2, expansion=2,
               num_classes=0, cond_dim=64, noise_dim=64, channels=3):
    super().__init__()
    self.widths, self.bps = list(widths), blocks_per_stage
    num_blocks = len(self.widths) * blocks_per_stage
    z_dim = noise_dim
    if num_classes:
      self.class_embed = nn.Embedding(num_classes, cond_dim)
      nn.init.normal_(self.class_embed.weight, 0.0, num_classes ** -0.5)
      z_dim += cond_dim
    w0 = self.widths[0]
    self.basis = nn.Parameter(torch.randn(w0, 4, 4))
    self.modulation = nn.Linear(z_dim, w0, bias=False)
    _msr_(self.modulation.weight, 1.0)
    for i, w in enumerate(self.widths):
      if i > 0 and w != self.widths[i - 1]:
        self.add_module(f"stage{i}_transition", _conv(self.widths[i - 1], w))
      for j in range(blocks_per_stage):
        self.add_module(f"stage{i}_block{j}", ResidualBlock(
            w, group_width, expansion, num_blocks))
    self.to_rgb = _conv(self.widths[-1], channels)

  def forward(self, z, labels=None):
    if hasattr(self, "class_embed"):
      z = torch.cat([z, self.class_embed(labels)], dim=1)
    x = self.basis[None] * self.modulation(z)[:, :, None, None]
    for i in range(len(self.widths)):
      if i > 0:
        x = getattr(self, f"stage{i}_transition", nn.Identity())(x)
        x = upsample_2x(x)
      for j in range(self.bps):
        x = getattr(self, f"stage{i}_block{j}")(x)
    return self.to_rgb(x)


class Discriminator(nn.Module):
  """images f[B, C, H, W] (, labels i64[B]) -> logits f[B]."""

  def __init__(self, widths, group_width=16, blocks_per_stage=2, expansion=2,
               num_classes=0, channels=3):
    super().__init__()
    self.widths, self.bps = list(reversed(widths)), blocks_per_stage
    num_blocks = len(self.widths) * blocks_per_stage
    self.from_rgb = _conv(channels, self.widths[0])
    for i, w in enumerate(self.widths):
      for j in range(blocks_per_stage):
        self.add_module(f"stage{i}_block{j}", ResidualBlock(
            w, group_width, expansion, num_blocks))
      if i < len(self.widths) - 1 and self.widths[i + 1] != w:
        self.add_module(f"stage{i}_transition", _conv(w, self.widths[i + 1]))
    c = self.widths[-1]
    self.basis = nn.Parameter(_msr_(torch.empty(c, 4, 4), 1.0, fan_in=16))
    self.head = nn.Linear(c, c if num_classes else 1, bias=False)
    _msr_(self.head.weight, 1.0)
    if num_classes:
      self.class_embed = nn.Embedding(num_classes, c)
      nn.init.normal_(self.class_embed.weight, 0.0, (c * num_classes) ** -0.5)

  def forward(self, x, labels=None):
    x = self.from_rgb(x)
    for i in range(len(self.widths)):
      for j in range(self.bps):
        x = getattr(self, f"stage{i}_block{j}")(x)
      if i < len(self.widths) - 1:
        x = downsample_2x(x)
        x = getattr(self, f"stage{i}_transition", nn.Identity())(x)
    feat = self.head(torch.sum(x * self.basis, dim=(2, 3)))
    if not hasattr(self, "class_embed"):
      return feat[:, 0]
    return torch.sum(feat * self.class_embed(labels), dim=1)


def build(model_cfg, num_classes, image_size, channels=3):
  """Builds the torch G and D of a jaxgen R3GAN model config (float32, CPU).

  Args:
    model_cfg: jaxgen's `config.model` (widths, group_width,
      blocks_per_stage, expansion, noise_dim, cond_dim).
    num_classes: 0 for unconditional nets, else the number of classes (as
      jaxgen: `dataset.num_classes` if `gan.class_conditional`).
    image_size: pixels per side; must be 4·2^(len(widths) − 1).
    channels: image channels.

  Returns:
    (generator, discriminator) nn.Modules, initialised like jaxgen's.
  """
  widths = [int(w) for w in model_cfg.widths]
  if image_size != 4 * 2 ** (len(widths) - 1):
    raise ValueError(f"{len(widths)} stages do not make {image_size}px.")
  kw = dict(group_width=int(model_cfg.group_width),
            blocks_per_stage=int(model_cfg.blocks_per_stage),
            expansion=int(model_cfg.expansion), num_classes=int(num_classes),
            channels=channels)
  g = Generator(widths, cond_dim=int(model_cfg.cond_dim),
                noise_dim=int(model_cfg.noise_dim), **kw)
  return g, Discriminator(widths, **kw)


def _jax_to_torch(path, value):
  """(torch state-dict name, tensor) of one jaxgen parameter leaf."""
  value = torch.as_tensor(value.copy(), dtype=torch.float32)
  name = path[-1]
  if name == "kernel":  # 1x1 (I, O) or HWIO k x k -> OIHW.
    value = (value.T[:, :, None, None] if value.ndim == 2
             else value.permute(3, 2, 0, 1))
    path = path[:-1] + ("weight",)
  elif name == "basis":  # (4, 4, C) -> (C, 4, 4).
    value = value.permute(2, 0, 1)
  elif name in ("modulation", "head"):  # x @ W -> nn.Linear.
    value, path = value.T, path + ("weight",)
  elif name == "class_embed":
    path = path + ("weight",)
  return ".".join(path), value.contiguous()


def load_from_jax(g, d, g_params, d_params):
  """Copies jaxgen Generator / Discriminator parameters into the torch nets.

  Args:
    g: torch generator from `build`.
    d: torch discriminator from `build`.
    g_params: the unboxed `params` tree of jaxgen's Generator (nested dicts
      of arrays, as numpy or jax arrays).
    d_params: the same for the Discriminator.
  """
  def flatten(tree, prefix=()):
    for k, v in tree.items():
      if hasattr(v, "items"):
        yield from flatten(v, prefix + (k,))
      else:
        yield prefix + (k,), v

  for module, params in ((g, g_params), (d, d_params)):
    state = dict(_jax_to_torch(p, np.asarray(v)) for p, v in flatten(params))
    device = next(module.parameters()).device
    module.load_state_dict({k: v.to(device) for k, v in state.items()},
                           strict=True)


def _burn_in(start, end, burn_in, batch):
  """jaxgen's cosine burn-in schedule: step -> value."""
  start, end, burn_in = float(start), float(end), float(burn_in)

  def schedule(step):
    if burn_in <= 0 or start == end:
      return end
    t = min(step * batch / burn_in, 1.0)
    return start + (end - start) * 0.5 * (1.0 - math.cos(math.pi * t))
  return schedule


_LOSSES = {  # (d_loss, g_loss, g_needs_real), as jaxgen/gan/losses.py.
    "rpgan": (lambda r, f: F.softplus(f - r).mean(),
              lambda r, f: F.softplus(r - f).mean(), True),
    "gan": (lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
            lambda r, f: F.softplus(-f).mean(), False),
    "hinge": (lambda r, f: 0.5 * (F.relu(1 - r).mean() + F.relu(1 + f).mean()),
              lambda r, f: -f.mean(), False),
}


def _logits_and_penalty(d, x, labels, penalty=True):
  """D(x) and mean_i ‖∇ₓ D(x)_i‖² (0 if not `penalty`), differentiable
  w.r.t. D's parameters (double backprop), as `losses.logits_and_penalty`."""
  if not penalty:
    return d(x, labels), torch.zeros((), device=x.device)
  x = x.detach().requires_grad_(True)
  logits = d(x, labels)
  (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
  return logits, grad.square().sum(dim=(1, 2, 3)).mean()


def make_step(g, d, config):
  """Returns one jaxgen R3GAN train step for the torch nets (Adam each).

  Args:
    g: torch generator from `build`.
    d: torch discriminator from `build`.
    config: the jaxgen run config (`optimizer`, `gan`, `batch_size`);
      `gan.augment_p` must be 0.

  Returns:
    step(real_images_nchw, labels, z) -> {"loss", "d_adv", "r1", "r2",
    "g_loss"} floats. With `gan.g_own_real_batch` the images and labels
    hold 2·batch_size examples laid out as jaxgen's `split_batch` (example
    2i + j belongs to phase j: 0 = D, 1 = G). `z` is f[2, B, noise_dim]
    (D's then G's noise, as jaxgen draws it) or f[B, noise_dim] for both.
    Labels are None for unconditional nets.
  """
  gan, o = config.gan, config.optimizer
  if float(gan.get("augment_p", 0.0)):
    raise ValueError("Augmentation is not replicated; set gan.augment_p=0.")
  d_loss_fn, g_loss_fn, g_needs_real = _LOSSES[gan.loss]
  batch, burn_in = int(config.batch_size), float(gan.burn_in_examples)
  lr_fn = _burn_in(o.learning_rate, o.end_learning_rate, burn_in, batch)
  b2_fn = _burn_in(o.b2, o.end_b2, burn_in, batch)
  gamma_fn = _burn_in(gan.gamma, gan.end_gamma, burn_in, batch)
  half_life_fn = _burn_in(0.0, gan.ema_half_life_examples, burn_in, batch)
  split = bool(gan.get("g_own_real_batch", False))
  g_params, d_params = list(g.parameters()), list(d.parameters())
  fused = g_params[0].is_cuda or None
  g_opt, d_opt = (torch.optim.Adam(p, lr=lr_fn(0), betas=(o.b1, b2_fn(0)),
                                   eps=o.eps, fused=fused)
                  for p in (g_params, d_params))
  ema = copy.deepcopy(g).requires_grad_(False)
  n = 0

  def step(x_real, labels, z):
    nonlocal n
    for opt in (d_opt, g_opt):
      for group in opt.param_groups:
        group["lr"], group["betas"] = lr_fn(n), (o.b1, b2_fn(n))
    gamma = gamma_fn(n)
    x_d, l_d, x_g, l_g = x_real, labels, x_real, labels
    if split:
      x_d, x_g = x_real.unflatten(0, (-1, 2)).unbind(1)
      if labels is not None:
        l_d, l_g = labels.unflatten(0, (-1, 2)).unbind(1)
    z_d, z_g = z.unbind(0) if z.ndim == 3 else (z, z)

    # 1. Discriminator: G forward for the fakes (no graph), then per input
    # one D forward + input gradient (create_graph) for R1 / R2, and one
    # backward through both to D's parameters only.
    with torch.no_grad():
      x_fake = g(z_d, l_d)
    d_real, r1 = _logits_and_penalty(d, x_d, l_d, gan.r1)
    d_fake, r2 = _logits_and_penalty(d, x_fake, l_d, gan.r2)
    adv = d_loss_fn(d_real, d_fake)
    d_loss = adv + 0.5 * gamma * (r1 + r2)
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward(inputs=d_params)
    d_opt.step()

    # 2. Generator against the updated D: G forward, D forward on the fakes
    # (backward through D to its input only), D(real) without a graph.
    x_fake = g(z_g, l_g)
    d_fake = d(x_fake, l_g)
    if g_needs_real:
      with torch.no_grad():
        d_real = d(x_g, l_g)
    else:
      d_real = torch.zeros_like(d_fake)
    g_loss = g_loss_fn(d_real, d_fake)
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward(inputs=g_params)
    g_opt.step()

    # 3. EMA of G; half-life 0 gives β = 0 (a copy).
    half_life = half_life_fn(n)
    beta = 0.5 ** (batch / half_life) if half_life > 0 else 0.0
    with torch.no_grad():
      for e, p in zip(ema.parameters(), g_params):
        e.lerp_(p, 1.0 - beta)
    n += 1
    return {"loss": d_loss.item(), "d_adv": adv.item(), "r1": r1.item(),
            "r2": r2.item(), "g_loss": g_loss.item()}

  step.ema = ema
  return step
