"""`WORKDIR/config.json`: the resolved config and where the run came from.

Written at the start of every run (atomically), so a result can always be
traced to its config, code version and hardware. On resume the config of the
checkpointed run is compared with the new one: a changed model or data shape
is refused in one line naming the fields (the checkpoint could not hold it),
other changes are listed in one warning, and run-length, logging, mesh and
input-pipeline fields may change freely.
"""

import functools
import json
import os
import subprocess
import time
from typing import Any, Dict, List, Sequence, Tuple

import etils.epath as epath
import jax
import ml_collections

from jaxgen import config_lib

CONFIG_FILE = "config.json"

# Fields whose change makes the checkpoint unusable (prefixes of dotted keys).
_SHAPE_FIELDS = ("family", "model.", "dataset.image_size", "dataset.channels",
                 "dataset.num_classes", "dataset.num_frames",
                 "diffusion.class_conditional", "gan.class_conditional",
                 # What a pyramidal-flow model learnt: its stages, their time
                 # scale and (video) the history it attends to; sampling
                 # with others drew what it never saw. pyramid.renoise (the
                 # sampling ablation) and history_corruption (training
                 # only) may change.
                 "flow.class_conditional", "pyramid.num_stages",
                 "pyramid.stage_ratios", "pyramid.num_train_timesteps",
                 "pyramid.timestep_embedding", "pyramid.temporal",
                 "pyramid.history_frames")
# Fields that may change on resume without comment.
_FREE_FIELDS = ("total_steps", "total_examples", "total_epochs", "total_flops",
                "log_every_steps", "checkpoint_every_steps",
                "keep_checkpoints", "eval_batches", "eval_every_steps",
                "num_samples", "sample_every_steps", "profile_steps", "mesh.",
                "logical_axis_rules", "dataset.data_dir",
                "dataset.num_threads", "dataset.prefetch_buffer_size",
                # Where decoded splits are kept, not what they hold.
                "dataset.in_memory_cache_",
                "remat", "grad_accum_steps", "grad_accum_loop",
                "eval.",
                "init_from",
                # How kernels run, not what they compute: a run trained on
                # CPU resumes or samples on GPU with cuDNN attention.
                "model.attention_impl", "model.conv_impl",
                "autoencoder.conv_impl")


@functools.lru_cache(maxsize=None)
def _git() -> Dict[str, Any]:
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root,
                            capture_output=True, text=True, timeout=10,
                            check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain",
                                 "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip())
    return {"git_commit": commit, "git_dirty": dirty}
  except (OSError, subprocess.SubprocessError):
    return {"git_commit": "unknown", "git_dirty": None}


