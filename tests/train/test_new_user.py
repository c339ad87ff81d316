"""Defects a new user hit, each reproduced: unconditional training, switching
schedules, one-line CLI errors, a changed model on resume, evaluating a
folder, a short profiled run, config.json with provenance, a finished run.
"""

import json
import logging
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import pyramidal_flow
from configs import r3gan
from jaxgen import config_lib
from jaxgen import registry
from jaxgen.data.pipeline import DatasetInfo
from jaxgen.data import pipeline as data_pipeline
from jaxgen.diffusion import losses
from jaxgen.diffusion import schedules
from jaxgen.parallel import multihost
from jaxgen.parallel import sharding as sharding_lib
from jaxgen.train import durations
from jaxgen.train import logs
from jaxgen.train import metrics as metrics_lib
from jaxgen.train import profiling
from jaxgen.train import provenance
from jaxgen.train import checks
from jaxgen.train import run_record
from jaxgen.train import run_state
from jaxgen.train import trainer
from tests.train import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def test_unconditional_simple_diffusion_trains(tmp_path):
  config = common.tiny_config(total_steps=2, num_samples=2,
                              sample_every_steps=2,
                              **{"diffusion.class_conditional": False,
                                 "diffusion.sample_steps": 2})
  last = trainer.train_and_evaluate(config, str(tmp_path))
  assert last["step"] == 2 and np.isfinite(last["loss"])
  assert os.listdir(tmp_path / "samples") == ["step_0000002.png"]


@pytest.mark.parametrize("preset", ["configs/simple_diffusion.py:tiny",
                                    "configs/pyramidal_flow.py:tiny,baseline"])
def test_unset_fields_of_a_recorded_run_can_be_set_again(preset, tmp_path,
                                                        monkeypatch):
  # config.json keeps an unset placeholder (dataset.data_dir: each host may
  # point at its own copy) as null, and a plain None cannot be overridden:
  # "Type NoneType of field config.dataset.data_dir is not supported".
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  provenance.write(str(tmp_path), config_lib.load_config_file(preset))
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=values)
  extra = (["--config.model.out_channels=3"] if "simple" in preset else [])
  argv = ["prog", f"--config=configs/run.py:{tmp_path}",
          "--config.dataset.data_dir=/data/copy"] + extra
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads sys.argv.
  values(argv)
  assert values.config.dataset.data_dir == "/data/copy"
  if extra:
    assert values.config.model.out_channels == 3
  # Left unset, they are still None (what the run had).
  assert provenance.load_config(str(tmp_path)).dataset.data_dir is None


def test_logical_axis_rules_can_be_overridden_on_the_command_line(
    monkeypatch):
  # A list field was refused: "Type <class 'list'> ... is not supported".
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=values)
  argv = ["prog", "--config=configs/autoencoder.py:tiny",
          "--config.logical_axis_rules=(('act_batch', ('data', 'fsdp')), "
          "('embed', None))"]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads sys.argv.
  values(argv)
  assert sharding_lib.rules_from_config(values.config.logical_axis_rules) == (
      ("act_batch", ("data", "fsdp")), ("embed", None))


def test_unconditional_r3gan_initialises():
  config = r3gan.get_config("tiny")
  config.gan.class_conditional = False
  config.dataset.num_classes = 0
  objective = registry.OBJECTIVES.get("r3gan")(config)
  size = config.dataset.image_size
  batch = {"image": jnp.zeros((2, size, size, 3)),
           "label": jnp.zeros((2,), jnp.int32)}
  state = jax.eval_shape(objective.init, jax.random.key(0), batch)
  assert jax.tree.leaves(state.params)


@pytest.mark.parametrize("name", schedules.SCHEDULES.names())
def test_every_schedule_is_selectable(name):
  config = common.tiny_config(**{"diffusion.schedule": name})
  s = trainer.setup(config, data_info=DatasetInfo.synthetic(config.dataset))
  logsnr = s.objective.logsnr_fn(jnp.array([0.0, 0.5, 1.0]))
  assert np.all(np.isfinite(logsnr)) and logsnr[0] > logsnr[2]
  # Its own keywords are config fields too.
  section = dict(config.diffusion.schedules[name])
  assert section == schedules.schedule_keywords(name)


