"""LPIPS (Zhang et al. 2018), VGG variant, as a differentiable Flax module.

d(x0, x1) = sum_l mean_{h,w} w_l . (n(f_l(x0)) - n(f_l(x1)))^2

with f_l the VGG16 activations relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of
inputs shifted and scaled by the ScalingLayer constants, n(.) the unit
normalisation over channels (eps 1e-10) and w_l >= 0 the learned linear
heads (1x1 convolutions without bias). Version 0.1 of the `lpips` package.

Weights: the linear heads ship inside the `lpips` PyPI package; the VGG16
backbone is torchvision's ImageNet `vgg16` weight file, given by the user.
`python -m jaxgen.eval.convert --vgg16=vgg16-397923af.pth --lpips_out=
lpips_vgg.npz` writes both into one .npz (`load_weights`). Parameter names
follow torchvision's feature indices (`features_0/kernel`, ...), so the
conversion is one-to-one. The autoencoder family trains with this module.
"""

from typing import Any, Dict, Tuple
import zipfile

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# (torchvision feature index, output channels) of VGG16's convolutions; a
# 2x2 max pool precedes indices 5, 10, 17 and 24.
VGG16_CONVS = ((0, 64), (2, 64), (5, 128), (7, 128), (10, 256), (12, 256),
               (14, 256), (17, 512), (19, 512), (21, 512), (24, 512),
               (26, 512), (28, 512))
# The LPIPS taps: the ReLU after these convolutions.
TAPS = (2, 7, 14, 21, 28)
CHANNELS = (64, 128, 256, 512, 512)
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


class VGG16Features(nn.Module):
  """VGG16's convolutional trunk, returning the five LPIPS taps."""

  @nn.compact
  def __call__(self, x):
    taps = []
    for idx, features in VGG16_CONVS:
      if idx in (5, 10, 17, 24):
        x = nn.max_pool(x, (2, 2), (2, 2))
      x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)),
                  precision=jax.lax.Precision.HIGHEST,
                  name=f"features_{idx}")(x)
      x = nn.relu(x)
      if idx in TAPS:
        taps.append(x)
    return taps


# VGG16 pools four times before relu5_3: smaller images leave that tap
# empty, and its mean is NaN.
MIN_SIZE = 16


def _unit_normalize(x, eps=1e-10):
  return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
  """LPIPS distance between two batches of images in [-1, 1] (NHWC)."""

  @nn.compact
  def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    """Per-image distances.

    Args:
      x0: f32[B, H, W, 3] in [-1, 1].
      x1: same shape.

    Returns:
      f32[B].

    Raises:
      ValueError: images under `MIN_SIZE` pixels a side (at trace time).
    """
    if min(x0.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"LPIPS needs images of at least {MIN_SIZE}x{MIN_SIZE}"
                       f" pixels (VGG16 pools them 4 times); got "
                       f"{x0.shape[1]}x{x0.shape[2]}.")
    vgg = VGG16Features(name="vgg")
    scale = lambda x: (x.astype(jnp.float32) - _SHIFT) / _SCALE
    taps0, taps1 = vgg(scale(x0)), vgg(scale(x1))
    total = 0.0
    for i, (a, b) in enumerate(zip(taps0, taps1)):
      w = self.param(f"lin{i}", nn.initializers.ones, (CHANNELS[i],))
      diff = (_unit_normalize(a) - _unit_normalize(b)) ** 2
      total = total + jnp.mean(jnp.einsum("bhwc,c->bhw", diff, w,
                                          precision="highest"), axis=(1, 2))
    return total


def expected_shapes() -> Dict[str, Tuple[int, ...]]:
  """Every parameter's name and shape."""
  shapes = jax.eval_shape(lambda: LPIPS().init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
      jnp.zeros((1, 32, 32, 3)))["params"])
  return {k: tuple(v.shape) for k, v in
          traverse_util.flatten_dict(shapes, sep="/").items()}


def load_weights(path: str) -> Dict[str, Any]:
  """Loads the .npz written by `jaxgen.eval.convert --vgg16`.

  Args:
    path: the .npz file.

  Returns:
    The params tree of `LPIPS`.

  Raises:
    ValueError: one line if the file is missing or not LPIPS weights.
  """
  try:
    with np.load(path) as f:
      flat = {k: f[k] for k in f.files}
  except FileNotFoundError:
    raise ValueError(
        f"LPIPS weights {path} not found; convert torchvision's vgg16 weight "
        "file once with `python -m jaxgen.eval.convert --vgg16=PTH "
        "--lpips_out=lpips_vgg.npz`.") from None
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    # A copy cut short is a BadZipFile, a folder an IsADirectoryError.
    raise ValueError(f"cannot read LPIPS weights {path} "
                     f"({type(e).__name__}: {str(e)[:80]}); pass the .npz "
                     "written by jaxgen.eval.convert --vgg16.") from None
  want = expected_shapes()
  bad = sorted(k for k in want if k not in flat or
               tuple(flat[k].shape) != want[k])
  if bad:
    raise ValueError(f"{path} is not LPIPS-VGG weights (e.g. {bad[0]} is "
                     "missing or misshapen); pass the .npz written by "
                     "jaxgen.eval.convert --vgg16.")
  return traverse_util.unflatten_dict(
      {k: flat[k].astype(np.float32) for k in want}, sep="/")
