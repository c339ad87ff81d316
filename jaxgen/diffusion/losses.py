"""Training losses of simple diffusion (SiD) and Simpler Diffusion (SiD2).

The network predicts v = alpha * eps - sigma * x and is conditioned on logSNR;
the loss is always measured in eps-space, eps_hat = sigma * z + alpha * v_hat
(so ||eps - eps_hat||^2 = sigmoid(logSNR) ||v - v_hat||^2). On top of that:
  * SiD's multiscale loss (Sec. 3.2): the eps error is average-pooled to every
    power-of-two scale from `min_size` up to the image side and the per-scale
    MSEs are mixed with weights proportional to 1/s;
  * SiD2's sigmoid weighting (Kingma & Gao): w(logSNR) = sigmoid(b - logSNR).

Images are NHWC and videos NTHWC; per-example scalars (alpha, sigma, logSNR,
weights) have shape [B] and broadcast over the remaining axes.
"""

import dataclasses
from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from jaxgen import registry
from jaxgen.diffusion import schedules
from jaxgen.nn import resample

VFn = Callable[[jax.Array, jax.Array], jax.Array]

# Loss weightings by config name (config.diffusion.weighting), each
# `(logsnr, sigmoid_bias) -> weight`.
WEIGHTINGS = registry.Registry("weighting")


def bcast(a, x: jax.Array) -> jax.Array:
  """Reshapes per-example `a` ([B] or scalar) to broadcast against `x`."""
  a = jnp.asarray(a)
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def v_target(x, eps, alpha, sigma) -> jax.Array:
  """The v-prediction target alpha * eps - sigma * x.

  Args:
    x: clean data, [B, ...].
    eps: the noise added to x, same shape.
    alpha: signal scales, [B] or scalar.
    sigma: noise scales, [B] or scalar.

  Returns:
    v with the shape of `x`.
  """
  return bcast(alpha, x) * eps - bcast(sigma, x) * x


def eps_from_v(z, v, alpha, sigma) -> jax.Array:
  """Noise implied by a v-prediction: sigma * z + alpha * v (exact for VP).

  Args:
    z: noisy data alpha * x + sigma * eps, [B, ...].
    v: (predicted) velocity, same shape.
    alpha: signal scales, [B] or scalar.
    sigma: noise scales, [B] or scalar.

  Returns:
    eps with the shape of `z`.
  """
  return bcast(sigma, z) * z + bcast(alpha, z) * v


def sigmoid_weight(logsnr, bias: float) -> jax.Array:
  """SiD2 / Kingma-Gao weighting sigmoid(bias - logSNR) of the *eps*-MSE.

  About 1 at low SNR, decaying like exp(bias - logSNR) at high SNR. The sign
  matters: sigmoid(logSNR - bias) would be the wrong way round for an eps- or
  v-space loss (the x-space equivalent is exp(bias) * sigmoid(logSNR - bias)).

  Args:
    logsnr: logSNR values, any shape.
    bias: the offset b (SiD2-style ImageNet configs use -3).

  Returns:
    float32 weights with the shape of `logsnr`.
  """
  return jax.nn.sigmoid(bias - jnp.asarray(logsnr, jnp.float32))


WEIGHTINGS.register("none")(lambda logsnr, bias: jnp.ones_like(logsnr))
WEIGHTINGS.register("sigmoid")(sigmoid_weight)


def multiscale_scales(image_size: int, min_size: int = 32) -> Tuple[int, ...]:
  """Sides of the multiscale loss: min_size, 2 * min_size, ..., image_size.

  Args:
    image_size: spatial side d of the error tensor.
    min_size: smallest scale.

  Returns:
    The scales in increasing order; just (image_size,) when d <= min_size.

  Raises:
    ValueError: if d > min_size is not min_size times a power of two.
  """
  if image_size <= min_size:
    return (image_size,)
  ratio = image_size // min_size
  if image_size % min_size or ratio & (ratio - 1):
    raise ValueError(
        f"multiscale loss needs image side {image_size} to be <= {min_size} "
        f"or {min_size} times a power of two.")
  scales = []
  s = min_size
  while s <= image_size:
    scales.append(s)
    s *= 2
  return tuple(scales)


