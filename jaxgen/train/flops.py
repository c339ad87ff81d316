"""FLOP accounting: device peaks, MFU, and XLA's own counts for cross-checks.

Each objective reports analytic training FLOPs per example; the trainer turns
them into TFLOP/s per device and MFU (model FLOPs utilisation) where the
device's dense bf16 peak is known. Peaks (per JAX device) from
`references/scaling_laws.md` (levanter's flop_utils and MaxText docs).
"""

import math
from typing import Any, Callable, Dict, Optional

import jax
from jax.extend import core as jax_core

# Dense bf16 peak FLOP/s per JAX device, matched against `device.device_kind`
# (lower-cased) by substring, first match wins: more specific names first
# (None: a kind known not to be the generic one after it, peak unknown).
PEAK_BF16_FLOPS = (
    ("v6 lite", 918e12),  # TPU v6e reports "TPU v6 lite".
    ("v6e", 918e12),
    ("v5 lite", 197e12),  # TPU v5e reports "TPU v5 lite".
    ("v5e", 197e12),
    ("v5p", 459e12),
    ("tpu v5", 459e12),
    ("v4 lite", None),    # TPU v4i (inference): not the v4's 275.
    ("tpu v4", 275e12),
    ("h100 pcie", 756.5e12),
    # NVL parts (2 x 400 W boards): half the datasheet's 1,671 with sparsity.
    ("h100 nvl", 835.5e12),
    ("h200 nvl", 835.5e12),
    ("h100", 989.5e12),   # SXM / HBM3.
    ("h200", 989.5e12),   # Same compute die as H100 SXM.
    ("a100", 312e12),
)


def peak_flops_per_device(device: Optional[jax.Device] = None
                          ) -> Optional[float]:
  """Dense bf16 peak FLOP/s of `device`, or None if unknown (e.g. CPU)."""
  device = device or jax.devices()[0]
  return peak_flops_for_kind(device.device_kind)


def peak_flops_for_kind(kind: str) -> Optional[float]:
  """Dense bf16 peak FLOP/s of a device kind ("TPU v5p", "H100"), or None.

  Args:
    kind: a `device.device_kind` string (any case).

  Returns:
    The first `PEAK_BF16_FLOPS` entry whose pattern `kind` contains.
  """
  kind = kind.lower()
  for pattern, peak in PEAK_BF16_FLOPS:
    if pattern in kind:
      return peak
  return None


def throughput(flops_per_example: float, examples_per_sec: float,
               num_devices: int,
               peak: Optional[float]) -> Dict[str, Any]:
  """TFLOP/s per device and MFU ("unknown" where the peak is unknown).

  Args:
    flops_per_example: analytic training FLOPs per example.
    examples_per_sec: global examples per second.
    num_devices: devices in the job.
    peak: peak FLOP/s per device, or None.

  Returns:
    {"tflops_per_device": float, "mfu": float or "unknown"}.
  """
  per_device = flops_per_example * examples_per_sec / num_devices
  return {"tflops_per_device": per_device / 1e12,
          "mfu": per_device / peak if peak else "unknown"}


