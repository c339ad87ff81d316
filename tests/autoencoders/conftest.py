"""A tiny trained autoencoder shared by the tests of the tools built on it."""

import pytest

from jaxgen.train import trainer
from tests.autoencoders import test_objective


@pytest.fixture(scope="session")
def trained_ae_64(tmp_path_factory):
  """(config, workdir) of the tiny DC-AE trained 2 steps on 64 px shapes
  (8x8x8 latents)."""
  workdir = str(tmp_path_factory.mktemp("ae64") / "run")
  # XLA's convolutions: every tool built on it compiles twice as fast as
  # with CPU's default tap-by-tap ones (tested on their own).
  config = test_objective._config(  # pylint: disable=protected-access
      total_steps=2, eval_batches=0, **{"autoencoder.conv_impl": "lax"})
  config.dataset.image_size = 64
  trainer.train_and_evaluate(config, workdir)
  return config, workdir
