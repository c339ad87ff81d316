"""Tests of attention, the MLP, the ResBlock and the transformer block."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.nn import attention
from jaxgen.nn import mlp
from jaxgen.nn import partitioning as pt
from jaxgen.nn import resblock
from jaxgen.nn import transformer


def _init(module, *args):
  """Jitted init (one compile is much cheaper than op-by-op dispatch)."""
  return jax.jit(module.init)(jax.random.key(0), *args)


def _apply(module, variables, *args, **kwargs):
  return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


def _names(boxed):
  leaves = jax.tree_util.tree_leaves_with_path(
      boxed, is_leaf=lambda a: isinstance(a, nn.LogicallyPartitioned))
  return {jax.tree_util.keystr(k): leaf for k, leaf in leaves}


def test_dot_product_attention_matches_naive_and_masks():
  key = jax.random.key(0)
  q, k, v = jax.random.normal(key, (3, 2, 5, 2, 4))
  attend = jax.jit(attention.dot_product_attention)
  out = attend(q, k, v)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  np.testing.assert_allclose(out, np.einsum("bhqk,bkhd->bqhd", w, v),
                             atol=1e-5)
  # A causal mask makes position 0 attend only to itself.
  mask = jnp.tril(jnp.ones((5, 5), bool))
  out = attend(q, k, v, mask)
  np.testing.assert_allclose(out[:, 0], v[:, 0], atol=1e-6)


def test_attention_qk_norm_names_and_scale_invariance():
  x = jax.random.normal(jax.random.key(1), (2, 6, 16))
  layer = attention.MultiHeadAttention(num_heads=2)
  boxed = _init(layer, x)
  names = _names(boxed)
  assert names["['params']['query']['kernel']"].names == (pt.EMBED, pt.HEADS,
                                                          pt.KV)
  assert names["['params']['out']['kernel']"].names == (pt.HEADS, pt.KV,
                                                        pt.EMBED)
  assert names["['params']['q_norm']['scale']"].names == (pt.KV,)
  v = nn.unbox(boxed)
  # With QK-norm the attention weights ignore the scale of q and k, so
  # scaling x only scales the (linear) value path.
  y1 = _apply(layer, v, x)
  y2 = _apply(layer, v, 10.0 * x)
  np.testing.assert_allclose(y2, 10.0 * y1, rtol=1e-3, atol=1e-4)


def test_zero_init_blocks_are_identity():
  x = jax.random.normal(jax.random.key(2), (2, 4, 4, 8))
  cond = jax.random.normal(jax.random.key(3), (2, 6))
  block = resblock.ResBlock(8, dropout_rate=0.5, zero_init=True)
  v = nn.unbox(_init(block, x, cond))
  np.testing.assert_allclose(_apply(block, v, x, cond), x)
  tokens = x.reshape(2, 16, 8)
  tblock = transformer.TransformerBlock(2, 16, zero_init=True)
  v = nn.unbox(_init(tblock, tokens, cond))
  np.testing.assert_allclose(_apply(tblock, v, tokens, cond), tokens)


def test_resblock_uses_cond_and_projects_skip():
  x = jax.random.normal(jax.random.key(4), (2, 4, 4, 8))
  block = resblock.ResBlock(12, zero_init=False, num_groups=4)
  cond = jax.random.normal(jax.random.key(5), (2, 6))
  boxed = _init(block, x, cond)
  names = _names(boxed)
  assert names["['params']['film']['kernel']"].names == (pt.COND, None,
                                                         pt.CONV_OUT)
  assert names["['params']['skip']['kernel']"].names[2:] == (pt.CONV_IN,
                                                             pt.CONV_OUT)
  v = nn.unbox(boxed)
  y = _apply(block, v, x, cond)
  assert y.shape == (2, 4, 4, 12)
  assert not np.allclose(y, _apply(block, v, x, 2 * cond))


def test_mlp_film_and_dropout():
  x = jax.random.normal(jax.random.key(6), (2, 5, 8))
  cond = jax.random.normal(jax.random.key(7), (2, 4))
  layer = mlp.Mlp(32, dropout_rate=0.5)
  boxed = _init(layer, x, cond)
  assert _names(boxed)["['params']['film']['kernel']"].names == (
      pt.COND, None, pt.MLP)
  v = nn.unbox(boxed)
  y = _apply(layer, v, x, cond)
  assert not np.allclose(y, _apply(layer, v, x, -cond))
  # Eval is deterministic; train draws a dropout mask.
  np.testing.assert_array_equal(y, _apply(layer, v, x, cond, train=False))
  y_train = _apply(layer, v, x, cond, train=True,
                   rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(y, y_train)


def test_attention_implementations_agree_with_the_einsum_reference():
  """`jax.nn.dot_product_attention` (auto / xla) equals the explicit einsum,
  forward and gradients, with a mask."""
  q, k, v = jax.random.normal(jax.random.key(1), (3, 2, 7, 3, 8))
  mask = jax.random.bernoulli(jax.random.key(2), 0.7, (2, 1, 7, 7))
  mask = mask | jnp.eye(7, dtype=bool)  # every query sees something

  def loss(impl, q, k, v):
    out = attention.attend(q, k, v, mask, impl)
    return jnp.sum(jnp.sin(out)), out

  ref_grads, ref = jax.jit(jax.grad(functools.partial(loss, "einsum"),
                                    argnums=(0, 1, 2), has_aux=True))(q, k, v)
  for impl in ("auto", "xla"):
    grads, out = jax.jit(jax.grad(functools.partial(loss, impl),
                                  argnums=(0, 1, 2), has_aux=True))(q, k, v)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
      np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_bf16_attention_logits_are_float32_in_every_impl():
  # The einsum rounded q·k to bf16 before its float32 softmax: at logits up
  # to ~20 its error against float32 was 3x that of jax's attention.
  key = jax.random.split(jax.random.key(4), 3)
  q, k, v = (jax.random.normal(kk, (1, 512, 2, 64)) for kk in key)
  # QK-normed heads with a learned gain of 2: logits up to ~20.
  q, k = (x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True)) * 2.0
          for x in (q, k))
  ref = attention.attend(q, k, v, None, "einsum")  # float32
  err = {}
  for impl in ("einsum", "xla"):
    out = attention.attend(*(a.astype(jnp.bfloat16) for a in (q, k, v)),
                           None, impl)
    assert out.dtype == jnp.bfloat16
    err[impl] = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref)))
  assert err["einsum"] <= 1.2 * err["xla"], err


def test_attention_impl_errors_are_one_line():
  for impl, match in (("flash", "choose one of auto, xla, cudnn, einsum"),
                      ("cudnn", "needs a GPU backend")):
    try:
      attention.check_impl(impl)
    except ValueError as e:
      assert match in str(e) and "\n" not in str(e)
    else:
      raise AssertionError(f"{impl} was accepted on {jax.default_backend()}")
  attention.check_impl("auto")
  attention.check_impl("auto", jnp.float32, 36)


def test_cudnn_attention_needs_what_its_kernel_takes(monkeypatch):
  # On a GPU, what cuDNN's kernel takes (jax refused float32 and odd head
  # dims only while tracing, naming no config field); off one, the backend
  # is said first.
  with pytest.raises(ValueError, match="needs a GPU backend"):
    attention.check_impl("cudnn", jnp.float32, 36)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  with pytest.raises(ValueError, match=(
      r"^config.model.attention_impl='cudnn' runs bf16 or float16 only; the "
      r"model computes in float32 \(config.dtype\)")):
    attention.check_impl("cudnn", jnp.float32, 64)
  with pytest.raises(ValueError, match="multiple of 8 up to 256 .* is 36"):
    attention.check_impl("cudnn", jnp.bfloat16, 36)
  attention.check_impl("cudnn", jnp.bfloat16, 64)


def test_transformer_block_attention_impls_agree():
  x = jax.random.normal(jax.random.key(3), (2, 6, 16))
  blocks = [transformer.TransformerBlock(2, 32, zero_init=False,
                                         attention_impl=impl)
            for impl in ("einsum", "auto")]
  variables = _init(blocks[0], x)
  outs = [_apply(b, variables, x) for b in blocks]
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
