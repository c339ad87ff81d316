"""Tests of the named dense/conv layers and the resampling layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.nn import linear
from jaxgen.nn import partitioning as pt
from jaxgen.nn import resample
from tests import convs


def _init(module, *args):
  variables = jax.jit(module.init)(jax.random.key(0), *args)
  return variables, nn.unbox(variables)


def test_dense_multi_axis_matches_matmul_and_names():
  x = jax.random.normal(jax.random.key(1), (2, 5, 3, 4))
  layer = linear.Dense(6, (pt.HEADS, pt.KV, pt.EMBED), num_in_axes=2)
  boxed, v = _init(layer, x)
  kernel = boxed["params"]["kernel"]
  assert isinstance(kernel, nn.LogicallyPartitioned)
  assert kernel.names == (pt.HEADS, pt.KV, pt.EMBED)
  assert boxed["params"]["bias"].names == (pt.EMBED,)
  y = jax.jit(layer.apply)(v, x)
  k = v["params"]["kernel"].reshape(12, 6)
  np.testing.assert_allclose(y, x.reshape(2, 5, 12) @ k, atol=1e-5)


def test_dense_tuple_features_values_and_gradients_match_numpy():
  # Dense contracts a flattened [tokens, fan_in] matrix (the layout XLA:CPU
  # runs fastest); values and both gradients must still be the plain
  # tensordot's, for a tuple of output features over a 3-D input.
  x = jax.random.normal(jax.random.key(2), (2, 5, 4))
  layer = linear.Dense((3, 6), (pt.EMBED, pt.HEADS, pt.KV))
  _, v = _init(layer, x)
  g = np.asarray(jax.random.normal(jax.random.key(3), (2, 5, 3, 6)))
  loss = lambda p, x: jnp.sum(layer.apply(p, x) * g)
  y = jax.jit(layer.apply)(v, x)
  dp, dx = jax.jit(jax.grad(loss, argnums=(0, 1)))(v, x)
  k = np.asarray(v["params"]["kernel"])
  b = np.asarray(v["params"]["bias"])
  xn = np.asarray(x)
  np.testing.assert_allclose(y, np.tensordot(xn, k, axes=1) + b, atol=1e-5)
  np.testing.assert_allclose(dp["params"]["kernel"],
                             np.einsum("bld,blhk->dhk", xn, g), atol=1e-4)
  np.testing.assert_allclose(dp["params"]["bias"], g.sum((0, 1)), atol=1e-4)
  np.testing.assert_allclose(dx, np.einsum("blhk,dhk->bld", g, k), atol=1e-4)


def test_dense_rejects_wrong_number_of_names():
  with pytest.raises(ValueError):
    linear.Dense(4, (pt.EMBED,)).init(jax.random.key(0), jnp.ones((1, 3)))


def test_conv_matches_lax_and_names():
  x = jax.random.normal(jax.random.key(2), (1, 6, 5, 3))
  layer = linear.Conv(4, 3, use_bias=False)
  boxed, v = _init(layer, x)
  assert boxed["params"]["kernel"].names == (pt.KERNEL_H, pt.KERNEL_W,
                                             pt.CONV_IN, pt.CONV_OUT)
  ref = jax.lax.conv_general_dilated(
      x, v["params"]["kernel"], (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(jax.jit(layer.apply)(v, x), ref, atol=1e-5)


def test_grouped_1x1_conv_matches_lax_and_shards_correctly():
  """The per-group matmul path equals XLA's grouped convolution, also with
  channel-sharded inputs on a (2, 2, 2) mesh (where the lax grouped conv
  itself returns wrong values on jax 0.10's CPU partitioner)."""
  x = jax.random.normal(jax.random.key(3), (8, 4, 4, 24))
  layer = linear.Conv(36, 1, use_bias=False, groups=6)
  _, v = _init(layer, x)
  ref = jax.lax.conv_general_dilated(
      x, v["params"]["kernel"], (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6)
  np.testing.assert_allclose(jax.jit(layer.apply)(v, x), ref, atol=1e-5)
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  xs = jax.device_put(x, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec("data", None, None, "tensor")))
  with jax.set_mesh(mesh):
    got = jax.jit(layer.apply)(v, xs)
  np.testing.assert_allclose(got, ref, atol=1e-5)


def _direct_conv3x3(x, k):
  """float64 numpy reference: a sum of 9 shifted matmuls."""
  b, h, w, _ = x.shape
  xp = np.pad(np.float64(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((b, h, w, k.shape[-1]))
  for i in range(3):
    for j in range(3):
      out += xp[:, i:i + h, j:j + w] @ np.float64(k[i, j])
  return out


@pytest.mark.parametrize("b,h,w,c,o", [(2, 8, 8, 5, 7), (1, 7, 9, 4, 3),
                                       (3, 1, 1, 2, 2), (1, 2, 3, 1, 6)])
def test_winograd_conv_equals_direct_conv(b, h, w, c, o):
  """Values against a float64 direct conv (even and odd sizes, 1x1 maps);
  gradients against XLA's convolution's."""
  rng = np.random.default_rng(b * h + w)
  x = rng.standard_normal((b, h, w, c)).astype(np.float32)
  k = rng.standard_normal((3, 3, c, o)).astype(np.float32)
  y = linear.winograd_conv3x3(x, k)
  assert y.shape == (b, h, w, o)
  np.testing.assert_allclose(y, _direct_conv3x3(x, k), atol=2e-5, rtol=0)
  lax_conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, (1, 1), ((1, 1), (1, 1)), precision="highest",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  cot = rng.standard_normal((b, h, w, o)).astype(np.float32)
  loss = lambda f: lambda x, k: jnp.sum(f(x, k) * cot)  # noqa: E731
  got = jax.grad(loss(linear.winograd_conv3x3), (0, 1))(x, k)
  want = jax.grad(loss(lax_conv), (0, 1))(x, k)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, atol=1e-4 * np.abs(r).max(), rtol=0)


def test_conv_winograd_impl_runs_only_where_it_applies(monkeypatch):
  """Eligible convs (dense 3x3, stride 1, pad 1, float32, >= 64 channels
  each way) lose the lax convolution and keep its values; all others keep
  it."""
  x = jax.random.normal(jax.random.key(4), (2, 6, 6, 64))
  cases = [  # (layer, input channels, runs as Winograd)
      (linear.Conv(64, 3, impl="winograd"), 64, True),
      (linear.Conv(64, 3, padding=((1, 1), (1, 1)), impl="winograd"), 64,
       True),
      (linear.Conv(64, 3, impl="lax"), 64, False),
      (linear.Conv(32, 3, impl="winograd"), 64, False),    # too few outputs
      (linear.Conv(64, 3, impl="winograd"), 32, False),    # too few inputs
      (linear.Conv(64, 3, strides=2, impl="winograd"), 64, False),
      (linear.Conv(64, 3, groups=2, impl="winograd"), 64, False),
      (linear.Conv(64, 1, impl="winograd"), 64, False),
      (linear.Conv(64, 3, padding=((0, 2), (1, 1)), impl="winograd"), 64,
       False),
      (linear.Conv(64, 3, dtype=jnp.bfloat16, impl="winograd"), 64, False),
  ]
  for layer, c_in, winograd in cases:
    xc = x[..., :c_in]
    _, v = _init(layer, xc)
    assert (not convs.lax_convs(layer.apply, v, xc)) == winograd, layer
    if winograd:
      ref = linear.Conv(64, 3, impl="lax").apply(v, xc)
      np.testing.assert_allclose(layer.apply(v, xc), ref, atol=1e-4)
  monkeypatch.setattr(linear, "WINOGRAD_MIN_CHANNELS", 16)
  layer = linear.Conv(32, 3, impl="winograd")
  _, v = _init(layer, x)
  assert not convs.lax_convs(layer.apply, v, x)
  with pytest.raises(ValueError, match="impl='fft'"):
    _init(linear.Conv(8, 3, impl="fft"), x)


def test_winograd_conv_shards_like_the_input():
  """On a (2, 2, 2) mesh with the batch over data x fsdp and the kernel's
  outputs over tensor, the Winograd conv gives the unsharded values."""
  x = jax.random.normal(jax.random.key(5), (4, 8, 6, 64))
  layer = linear.Conv(128, 3, impl="winograd")
  _, v = _init(layer, x)
  ref = linear.Conv(128, 3, impl="lax").apply(v, x)
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  spec = jax.sharding.PartitionSpec
  xs = jax.device_put(x, jax.sharding.NamedSharding(
      mesh, spec(("data", "fsdp"))))
  vs = jax.device_put(v, {"params": {
      "kernel": jax.sharding.NamedSharding(mesh, spec(None, None, None,
                                                      "tensor")),
      "bias": jax.sharding.NamedSharding(mesh, spec("tensor"))}})
  with jax.set_mesh(mesh):
    got = jax.jit(layer.apply)(vs, xs)
  np.testing.assert_allclose(got, ref, atol=1e-4)


def test_resolve_conv_impl():
  assert linear.resolve_conv_impl("auto") == (
      "winograd" if jax.default_backend() == "cpu" else "lax")
  assert linear.resolve_conv_impl("lax") == "lax"
  with pytest.raises(ValueError, match=r"^model.conv='fft'; use 'auto', "):
    linear.resolve_conv_impl("fft", "model.conv")


@pytest.mark.parametrize("h,w,k", [(8, 8, 3), (5, 7, 3), (4, 4, 1), (6, 3, 5)])
def test_conv_same_macs_counts_non_padding_taps(h, w, k):
  half = k // 2
  taps = sum(1 for i in range(h) for j in range(w)
             for di in range(-half, half + 1) for dj in range(-half, half + 1)
             if 0 <= i + di < h and 0 <= j + dj < w)
  assert linear.conv_same_macs(h, w, k, 3, 5) == taps * 15


def test_space_depth_round_trip_and_layout():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  y = resample.space_to_depth(x, 2)
  assert y.shape == (2, 2, 3, 12)
  # Channel (i * p + j) * C + c holds x[p*h + i, p*w + j, c].
  np.testing.assert_array_equal(y[1, 1, 2, (1 * 2 + 0) * 3 + 2],
                                x[1, 3, 4, 2])
  np.testing.assert_array_equal(resample.depth_to_space(y, 2), x)


def test_downsample_is_strided_conv():
  x = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))
  layer = resample.Downsample(5, factor=4)
  _, v = _init(layer, x)
  ref = jax.lax.conv_general_dilated(
      x, v["params"]["kernel"], (4, 4), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC")) + v["params"]["bias"]
  y = jax.jit(layer.apply)(v, x)
  assert y.shape == (2, 2, 2, 5)
  np.testing.assert_allclose(y, ref, atol=1e-5)


def test_upsample_is_transposed_strided_conv():
  x = np.asarray(jax.random.normal(jax.random.key(4), (1, 3, 2, 4)))
  layer = resample.Upsample(2, factor=2)
  boxed, v = _init(layer, x)
  assert "bias" not in boxed["params"]  # Up(0) == 0 for the residual U-ViT.
  k = np.asarray(v["params"]["kernel"])
  y = np.asarray(jax.jit(layer.apply)(v, x))
  ref = np.zeros((1, 6, 4, 2), np.float32)
  for h in range(3):
    for w in range(2):
      for i in range(2):
        for j in range(2):
          ref[0, 2 * h + i, 2 * w + j] = x[0, h, w] @ k[i, j]
  np.testing.assert_allclose(y, ref, atol=1e-5)


def test_upsample_init_keeps_unit_variance():
  # Fan-in of a stride-p transposed conv is C, not p*p*C.
  x = jax.random.normal(jax.random.key(5), (4, 8, 8, 256))
  layer = resample.Upsample(256, factor=2)
  _, v = _init(layer, x)
  std = float(jnp.std(jax.jit(layer.apply)(v, x)))
  assert 0.8 < std < 1.2
