"""A latent run decodes with the autoencoder checkpoint that encoded it."""

import json
import logging
import os
import shutil

import jax
import numpy as np

from jaxgen.autoencoders import latent_decode
from jaxgen.autoencoders import runs as ae_runs
from jaxgen.train import trainer
from tests.train import common


def test_decoder_uses_the_encoding_step_while_it_is_kept(
    tmp_path, trained_ae_64, caplog):
  config, trained = trained_ae_64
  ae_dir = str(tmp_path / "ae")
  shutil.copytree(trained, ae_dir)
  # Latents encoded at step 2; the autoencoder then trains on to step 4.
  root = tmp_path / "latents"
  os.makedirs(root / "train")
  (root / "train" / "latents.json").write_text(json.dumps(
      {"autoencoder": ae_dir, "autoencoder_step": 2, "scaling_factor": 0.5}))
  more = config.copy_and_resolve_references()
  more.total_steps = 4
  trainer.train_and_evaluate(more, ae_dir)
  dataset = common.tiny_config(**{"dataset.name": f"latents:{root}"}).dataset
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  z = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype(np.float32)

  def decoded_at(step):
    _, s, _, state = ae_runs.restore_run(ae_dir, step=step)
    return np.clip(s.objective.decode(state, z / 0.5), -1, 1)

  at_2, at_4 = decoded_at(2), decoded_at(4)
  assert np.abs(at_2 - at_4).max() > 1e-4  # Two more steps moved it.
  np.testing.assert_allclose(latent_decode.make_decoder(dataset, mesh)(z),
                             at_2, atol=1e-5)
  # Once step 2 is gone: the newest, with a one-line warning.
  shutil.rmtree(os.path.join(ae_dir, "checkpoints", "2"))
  with caplog.at_level(logging.WARNING):
    decode = latent_decode.make_decoder(dataset, mesh)
  np.testing.assert_allclose(decode(z), at_4, atol=1e-5)
  warned = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING]
  assert any("with step 4" in m and "step 2, which encoded them" in m
             for m in warned), warned
