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
commands then take the .npz files; their folders are created if needed.
"""

import importlib.util
import os
import sys
import tarfile
from typing import Dict, Mapping, Optional
import zipfile

from absl import app
from absl import flags
import numpy as np

from jaxgen import paths
from jaxgen.eval import inception
from jaxgen.eval import perceptual
from jaxgen.eval import stats as stats_lib

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


# What each input file should be, for the error messages.
INCEPTION_HINT = "pass pytorch-fid's pt_inception-2015-12-05-6726825d.pth"
VGG16_HINT = "pass torchvision's vgg16 ImageNet weights (vgg16-397923af.pth)"
HEADS_HINT = "pass lpips' weights/v0.1/vgg.pth"


def check_torch_file(path: str, hint: str) -> None:
  """Checks, without torch, that `path` looks like a torch checkpoint.

  A cheap look at the file's container (a zip archive holding `data.pkl`, or
  a pickle / tar file of the legacy format), so that a wrong file is reported
  before anything is converted and before torch is needed.

  Args:
    path: the .pth file.
    hint: what to pass instead, for the message ("pass ...").

  Raises:
    ValueError: one line if the file is missing, unreadable or of another
      format (a text file, an .npz).
  """
  try:
    with open(path, "rb") as f:
      head = f.read(1)
  except FileNotFoundError:
    raise ValueError(f"{path} not found; {hint}.") from None
  except OSError as e:
    raise ValueError(f"cannot read {path}: {e.strerror or e}; "
                     f"{hint}.") from None
  if zipfile.is_zipfile(path):
    # torch's zip format keeps the pickle at <name>/data.pkl; an .npz is a
    # zip archive too, of .npy files.
    with zipfile.ZipFile(path) as z:
      if any(n.endswith("data.pkl") for n in z.namelist()):
        return
    raise ValueError(f"{path} is not a torch checkpoint (a zip archive "
                     f"without data.pkl, e.g. an .npz); {hint}.")
  # The legacy format is a pickle (protocol >= 2 starts with 0x80), or a tar
  # archive in torch < 0.4.
  if head != b"\x80" and not tarfile.is_tarfile(path):
    raise ValueError(f"{path} is not a torch checkpoint (neither a zip "
                     f"archive nor a pickle); {hint}.")


def _torch_state(path: str, hint: str) -> Dict[str, np.ndarray]:
  """Reads a state dict of tensors as numpy arrays (one-line ValueErrors)."""
  check_torch_file(path, hint)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError("converting a .pth file needs torch: pip install -e "
                     "'.[parity]'.") from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    # torch reports a damaged or foreign file with whatever its unpickler
    # trips on (KeyError, RuntimeError, EOFError, UnpicklingError, ...).
    # The weights-only unpickler's cause follows a paragraph of advice.
    text = str(e).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    raise ValueError(f"{path} is not a torch checkpoint ({reason}); "
                     f"{hint}.") from None
  if not isinstance(state, Mapping):
    raise ValueError(f"{path} holds a {type(state).__name__}, not a state "
                     f"dict; {hint}.")
  bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
  if bad:
    raise ValueError(f"{path} is not a state dict of tensors ({bad[0]!r} is "
                     f"a {type(state[bad[0]]).__name__}); {hint}.")
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


def _check_flags() -> None:
  """Usage errors (status 2) for flags that come only in pairs."""
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  pairs = (("inception", "out", "inception_fid.npz"),
           ("vgg16", "lpips_out", "lpips_vgg.npz"))
  for src, dst, example in pairs:
    if getattr(FLAGS, src) and not getattr(FLAGS, dst):
      config_lib.usage_error(f"--{src} needs --{dst}=NPZ, the file to write "
                             f"(e.g. --{dst}={example}).")
    if getattr(FLAGS, dst) and not getattr(FLAGS, src):
      config_lib.usage_error(f"--{dst} is the output of --{src}; pass "
                             f"--{src}=PTH too.")
  if FLAGS.lpips_heads and not FLAGS.vgg16:
    config_lib.usage_error("--lpips_heads is used with --vgg16=PTH "
                           "--lpips_out=NPZ; pass those too.")
  if not FLAGS.inception and not FLAGS.vgg16:
    config_lib.usage_error("pass --inception=PTH --out=NPZ and/or "
                           "--vgg16=PTH --lpips_out=NPZ.")
  # An output over an input (or over the other output) would replace the
  # file it was converted from.
  real = lambda f: os.path.realpath(getattr(FLAGS, f))  # noqa: E731
  inputs = [f for f in ("inception", "vgg16", "lpips_heads")
            if getattr(FLAGS, f)]
  outs = [f for f in ("out", "lpips_out") if getattr(FLAGS, f)]
  for i, dst in enumerate(outs):
    for other in inputs + outs[:i]:
      if real(dst) == real(other):
        config_lib.usage_error(f"--{dst} and --{other} are the same file; "
                               f"pass another --{dst}.")


def main(argv):
  """Converts the given weight files (see the module docstring)."""
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  config_lib.check_no_arguments(argv)
  _check_flags()
  try:
    # Every input and output is checked before anything is converted, so a
    # bad second file does not leave the first one half done.
    heads = None
    if FLAGS.inception:
      check_torch_file(FLAGS.inception, INCEPTION_HINT)
      paths.prepare_output(FLAGS.out, "--out")
    if FLAGS.vgg16:
      check_torch_file(FLAGS.vgg16, VGG16_HINT)
      heads = FLAGS.lpips_heads or lpips_heads_path()
      if not heads:
        raise ValueError("the lpips package is not installed; pip install "
                         "lpips or pass --lpips_heads=vgg.pth.")
      check_torch_file(heads, HEADS_HINT)
      paths.prepare_output(FLAGS.lpips_out, "--lpips_out")
    # Both conversions before either file is written: weights that do not
    # fit fail the command without leaving half of its output behind.
    outputs = []
    if FLAGS.inception:
      flat = inception_from_torch(_torch_state(FLAGS.inception,
                                               INCEPTION_HINT))
      outputs.append((FLAGS.out, flat, ", weights hash "
                      f"{inception.weights_hash(flat)}"))
    if FLAGS.vgg16:
      flat = lpips_from_torch(_torch_state(FLAGS.vgg16, VGG16_HINT),
                              _torch_state(heads, HEADS_HINT))
      outputs.append((FLAGS.lpips_out, flat, ""))
    for path, flat, extra in outputs:
      stats_lib.save(path, flat)
      print(f"wrote {path}: {len(flat)} arrays{extra}")
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except OSError as e:
    # Writing the output failed after the checks (a full disk, say).
    print(f"error: cannot write the output: {e.strerror or e}; pass an "
          "--out / --lpips_out you can write to.", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  _define_flags()
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  # Flag errors are one `error:` line.
  app.run(main, flags_parser=config_lib.parse_flags)
