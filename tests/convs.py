"""Which convolutions a traced function leaves to XLA (`lax`)."""

import jax


def lax_convs(fn, *args):
  """(kernel spatial shape, window strides) of every `conv_general_dilated`
  in the jaxpr of fn(*args), sub-jaxprs included."""
  found = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if str(eqn.primitive) == "conv_general_dilated":
        kernel = eqn.invars[1].aval.shape
        found.append((tuple(kernel[:-2]), tuple(eqn.params["window_strides"])))
      # Sub-jaxprs (pjit, custom_vjp, ...), closed or not: duck-typed, as
      # the classes moved between jax versions.
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          sub = getattr(sub, "jaxpr", sub)
          if hasattr(sub, "eqns"):
            visit(sub)

  visit(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def only_1x1_strided_or_temporal(convs) -> bool:
  """True when no dense stride-1 3x3 (2-D) conv is left: what remains is
  1x1, strided or a (k, 1, 1) temporal conv."""
  return all(k == (1, 1) or s == (2, 2) or len(k) == 3 for k, s in convs)
