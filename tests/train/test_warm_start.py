"""Warm starts (config.init_from): another family or architecture is
refused before compiling, another param_dtype is cast."""

import numpy as np
import pytest

from configs import pyramidal_flow
from jaxgen.train import trainer
from tests.train import common


def test_init_from_another_family_is_refused_before_compiling(
    tmp_path, monkeypatch):
  source = str(tmp_path / "sd")
  trainer.train_and_evaluate(common.tiny_config(total_steps=1), source)
  config = pyramidal_flow.get_config("tiny")
  config.dataset.data_dir = common.DATA_DIR
  config.init_from = source
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  with pytest.raises(ValueError, match="is a 'simple_diffusion' run; runs "
                     "of 'pyramidal_flow' start from one of their own "
                     "family"):
    trainer.train_and_evaluate(config, str(tmp_path / "pf"))
  # Bad input: nothing recorded for the run that did not start.
  assert not (tmp_path / "pf" / "config.json").exists()


def test_init_from_another_architecture_is_refused_before_compiling(
    tmp_path, monkeypatch):
  # Was found only when the weights were restored, after compiling.
  source = str(tmp_path / "narrow")
  trainer.train_and_evaluate(common.tiny_config(total_steps=1), source)
  config = common.tiny_config(**{"model.channels": (16, 48),
                                 "init_from": source})
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  # The error names the config field that differs (as a resume's does),
  # then the array and both shapes (was a dimension index).
  with pytest.raises(ValueError, match=r"config.init_from=.*narrow holds "
                     r"another model \(model.channels: \[16, 32\] -> "
                     r"\[16, 48\]; params: model/\S+ is \(.*32.*\) "
                     r"there, \(.*48.*\) here\); start from a run of the "
                     "same architecture") as e:
    trainer.train_and_evaluate(config, str(tmp_path / "wide"))
  assert "\n" not in str(e.value)
  assert not (tmp_path / "wide" / "config.json").exists()
  deeper = common.tiny_config(**{"model.transformer_depth": 2,
                                 "init_from": source})
  with pytest.raises(ValueError, match=r"\(model.transformer_depth: 1 -> "
                     r"2; params: model/\S+ is not in that run's model\)"):
    trainer.train_and_evaluate(deeper, str(tmp_path / "deep"))


def test_init_from_a_run_of_another_param_dtype_casts_its_weights(tmp_path):
  # A float32 run's weights went into a bfloat16 run's state uncast: the
  # compiled step then refused them with a TypeError traceback.
  source = str(tmp_path / "f32")
  trainer.train_and_evaluate(common.tiny_config(total_steps=1), source)
  config = common.tiny_config(total_steps=1, param_dtype="bfloat16",
                              init_from=source)
  last = trainer.train_and_evaluate(config, str(tmp_path / "bf16"))
  assert np.isfinite(last["loss"])