def test_a_foreign_schedule_keyword_is_one_line():
  with pytest.raises(ValueError, match="schedule 'cosine' takes no "
                     "noise_size; its keywords are: logsnr_min, logsnr_max"):
    schedules.make_logsnr_fn("cosine", 32, noise_size=64)


def test_loss_options_reach_the_loss(monkeypatch):
  seen = {}
  real = losses.diffusion_loss_at

  def spy(*args, **kwargs):
    seen.update(kwargs)
    return real(*args, **kwargs)

  monkeypatch.setattr(losses, "diffusion_loss_at", spy)
  config = common.tiny_config(**{"diffusion.weight_dlogsnr_dt": True,
                                 "diffusion.multiscale_normalize": False})
  objective = registry.OBJECTIVES.get("simple_diffusion")(config, total_steps=3)
  batch = {"image": jnp.zeros((2, 16, 16, 3)),
           "label": jnp.zeros((2,), jnp.int32)}
  state = jax.eval_shape(objective.init, jax.random.key(0), batch)
  jax.eval_shape(objective.eval_step, state, batch, jax.random.key(1))
  assert seen["options"] == losses.LossOptions(weight_dlogsnr_dt=True,
                                               multiscale_normalize=False)


@pytest.mark.parametrize("args,expected", [
    (["--config=configs/simple_diffusion.py:nope"],
     "error: unknown preset 'nope'; choose one of: tiny,"),
    (["--config=configs/simple_diffusion.py:tiny", "--config.batch_sise=3"],
     "error: unknown config field 'batch_sise'; did you mean 'batch_size'?"),
    (["--config=configs/nope.py:tiny"],
     "error: config file configs/nope.py not found"),
    # A run's config.json is JSON, read by configs/run.py.
    (["--config=runs/a/config.json"], "error: runs/a/config.json is a run's "
     "record, not a config file; pass --config=configs/run.py:runs/a/"
     "config.json to use its config."),
    (["--config=configs/run.py"], "error: configs/run.py needs a run: "
     "--config=configs/run.py:WORKDIR"),
    # Overrides without the config they override.
    (["--config.total_steps=3"], "error: --config.* overrides need "
     "--config=FILE:ARG first (e.g. --config=configs/simple_diffusion.py:"
     "tiny)."),
    # A Python file without get_config(): the flag is named, quotes intact.
    (["--config=scaling/specs.py:tiny"],
     "error: --config names a file without get_config(arg); give a file "
     "that defines it (see configs/)."),
])
def test_cli_config_errors_are_one_line(tmp_path, args, expected):
  out = subprocess.run(
      [sys.executable, "-m", "jaxgen.main", f"--workdir={tmp_path}"] + args,
      cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT))
  assert out.returncode == 2
  lines = [l for l in out.stderr.splitlines() if l.startswith("error")]
  assert len(lines) == 1 and lines[0].startswith(expected), out.stderr[-2000:]
  assert "Traceback" not in out.stderr


def test_image_size_is_checked_before_the_dataset_is_prepared(
    tmp_path, monkeypatch):
  def no_data(*args, **kwargs):
    raise AssertionError("prepared the dataset first")
  monkeypatch.setattr(data_pipeline, "build_input", no_data)
  with pytest.raises(ValueError, match="18x18 is not divisible"):
    trainer.train_and_evaluate(common.tiny_config(
        **{"dataset.image_size": 18}), str(tmp_path))


