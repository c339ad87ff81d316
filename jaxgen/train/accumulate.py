"""Gradient accumulation: micro-batches scanned inside one train step.

`config.grad_accum_steps = k` splits the global batch into k micro-batches
and runs the forward and backward pass on one at a time under `lax.scan`, so
activation memory is that of B/k examples while the update is that of the
whole batch (on CPU the scan is unrolled by default, see `unrolls`). Micro-batch i takes rows i, i+k, i+2k, ...: each device keeps
holding its own rows, so every micro-batch stays spread over all devices.
"""

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp


def micro_batches(tree: Any, k: int) -> Any:
  """[B, ...] leaves -> [k, B/k, ...] with micro-batch i = rows i::k."""
  def split(x):
    x = x.reshape((x.shape[0] // k, k) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(split, tree)


LOOPS = ("auto", "scan", "unroll")


def unrolls(loop: str = "auto") -> bool:
  """Whether the micro-batch loop is unrolled (`config.grad_accum_loop`).

  "auto" unrolls on CPU only: XLA:CPU runs convolutions inside a while-loop
  body several times slower than outside one (the `tiny` U-ViT step with
  k = 2 took 15x the time of k = 1; unrolled, 0.6x), and CPU runs are
  small. Accelerators keep the loop, whose point is that one micro-batch's
  activations are live at a time (unrolled, a k = 8 step needed 6x the
  temporary memory of the loop on CPU).

  Args:
    loop: "auto", "scan" or "unroll".

  Returns:
    True to unroll.

  Raises:
    ValueError: one line for another value.
  """
  if loop not in LOOPS:
    raise ValueError(f"config.grad_accum_loop={loop!r}: use one of "
                     f"{', '.join(map(repr, LOOPS))}.")
  if loop == "auto":
    return jax.default_backend() == "cpu"
  return loop == "unroll"


def accumulated(grad_fn: Callable[..., Tuple[Tuple[jax.Array, Any], Any]],
                params: Any, data: Any, rng: jax.Array, k: int,
                unroll: Optional[bool] = None
                ) -> Tuple[Tuple[jax.Array, Any], Any]:
  """`grad_fn` over the whole batch, computed k micro-batches at a time.

  Args:
    grad_fn: `(params, data, rng) -> ((loss, scalar_metrics), grads)`, a
      `jax.value_and_grad(..., has_aux=True)` of a loss that is a mean over
      the batch.
    params: parameters.
    data: pytree of per-example arrays (leading dim B, divisible by k), with
      all randomness of the step already drawn per example.
    rng: key for what remains (dropout); micro-batch i gets fold_in(rng, i).
    k: number of micro-batches.
    unroll: unroll the loop over micro-batches (default: `unrolls()`).

  Returns:
    ((loss, metrics), grads), each the mean over micro-batches: for equal
    micro-batches, the value over the whole batch.
  """
  if k == 1:
    return grad_fn(params, data, rng)
  micro = micro_batches(data, k)
  first = jax.tree.map(lambda x: x[0], micro)
  shapes = jax.eval_shape(grad_fn, params, first, rng)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

  def body(total, xs):
    i, batch = xs
    out = grad_fn(params, batch, jax.random.fold_in(rng, i))
    return jax.tree.map(lambda a, b: a + b.astype(jnp.float32) / k, total,
                        out), None

  if unroll is None:
    unroll = unrolls()
  total, _ = jax.lax.scan(body, zeros, (jnp.arange(k), micro),
                          unroll=bool(unroll))
  # Back to the dtypes grad_fn returns (e.g. bf16 parameters' grads).
  return jax.tree.map(lambda t, s: t.astype(s.dtype), total, shapes)
