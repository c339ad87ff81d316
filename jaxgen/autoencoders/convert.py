r"""A diffusers `AutoencoderDC` folder -> a jaxgen run the trainer starts from.

  python -m jaxgen.autoencoders.convert --diffusers=DIR --out=RUN \
      [--config=configs/autoencoder.py:dc_ae_f32c32_in] [--config.x=...]

RUN gets the config (the given preset with `config.model` replaced by the
folder's architecture), and a verified checkpoint at step 0 holding the
converted weights (and BatchNorm running statistics). Start a phase from it
with `--config.init_from=RUN`, fine-tune it in place
(`python -m jaxgen.main --workdir=RUN ...` resumes from step 0), or encode a
dataset with `jaxgen.autoencoders.encode --workdir=RUN`. The dataset fields
of the config matter: the tools reopen the run's dataset.
"""

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags


def convert(diffusers_dir: str, out: str,
            config: ml_collections.ConfigDict) -> dict:
  """Writes the run directory `out` from a diffusers folder.

  Args:
    diffusers_dir: config.json + *.safetensors of an `AutoencoderDC`.
    out: the new run directory (must not hold a checkpoint yet).
    config: an autoencoder config; its model is replaced.

  Returns:
    {"params": count, "scaling_factor": ..., "checkpoint": path}.

  Raises:
    ValueError: one line for a bad folder, an unsupported architecture or an
      `out` that already holds a run.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import diffusers_compat  # pylint: disable=g-import-not-at-top
  from jaxgen.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxgen.parallel import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from jaxgen.train import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  from jaxgen.train import checks  # pylint: disable=g-import-not-at-top
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top

  if os.path.isdir(os.path.join(out, "checkpoints")) and os.listdir(
      os.path.join(out, "checkpoints")):
    raise ValueError(f"{out} already holds checkpoints; pass a new --out.")
  if config.get("family") != "autoencoder":
    raise ValueError("--config must be an autoencoder config "
                     "(configs/autoencoder.py:PRESET).")
  kind = config.autoencoder.get("architecture", "dc_ae")
  if kind != "dc_ae":
    # Its model fields would be replaced by DC-AE's and then read as its.
    raise ValueError(
        f"--config is a {kind!r} autoencoder preset (config.autoencoder."
        f"architecture={kind!r}); converting diffusers' AutoencoderDC needs "
        "a dc_ae preset, e.g. --config=configs/autoencoder.py:"
        "dc_ae_f32c32_in.")
  loaded = diffusers_compat.load_dc_ae(diffusers_dir)
  config = ml_collections.ConfigDict(config.to_dict())
  fields = dataclasses.asdict(loaded.arch)
  config.dataset.channels = int(fields.pop("in_channels"))
  config.model = ml_collections.ConfigDict(fields)
  # The released DC-AEs are deterministic.
  config.autoencoder.kl_weight = 0.0
  checked = checks.check_config(config)
  it, info = pipeline.build_input(
      config.dataset, global_batch_size=trainer.train_batch_size(
          config, checked[2]), seed=config.seed, process_index=0,
      process_count=1, train=True)
  s = trainer.setup(config, data_info=info, checked=checked)
  os.makedirs(out, exist_ok=True)
  provenance.write(out, config)
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    init_fn, _, shardings = trainer.abstract_state(s, jax.random.key(0))
    state = sharding_lib.create_sharded(init_fn, shardings,
                                        jax.random.key(config.seed))
    params = dict(state.params)
    params["model"] = jax.device_put(loaded.variables["params"],
                                     shardings.params["model"])
    stats = loaded.variables.get("batch_stats") or {}
    model_state = state.model_state
    if stats:
      model_state = {"batch_stats": jax.device_put(
          stats, shardings.model_state["batch_stats"])}
    state = state.replace(params=params, model_state=model_state)
    ckpt = checkpoint_lib.Checkpointer(os.path.join(out, "checkpoints"))
    try:
      ckpt.save(0, state, it, force=True)
      ckpt.wait()
    finally:
      ckpt.close()
  meta = {"params": int(sum(x.size for x in jax.tree.leaves(
              loaded.variables["params"]))),
          "scaling_factor": loaded.scaling_factor,
          "diffusers": os.path.abspath(diffusers_dir),
          "checkpoint": os.path.join(out, "checkpoints", "0")}
  with open(os.path.join(out, "converted.json"), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  return meta


def _define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("diffusers", None,
                      "The AutoencoderDC folder (config.json + safetensors).")
  flags.DEFINE_string("out", None, "The run directory to create.")
  config_flags.DEFINE_config_file(
      "config", "configs/autoencoder.py:dc_ae_f32c32_sana",
      "Autoencoder config (training fields, dataset); its model is replaced.")


def main(argv):
  del argv
  flags_ = flags.FLAGS
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.train import logs  # pylint: disable=g-import-not-at-top
  logs.quiet_libraries(flags_.verbosity)
  logs.tool_log_lines()
  try:
    for name in ("diffusers", "out"):
      if not flags_[name].value:
        raise ValueError(f"pass --{name}.")
    meta = convert(flags_.diffusers, flags_.out, flags_.config)
  except Exception as e:  # pylint: disable=broad-except
    print(f"error: {config_lib.error_line(e)}", file=sys.stderr)
    sys.exit(1)
  print(f"converted {meta['params']:,} parameters (scaling factor "
        f"{meta['scaling_factor']:.4g}) into {flags_.out}; start from it with "
        f"--config.init_from={flags_.out}")


if __name__ == "__main__":
  _define_flags()
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  # Flag errors are one `error:` line.
  app.run(main, flags_parser=config_lib.parse_flags)