def test_config_json_provenance_and_resume_checks(tmp_path, monkeypatch):
  trainer.train_and_evaluate(common.tiny_config(total_steps=2), str(tmp_path))
  written = json.load(open(tmp_path / "config.json"))
  assert written["config"]["model"]["transformer_width"] == 32
  prov = written["provenance"]
  for key in ("git_commit", "jax", "jaxlib", "flax", "device_kind",
              "device_count"):
    assert key in prov, key
  assert prov["jax"] == jax.__version__ and prov["device_count"] == 8
  # A changed model is refused before compiling, naming the field.
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  with pytest.raises(ValueError, match=r"another model: model.channels: "
                     r"\[16, 32\] -> \[16, 16\]") as e:
    trainer.train_and_evaluate(common.tiny_config(
        total_steps=4, **{"model.channels": (16, 16)}), str(tmp_path))
  assert "\n" not in str(e.value)
  # Fields outside the model that add or drop state arrays: refused before
  # compiling, naming the fields (the restore found them after compiling,
  # having overwritten config.json with the refused config).
  before = (tmp_path / "config.json").read_bytes()
  for overrides, field in (
      ({"optimizer.grad_clip": 0.0}, "optimizer.grad_clip: 1.0 -> 0.0"),
      ({"ema_decay": 0.0}, "ema_decay: 0.99 -> 0.0"),
      ({"optimizer.name": "adam"}, "optimizer.name: 'adamw' -> 'adam'")):
    with pytest.raises(ValueError) as e:
      trainer.train_and_evaluate(common.tiny_config(total_steps=4,
                                                    **overrides),
                                 str(tmp_path))
    assert re.fullmatch(
        f"checkpoint 2 in {tmp_path} holds another train state than this "
        f"config makes \\({re.escape(field)}: [^;]+\\); resume with "
        f"--config=configs/run.py:{tmp_path} or pass another --workdir\\.",
        str(e.value)), str(e.value)
  assert (tmp_path / "config.json").read_bytes() == before
  # Another family's config: the family is named, not every field that
  # follows from it.
  gan = r3gan.get_config("tiny")
  gan.dataset.data_dir = common.DATA_DIR
  with pytest.raises(ValueError) as e:
    trainer.train_and_evaluate(gan, str(tmp_path))
  assert str(e.value) == (
      f"{tmp_path} holds a run of family 'simple_diffusion', not 'r3gan'; "
      f"pass another --workdir (or --config=configs/run.py:{tmp_path} to "
      "resume it).")
  # configs/run.py reads the run's config back: the same config, which
  # resumes the (finished) run.
  again = config_lib.load_config_file(f"{ROOT}/configs/run.py:{tmp_path}")
  assert provenance.compare(written["config"],
                            provenance._to_json(again)) == ([], [])
  assert trainer.train_and_evaluate(again, str(tmp_path))["step"] == 2
  # A finished run says so before compiling, and its config.json keeps
  # describing its checkpoints (a changed field trains nothing).
  before = (tmp_path / "config.json").read_text()
  last = trainer.train_and_evaluate(common.tiny_config(
      total_steps=2, **{"optimizer.learning_rate": 0.5}), str(tmp_path))
  assert last["step"] == 2
  assert (tmp_path / "config.json").read_text() == before
  line = run_record.summary_line(last, str(tmp_path))
  # No grid was written (num_samples=0 here): no samples/ to point at.
  assert line.startswith("done: step 2, loss ") and "samples in" not in line
  (tmp_path / "samples").mkdir()
  assert "samples in" in run_record.summary_line(last, str(tmp_path))
  assert "samples in" not in run_record.summary_line(last, str(tmp_path),
                                                     samples=False)


