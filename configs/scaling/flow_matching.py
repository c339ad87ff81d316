r"""IsoFLOP sweep specs for plain (full-resolution) flow matching: the
pyramidal-flow sweep's ladder, budgets and presets (`cpu`, `tiny`, `paper`;
see configs/scaling/pyramidal_flow.py) with the family's `baseline` option.

  python -m scaling.run --sweep=configs/scaling/flow_matching.py:cpu \
      --workdir=workdirs/scaling_fm --parallel=2
"""

import ml_collections

from configs.scaling import pyramidal_flow

PRESETS = pyramidal_flow.PRESETS


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """Returns the sweep spec for `arg` = "preset"."""
  return pyramidal_flow.build(arg, "flow_matching")
