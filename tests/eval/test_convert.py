"""The jaxgen.eval.convert command: its errors and the files it writes.

The checks of the input files' format and of the flags need no torch; the
conversions do (the parity extra) and skip without it. The weights are
zeros in pytorch-fid's names and shapes (nothing downloads).
"""

import os

import numpy as np
import pytest

from jaxgen.eval import convert
from jaxgen.eval import inception
from tests import parity
from tests.train import common

_BN_TORCH = {v: k for k, v in convert._BN.items()}  # pylint: disable=protected-access


def _torch_names(shapes):
  """pytorch-fid state-dict names and shapes of `inception` parameters."""
  state = {}
  for key, shape in shapes.items():
    scope, leaf = key.rsplit("/", 1)
    prefix = scope.replace("/", ".")
    if scope == "fc":
      state[f"fc.{'weight' if leaf == 'kernel' else 'bias'}"] = (
          shape[::-1] if leaf == "kernel" else shape)
    elif leaf == "kernel":
      h, w, i, o = shape
      state[f"{prefix}.conv.weight"] = (o, i, h, w)
    else:
      state[f"{prefix}.bn.{_BN_TORCH[leaf]}"] = shape
  return state


def _convert(*args):
  return common.run_module("jaxgen.eval.convert", *args)


def _one_error(proc, status):
  """The single `error:` line of a failed command (no traceback)."""
  assert proc.returncode == status, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  return lines[0]


@pytest.fixture
def files(tmp_path):
  """A text file, an .npz and a file that passes the cheap format check."""
  text = tmp_path / "junk.pth"
  text.write_text("not weights\n")
  npz = tmp_path / "stats.npz"
  np.savez(npz, mu=np.zeros(3))
  pickle_like = tmp_path / "pickle.pth"
  pickle_like.write_bytes(b"\x80\x02not really a pickle")
  return text, npz, pickle_like


def test_inception_names_round_trip_without_torch():
  shapes = inception.expected_shapes()
  state = {k: np.zeros(s, np.float32)
           for k, s in _torch_names(shapes).items()}
  flat = convert.inception_from_torch(state)
  assert {k: v.shape for k, v in flat.items()} == shapes


def test_files_that_are_not_torch_checkpoints_are_one_line(files, tmp_path):
  text, npz, _ = files
  out = tmp_path / "x.npz"
  for flag, bad in (("inception", text), ("inception", npz)):
    err = _one_error(_convert(f"--{flag}={bad}", f"--out={out}"), 1)
    assert f"{bad} is not a torch checkpoint" in err
    assert "pt_inception-2015-12-05" in err
  err = _one_error(_convert(f"--vgg16={text}", f"--lpips_out={out}",
                            f"--lpips_heads={text}"), 1)
  assert f"{text} is not a torch checkpoint" in err and "vgg16" in err
  err = _one_error(_convert(f"--inception={tmp_path}/missing.pth",
                            f"--out={out}"), 1)
  assert "missing.pth not found" in err
  assert not out.exists()


def test_unpaired_flags_are_usage_errors_before_any_conversion(files,
                                                                tmp_path):
  _, _, pth = files
  out = tmp_path / "x.npz"
  err = _one_error(_convert(f"--inception={pth}", f"--out={out}",
                            f"--vgg16={pth}"), 2)
  assert "--vgg16 needs --lpips_out" in err
  err = _one_error(_convert(f"--inception={pth}", f"--out={out}",
                            f"--lpips_out={tmp_path}/l.npz"), 2)
  assert "--lpips_out is the output of --vgg16" in err
  err = _one_error(_convert(f"--inception={pth}"), 2)
  assert "--inception needs --out" in err
  err = _one_error(_convert(f"--out={out}"), 2)
  assert "pass --inception=PTH too" in err
  assert "pass --inception=PTH" in _one_error(_convert(), 2)
  assert not out.exists()
  # An output over an input, or over the other output, would replace it.
  err = _one_error(_convert(f"--inception={pth}", f"--out={pth}"), 2)
  assert err == "error: --out and --inception are the same file; pass " + (
      "another --out.")
  err = _one_error(_convert(f"--inception={pth}", f"--out={out}",
                            f"--vgg16={pth}", f"--lpips_out={out}"), 2)
  assert "--lpips_out and --out are the same file" in err
  assert pth.read_bytes() == b"\x80\x02not really a pickle"


def test_an_unwritable_out_is_one_line(files, tmp_path):
  _, _, pth = files
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  err = _one_error(_convert(f"--inception={pth}",
                            f"--out={blocker}/sub/x.npz"), 1)
  assert "cannot create the folder of --out=" in err
  err = _one_error(_convert(f"--inception={pth}", f"--out={tmp_path}"), 1)
  assert "is a folder" in err


def test_torch_files_of_the_wrong_content_are_one_line(files, tmp_path):
  torch = parity.need("torch")
  _, _, pth = files
  # The unpickler's cause, without torch's paragraph of advice.
  with pytest.raises(ValueError, match=r"pickle.pth is not a torch "
                     r"checkpoint \(UnpicklingError: [^\n]{1,80}\); pass "
                     "pytorch-fid's"):
    convert._torch_state(str(pth), convert.INCEPTION_HINT)  # pylint: disable=protected-access
  tensor = tmp_path / "tensor.pth"
  torch.save(torch.zeros(3), tensor)
  with pytest.raises(ValueError, match="holds a Tensor, not a state dict"):
    convert._torch_state(str(tensor), convert.VGG16_HINT)  # pylint: disable=protected-access
  nested = tmp_path / "nested.pth"
  torch.save({"state_dict": {"a": torch.zeros(3)}}, nested)
  with pytest.raises(ValueError, match="'state_dict' is a dict"):
    convert._torch_state(str(nested), convert.VGG16_HINT)  # pylint: disable=protected-access


def test_converts_into_new_folders_at_exactly_the_named_path(tmp_path):
  torch = parity.need("torch")
  shapes = inception.expected_shapes()
  pth = tmp_path / "pt_inception.pth"
  gen = torch.Generator().manual_seed(0)
  torch.save({k: torch.randn(s, generator=gen) * 0.01
              for k, s in _torch_names(shapes).items()}, pth)
  out = tmp_path / "new" / "dir" / "inception_fid"  # No .npz suffix.
  proc = _convert(f"--inception={pth}", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"wrote {out}: {len(shapes)} arrays" in proc.stdout
  assert os.listdir(out.parent) == ["inception_fid"]
  params, weights_hash = inception.load_weights(str(out))
  assert weights_hash in proc.stdout and params