def test_folder_eval_needs_a_held_out_split(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  for c in range(8):
    os.makedirs(tmp_path / "images" / f"c{c}")
    for i in range(6):
      Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
          tmp_path / "images" / f"c{c}" / f"{i}.png")
  folder = {"dataset.name": f"folder:{tmp_path / 'images'}",
            "eval_batches": 1}
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  with pytest.raises(ValueError, match="has one split.*holdout_fraction"):
    trainer.train_and_evaluate(common.tiny_config(**folder),
                               str(tmp_path / "run"))
  config = common.tiny_config(**folder, **{"dataset.holdout_fraction": 0.25})
  sizes = {}
  for split in ("train", "test"):
    _, info = data_pipeline.build_input(
        config.dataset, global_batch_size=8, seed=0, process_index=0,
        process_count=1, split=split, train=False)
    sizes[split] = info.num_examples
  assert sizes["train"] + sizes["test"] == 48 and 4 <= sizes["test"] <= 20


def test_a_short_profiled_run_keeps_its_trace(tmp_path):
  # In its own process, as a user runs it: JAX's profiler once crashed
  # (segfault in stop_trace) inside a pytest worker that had run many other
  # tests' threads before; alone it never did.
  overrides = dict(common.TINY_OVERRIDES, total_steps=3, profile_steps=10)
  flags = [f"--config.{k}={v!r}" if isinstance(v, tuple)
           else f"--config.{k}={v}" for k, v in overrides.items()]
  out = subprocess.run(
      [sys.executable, "-m", "jaxgen.main", f"--workdir={tmp_path}",
       "--config=configs/simple_diffusion.py:tiny"] + flags,
      cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Profiler trace of steps" in out.stderr
  traces = [f for _, _, files in os.walk(tmp_path / "plugins") for f in files]
  assert any(f.endswith((".xplane.pb", ".trace.json.gz")) for f in traces)


@pytest.mark.parametrize("first,num,last,traced", [
    (6, 3, 100, [6, 7, 8]),  # The window, then it ends.
    (6, 10, 7, [6, 7]),      # Cut at the run's last step.
])
def test_the_trace_ends_before_its_last_steps_evaluation_and_save(
    monkeypatch, first, num, last, traced):
  events = []
  monkeypatch.setattr(jax.profiler, "start_trace",
                      lambda d: events.append("start"))
  monkeypatch.setattr(jax.profiler, "stop_trace",
                      lambda: events.append("stop"))
  prof = profiling.StepProfiler("/tmp/x", first, num, last_step=last)
  for step in range(first - 2, last + 1):
    prof(step)
    events.append(step)   # The step runs ...
    prof.after(step, jnp.ones(()))
    events.append("eval")  # ... then its evaluation, sampling, save.
  prof.stop()  # The trainer's `finally`: nothing left to write.
  start, stop = events.index("start"), events.index("stop")
  assert events.count("stop") == 1
  assert [e for e in events[start + 1:stop] if e != "eval"] == traced
  assert events[stop - 1] == traced[-1]  # No evaluation after it.


def test_library_info_chatter_is_filtered_but_warnings_pass():
  f = logs.QuietLibraries()

  def record(path, level):
    return logging.LogRecord("absl", level, path, 1, "m", None, None)

  site = "/venv/lib/python3.11/site-packages"
  assert not f.filter(record(f"{site}/orbax/checkpoint/x.py", logging.INFO))
  assert not f.filter(record(f"{site}/tensorflow_datasets/core/d.py",
                             logging.INFO))
  assert f.filter(record(f"{site}/orbax/checkpoint/x.py", logging.WARNING))
  assert f.filter(record("/repo/jaxgen/train/trainer.py", logging.INFO))
  assert f.filter(record(f"{site}/clu/metric_writers/logging_writer.py",
                         logging.INFO))
  # TFDS' note on an unprepared folder (with %-arguments) goes: the
  # tool's own error says what to do.
  note = logging.LogRecord("absl", logging.WARNING, f"{site}/tensorflow_"
                           "datasets/core/utils/file_utils.py", 1,
                           "Variant folder %s has no %s",
                           ("/d/cifar10/3.0.2", "dataset_info.json"), None)
  assert not f.filter(note)
  # A tool's log lines read like its own `warning:` lines.
  fmt = logs._ToolLines()  # pylint: disable=protected-access
  assert fmt.format(note) == ("warning: Variant folder /d/cifar10/3.0.2 has "
                              "no dataset_info.json")
  info = logging.LogRecord("absl", logging.INFO, "x.py", 1, "%d done", (3,),
                           None)
  assert fmt.format(info) == "3 done"


def _one_step(config, batch):
  s = trainer.setup(config, data_info=DatasetInfo.synthetic(config.dataset))
  init_rng, base_rng = jax.random.split(jax.random.key(config.seed))
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    init_fn, _, shardings, step, _ = trainer.compile_step(s, base_rng)
    state = sharding_lib.create_sharded(init_fn, shardings, init_rng)
    init = jax.device_get(state.params)  # Before the step donates them.
    state, metrics = step(state, multihost.global_batch(s.mesh, batch))
  _one_step.ema = jax.device_get(state.ema_params)
  return (float(metrics["loss"]), float(metrics["grad_norm"]),
          jax.device_get(state.params), init)


def test_grad_accumulation_and_remat_give_the_large_batch_update():
  # No warmup: at step 0 it made the learning rate 0, so the parameters
  # stayed at init whatever the gradients were. Adam's first update is
  # ~lr·sign(g), so the gradients' scale is checked on their norm.
  base = {"model.dropout_rate": 0.0, "batch_size": 16,
          "optimizer.warmup_steps": 0, "optimizer.warmup_fraction": 0.0}
  batch = common.random_batches(common.tiny_config(**base), 1)[0]
  config = common.tiny_config(**base)
  ref_loss, ref_norm, ref, init = _one_step(config, batch)
  assert max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(ref), jax.tree.leaves(init))) > 1e-5  # It moved.
  # The EMA follows the updated parameters (not the ones before the step).
  d = float(config.ema_decay)
  assert 0 < d < 1
  for e, p0, p1 in zip(jax.tree.leaves(_one_step.ema), jax.tree.leaves(init),
                       jax.tree.leaves(ref)):
    np.testing.assert_allclose(e, d * p0 + (1 - d) * p1, rtol=1e-5,
                               atol=1e-7)
  for extra in ({"grad_accum_steps": 2},
                {"grad_accum_steps": 2, "grad_accum_loop": "scan"},
                {"remat": "full"},
                {"remat": "dots_with_no_batch_dims_saveable"}):
    loss, norm, params, _ = _one_step(common.tiny_config(**base, **extra),
                                      batch)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=str(extra))
    np.testing.assert_allclose(norm, ref_norm, rtol=1e-5, err_msg=str(extra))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6,
                                 err_msg=str(extra))