def compiled_flops(compiled: Any) -> float:
  """FLOPs of a compiled computation from XLA's cost analysis.

  Args:
    compiled: the result of `jax.jit(f).lower(...).compile()`.

  Returns:
    The 'flops' entry (summed over entries if a list is returned).
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, dict):
    analysis = [analysis]
  return float(sum(a.get("flops", 0.0) for a in analysis if a))


def memory_summary(compiled: Any) -> Dict[str, int]:
  """Per-device bytes of a compiled computation (empty if not reported).

  Args:
    compiled: a compiled jax computation.

  Returns:
    Dict with argument / output / temp / alias / code bytes and `total`.
  """
  try:
    mem = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not all backends)
    return {}
  if mem is None:
    return {}
  fields = ("argument_size_in_bytes", "output_size_in_bytes",
            "temp_size_in_bytes", "alias_size_in_bytes",
            "generated_code_size_in_bytes")
  out = {f.replace("_size_in_bytes", "_bytes"): int(getattr(mem, f, 0) or 0)
         for f in fields}
  out["total_bytes"] = (out["argument_bytes"] + out["output_bytes"] +
                        out["temp_bytes"] - out["alias_bytes"])
  return out


def memory_line(mem: Dict[str, int]) -> str:
  """`memory_summary` for a log line: "236 MiB (arguments 8 MiB, outputs
  8 MiB of which 8 MiB donated, temporaries 228 MiB)", or "not reported".

  Args:
    mem: a `memory_summary`.

  Returns:
    The text.
  """
  if not mem:
    return "not reported"
  mib = lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
  return (f"{mib(mem['total_bytes'])} (arguments {mib(mem['argument_bytes'])},"
          f" outputs {mib(mem['output_bytes'])} of which "
          f"{mib(mem['alias_bytes'])} donated, temporaries "
          f"{mib(mem['temp_bytes'])})")


def _eqn_matmul_flops(eqn) -> float:
  """2 x MACs of one dot_general / conv_general_dilated equation (else 0)."""
  name = eqn.primitive.name
  if name == "dot_general":
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    (lc, rc), (lb, _) = eqn.params["dimension_numbers"]
    contract = math.prod(lhs[i] for i in lc)
    batch = math.prod(lhs[i] for i in lb)
    free_l = math.prod(lhs) // (contract * batch)
    free_r = math.prod(rhs) // (contract * batch)
    return 2.0 * batch * contract * free_l * free_r
  if name == "conv_general_dilated":
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    out = eqn.outvars[0].aval.shape
    dn = eqn.params["dimension_numbers"]
    pairs = 1  # (output position, kernel tap) pairs, per spatial dim.
    for d, (lo, _) in enumerate(eqn.params["padding"]):
      n_in, n_out = lhs[dn.lhs_spec[2 + d]], out[dn.out_spec[2 + d]]
      k, stride = rhs[dn.rhs_spec[2 + d]], eqn.params["window_strides"][d]
      if stride == 1:  # Taps on padding are skipped (as XLA counts them).
        pairs *= sum(min(n_out, n_in + lo - j) - max(0, lo - j)
                     for j in range(k))
      else:  # Strided: every tap counts (as XLA counts them).
        pairs *= n_out * k
    batch = out[dn.out_spec[0]] * out[dn.out_spec[1]]
    return 2.0 * batch * pairs * rhs[dn.rhs_spec[1]]
  return 0.0


def matmul_flops(fn: Callable[..., Any], *args: Any) -> float:
  """FLOPs of every matmul and convolution `fn(*args)` traces to.

  An analytic count from the program itself (2 x MACs of each dot_general
  and conv, recursing into nested jaxprs), independent of XLA's cost
  analysis, for models whose per-layer formula would repeat their code.
  Stride-1 convolutions count only taps inside the input (padding taps are
  skipped, as XLA counts them); a scan's body counts once per iteration;
  elementwise ops, norms and softmax are not counted.

  Args:
    fn: the function (e.g. a model's forward pass).
    *args: example arguments (arrays or ShapeDtypeStructs).

  Returns:
    FLOPs of one call.

  Raises:
    ValueError: `fn` holds a while loop.
  """
  def walk(jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
      total += _eqn_matmul_flops(eqn)
      if eqn.primitive.name == "while":
        # Its trip count is a runtime value: a count would be a guess.
        raise ValueError("matmul_flops cannot count a while loop (its trip "
                         "count is not in the program); count it by formula.")
      # A scan's body runs `length` times (the scanned block stacks).
      times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
      for sub in jax_core.jaxprs_in_params(eqn.params):
        total += times * walk(sub)
    return total
  return walk(jax.make_jaxpr(fn)(*args).jaxpr)
