"""Imports for the parity tests against PyTorch reference implementations.

They need the `parity` extra (torch, torchvision, pytorch-fid, lpips,
diffusers); without it the tests skip with the reason. The registry's
torchvision is a CUDA build whose meta registrations fail next to the CPU
torch wheel (`operator torchvision::nms does not exist`); the architectures
used here are pure Python, so an empty module stands in for them.
"""

import importlib
import sys
import types

import pytest

REASON = "needs the parity extra (pip install -e '.[parity]')"


def need(module: str):
  """Imports `module` (torch-based) or skips the test with the reason."""
  pytest.importorskip("torch", reason=REASON)
  sys.modules.setdefault("torchvision._meta_registrations",
                         types.ModuleType("torchvision._meta_registrations"))
  pytest.importorskip(module.split(".")[0], reason=REASON)
  return importlib.import_module(module)
