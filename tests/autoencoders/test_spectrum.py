"""Blockwise DCT spectra: zig-zag order, known spectra, the command."""

import json

import numpy as np
import PIL.Image
import pytest

from configs import autoencoder as ae_config
from jaxgen.autoencoders import spectrum
from tests.train import common


def test_zigzag_is_jpeg_order():
  assert spectrum.zigzag(8)[:10] == [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1),
                                     (0, 2), (0, 3), (1, 2), (2, 1), (3, 0)]
  assert spectrum.zigzag(8)[-1] == (7, 7)
  assert sorted(spectrum.zigzag(8)) == [(i, j) for i in range(8)
                                        for j in range(8)]


def test_known_spectra():
  const = np.full((2, 16, 16, 3), 0.5)
  s = spectrum.block_dct_spectrum(const)
  assert s["blocks"] == 2 * 4 * 3
  np.testing.assert_allclose(s["amplitude"][0], 8 * 0.5)  # ortho DC = sum/8
  np.testing.assert_allclose(s["amplitude"][1:], 0, atol=1e-12)
  assert s["hf_fraction"] == 0.0
  checker = np.indices((16, 16)).sum(0) % 2 * 2.0 - 1.0
  s = spectrum.block_dct_spectrum(checker[None, :, :, None])
  # An independent DCT-II matrix: the checkerboard's largest coefficient is
  # (7, 7), the last in zig-zag order.
  k, x = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
  basis = np.cos(np.pi * (2 * x + 1) * k / 16) * np.where(
      k == 0, np.sqrt(1 / 8), np.sqrt(2 / 8))
  want = np.abs(basis @ checker[:8, :8] @ basis.T)
  np.testing.assert_allclose(s["amplitude"][63], want[7, 7], rtol=1e-10)
  assert np.argmax(s["amplitude"]) == 63 and s["hf_fraction"] > 0.95
  noise = np.random.default_rng(0).normal(size=(64, 16, 16, 2))
  s = spectrum.block_dct_spectrum(noise)
  assert abs(s["hf_fraction"] - 32 / 63) < 0.02  # white: energy is flat


def test_images_get_the_autoencoders_channels():
  grey = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
  # A 1-channel model got grey images repeated to RGB: a shape error.
  out = spectrum.model_images(grey, 1, "g.npz")
  assert out.shape == (2, 4, 4, 1) and out.dtype == np.float32
  np.testing.assert_allclose(out, grey / 127.5 - 1.0, rtol=1e-6)
  # An RGB model takes grey images as RGB.
  rgb = spectrum.model_images(grey, 3, "g.npz")
  assert rgb.shape == (2, 4, 4, 3)
  np.testing.assert_array_equal(rgb, np.repeat(out, 3, axis=-1))
  with pytest.raises(ValueError) as e:
    spectrum.model_images(np.repeat(grey, 3, axis=-1), 1, "c.npz")
  assert str(e.value) == (
      "c.npz has 3-channel images but the autoencoder encodes 1-channel ones "
      "(config.dataset.channels); pass grey images like the ones it was "
      "trained on.")


def test_command_writes_spectra_of_images_and_latents(tmp_path,
                                                       trained_ae_64):
  _, workdir = trained_ae_64
  out = tmp_path / "spec"
  proc = common.run_module(
      "jaxgen.autoencoders.spectrum", f"--workdir={workdir}",
      "--data=jaxgen_shapes", "--image_size=64", "--num=16",
      f"--data_dir={common.DATA_DIR}", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.startswith("high-frequency energy: images ")
  result = json.loads((out / "spectrum.json").read_text())
  assert len(result["images"]["amplitude"]) == 64
  assert result["latents"]["blocks"] == 16 * 8  # 8x8 latents, 8 channels
  assert (out / "spectrum.png").exists()


def test_sizes_whose_latents_do_not_split_are_one_line(tmp_path,
                                                        trained_ae_64):
  _, workdir = trained_ae_64
  for image_size, want in (
      (60, "--image_size=60 is not divisible by the autoencoder's spatial "
           "compression 8; use e.g. 64."),
      (32, "--image_size=32 gives 4x4 latents (compression 8), which do not "
           "split into 8x8 blocks; use a multiple of 64, e.g. "
           "--image_size=64.")):
    with pytest.raises(ValueError) as e:
      spectrum.measure(workdir, data="jaxgen_shapes", image_size=image_size,
                       num=8, data_dir=common.DATA_DIR)
    assert str(e.value) == want
  # Files keep their own size: the error names it, not --image_size.
  pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3),
                                             np.uint8)
  np.savez(tmp_path / "small.npz", images=pixels)
  folder = tmp_path / "pngs"
  folder.mkdir()
  for i, image in enumerate(pixels):
    PIL.Image.fromarray(image).save(folder / f"{i:06d}.png")
  for data in (str(tmp_path / "small.npz"), str(folder)):
    with pytest.raises(ValueError) as e:
      spectrum.measure(workdir, data=data, image_size=64, num=4)
    assert str(e.value) == (
        f"{data} holds 32x32 images; their sides must be multiples of 64 px "
        "(the autoencoder's compression 8 x 8x8 latent blocks); resize or "
        "crop them (e.g. to 64x64).")
  # The command: one error line, no traceback, no output folder.
  out = tmp_path / "spec"
  errors = common.error_lines(
      "jaxgen.autoencoders.spectrum", f"--workdir={workdir}",
      "--data=jaxgen_shapes", "--image_size=60", "--num=16",
      f"--data_dir={common.DATA_DIR}", f"--out={out}")
  assert errors == ["error: --image_size=60 is not divisible by the "
                    "autoencoder's spatial compression 8; use e.g. 64."]
  assert not out.exists()


def test_video_autoencoder_is_refused_before_restoring(tmp_path):
  config = ae_config.get_config("tiny_video")
  workdir = str(tmp_path / "video_ae")  # Never read: the config says it.
  with pytest.raises(ValueError) as e:
    spectrum.measure(workdir, data="jaxgen_shapes", image_size=32,
                     data_dir=common.DATA_DIR, config=config)
  assert str(e.value) == (
      f"{workdir} is a video autoencoder (temporal compression 4); the "
      "spectrum measures image autoencoders only, pass one of those.")


def test_out_file_and_other_families_are_one_line(tmp_path, trained_ae_64):
  _, workdir = trained_ae_64
  with pytest.raises(ValueError) as e:
    spectrum.measure(str(tmp_path / "sd"), data="jaxgen_shapes",
                     config=common.tiny_config())
  assert str(e.value) == (f"{tmp_path}/sd is a 'simple_diffusion' run, not "
                          "an autoencoder; pass the --workdir of an "
                          "autoencoder run.")
  # --out naming a file: refused before anything is encoded, file kept.
  afile = tmp_path / "afile"
  afile.write_text("keep")
  errors = common.error_lines(
      "jaxgen.autoencoders.spectrum", f"--workdir={workdir}",
      "--data=jaxgen_shapes", "--image_size=64", "--num=16",
      f"--data_dir={common.DATA_DIR}", f"--out={afile}")
  assert errors == [f"error: --out={afile} is a file, not a folder; pass a "
                    "folder."]
  assert afile.read_text() == "keep"
