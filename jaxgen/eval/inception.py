"""Inception-v3 of the standard FID implementation, in Flax.

The network is the one pytorch-fid uses for FID (the TF 2015-12-05 graph
ported to torchvision's Inception-v3, with its four FID patches): the average
pools inside Mixed_5*, Mixed_6b-e and Mixed_7b exclude the zero padding
(TensorFlow's behaviour), and the pool branch of Mixed_7c is a 3x3 *max*
pool. Outputs are the 2048-d pool3 features (FID, KID, precision / recall)
and the 1008-way logits of its classifier without its bias (the Inception
Score's, as in Salimans et al.'s code and torch-fidelity).

Layer and parameter names follow torchvision's module names (`Mixed_6b/
branch7x7_2/{kernel, bn_scale, ...}`), so `jaxgen.eval.convert` maps the
PyTorch state dict one-to-one. Every convolution runs at HIGHEST precision:
features must not depend on the accelerator's default matmul precision.

Images come in [-1, 1], NHWC, any size; they are resized to 299 x 299 as
pytorch-fid does: bilinear, half-pixel centres (`align_corners=False`) and no
antialiasing when downsampling (`jax.image.resize` would antialias by
default).
"""

import hashlib
import zipfile
from typing import Any, Dict, Tuple

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEATURE_DIM = 2048
NUM_LOGITS = 1008
# The network's input side (FID's protocol). Read when a model is traced, so
# tests that only need *some* features can lower it to 75, Inception-v3's
# smallest input, for 16x less compute; never change it for reported numbers.
INPUT_SIZE = 299
_BN_EPS = 1e-3


def resize_bilinear(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """Resizes NHWC images to size x size like torch's bilinear interpolate.

  Args:
    images: f32[B, H, W, C].
    size: output height and width.

  Returns:
    f32[B, size, size, C]; the input unchanged if it already has that size.
  """
  b, h, w, c = images.shape
  if (h, w) == (size, size):
    return images
  return jax.image.resize(images, (b, size, size, c), "bilinear",
                          antialias=False)


class BasicConv(nn.Module):
  """Conv (no bias) + inference batch norm (eps 1e-3) + ReLU."""
  features: int
  kernel: Tuple[int, int]
  stride: int = 1
  padding: Tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    k = self.param("kernel", nn.initializers.lecun_normal(),
                   self.kernel + (x.shape[-1], self.features))
    ones, zeros = nn.initializers.ones, nn.initializers.zeros
    scale = self.param("bn_scale", ones, (self.features,))
    bias = self.param("bn_bias", zeros, (self.features,))
    mean = self.param("bn_mean", zeros, (self.features,))
    var = self.param("bn_var", ones, (self.features,))
    ph, pw = self.padding
    y = jax.lax.conv_general_dilated(
        x, k, (self.stride, self.stride), ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST)
    y = (y - mean) * (scale * jax.lax.rsqrt(var + _BN_EPS)) + bias
    return nn.relu(y)


def _avg_pool_3x3(x):
  # TF's average pool: the zero padding is not counted.
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool(x, stride=2, padding="VALID"):
  return nn.max_pool(x, (3, 3), (stride, stride), padding)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, (1, 1),
                   name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, (3, 3), stride=2, name="branch3x3")(x)
    bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1),
                                                        padding=(3, 0))
    b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv(c, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv(c, **row, name="branch7x7_2")(b7)
    b7 = BasicConv(192, **col, name="branch7x7_3")(b7)
    bd = BasicConv(c, (1, 1), name="branch7x7dbl_1")(x)
    bd = BasicConv(c, **col, name="branch7x7dbl_2")(bd)
    bd = BasicConv(c, **row, name="branch7x7dbl_3")(bd)
    bd = BasicConv(c, **col, name="branch7x7dbl_4")(bd)
    bd = BasicConv(192, **row, name="branch7x7dbl_5")(bd)
    bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv(320, (3, 3), stride=2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (average pool branch) and Mixed_7c (max pool branch)."""
  max_pool_branch: bool = False

  @nn.compact
  def __call__(self, x):
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1),
                                                        padding=(1, 0))
    b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
    b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv(384, **row, name="branch3x3_2a")(b3),
                          BasicConv(384, **col, name="branch3x3_2b")(b3)], -1)
    bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv(384, **row, name="branch3x3dbl_3a")(bd),
                          BasicConv(384, **col, name="branch3x3dbl_3b")(bd)],
                         -1)
    # The FID graph's quirk: Mixed_7c pools with max, not average.
    pooled = (_max_pool(x, 1, ((1, 1), (1, 1))) if self.max_pool_branch
              else _avg_pool_3x3(x))
    bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class UnbiasedLogits(nn.Module):
  """The 1008-way classifier head, applied without its bias.

  The Inception Score is defined on these logits: Salimans et al.'s code
  multiplies pool3 by the softmax weights alone, and torch-fidelity takes
  its "logits_unbiased". The bias is kept as a parameter so the converted
  weights load whole.
  """

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (features.shape[-1], NUM_LOGITS))
    self.param("bias", nn.initializers.zeros, (NUM_LOGITS,))
    return jnp.dot(features, kernel, precision=jax.lax.Precision.HIGHEST)


class InceptionV3(nn.Module):
  """FID Inception-v3: images in [-1, 1] -> (pool3 features, logits)."""

  @nn.compact
  def __call__(self, images: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Features and logits of a batch.

    Args:
      images: f32[B, H, W, 3] in [-1, 1], any H, W.

    Returns:
      (f32[B, 2048] pool3 features, f32[B, 1008] logits without the
      classifier's bias, as the Inception Score takes them).
    """
    x = resize_bilinear(images.astype(jnp.float32), INPUT_SIZE)
    x = BasicConv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x)
    x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                    ("Mixed_6e", 192)):
      x = InceptionC(c, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool_branch=True, name="Mixed_7c")(x)
    features = jnp.mean(x, axis=(1, 2))
    return features, UnbiasedLogits(name="fc")(features)