def provenance() -> Dict[str, Any]:
  """Code version, library versions and devices of this run.

  Returns:
    JSON-ready dict: git_commit, git_dirty, jax, jaxlib, flax versions,
    device_kind, device_count, process_count, time.
  """
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  return dict(_git(), jax=jax.__version__, jaxlib=jaxlib.__version__,
              flax=flax.__version__, device_kind=jax.devices()[0].device_kind,
              device_count=jax.device_count(),
              process_count=jax.process_count(),
              time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _to_json(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def compare(old: Dict[str, Any], new: Dict[str, Any]
            ) -> Tuple[List[str], List[str]]:
  """(shape changes, other changes) between two config dicts, as
  "key: old -> new" strings; free fields are ignored."""
  a, b = config_lib.flatten(old), config_lib.flatten(new)
  shape, other = [], []
  for key in sorted(set(a) | set(b)):
    if a.get(key) == b.get(key) or key.startswith(_FREE_FIELDS):
      continue
    change = f"{key}: {a.get(key)!r} -> {b.get(key)!r}"
    (shape if key.startswith(_SHAPE_FIELDS) else other).append(change)
  return shape, other


def first_changes(changes: Sequence[str], limit: int) -> str:
  """The first `limit` of `compare`'s changes for a message, "; "-joined
  ("; ..." when there are more).

  Args:
    changes: "key: old -> new" strings.
    limit: how many to name.

  Returns:
    The text ('' for none).
  """
  return "; ".join(list(changes[:limit])
                   + (["..."] if len(changes) > limit else []))


def differences(workdir: str, config: ml_collections.ConfigDict
                ) -> Tuple[List[str], List[str]]:
  """`compare` of the run in `workdir` ("key: theirs -> ours") with
  `config`: (model and data-shape changes, other changes).

  Args:
    workdir: another run's directory (with config.json).
    config: this run's config.

  Returns:
    The changes; ([], []) if that run has no config.json.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return [], []
  return compare(_read(path), _to_json(config))


def shape_differences(workdir: str, config: ml_collections.ConfigDict
                      ) -> List[str]:
  """The model and data-shape fields among `differences`, to name them in
  an error."""
  return differences(workdir, config)[0]


def model_differences(workdir: str, config: ml_collections.ConfigDict
                      ) -> List[str]:
  """The `model.` fields among `shape_differences(workdir, config)`."""
  return [c for c in shape_differences(workdir, config)
          if c.startswith("model.")]


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to `WORKDIR/config.json`.

  Args:
    workdir: the run directory, or the path of its config.json (or of a
      copy).

  Returns:
    The config (JSON lists back as tuples, as config fields hold them).

  Raises:
    ValueError: one line if the run has no config.json.
  """
  path = epath.Path(workdir)
  if not str(workdir).endswith(".json"):
    path = path / CONFIG_FILE
  if not path.exists():
    raise ValueError(f"{path} not found; name the directory of a run "
                     "(every run writes its config.json at start).")
  config = ml_collections.ConfigDict(_tuples(_read(path)))
  _typed_placeholders(config)
  return config


# The config file of each family (its presets type the run's fields).
_FAMILY_CONFIG = {"flow_matching": "pyramidal_flow"}


def _typed_placeholders(config: ml_collections.ConfigDict) -> None:
  """Turns null fields back into typed placeholders, in place.

  config.json stores an unset placeholder (`dataset.data_dir`,
  `model.out_channels`) as null, and ml_collections cannot override a plain
  None from the command line; the family's config file gives the type.
  """
  family = str(config.get("family", ""))
  name = _FAMILY_CONFIG.get(family, family)
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  try:
    preset = config_lib.load_config_file(
        os.path.join(root, "configs", f"{name}.py"))
  except (ValueError, OSError, ImportError):
    return  # Another family's run: its nulls stay plain.

  def walk(node, ref):
    for key in list(node.keys()):
      value, known = node[key], ref is not None and key in ref
      if isinstance(value, ml_collections.ConfigDict):
        walk(value, ref[key] if known and isinstance(
            ref[key], ml_collections.ConfigDict) else None)
      elif value is None and known:
        kind = ref.get_type(key)
        if kind is not type(None):
          node[key] = ml_collections.config_dict.placeholder(kind)

  walk(config, preset)


def _read(path: epath.Path) -> Dict[str, Any]:
  """The "config" mapping of a config.json (one-line ValueError if bad)."""
  try:
    config = json.loads(path.read_text())["config"]
    if not isinstance(config, dict):
      raise TypeError("'config' is not a mapping")
    return config
  except (ValueError, KeyError, TypeError) as e:
    # JSONDecodeError is a ValueError; a JSON file of something else has no
    # "config" mapping.
    raise ValueError(f"{path} is not a run config ({type(e).__name__}: "
                     f"{e}); restore it from a copy.") from None


def check(workdir: str, config: ml_collections.ConfigDict,
          resuming: bool) -> List[str]:
  """Compares with the previous config.json when resuming.

  Args:
    workdir: the run directory.
    config: the resolved run config.
    resuming: the workdir has checkpoints this run will continue from.

  Returns:
    The changed fields that do not change the model ("key: old -> new").

  Raises:
    ValueError: (one line) a model or shape field changed since the
      checkpointed run.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not (resuming and path.exists()):
    return []
  old = _read(path)
  if old.get("family") != config.get("family"):
    # Every other difference follows from the family: name that alone.
    raise ValueError(
        f"{workdir} holds a run of family {old.get('family')!r}, not "
        f"{config.get('family')!r}; pass another --workdir (or "
        f"--config=configs/run.py:{workdir} to resume it).")
  shape, other = compare(old, _to_json(config))
  if shape:
    raise ValueError(
        f"the checkpoints in {workdir} are of another model: "
        f"{first_changes(shape, 4)}; "
        f"resume with --config=configs/run.py:{workdir} or pass another "
        "--workdir.")
  return other


def write(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes config.json (config and provenance) atomically, on process 0.

  Args:
    workdir: the run directory.
    config: the resolved run config.
  """
  if jax.process_index() == 0:
    path = epath.Path(workdir) / CONFIG_FILE
    tmp = path.parent / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps({"config": _to_json(config),
                               "provenance": provenance()}, indent=1))
    tmp.replace(path)
