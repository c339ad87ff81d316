"""Scanned block stacks equal the unrolled ones (forward, gradients, loss)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.diffusion import uvit
from jaxgen.flow import dit
from jaxgen.flow import layout as layout_lib
from jaxgen.nn import stack


def _stacked(params, prefix, depth, scanned_name):
  """Unrolled parameters (prefix0, prefix1, ...) in the scanned layout."""
  out = {k: v for k, v in params.items()
         if not (k.startswith(prefix) and k[len(prefix):].isdigit())}
  layers = [params[f"{prefix}{i}"] for i in range(depth)]
  out[scanned_name] = {"block": jax.tree.map(lambda *x: jnp.stack(x),
                                             *layers)}
  return out


def _randomised(params, seed):
  """Every leaf random: zero-initialised residual branches would hide a
  wrong layer order. (numpy: an eager jax.random call per shape compiles
  one program each.)"""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape), jnp.float32),
      params)


def _shapes(model, *args, **kwargs):
  """The model's parameter shapes, without running its init."""
  return nn.unbox(jax.eval_shape(lambda: model.init(
      jax.random.key(1), *args, **kwargs))["params"])


def _check_same(apply_loop, apply_scan, params, prefix, depth, name):
  loss = lambda f: lambda p: jnp.mean(f(p) ** 2)  # pylint: disable=g-long-lambda
  v0, g0 = jax.jit(jax.value_and_grad(loss(apply_loop)))(params)
  stacked = _stacked(params, prefix, depth, name)
  v1, g1 = jax.jit(jax.value_and_grad(loss(apply_scan)))(stacked)
  np.testing.assert_allclose(v1, v0, rtol=1e-5)
  want = _stacked(g0, prefix, depth, name)
  # float32 sums in another order: agreement to 1e-4 of each leaf's scale.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max())), g1, want)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_uvit_scanned_transformer_equals_the_loop(remat):
  kw = dict(channels=(8, 16), num_res_blocks=(1, 1), transformer_width=32,
            transformer_depth=3, num_heads=2, cond_dim=32, freq_dim=16,
            num_groups=4, num_classes=3, remat=remat)
  loop, scan = uvit.UViT(**kw), uvit.UViT(**kw, scan_layers=True)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  logsnr, labels = jnp.array([-1.0, 2.0]), jnp.array([0, 2])
  params = _randomised(_shapes(loop, x, logsnr, labels, train=False), 2)
  scanned = _shapes(scan, x, logsnr, labels, train=False)
  # Same parameters, stacked along a leading layer axis.
  assert jax.tree.structure(scanned) == jax.tree.structure(
      _stacked(params, "transformer", 3, "transformer"))
  run = lambda m: lambda p: m.apply({"params": p}, x, logsnr, labels,  # pylint: disable=g-long-lambda
                                    train=False)
  _check_same(run(loop), run(scan), params, "transformer", 3, "transformer")


def test_scanned_parameters_carry_the_layers_axis():
  model = uvit.UViT(channels=(8,), num_res_blocks=(1,), transformer_width=16,
                    transformer_depth=4, num_heads=2, cond_dim=16,
                    freq_dim=16, num_groups=4, scan_layers=True)
  boxed = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,)),
      train=False))["params"]
  kernel = boxed["transformer"]["block"]["mlp"]["dense_in"]["kernel"]
  assert kernel.value.shape == (4, 16, 64)
  assert kernel.names == (stack.LAYERS, "embed", "mlp")


def test_dit_scanned_blocks_equal_the_loop():
  lay = layout_lib.build((0, 1), num_stages=2, height=8, width=8, patch=2,
                         history=1)
  kw = dict(token_dim=12, width=32, depth=3, num_heads=2, num_classes=4,
            freq_dim=16, max_positions=(2, 4, 4), segment_attention=True,
            remat="full")
  loop, scan = dit.DiT(**kw), dit.DiT(**kw, scan_layers=True)
  tokens = jax.random.normal(jax.random.key(0), (2, lay.length, 12))
  ts, labels = jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([[0, 1],
                                                                [2, 3]])
  valid = layout_lib.validity(lay, jnp.array([[1, 1], [0, 1]]))
  params = _randomised(_shapes(loop, tokens, lay, ts, labels, valid), 3)
  run = lambda m: lambda p: m.apply({"params": p}, tokens, lay, ts, labels,  # pylint: disable=g-long-lambda
                                    valid)
  _check_same(run(loop), run(scan), params, "block_", 3, "block_")
