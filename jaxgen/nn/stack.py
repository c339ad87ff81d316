"""Stacks of identical blocks: a Python loop, or one `nn.scan` over layers.

Unrolled, a 36-block transformer is traced, lowered and compiled 36 times
over; scanned, its block is compiled once and the compile time stays flat
in depth (MaxText's `scan_layers`). The scanned stack's parameters carry a
leading "layers" axis (logical name `LAYERS`, replicated by the default
rules), so a checkpoint of one layout does not restore into the other.

  x = stack.apply(TransformerBlock, dict(num_heads=8, ...), x, (cond,),
                  depth=36, scan=True, remat="full", name="transformer",
                  static=(train,))
"""

from typing import Any, Dict, Sequence, Tuple, Type

import flax.linen as nn
import jax

from jaxgen.nn import remat as remat_lib

# Logical name of the stacked-layer axis of scanned parameters.
LAYERS = "layers"


class _Body(nn.Module):
  """One block as a scan body: (x, *args) -> (block(x, *args, *static),
  None)."""
  block_cls: Type[nn.Module]
  block_kwargs: Dict[str, Any]
  static: Tuple[Any, ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array, *args) -> Tuple[jax.Array, None]:
    block = self.block_cls(**self.block_kwargs, name="block")
    return block(x, *args, *self.static), None


def apply(block_cls: Type[nn.Module],
          block_kwargs: Dict[str, Any], x: jax.Array, args: Sequence[Any], *,
          depth: int, scan: bool, remat: str, name: str,
          static: Sequence[Any] = ()) -> jax.Array:
  """Applies `depth` blocks in sequence: x = block(x, *args, *static).

  Must be called inside a compact method: the blocks become children of
  the module whose method runs.

  Args:
    block_cls: the block module class.
    block_kwargs: its constructor arguments (the same for every layer).
    x: the carried activations.
    args: per-call arrays shared by every layer (pytrees of arrays or None).
    depth: number of blocks.
    scan: one `nn.scan` over layers (parameters under `name`/block with a
      leading `LAYERS` axis) instead of a loop (parameters under
      `name`0 .. `name`{depth-1}).
    remat: rematerialisation policy name (`jaxgen.nn.remat`).
    name: parameter name (scan) or prefix (loop).
    static: trailing call arguments that are hashable Python values (e.g.
      `train`, spans), passed unchanged to every block.

  Returns:
    The stack's output, shaped like `x`.
  """
  policy = remat_lib.remat_policy(remat)
  static = tuple(static)
  if not scan:
    cls = block_cls
    if policy is not False:
      # Positions of `static` in the call, counting the module itself.
      first = 2 + len(args)
      cls = nn.remat(block_cls, policy=policy,
                     static_argnums=tuple(range(first, first + len(static))))
    for i in range(depth):
      x = cls(**block_kwargs, name=f"{name}{i}")(x, *args, *static)
    return x
  # Inside a scan, CSE cannot merge the recomputation across iterations,
  # so remat need not prevent it (flax's advice for scanned remat).
  body_cls = (nn.remat(_Body, policy=policy, prevent_cse=False)
              if policy is not False else _Body)
  scanned = nn.scan(
      body_cls, variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=(nn.broadcast,) * len(args), length=depth,
      metadata_params={nn.PARTITION_NAME: LAYERS})
  x, _ = scanned(block_cls, dict(block_kwargs), static, name=name)(x, *args)
  return x