@pytest.mark.parametrize("overrides,match", [
    ({"grad_accum_steps": 3}, "not divisible by grad_accum_steps=3"),
    ({"grad_accum_loop": "loop"}, "^config.grad_accum_loop='loop': use one "
     "of 'auto', 'scan', 'unroll'.$"),
    ({"remat": "sometimes"},
     "^config.remat='sometimes' is not 'none', 'full'"),
    # A policy factory passed the check and failed when the backward pass
    # was traced ("unexpected keyword argument 'dimension_numbers'").
    ({"remat": "save_only_these_names"},
     "^config.remat='save_only_these_names' is not 'none', 'full' or a "
     r"jax.checkpoint_policies policy \(.*dots_saveable"),
    # Errors name the field to change, not the image size.
    ({"model.attention_impl": "flash3"},
     "^config.model.attention_impl='flash3': choose"),
    ({"model.skip_style": "dense"}, "^config.model.skip_style='dense'; use"),
    ({"model.num_heads": 5}, "^config.model.transformer_width=.* num_heads=5"),
    # Numbers that divided by zero inside the model.
    ({"model.num_heads": 0}, "^config.model.num_heads=0 must be an integer "
     ">= 1.$"),
    ({"model.patch_size": 0}, "^config.model.patch_size=0 must be"),
    ({"model.mlp_ratio": 0}, "^config.model.mlp_ratio=0 must be an integer "
     ">= 1"),
    ({"model.channels": (16, 0)}, "^config.model.channels entry=0 must be"),
    ({"diffusion.sample_steps": 0}, "^config.diffusion.sample_steps=0 must "
     "be an integer >= 1.$"),
    ({"diffusion.label_dropout": -0.1}, "^config.diffusion.label_dropout=-0.1 "
     "must be"),
    ({"diffusion.guidance_scale": float("nan")},
     "^config.diffusion.guidance_scale=nan must be a finite number.$"),
    ({"model.dropout_rate": 1.0}, r"^config.model.dropout_rate=1.0 must be a "
     r"number in \[0, 1\)"),
    ({"dataset.image_size": 34}, "^config.dataset.image_size=34 / "),
    ({"optimizer.mu_dtype": "bf16"},
     r"^config.optimizer.mu_dtype='bf16'; use one of float32, bfloat16"),
    # Run lengths: checked before the dataset is prepared.
    ({"total_steps": 0}, "^set one of config.{total_steps.* e.g. "
                         "--config.total_steps=1000"),
    ({"total_flops": 1e12}, r"got total_steps=3, total_flops=1000000000000\.0"
                            r"\. Set the others to 0, e\.g\. "
                            r"--config\.total_steps=0\.$"),
    ({"total_steps": -5}, "^config.total_steps=-5 must be positive"),
])
def test_bad_fields_are_one_line_naming_the_field(overrides, match):
  config = common.tiny_config(**overrides)
  with pytest.raises(ValueError, match=match) as e:
    checks.check_config(config)
  assert "\n" not in str(e.value)


