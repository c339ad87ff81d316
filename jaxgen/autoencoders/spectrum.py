r"""Blockwise DCT spectra of images and of an autoencoder's latents.

  python -m jaxgen.autoencoders.spectrum --workdir=AE_RUN --data=jaxgen_shapes \
      --image_size=64 --num=256 --out=DIR

The diffusability paper (Skorokhodov et al. 2025) argues that latents with
more high-frequency energy than the images they encode are harder to
diffuse. This tool measures it: every channel is cut into 8 x 8 blocks, each
block gets an orthonormal 2-D DCT-II (scipy), and amplitudes |coefficient|
are averaged over blocks, channels and images, in JPEG zig-zag order. The
high-frequency energy fraction is the share of the non-DC energy (squared
coefficients) in the upper half of the zig-zag order (indices 32..63).
Writes DIR/spectrum.png (both spectra, log scale) and DIR/spectrum.json.
"""

import json
import os
import sys
from typing import Dict, List

from absl import app
from absl import flags
import numpy as np
from scipy import fft

from jaxgen import paths

BLOCK = 8


def zigzag(n: int = BLOCK) -> List[tuple]:
  """(row, col) of an n x n block in JPEG zig-zag order."""
  cells = [(i, j) for i in range(n) for j in range(n)]
  return sorted(cells, key=lambda ij: (ij[0] + ij[1],
                                       ij[0] if (ij[0] + ij[1]) % 2
                                       else -ij[0]))


