"""Gradient accumulation: scanned and unrolled loops give the batch's update."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.train import accumulate


def _grad_fn(params, data, rng):
  del rng
  def loss(p):
    err = data["x"] @ p["w"] - data["y"]
    return jnp.mean(err ** 2), {"abs": jnp.mean(jnp.abs(err))}
  return jax.value_and_grad(loss, has_aux=True)(params)


@pytest.mark.parametrize("unroll", [False, True])
def test_micro_batches_give_the_whole_batch_gradient(unroll):
  rng = np.random.default_rng(0)
  data = {"x": jnp.asarray(rng.normal(size=(12, 3)), jnp.float32),
          "y": jnp.asarray(rng.normal(size=(12,)), jnp.float32)}
  params = {"w": jnp.asarray([0.5, -1.0, 2.0], jnp.float32)}
  fn = jax.jit(functools.partial(accumulate.accumulated, _grad_fn, k=3,
                                 unroll=unroll))
  (loss, aux), grads = fn(params, data, jax.random.key(0))
  (ref_loss, ref_aux), ref = _grad_fn(params, data, None)
  # By hand: d/dw mean((xw - y)^2) = 2 x^T (xw - y) / n.
  x, y = np.asarray(data["x"]), np.asarray(data["y"])
  by_hand = 2 * x.T @ (x @ np.asarray(params["w"]) - y) / len(y)
  np.testing.assert_allclose(grads["w"], by_hand, rtol=1e-5)
  np.testing.assert_allclose(grads["w"], ref["w"], rtol=1e-5)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  np.testing.assert_allclose(aux["abs"], ref_aux["abs"], rtol=1e-6)
  # The scanned program keeps a loop (one micro-batch live at a time); the
  # unrolled one has none.
  hlo = fn.lower(params, data, jax.random.key(0)).as_text()
  assert ("while" in hlo) != unroll



@pytest.mark.parametrize("unroll", [False, True])
def test_each_micro_batch_gets_its_rows_and_its_own_key(unroll):
  # Micro-batch i takes rows i::k (they stay on the device that holds them)
  # and the key fold_in(rng, i): a shared dropout key, or another split,
  # gives the same mean-squared gradient and went unnoticed.
  k, rng = 3, jax.random.key(7)
  data = {"row": jnp.arange(12, dtype=jnp.float32)}

  def grad_fn(params, batch, key):
    del params
    noise = jax.random.uniform(key, ())
    # "Loss" records which rows and which key each micro-batch saw.
    return (jnp.float32(0), {"rows": batch["row"], "noise": noise}), {}

  fn = jax.jit(functools.partial(accumulate.accumulated, grad_fn, k=k,
                                 unroll=unroll))
  (_, aux), _ = fn({}, data, rng)
  # Means over micro-batches of each one's rows and key draws.
  want_rows = np.mean([np.arange(12)[i::k] for i in range(k)], axis=0)
  want_noise = np.mean([float(jax.random.uniform(jax.random.fold_in(rng, i),
                                                 ())) for i in range(k)])
  np.testing.assert_allclose(aux["rows"], want_rows, rtol=1e-6)
  np.testing.assert_allclose(aux["noise"], want_noise, rtol=1e-6)
  assert not np.isclose(want_noise, float(jax.random.uniform(rng, ())))


def test_loop_choice():
  assert accumulate.unrolls("unroll") and not accumulate.unrolls("scan")
  # "auto": unrolled where XLA:CPU would run the loop body slowly.
  assert accumulate.unrolls("auto") == (jax.default_backend() == "cpu")
  with pytest.raises(ValueError, match="grad_accum_loop='while'"):
    accumulate.unrolls("while")