def test_a_command_line_run_length_replaces_the_presets():
  # As absl leaves it: the override applied, the preset's length still set.
  config = common.tiny_config(total_steps=20, total_flops=1e12)
  durations.command_line_length(config, {"total_flops": 1e12,
                                         "batch_size": 8})
  assert config.total_steps == 0 and config.total_flops == 1e12
  assert durations.check_length(config) == "total_flops"
  # Nothing replaced without a length on the command line; two given there
  # stay an error.
  config = common.tiny_config(total_steps=20)
  durations.command_line_length(config, {"batch_size": 8})
  assert config.total_steps == 20
  config = common.tiny_config(total_steps=20, total_examples=100)
  durations.command_line_length(config, {"total_steps": 20,
                                         "total_examples": 100})
  with pytest.raises(ValueError, match="Set exactly one"):
    durations.check_length(config)


def test_bench_reports_state_bytes_per_device():
  from jaxgen import bench  # pylint: disable=g-import-not-at-top
  one = bench.run(common.tiny_config(**{"mesh.data": 8}), params_only=True)
  fsdp = bench.run(common.tiny_config(**{"mesh.data": 1, "mesh.fsdp": 8}),
                   params_only=True)
  # Params, Adam's two moments and the EMA copy, in float32.
  assert one["state_bytes_per_device"] >= 4 * 4 * one["params"]
  assert fsdp["state_bytes_per_device"] < one["state_bytes_per_device"] / 4


def test_public_restore_returns_the_trained_state(tmp_path):
  config = common.tiny_config(total_steps=2)
  trainer.train_and_evaluate(config, str(tmp_path))
  s, step, state = run_state.restore(config, str(tmp_path))
  assert step == 2 and int(state.step) == 2
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    _, abstract, _ = trainer.abstract_state(s, jax.random.key(0))
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  s, step, state = run_state.restore(config, str(tmp_path / "empty"))
  assert step is None and state is None