def block_dct_spectrum(maps: np.ndarray, block: int = BLOCK
                       ) -> Dict[str, object]:
  """Mean DCT amplitude per zig-zag index and the high-frequency fraction.

  Args:
    maps: [N, H, W, C] images or latents; H and W multiples of `block`.
    block: block side.

  Returns:
    {"amplitude": list of block**2 floats in zig-zag order,
     "hf_fraction": float, "blocks": number of blocks averaged}.

  Raises:
    ValueError: maps smaller than one block or not divisible into blocks.
  """
  maps = np.asarray(maps, np.float64)
  n, h, w, c = maps.shape
  if h % block or w % block:
    # No flag to name here: `measure` checks its inputs before encoding.
    raise ValueError(f"{h}x{w} maps do not split into {block}x{block} "
                     f"blocks; their sides must be multiples of {block}.")
  blocks = maps.reshape(n, h // block, block, w // block, block, c)
  blocks = blocks.transpose(0, 1, 3, 5, 2, 4).reshape(-1, block, block)
  coeffs = fft.dctn(blocks, type=2, norm="ortho", axes=(1, 2))
  order = zigzag(block)
  rows, cols = np.array([ij[0] for ij in order]), np.array([ij[1]
                                                            for ij in order])
  zz = coeffs[:, rows, cols]
  energy = np.mean(zz ** 2, axis=0)
  half = block * block // 2
  hf = float(energy[half:].sum() / max(energy[1:].sum(), 1e-30))
  return {"amplitude": np.mean(np.abs(zz), axis=0).tolist(),
          "hf_fraction": hf, "blocks": int(len(zz))}


def plot(spectra: Dict[str, Dict[str, object]], path: str) -> None:
  """Log-amplitude spectra against the zig-zag index, one line per input."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for name, s in spectra.items():
    amp = np.asarray(s["amplitude"])
    ax.semilogy(np.arange(len(amp)), amp / amp[0],
                label=f"{name} (HF {s['hf_fraction']:.1%})")
  ax.set_xlabel("DCT coefficient (zig-zag order)")
  ax.set_ylabel("mean |amplitude| / DC")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _is_file_set(data: str) -> bool:
  """Whether `data` names files (.npz, PNG folder) kept at their own size
  rather than a dataset read at --image_size (`imagesets.open_set`)."""
  from jaxgen.eval import imagesets  # pylint: disable=g-import-not-at-top
  return data.endswith(".npz") or not imagesets.is_dataset_spec(data)


def _check_image_sides(h: int, w: int, compression: int, data: str) -> None:
  """Refuses images of a file set whose latents do not split into blocks.

  Args:
    h: image height.
    w: image width.
    compression: the autoencoder's spatial compression.
    data: the set (named in the error).

  Raises:
    ValueError: one line with the sizes that work.
  """
  need = BLOCK * compression
  if h % need or w % need:
    side = max(need, min(h, w) // need * need)
    raise ValueError(
        f"{data} holds {h}x{w} images; their sides must be multiples of "
        f"{need} px (the autoencoder's compression {compression} x "
        f"{BLOCK}x{BLOCK} latent blocks); resize or crop them (e.g. to "
        f"{side}x{side}).")


def measure(workdir: str, *, data: str, num: int = 256,
            image_size: int = 64, data_dir=None, config=None):
  """Spectra of `num` images of a set and of their latents.

  The inputs are checked before the checkpoint is restored or anything is
  compiled (file sets: each batch, before it is encoded).

  Args:
    workdir: the autoencoder run.
    data: dataset spec, PNG folder or images .npz (`imagesets.open_set`).
    num: images.
    image_size: resolution datasets are read at (files keep their own).
    data_dir: TFDS data dir.
    config: the run's config (default: WORKDIR/config.json).

  Returns:
    ({"images": spectrum, "latents": spectrum}, checkpoint step).

  Raises:
    ValueError: one line for a video autoencoder, a size whose latents do
      not split into blocks, or an unusable run or set.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import encode as encode_lib  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import objective as ae_objective  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import runs as ae_runs  # pylint: disable=g-import-not-at-top
  from jaxgen.eval import imagesets  # pylint: disable=g-import-not-at-top
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  config = config or provenance.load_config(workdir)
  encode_lib.check_autoencoder_run(config, workdir)
  arch = ae_objective.arch_from_config(config)
  if getattr(arch, "video", False):
    raise ValueError(
        f"{workdir} is a video autoencoder (temporal compression "
        f"{arch.temporal_compression}); the spectrum measures image "
        "autoencoders only, pass one of those.")
  f = arch.compression
  files = _is_file_set(data)
  if not files:
    # The latents' sides must split into blocks too: suggest such a size.
    encode_lib.check_image_size(arch, image_size, multiple=BLOCK * f)
    side, need = image_size // f, BLOCK * f
    if side % BLOCK:
      raise ValueError(
          f"--image_size={image_size} gives {side}x{side} latents "
          f"(compression {f}), which do not split into {BLOCK}x{BLOCK} "
          f"blocks; use a multiple of {need}, e.g. --image_size="
          f"{max(need, image_size // need * need)}.")
  images_set = imagesets.open_set(data, image_size=image_size,
                                  data_dir=data_dir, batch_size=32)
  if images_set.batches is None:
    raise ValueError(f"{data} holds statistics, not images; pass images.")
  _, s, step, state = ae_runs.restore_run(workdir, config)
  model = s.objective.model
  encode = jax.jit(lambda p, x: model.apply({"params": p}, x,
                                            method=model.encode))
  images, latents, have = [], [], 0
  for batch in images_set.batches:
    batch = model_images(batch, arch.in_channels, data)
    if files:
      _check_image_sides(*batch.shape[1:3], f, data)
    with jax.set_mesh(s.mesh):
      latents.append(np.asarray(encode(state.params["model"], batch)))
    images.append(batch)
    have += len(batch)
    if have >= num:
      break
  return {"images": block_dct_spectrum(np.concatenate(images)[:num]),
          "latents": block_dct_spectrum(np.concatenate(latents)[:num])}, step


def model_images(batch: np.ndarray, channels: int, data: str) -> np.ndarray:
  """A batch as the autoencoder takes it: float32 in [-1, 1], `channels`
  channels (grey images are repeated for an RGB model).

  Args:
    batch: [B, H, W, 1 or 3] uint8 or floats in [-1, 1].
    channels: the autoencoder's input channels.
    data: how to name the images in errors.

  Returns:
    float32 [B, H, W, channels].

  Raises:
    ValueError: one line, for colour images and a 1-channel model.
  """
  from jaxgen.eval import features  # pylint: disable=g-import-not-at-top
  if channels == 1 and np.shape(batch)[-1] != 1:
    raise ValueError(
        f"{data} has {np.shape(batch)[-1]}-channel images but the "
        "autoencoder encodes 1-channel ones (config.dataset.channels); pass "
        "grey images like the ones it was trained on.")
  # check_images repeats grey to RGB (the feature nets' input).
  return features.check_images(batch, data)[..., :channels]


def _define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "The autoencoder run.")
  flags.DEFINE_string("data", None, "Dataset spec, PNG folder or images .npz.")
  flags.DEFINE_integer("num", 256, "Images.", lower_bound=1)
  flags.DEFINE_integer("image_size", 64, "Resolution datasets are read at.",
                       lower_bound=1)
  flags.DEFINE_string("data_dir", None, "TFDS data dir.")
  flags.DEFINE_string("out", None, "Output folder.")


def main(argv):
  del argv
  flags_ = flags.FLAGS
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.train import logs  # pylint: disable=g-import-not-at-top
  logs.quiet_libraries(flags_.verbosity)
  logs.tool_log_lines()
  try:
    for name in ("workdir", "data", "out"):
      if not flags_[name].value:
        raise ValueError(f"pass --{name}.")
    # Before anything is encoded: a file in the way fails now, not after.
    paths.check_output_dir(flags_.out)
    spectra, step = measure(flags_.workdir, data=flags_.data, num=flags_.num,
                            image_size=flags_.image_size,
                            data_dir=flags_.data_dir)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  os.makedirs(flags_.out, exist_ok=True)
  plot(spectra, os.path.join(flags_.out, "spectrum.png"))
  with open(os.path.join(flags_.out, "spectrum.json"), "w",
            encoding="utf-8") as f:
    json.dump(dict(spectra, step=step, workdir=flags_.workdir), f, indent=1)
  print(f"high-frequency energy: images {spectra['images']['hf_fraction']:.3f}"
        f", latents {spectra['latents']['hf_fraction']:.3f} (step {step}); "
        f"wrote {flags_.out}/spectrum.png and spectrum.json")


if __name__ == "__main__":
  _define_flags()
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  # Flag errors are one `error:` line.
  app.run(main, flags_parser=config_lib.parse_flags)
