"""The temporal pyramid on a video autoencoder's latents."""

import os

import numpy as np
import PIL.Image

from configs import autoencoder as ae_config
from jaxgen import config_lib
from jaxgen.autoencoders import encode as encode_lib
from jaxgen.data import pipeline
from jaxgen.train import trainer
from tests.flow import test_objective
from tests.train import common


def test_encode_video_then_train_the_temporal_pyramid(tmp_path):
  ae = ae_config.get_config("tiny_video")
  config_lib.apply_overrides(ae, {
      "dataset.data_dir": common.DATA_DIR, "batch_size": 8, "total_steps": 2,
      "eval_batches": 0, "num_samples": 0, "checkpoint_every_steps": 1000,
      # XLA's convolutions (CPU's default tap-by-tap ones compile twice as
      # long; tested on their own).
      "autoencoder.conv_impl": "lax"})
  ae_dir = str(tmp_path / "ae")
  trainer.train_and_evaluate(ae, ae_dir)
  out = str(tmp_path / "latents")
  lines = []
  meta = encode_lib.encode_split(ae, ae_dir, data="jaxgen_shapes_video",
                                 split="test", out=out, image_size=32,
                                 num_frames=5, data_dir=common.DATA_DIR,
                                 batch_size=32, shard_size=128,
                                 log=lines.append)
  # 5 frames at 32 px -> 2 latent frames of 8x8x8 (4x time, 4x space).
  assert meta["shape"] == [2, 8, 8, 8]
  assert "--config.dataset.num_frames=2" in lines[0]
  c = ae.dataset.copy_and_resolve_references()
  c.name, c.image_size, c.channels, c.num_frames = f"latents:{out}", 8, 8, 0
  it, info = pipeline.build_input(c, global_batch_size=32, seed=0,
                                  process_index=0, process_count=1,
                                  split="test", train=False, repeat=False)
  batch = next(it)
  assert info.kind == "video" and batch["video"].shape == (32, 2, 8, 8, 8)
  assert abs(float(np.std(batch["video"])) - 1.0) < 0.1

  pf = test_objective._video_config(**{  # pylint: disable=protected-access
      "dataset.name": f"latents:{out}", "dataset.split": "test",
      "dataset.image_size": 8, "dataset.channels": 8,
      "dataset.num_frames": 2, "total_steps": 2, "num_samples": 4,
      "sample_every_steps": 2})
  last = trainer.train_and_evaluate(pf, str(tmp_path / "pf"))
  assert np.isfinite(last["loss"])
  # Its sample grid is decoded to RGB frames.
  grid = np.asarray(PIL.Image.open(
      os.path.join(tmp_path, "pf", "samples", "step_0000002.png")))
  assert grid.ndim == 3 and grid.shape[-1] == 3
