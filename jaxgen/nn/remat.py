"""Rematerialisation policies by name (the `remat` config field).

Transformer and ResBlock stacks are wrapped in `nn.remat` with the policy a
config names, trading backward-pass recomputation for activation memory.
"""

import inspect

import jax


def remat_policy(name: str):
  """The `jax.checkpoint` policy for a network's `remat` field.

  Args:
    name: "none" (keep activations), "full" (recompute everything in the
      backward pass) or the name of a `jax.checkpoint_policies` policy, e.g.
      "dots_with_no_batch_dims_saveable".

  Returns:
    False for "none", None (save nothing) for "full", else the policy.

  Raises:
    ValueError: an unknown name (one line, with the choices).
  """
  if name == "none":
    return False
  if name == "full":
    return None
  policy = getattr(jax.checkpoint_policies, name, None)
  if policy is None or name.startswith("_") or not _is_policy(policy):
    names = [n for n in dir(jax.checkpoint_policies)
             if not n.startswith("_")
             and _is_policy(getattr(jax.checkpoint_policies, n))]
    raise ValueError(f"config.remat={name!r} is not 'none', 'full' or a "
                     f"jax.checkpoint_policies policy ({', '.join(names)}).")
  return policy


def _is_policy(fn) -> bool:
  """A policy takes (prim, *args, **params); the factories among
  `jax.checkpoint_policies` (save_only_these_names(*names), ...) build one
  and failed only when the backward pass was traced."""
  try:
    params = list(inspect.signature(fn).parameters)
  except (TypeError, ValueError):
    return False
  return bool(params) and params[0] in ("prim", "_")
