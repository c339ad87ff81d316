r"""IsoFLOP sweep specs for plain (full-resolution) flow matching: the
pyramidal-flow sweep's ladder, budgets and presets (`cpu`, `tiny`, `paper`;
see configs/scaling/pyramidal_flow.py) with the family's `baseline` option.

  python -m scaling.run --sweep=configs/scaling/flow_matching.py:cpu \
      --workdir=workdirs/scaling_fm --parallel=2
"""

import importlib.util
import os

import ml_collections


def _sibling(name: str):
  """configs/scaling/<name>.py by path: `from configs.scaling import ...`
  failed when a sweep was started outside the repository root."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_jaxgen_spec_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


pyramidal_flow = _sibling("pyramidal_flow")

PRESETS = pyramidal_flow.PRESETS


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the sweep spec for `arg` = "preset"."""
  return pyramidal_flow.build(arg, "flow_matching")