def multiscale_mse(err, min_size: int = 32, normalize: bool = True
                   ) -> jax.Array:
  """Per-example multiscale MSE of an error tensor (SiD Sec. 3.2).

  loss = sum_s w_s * mean_pixels(avgpool_to_s(err)^2) over the scales of
  `multiscale_scales(d, min_size)`, with w_s proportional to 1/s. Average
  pooling is linear, so pooling eps - eps_hat equals the difference of the
  pooled tensors and no extra network pass is needed.

  The per-scale term is the mean over pooled pixels (the "1/d^2" reading of
  the paper; the study notes also have "1/d"). The normalisation of the 1/s
  weights is an open item of the paper: with `normalize=True` (default) they
  are rescaled to sum to 1, so a single scale (d <= min_size) gives exactly the
  per-pixel eps-MSE and the loss magnitude is comparable across resolutions;
  `normalize=False` uses the bare 1/s weights as printed.

  Args:
    err: error tensor, NHWC or NTHWC with square spatial axes (H = W = d).
    min_size: smallest scale.
    normalize: rescale the 1/s weights to sum to 1.

  Returns:
    float32 per-example losses, shape [B].

  Raises:
    ValueError: if the spatial axes are not square or d is not a valid side.
  """
  if err.ndim not in (4, 5):
    raise ValueError(f"multiscale_mse wants NHWC or NTHWC, got {err.shape}.")
  d = err.shape[-3]
  if err.shape[-2] != d:
    raise ValueError(f"multiscale_mse wants square images, got {err.shape}.")
  scales = multiscale_scales(d, min_size)
  weights = [1.0 / s for s in scales]
  if normalize:
    total = sum(weights)
    weights = [w / total for w in weights]
  err = err.astype(jnp.float32)
  reduce_axes = tuple(range(1, err.ndim))
  loss = 0.0
  for s, w in zip(scales, weights):
    loss = loss + w * jnp.mean(
        jnp.square(resample.avg_pool_to(err, s)), axis=reduce_axes)
  return loss


@dataclasses.dataclass(frozen=True)
class LossOptions:
  """How the ε-loss is weighted and reduced (one value, built once).

  Attributes:
    weighting: a `WEIGHTINGS` name: "none" (SiD) or "sigmoid" (SiD2).
    sigmoid_bias: bias b of `sigmoid_weight`.
    weight_dlogsnr_dt: also multiply the weight by -dlogSNR/dt.
    multiscale: use `multiscale_mse` instead of the per-pixel MSE.
    multiscale_min_size: smallest multiscale side.
    multiscale_normalize: see `multiscale_mse`.
  """
  weighting: str = "none"
  sigmoid_bias: float = -3.0
  weight_dlogsnr_dt: bool = False
  multiscale: bool = False
  multiscale_min_size: int = 32
  multiscale_normalize: bool = True

  def __post_init__(self):
    WEIGHTINGS.get(self.weighting)  # One-line error for an unknown name.

  @classmethod
  def from_config(cls, d) -> "LossOptions":
    """From `config.diffusion` (fields of the same names)."""
    return cls(**{f.name: d.get(f.name, f.default)
                  for f in dataclasses.fields(cls)})


