"""A trained autoencoder run, read by the tools that use it.

`encode`, `spectrum`, the decoder of a latent-space run and the experiment
scripts restore an autoencoder run where they are started (not on the
training job's devices) and read-only: they never prune or move aside the
run's checkpoints.
"""

import ml_collections


def on_these_devices(config):
  """The run's config, on a mesh of the devices this process has.

  The tools (encode, spectrum, the decoder of a latent-space run) run where
  they are started, not on the training job's devices: its mesh is kept when
  it fits them, else every device goes on the data axis (the checkpoint is
  restored into that sharding).

  Args:
    config: an autoencoder run's config.

  Returns:
    The config, or a copy with `mesh` = data over all devices.
  """
  from jaxgen.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  try:
    mesh_lib.make_mesh(config.mesh)
    return config
  except ValueError:
    config = ml_collections.ConfigDict(config.to_dict())
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    return config


def restore_run(workdir: str, config=None, step=None):
  """The newest (or a given) checkpoint of an autoencoder run, for the tools.

  Args:
    workdir: the run directory.
    config: its config (default: WORKDIR/config.json).
    step: this checkpoint instead of the newest.

  Returns:
    (config, trainer setup, step, state).

  Raises:
    ValueError: one line if it is not an autoencoder run or has no
      checkpoint (at `step`).
  """
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  from jaxgen.train import run_state  # pylint: disable=g-import-not-at-top
  config = config or provenance.load_config(workdir)
  if config.family != "autoencoder":
    raise ValueError(f"{workdir} is a {config.family!r} run, not an "
                     "autoencoder.")
  config = on_these_devices(config)
  s, restored, state = run_state.restore(config, workdir, step=step)
  if state is None:
    raise ValueError(f"{workdir} has no checkpoint; train it first."
                     if step is None else
                     f"{workdir} no longer keeps checkpoint {step}.")
  return config, s, restored, state
