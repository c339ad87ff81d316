r"""Another run's resolved config, read from its `config.json`.

The argument is a run directory or the path of a `config.json` (every run
writes one at start, `jaxgen.train.provenance`). It reruns exactly what that
run trained — in another workdir, with another seed, or longer:

  python -m jaxgen.main --config=configs/run.py:/runs/sd_tiny \
      --workdir=/runs/sd_tiny_seed1 --config.seed=1

`--config.x=y` overrides apply as with any config file.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the config recorded in `arg`'s config.json.

  Args:
    arg: a run directory, or a config.json path.

  Returns:
    The run's resolved config.

  Raises:
    ValueError: one line when `arg` is empty or holds no run config.
  """
  if not arg:
    raise ValueError("configs/run.py needs a run: --config=configs/run.py:"
                     "WORKDIR (or :WORKDIR/config.json).")
  # Here, not at the top: jaxgen.main loads config files before JAX starts.
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  return provenance.load_config(arg)