@pytest.mark.parametrize("family,match", [
    # An image-only family.
    ("simple_diffusion", "holds clips but simple_diffusion models images; "
     "use an image dataset"),
    # A family that models clips, built for images.
    ("pyramidal_flow", "holds clips of 8 frames but config.dataset."
     "num_frames=0 builds an image model"),
])
def test_clips_for_an_image_model_are_one_line(tmp_path, monkeypatch,
                                               family, match):
  # Was a KeyError: 'image' traceback from inside the traced init.
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  if family == "simple_diffusion":
    config = common.tiny_config()
  else:
    config = pyramidal_flow.get_config("tiny")
    config.dataset.data_dir = common.DATA_DIR
  config.dataset.name, config.dataset.image_size = "jaxgen_shapes_video", 16
  with pytest.raises(ValueError, match=match) as e:
    trainer.train_and_evaluate(config, str(tmp_path))
  assert "\n" not in str(e.value)


def test_a_model_that_fails_to_trace_records_no_config(tmp_path,
                                                       monkeypatch):
  # Some field errors only show when the network is traced (an attention
  # head size the kernels refuse): the run stops there, with no config.json.
  def fail(*args, **kwargs):
    del args, kwargs
    raise ValueError("config.model.attention_head_dim=7 does not fit")
  monkeypatch.setattr(trainer, "compile_step", fail)
  with pytest.raises(ValueError, match="attention_head_dim=7"):
    trainer.train_and_evaluate(common.tiny_config(total_steps=1),
                               str(tmp_path))
  assert not (tmp_path / "config.json").exists()


def test_resuming_at_another_batch_size_and_length(tmp_path, caplog):
  # Was step x batch_size: a resume at another batch size rewrote the past
  # (below, step 3 logged 48 examples seen, not 32).
  opt = {"optimizer.warmup_steps": 0, "optimizer.learning_rate": 2e-3}
  trainer.train_and_evaluate(common.tiny_config(total_steps=2, **opt),
                             str(tmp_path))
  with caplog.at_level(logging.WARNING):
    trainer.train_and_evaluate(
        common.tiny_config(total_steps=4, batch_size=16, **opt),
        str(tmp_path))
  # The lengthened cosine jumps back up, announced: at step 2 the 2-step
  # schedule has ended (0), the 4-step one is half-way (cos(pi / 2): half
  # the peak of 2e-3).
  moved = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith("Run length")]
  assert moved == ["Run length 2 -> 4 steps since checkpoint 2: the cosine "
                   "schedule now spans 4 steps, so the learning rate at step "
                   "2 goes from 0 to 0.001 (train at the full length from "
                   "the start to anneal once)."]
  rows = {r["step"]: r for r in metrics_lib.read_rows(
      str(tmp_path / "metrics.jsonl"))}
  assert [rows[k]["examples_seen"] for k in (1, 2, 3, 4)] == [8, 16, 32, 48]
  per_example = rows[1]["flops_seen"] / 8
  assert rows[4]["flops_seen"] == pytest.approx(48 * per_example)
  # 48 examples read, resumed at 32: the data starts at the next whole
  # batch (64), not at a position mixing two (it repeated 32-47).
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    trainer.train_and_evaluate(
        common.tiny_config(total_steps=5, batch_size=32, **opt),
        str(tmp_path))
  assert any("(48 examples read) is not a whole batch of 32 (the batch size "
             "changed): skipping 16 examples" in r.getMessage()
             for r in caplog.records)


def test_options_without_effect_warn_and_bad_scales_fail_early(caplog):
  # 16 px with min 8: scales 8, 16; nothing said.
  checks.check_config(common.tiny_config(**{"diffusion.multiscale": True,
                                            "diffusion.multiscale_min_size":
                                                8}))
  # Side <= min size: the plain MSE, which a tiny run would not show.
  with caplog.at_level(logging.WARNING):
    checks.check_config(common.tiny_config(**{"diffusion.multiscale": True}))
  assert [r.getMessage() for r in caplog.records
          if "multiscale" in r.getMessage()] == [
              "config.diffusion.multiscale=True at image side 16 <= "
              "multiscale_min_size=32 is the plain per-pixel MSE; lower "
              "multiscale_min_size (e.g. 4) for coarser scales."]
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    checks.check_config(common.tiny_config(**{"model.downsample": "haar",
                                              "model.patch_size": 1}))
  assert any("downsample='haar' with patch_size=1 is the same 3x3 stem"
             in r.getMessage() for r in caplog.records)
  # 16 is not 6 x a power of two: one line now, not a trace at compile.
  with pytest.raises(ValueError, match=r"^config.diffusion.multiscale: "
                     r"multiscale loss needs image side 16 to be <= 6 or 6 "
                     r"times a power of two. Change config.diffusion."
                     r"multiscale_min_size.$"):
    checks.check_config(common.tiny_config(**{
        "diffusion.multiscale": True, "diffusion.multiscale_min_size": 6}))


