"""Latent datasets: encode -> latents:DIR -> simple diffusion trains on them."""

import os

import jax
import numpy as np
import PIL.Image
import pytest

from jaxgen.autoencoders import encode as encode_lib
from jaxgen.autoencoders import latent_decode
from jaxgen.autoencoders import runs as ae_runs
from jaxgen.data import pipeline
from jaxgen.train import trainer
from tests.train import common


def test_encode_then_train_simple_diffusion_on_the_latents(tmp_path,
                                                           trained_ae_64):
  config, ae_dir = trained_ae_64
  out = str(tmp_path / "latents")
  lines = []
  meta = encode_lib.encode_split(config, ae_dir, data="jaxgen_shapes",
                                 split="test", out=out, image_size=64,
                                 data_dir=common.DATA_DIR, batch_size=64,
                                 shard_size=128, log=lines.append)
  assert meta["num_examples"] == 512 and meta["shape"] == [8, 8, 8]
  assert len(meta["shards"]) == 4 and "latents:" in lines[0]
  # No train split encoded yet: training would find none, so it says so.
  assert "; encode --split=train too, then train with --config.dataset." in (
      lines[0])
  # The latents read back scaled to unit std, in order, with labels.
  c = config.dataset.copy_and_resolve_references()
  c.name, c.image_size, c.channels = f"latents:{out}", 8, 8
  it, info = pipeline.build_input(c, global_batch_size=512, seed=0,
                                  process_index=0, process_count=1,
                                  split="test", train=False, repeat=False)
  batch = next(it)
  assert info.channels == 8 and info.num_classes == 8
  assert abs(float(np.std(batch["image"])) - 1.0) < 0.05
  # A rerun finds every shard done and writes the same metadata.
  os.remove(os.path.join(out, "test", "latents.json"))
  again = encode_lib.encode_split(config, ae_dir, data="jaxgen_shapes",
                                  split="test", out=out, image_size=64,
                                  data_dir=common.DATA_DIR, batch_size=64,
                                  shard_size=128, log=lambda _: None)
  assert again["scaling_factor"] == pytest.approx(meta["scaling_factor"])
  # A batch that does not divide the split: 512 = 10 x 48 + 32; the last
  # 32 rows are encoded too (padded to a batch), in order, the same latents.
  odd = str(tmp_path / "latents_odd")
  meta_odd = encode_lib.encode_split(
      config, ae_dir, data="jaxgen_shapes", split="test", out=odd,
      image_size=64, data_dir=common.DATA_DIR, batch_size=48, shard_size=96,
      log=lambda _: None)
  assert meta_odd["num_examples"] == 512 and len(meta_odd["shards"]) == 6
  c_odd = c.copy_and_resolve_references()
  c_odd.name = f"latents:{odd}"
  batch_odd = next(pipeline.build_input(
      c_odd, global_batch_size=512, seed=0, process_index=0,
      process_count=1, split="test", train=False, repeat=False)[0])
  np.testing.assert_array_equal(batch_odd["label"], batch["label"])
  np.testing.assert_allclose(batch_odd["image"], batch["image"], atol=1e-4)
  # Latents are never mirrored (a mirrored latent is not the latent of the
  # mirrored image), whatever dataset.random_flip says.
  flipped = []
  for flip in (True, False):
    c_flip = c.copy_and_resolve_references()
    c_flip.random_flip = flip
    flipped.append(next(pipeline.build_input(
        c_flip, global_batch_size=64, seed=0, process_index=0,
        process_count=1, split="test", train=True)[0])["image"])
  np.testing.assert_array_equal(*flipped)
  # Simple diffusion on the 8x8x8 latents.
  sd = common.tiny_config(**{
      "dataset.name": f"latents:{out}", "dataset.split": "test",
      "dataset.image_size": 8, "dataset.channels": 8,
      "dataset.random_flip": False, "model.patch_size": 1,
      "total_steps": 2, "num_samples": 4, "sample_every_steps": 2})
  last = trainer.train_and_evaluate(sd, str(tmp_path / "sd"))
  assert np.isfinite(last["loss"])
  # Its sample grid is decoded: RGB images, not 8-channel latents.
  grid = np.asarray(PIL.Image.open(
      os.path.join(tmp_path, "sd", "samples", "step_0000002.png")))
  assert grid.ndim == 3 and grid.shape[-1] == 3
  # The decoder is the autoencoder's decode of z / scaling_factor.
  decode = latent_decode.make_decoder(sd.dataset, jax.make_mesh(
      (1,), ("data",), devices=jax.devices()[:1]))
  z = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype(np.float32)
  _, s, _, state = ae_runs.restore_run(ae_dir)
  want = np.clip(s.objective.decode(state, z / meta["scaling_factor"]), -1, 1)
  np.testing.assert_allclose(decode(z), want, atol=1e-5)
  assert latent_decode.make_decoder(common.tiny_config().dataset,
                                    None) is None
  # Latents of another size or channel count than the model: one line.
  for key, value, match in (("dataset.image_size", 16, "has 8 px examples"),
                            ("dataset.channels", 3, "has 8 channels")):
    bad = sd.copy_and_resolve_references()
    bad.dataset[key.split(".")[1]] = value
    with pytest.raises(ValueError, match=match):
      trainer.train_and_evaluate(bad, str(tmp_path / f"bad_{value}"))
  with pytest.raises(ValueError, match="holds no latents.json"):
    pipeline.build_input(c, global_batch_size=8, seed=0, process_index=0,
                         process_count=1, split="train", train=False)
  # A latents folder that moved: its new place is asked for, in one line
  # (sampling a run trained on it decodes nothing).
  moved = sd.copy_and_resolve_references()
  moved.dataset.name = f"latents:{tmp_path / 'moved'}"
  for call in (lambda: latent_decode.make_decoder(moved.dataset, None),
               lambda: pipeline.build_input(
                   moved.dataset, global_batch_size=8, seed=0,
                   process_index=0, process_count=1, split="train",
                   train=False)):
    with pytest.raises(ValueError) as e:
      call()
    assert str(e.value) == (
        f"latents:{tmp_path / 'moved'} does not exist; pass where the "
        "latents are now (--config.dataset.name=latents:DIR) or write them "
        "with python -m jaxgen.autoencoders.encode "
        f"--out={tmp_path / 'moved'}.")