# -- weights -------------------------------------------------------------------


def flatten(params: Dict[str, Any]) -> Dict[str, Any]:
  """{"Mixed_5b/branch1x1/kernel": leaf, ...} of a params tree."""
  return traverse_util.flatten_dict(params, sep="/")


def unflatten(flat: Dict[str, Any]) -> Dict[str, Any]:
  """Inverse of `flatten`."""
  return traverse_util.unflatten_dict(flat, sep="/")


def weights_hash(flat: Dict[str, np.ndarray]) -> str:
  """A short sha256 of the weights' names and values (not of the file)."""
  h = hashlib.sha256()
  for key in sorted(flat):
    h.update(key.encode())
    h.update(np.ascontiguousarray(flat[key], np.float32).tobytes())
  return h.hexdigest()[:16]


def expected_shapes() -> Dict[str, Tuple[int, ...]]:
  """Every parameter's name and shape (from an abstract init)."""
  shapes = jax.eval_shape(
      lambda: InceptionV3().init(jax.random.key(0),
                                 jnp.zeros((1, 75, 75, 3)))["params"])
  return {k: tuple(v.shape) for k, v in flatten(shapes).items()}


def load_weights(path: str) -> Tuple[Dict[str, Any], str]:
  """Loads an `inception_fid.npz` written by `jaxgen.eval.convert`.

  Args:
    path: the .npz file.

  Returns:
    (params tree, weights hash).

  Raises:
    ValueError: one line if the file is missing, unreadable or not the FID
      Inception weights.
  """
  try:
    with np.load(path) as f:
      flat = {k: f[k] for k in f.files}
  except FileNotFoundError:
    raise ValueError(
        f"Inception weights {path} not found; convert pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth once with `python -m "
        "jaxgen.eval.convert --inception=PTH --out=inception_fid.npz`."
    ) from None
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    # A copy cut short is a BadZipFile, a folder an IsADirectoryError.
    raise ValueError(f"cannot read Inception weights {path} "
                     f"({type(e).__name__}: {str(e)[:80]}); pass the .npz "
                     "written by jaxgen.eval.convert.") from None
  want = expected_shapes()
  bad = sorted(k for k in want if k not in flat or
               tuple(flat[k].shape) != want[k])
  if bad:
    raise ValueError(
        f"{path} is not the FID Inception weights ({len(bad)} missing or "
        f"misshapen arrays, e.g. {bad[0]}); pass the .npz written by "
        "jaxgen.eval.convert --inception.")
  flat = {k: flat[k].astype(np.float32) for k in want}
  return unflatten(flat), weights_hash(flat)


def random_params(seed: int = 0, scale: float = 1.0) -> Dict[str, Any]:
  """Random weights with non-trivial batch-norm statistics (for tests).

  Args:
    seed: numpy seed.
    scale: multiplies the batch-norm scales (keeps activations O(1)).

  Returns:
    A params tree of the FID Inception.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for key, shape in expected_shapes().items():
    leaf = key.rsplit("/", 1)[-1]
    if leaf == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.normal(0, 1 / np.sqrt(fan_in), shape)
    elif leaf == "bn_var":
      value = rng.uniform(0.5, 1.5, shape)
    elif leaf == "bn_scale":
      value = scale * rng.uniform(0.8, 1.6, shape)
    else:  # bn_bias, bn_mean, fc bias
      value = rng.normal(0, 0.1, shape)
    flat[key] = value.astype(np.float32)
  return unflatten(flat)

