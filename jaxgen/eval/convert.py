r"""Converts PyTorch weight files into the .npz files jaxgen's metrics load.

  python -m jaxgen.eval.convert \
      --inception=pt_inception-2015-12-05-6726825d.pth --out=inception_fid.npz

The Inception file is pytorch-fid's FID weights (the TF 2015-12-05 graph);
torch is needed for this step only (`pip install -e '.[parity]'`). Nothing is
downloaded: pass the file you have. Every other command then takes
`--weights=inception_fid.npz`.
"""

import sys
from typing import Dict, Mapping

from absl import app
from absl import flags
import numpy as np

from jaxgen.eval import inception

_BN = {"weight": "bn_scale", "bias": "bn_bias", "running_mean": "bn_mean",
       "running_var": "bn_var"}


def inception_from_torch(state: Mapping[str, "np.ndarray"]
                         ) -> Dict[str, np.ndarray]:
  """Maps pytorch-fid's FID Inception state dict to `inception` names.

  Args:
    state: name -> array (torch tensors converted with `.numpy()`).

  Returns:
    The flat {"Mixed_5b/branch1x1/kernel": ...} dict `inception.load_weights`
    reads: conv kernels OIHW -> HWIO, batch norm scale / bias / running
    statistics, the fc layer transposed.

  Raises:
    ValueError: a key the FID Inception does not have, or a missing one.
  """
  flat = {}
  for key, value in state.items():
    value = np.asarray(value, np.float32)
    parts = key.split(".")
    if parts[-1] == "num_batches_tracked":
      continue
    if parts[0] == "fc":
      flat[f"fc/{'kernel' if parts[1] == 'weight' else 'bias'}"] = (
          value.T if parts[1] == "weight" else value)
    elif len(parts) >= 3 and parts[-2] == "conv" and parts[-1] == "weight":
      flat["/".join(parts[:-2]) + "/kernel"] = value.transpose(2, 3, 1, 0)
    elif len(parts) >= 3 and parts[-2] == "bn" and parts[-1] in _BN:
      flat["/".join(parts[:-2]) + "/" + _BN[parts[-1]]] = value
    else:
      raise ValueError(f"unexpected weight {key!r}: is this pytorch-fid's "
                       "pt_inception-2015-12-05 file?")
  want = inception.expected_shapes()
  missing = sorted(set(want) - set(flat))
  bad = sorted(k for k in want if k in flat and flat[k].shape != want[k])
  if missing or bad:
    raise ValueError(f"not the FID Inception weights: {len(missing)} missing "
                     f"and {len(bad)} misshapen arrays, e.g. "
                     f"{(missing + bad)[0]}.")
  return flat


def _torch_state(path: str) -> Dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError("converting a .pth file needs torch: pip install -e "
                     "'.[parity]'.") from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError:
    raise ValueError(f"{path} not found; pass the .pth file.") from None
  return {k: v.detach().cpu().numpy() for k, v in state.items()}


FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("inception", None, "pytorch-fid's "
                      "pt_inception-2015-12-05-6726825d.pth.")
  flags.DEFINE_string("out", None, "Output .npz.")


def main(argv):
  del argv
  try:
    if not FLAGS.inception or not FLAGS.out:
      raise ValueError("pass --inception=PTH and --out=NPZ.")
    flat = inception_from_torch(_torch_state(FLAGS.inception))
    np.savez(FLAGS.out, **flat)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"wrote {FLAGS.out}: {len(flat)} arrays, weights hash "
        f"{inception.weights_hash(flat)}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