def test_schedule_warning_only_for_optimizer_schedules(caplog):
  # R3GAN's rates follow its burn-in, not optimizer.schedule: extending a
  # GAN run warned of a cosine that does not exist.
  with caplog.at_level(logging.WARNING):
    checks.warn_if_schedule_moves(r3gan.get_config("tiny"), 300, 600, 1200)
    checks.warn_if_schedule_moves(common.tiny_config(), 3, 6, 6)
  assert not caplog.records
  with caplog.at_level(logging.WARNING):
    checks.warn_if_schedule_moves(common.tiny_config(), 3, 6, 12)
  assert caplog.records[-1].getMessage().startswith("Run length 6 -> 12")
  # A wsd branch resumes its stable run's checkpoint, trained at the peak
  # (no decay) up to there: nothing moves (it warned "from 0 to" the peak).
  branch = common.tiny_config(**{"optimizer.schedule": "wsd",
                                 "optimizer.warmup_steps": 2,
                                 "optimizer.decay_fraction": 0.2})
  stable = dict(branch.optimizer.to_dict(), decay_fraction=0.0)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    checks.warn_if_schedule_moves(branch, 8, 8, 10, stable)
  assert not caplog.records
  with caplog.at_level(logging.WARNING):
    checks.warn_if_schedule_moves(branch, 8, 8, 10,
                                  branch.optimizer.to_dict())
  assert "goes from 0 to 0.002" in caplog.records[-1].getMessage()
  # A burn-in that is a share of the run moves with its length.
  gan = r3gan.get_config("tiny")
  gan.gan.burn_in_fraction = 0.5
  with caplog.at_level(logging.WARNING):
    checks.warn_if_schedule_moves(gan, 300, 600, 1200)
  assert caplog.records[-1].getMessage() == (
      "Run length 600 -> 1200 steps since checkpoint 300: the burn-in "
      "(gan.burn_in_fraction=0.5) now spans 600 steps instead of 300, so the "
      "learning rate, gamma, beta2, EMA half-life and augmentation move from "
      "step 300 on.")
  # Resumed past both burn-ins (100 and 150 steps): nothing moves.
  gan.gan.burn_in_fraction = 0.1
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    checks.warn_if_schedule_moves(gan, 1000, 1000, 1500)
  assert not caplog.records
  # ... unless the EMA half-life is a share of the run too.
  gan.gan.ema_half_life_fraction = 0.05
  with caplog.at_level(logging.WARNING):
    checks.warn_if_schedule_moves(gan, 1000, 1000, 1500)
  assert [r.getMessage() for r in caplog.records] == [
      "Run length 1000 -> 1500 steps since checkpoint 1000: the EMA "
      "half-life (gan.ema_half_life_fraction=0.05) changes in proportion "
      "from step 1000 on."]


def test_batch_change_on_resume_of_an_examples_budget_is_refused(tmp_path):
  config = common.tiny_config(total_steps=None, total_examples=16)
  trainer.train_and_evaluate(config, str(tmp_path))
  with pytest.raises(ValueError, match=r"^batch_size: 8 -> 16 on resume of "
                     r"a run whose length is config.total_examples: .* keep "
                     r"batch_size, or give the length as total_steps.$"):
    trainer.train_and_evaluate(
        common.tiny_config(total_steps=None, total_examples=32,
                           batch_size=16), str(tmp_path))
