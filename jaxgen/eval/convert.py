r"""Converts PyTorch weight files into the .npz files jaxgen's metrics load.

  python -m jaxgen.eval.convert \
      --inception=pt_inception-2015-12-05-6726825d.pth --out=inception_fid.npz
  python -m jaxgen.eval.convert --vgg16=vgg16-397923af.pth \
      --lpips_out=lpips_vgg.npz

The Inception file is pytorch-fid's FID weights (the TF 2015-12-05 graph);
the VGG16 file is torchvision's ImageNet `vgg16` weights, and LPIPS' linear
heads are read from the `lpips` package's own `weights/v0.1/vgg.pth` (or
--lpips_heads). torch is needed for this step only (`pip install -e
'.[parity]'`). Nothing is downloaded: pass the files you have. The metric
commands then take the .npz files.
"""

import importlib.util
import os
import sys
from typing import Dict, Mapping, Optional

from absl import app
from absl import flags
import numpy as np

from jaxgen.eval import inception
from jaxgen.eval import perceptual

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


def lpips_from_torch(vgg_state: Mapping[str, "np.ndarray"],
                     heads: Mapping[str, "np.ndarray"]
                     ) -> Dict[str, np.ndarray]:
  """Maps torchvision's vgg16 and lpips' VGG heads to `perceptual` names.

  Args:
    vgg_state: torchvision vgg16 state dict ("features.0.weight", ...; the
      classifier is ignored).
    heads: lpips' v0.1 vgg.pth ("lin0.model.1.weight", ...).

  Returns:
    The flat {"vgg/features_0/kernel": ..., "lin0": ...} dict
    `perceptual.load_weights` reads.

  Raises:
    ValueError: missing or misshapen arrays.
  """
  flat = {}
  for key, value in vgg_state.items():
    parts = key.split(".")
    if parts[0] != "features":
      continue
    value = np.asarray(value, np.float32)
    name = f"vgg/features_{parts[1]}/"
    if parts[2] == "weight":
      flat[name + "kernel"] = value.transpose(2, 3, 1, 0)
    else:
      flat[name + "bias"] = value
  for key, value in heads.items():
    flat[key.split(".")[0]] = np.asarray(value, np.float32).reshape(-1)
  want = perceptual.expected_shapes()
  bad = sorted(k for k in want if k not in flat or flat[k].shape != want[k])
  if bad:
    raise ValueError(f"not VGG16 / LPIPS-VGG weights: e.g. {bad[0]} is "
                     "missing or misshapen.")
  return {k: flat[k] for k in want}


def lpips_heads_path() -> Optional[str]:
  """The v0.1 VGG heads inside the installed `lpips` package, if any."""
  spec = importlib.util.find_spec("lpips")
  if spec is None or not spec.origin:
    return None
  path = os.path.join(os.path.dirname(spec.origin), "weights", "v0.1",
                      "vgg.pth")
  return path if os.path.exists(path) else None


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
  flags.DEFINE_string("out", None, "Output .npz of --inception.")
  flags.DEFINE_string("vgg16", None, "torchvision's vgg16 ImageNet weights "
                      "(vgg16-397923af.pth), for LPIPS.")
  flags.DEFINE_string("lpips_heads", None, "LPIPS v0.1 vgg.pth (default: the "
                      "one inside the installed lpips package).")
  flags.DEFINE_string("lpips_out", None, "Output .npz of --vgg16.")


def main(argv):
  del argv
  try:
    if not (FLAGS.inception and FLAGS.out) and not (FLAGS.vgg16 and
                                                    FLAGS.lpips_out):
      raise ValueError("pass --inception=PTH --out=NPZ and/or --vgg16=PTH "
                       "--lpips_out=NPZ.")
    if FLAGS.inception:
      flat = inception_from_torch(_torch_state(FLAGS.inception))
      np.savez(FLAGS.out, **flat)
      print(f"wrote {FLAGS.out}: {len(flat)} arrays, weights hash "
            f"{inception.weights_hash(flat)}")
    if FLAGS.vgg16:
      heads = FLAGS.lpips_heads or lpips_heads_path()
      if not heads:
        raise ValueError("the lpips package is not installed; pip install "
                         "lpips or pass --lpips_heads=vgg.pth.")
      flat = lpips_from_torch(_torch_state(FLAGS.vgg16), _torch_state(heads))
      np.savez(FLAGS.lpips_out, **flat)
      print(f"wrote {FLAGS.lpips_out}: {len(flat)} arrays")
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  _define_flags()
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  # Flag errors are one `error:` line.
  app.run(main, flags_parser=config_lib.parse_flags)