def diffusion_loss_at(v_fn: VFn, x, t, eps, *, logsnr_fn,
                      options: LossOptions = LossOptions()
                      ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """The diffusion loss at given times and noise (see `diffusion_loss`).

  Args:
    v_fn: `v_fn(z, logsnr) -> v_hat`, logsnr of shape [B].
    x: clean data in [-1, 1], NHWC or NTHWC.
    t: times in [0, 1], shape [B].
    eps: standard normal noise with the shape of `x`.
    logsnr_fn: schedule `logsnr_fn(t)`.
    options: weighting and reduction of the loss.

  Returns:
    (loss, aux) as in `diffusion_loss`.
  """
  o = options
  weight_fn = WEIGHTINGS.get(o.weighting)
  x = jnp.asarray(x, jnp.float32)
  t = jnp.asarray(t, jnp.float32)
  if o.weight_dlogsnr_dt:
    # jvp gives logSNR and its per-example time derivative in one pass.
    logsnr, dlogsnr_dt = jax.jvp(logsnr_fn, (t,), (jnp.ones_like(t),))
  else:
    logsnr, dlogsnr_dt = logsnr_fn(t), None
  alpha, sigma = schedules.alpha_sigma(logsnr)
  z = bcast(alpha, x) * x + bcast(sigma, x) * eps
  v_hat = v_fn(z, logsnr).astype(jnp.float32)
  err = eps - eps_from_v(z, v_hat, alpha, sigma)

  reduce_axes = tuple(range(1, x.ndim))
  eps_mse = jnp.mean(jnp.square(err), axis=reduce_axes)
  if o.multiscale:
    per_example = multiscale_mse(err, o.multiscale_min_size,
                                 o.multiscale_normalize)
  else:
    per_example = eps_mse

  weight = weight_fn(logsnr, o.sigmoid_bias)
  if o.weight_dlogsnr_dt:
    weight = weight * -dlogsnr_dt
  # The weight is a function of t only; no gradient should flow through it.
  weight = jax.lax.stop_gradient(weight)
  per_example = weight * per_example
  aux = {
      "t": t,
      "logsnr": logsnr,
      "weight": weight,
      "per_example_loss": per_example,
      "eps_mse": jnp.mean(eps_mse),
  }
  return jnp.mean(per_example), aux


def diffusion_loss(v_fn: VFn, x, rng: jax.Array, *, logsnr_fn,
                   options: LossOptions = LossOptions()
                   ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Eps-space diffusion loss of a v-predicting network.

  Draws t ~ U(0, 1) per example and eps ~ N(0, I) (from
  `t_rng, eps_rng = jax.random.split(rng)`), forms z = alpha x + sigma eps,
  eps_hat = sigma z + alpha v_fn(z, logSNR) and returns the batch mean of
  weight(logSNR) * (eps-MSE, or its multiscale version).

  Weighting: "none" is SiD's eps-loss (whose implied Kingma-Gao weighting under
  the shifted cosine density is ~sech((logSNR - shift)/2)); "sigmoid" is SiD2's
  sigmoid(b - logSNR), applied per sample under the schedule's own density as
  public SiD2-style code (DFoT) does. Whether SiD2 also multiplies by
  -dlogSNR/dt (the formal Kingma-Gao L_w, up to its factor 1/2) is an open
  item; `LossOptions(weight_dlogsnr_dt=True)` does so, default False.

  Args:
    v_fn: `v_fn(z, logsnr) -> v_hat`, a closure over params, labels, dropout
      rng; logsnr has shape [B].
    x: clean data in [-1, 1], NHWC or NTHWC (multiscale pools H, W only).
    rng: PRNG key.
    logsnr_fn: schedule `logsnr_fn(t)`, e.g. from `schedules.make_logsnr_fn`.
    options: weighting and reduction (`LossOptions`).

  Returns:
    (loss, aux): the scalar loss and a dict with per-example "t", "logsnr",
    "weight", "per_example_loss" and the unweighted batch-mean "eps_mse".
  """
  t_rng, eps_rng = jax.random.split(rng)
  t = jax.random.uniform(t_rng, (x.shape[0],), jnp.float32)
  eps = jax.random.normal(eps_rng, x.shape, jnp.float32)
  return diffusion_loss_at(v_fn, x, t, eps, logsnr_fn=logsnr_fn,
                           options=options)
