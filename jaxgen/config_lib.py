"""Shared pieces of every family config: argument parsing and trainer fields.

Config files live in `configs/` and expose `get_config(arg)`; the `arg` after
the colon in `--config=configs/x.py:arg` picks a preset and options, as in
big_vision: `configs/simple_diffusion.py:tiny` or `...:imagenet256,runlocal`.
"""

import importlib.util
import math
import os
import re
import sys
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from absl import flags
import ml_collections


# The repository root (config paths may be given relative to it).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_config_file(spec: Optional[str]) -> None:
  """Refuses a run's config.json given where a config file is expected.

  Config files are Python (`get_config(arg)`); executed, a JSON file fails
  with "name 'true' is not defined".

  Args:
    spec: the `--config` value, `path.py[:arg]` (None: not given).

  Raises:
    ValueError: one line naming `configs/run.py`, which reads it.
  """
  path = (spec or "").split(":", 1)[0]
  if path.endswith(".json"):
    raise ValueError(f"{path} is a run's record, not a config file; pass "
                     f"--config=configs/run.py:{path} to use its config.")


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path.py[:arg]` the way `--config=` does (path from the repo root).

  Args:
    spec: config file path (absolute, or relative to the cwd or the repo
      root) with an optional `:arg` for its `get_config(arg)`.

  Returns:
    The ConfigDict `get_config(arg)` returns.
  """
  check_config_file(spec)
  path, _, arg = spec.partition(":")
  if not os.path.exists(path) and os.path.exists(os.path.join(REPO_ROOT, path)):
    path = os.path.join(REPO_ROOT, path)
  if not os.path.exists(path):
    raise ValueError(f"config file {path!r} does not exist")
  name = "_jaxgen_cfg_" + re.sub(r"\W", "_", os.path.abspath(path))
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


# Fields a config file records about itself, with how to choose them.
_RECORDED = {"preset": "choose the preset with --config=FILE:PRESET",
             "family": "each config file is one family's; pass its file"}


def check_recorded_fields(overrides) -> None:
  """Refuses `--config.preset` / `--config.family`: they record what the
  file built (config.json, the logs), so setting one mislabelled the run.

  Args:
    overrides: the dotted names the command line set.

  Raises:
    ValueError: one line naming the way to choose it.
  """
  for name, how in _RECORDED.items():
    if name in overrides:
      raise ValueError(f"--config.{name} records what the config file "
                       f"built and cannot be set; {how}.")


def parse_arg(arg: Optional[str], presets: Sequence[str],
              **defaults: Any) -> ml_collections.ConfigDict:
  """Parses "preset,key=value,flag" into a ConfigDict.

  The first bare word is the preset; `key=value` pairs are cast to the type of
  the default; a bare `flag` that is a boolean default sets it True.

  Args:
    arg: the string after the colon (None or "" → the first preset).
    presets: allowed preset names (the first is the default).
    **defaults: other recognised options with their defaults.

  Returns:
    ConfigDict with `preset` and the options.

  Raises:
    ValueError: unknown preset or option, one line listing the choices.
  """
  out = dict(defaults, preset=presets[0])
  given = set()
  # Spaces around items are dropped (":tiny, sid2" is ":tiny,sid2").
  items = [p.strip() for p in (arg or "").split(",")]
  for i, item in enumerate(p for p in items if p):
    key, is_pair, value = item.partition("=")
    key, value = key.strip(), value.strip()
    if key in given:
      raise ValueError(f"config option {key!r} is given twice; give it "
                       "once.")
    given.add(key)
    if is_pair:
      if key not in defaults:
        raise ValueError(f"unknown config option {key!r}; known: "
                         f"{', '.join(sorted(defaults)) or 'none'}.")
      out[key] = _option_value(key, value, defaults[key])
    elif item in defaults and isinstance(defaults[item], bool):
      out[item] = True
    elif i == 0:
      if item not in presets:
        raise ValueError(f"unknown preset {item!r}; choose one of: "
                         f"{', '.join(presets)}.")
      out["preset"] = item
    elif item in presets:
      raise ValueError(f"one preset per config: {item!r} follows "
                       f"{out['preset']!r}; options go after the preset.")
    else:
      raise ValueError(f"unknown config option {item!r}; known: "
                       f"{', '.join(sorted(defaults)) or 'none'}.")
  return ml_collections.ConfigDict(out)


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _option_value(key: str, value: str, default: Any) -> Any:
  """`value` cast to the type of the option's default (one-line errors)."""
  if isinstance(default, bool):
    if value.lower() not in _TRUE + _FALSE:
      raise ValueError(f"config option {key}={value!r}: use true or false.")
    return value.lower() in _TRUE
  if default is None:
    return value
  try:
    return type(default)(value)
  except ValueError:
    kind = {int: "an integer", float: "a number"}.get(type(default),
                                                      type(default).__name__)
    raise ValueError(f"config option {key}={value!r}: expected "
                     f"{kind}.") from None


def base_config() -> ml_collections.ConfigDict:
  """Trainer fields every family shares, each with its default and meaning."""
  c = ml_collections.ConfigDict()
  # Family name, looked up in jaxgen.registry.OBJECTIVES.
  c.family = ""
  # Seed for parameters, data order and per-step noise (0 <= seed < 2**32,
  # what grain's and numpy's shuffles take).
  c.seed = 0
  # Global batch size (all devices, all processes).
  c.batch_size = 32
  # Run length: set exactly one; converted to steps in jaxgen.train.durations.
  c.total_steps = 0
  c.total_examples = 0
  c.total_epochs = 0.0
  c.total_flops = 0.0
  # Device mesh sizes (product = number of devices; one may be -1).
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # Logical axis name -> mesh axis (or a tuple of axes, or None), as a tuple
  # of pairs (overridable: a list field is not). Weights use
  # embed/mlp/heads/kv/conv_in/conv_out/cond/classes; activations act_*.
  c.logical_axis_rules = default_logical_axis_rules()
  # Log metrics every N steps (averaged over the interval).
  c.log_every_steps = 50
  # Save a checkpoint every N steps (and at the end); keep the newest K.
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  # Held-out batches per evaluation (0 = no eval) and how often (steps).
  c.eval_batches = 0
  c.eval_every_steps = 1000
  # Samples in the periodic PNG grid (0 = none) and how often (steps).
  c.num_samples = 16
  c.sample_every_steps = 1000
  # Steps of profiler trace to capture early in the run (0 = off).
  c.profile_steps = 0
  # Compute dtype of the networks: "auto" (bfloat16 on GPU / TPU, float32
  # on CPU), "float32", "bfloat16" or "float16". Losses, penalties, norms'
  # statistics and the model outputs stay float32.
  c.dtype = "auto"
  # Storage dtype of the trained parameters (and with it of their updates):
  # "float32" (the default; bf16 compute still keeps f32 master weights) or
  # "bfloat16" (half the parameters' memory; updates round). The EMA stays
  # float32 either way (bf16 cannot hold its 1e-4 steps); the Adam first
  # moment's dtype is config.optimizer.mu_dtype.
  c.param_dtype = "float32"
  # Write TensorBoard events (scalars, sample grids, the config) to the
  # workdir; metrics.jsonl and the PNG grids are written either way.
  c.tensorboard = True
  # Memory levers. remat: recompute activations of the transformer and
  # ResBlock stacks in the backward pass: "none" | "full" | the name of a
  # jax.checkpoint_policies policy (e.g. "dots_with_no_batch_dims_saveable").
  c.remat = "none"
  # Micro-batches per step (scanned inside the step; the same update as the
  # whole batch). batch_size must be divisible by it x the data-parallel size.
  c.grad_accum_steps = 1
  # How the micro-batches run: "scan" (a loop: one micro-batch's activations
  # live at a time, the memory lever), "unroll" (straight-line code: as much
  # memory as the whole batch; XLA:CPU runs convolutions ~15x faster outside
  # a loop body) or "auto" (unroll on CPU, scan on accelerators).
  c.grad_accum_loop = "auto"
  # A run directory whose newest checkpoint's weights a fresh run starts
  # from (optimizer state fresh), e.g. the previous DC-AE phase; "" = none.
  c.init_from = ""
  # Evaluation beyond the held-out loss. sample_metrics: FID / KID / IS (or
  # rFID / PSNR / SSIM / LPIPS) during training, off by default.
  c.eval = ml_collections.ConfigDict()
  c.eval.sample_metrics = sample_metrics_config()
  return c


def sample_metrics_config() -> ml_collections.ConfigDict:
  """`config.eval.sample_metrics` (jaxgen.eval.sample_metrics), defaults."""
  c = ml_collections.ConfigDict()
  # Off by default: it needs the Inception weights and reference statistics
  # (an autoencoder without them logs PSNR / SSIM alone).
  c.enabled = False
  # Feature network: "inception" (FID / KID / IS / precision / recall) or
  # "shape_classifier" (eval_fd_shapes and eval_accuracy_shapes: the
  # Fréchet distance in the embedded shapes' classifier features and its
  # accuracy on class-conditional samples; CPU-scale experiments).
  c.features = "inception"
  # The shape classifier's file (`python -m jaxgen.eval.classifier`); its
  # reference statistics come from `reference_stats` if given, else from
  # num_samples images of the run's train split.
  c.classifier_weights = ""
  # inception_fid.npz written by `python -m jaxgen.eval.convert` ("" with
  # reference_stats "": no Inception metrics, for reconstruction families).
  c.inception_weights = ""
  # Statistics of the training data (`python -m jaxgen.eval.stats`); for a
  # reconstruction family's rFID, those of the held-out split it
  # reconstructs (DC-AE: ImageNet val against val statistics): against
  # training data, even a perfect autoencoder scores their train-vs-held-out
  # FID.
  c.reference_stats = ""
  # lpips_vgg.npz (`jaxgen.eval.convert --vgg16`): eval_lpips of
  # reconstruction families; empty skips LPIPS.
  c.lpips_weights = ""
  # Images per evaluation (50,000 for published FIDs; fewer is faster and
  # biased upwards).
  c.num_samples = 10_000
  # Every N steps (a multiple of log_every_steps) and at the end; 0: only
  # at the end.
  c.every_steps = 0
  # Images per sampling and feature step (rounded to the device count).
  c.batch_size = 256
  return c



def default_logical_axis_rules():
  """FSDP over `fsdp`, Megatron-style tensor parallelism over `tensor`.

  flax resolves rules in order, one mesh axis per array at most: a kernel's
  input dim (embed / conv_in / cond) takes `fsdp` first and its output dim
  then falls through to `tensor`, while a 1-D vector (bias, norm scale) of an
  output dim takes both axes, so nothing sizeable is replicated under FSDP.
  Tuples (a list field cannot be overridden from the command line):
  `--config.logical_axis_rules="(('act_batch', ('data', 'fsdp')), ...)"`.
  """
  return (
      ("act_batch", ("data", "fsdp")),
      ("act_mlp", "tensor"),
      ("act_heads", "tensor"),
      ("embed", "fsdp"),
      ("conv_in", "fsdp"),
      ("cond", "fsdp"),
      ("mlp", ("tensor", "fsdp")),
      ("mlp", "tensor"),
      ("heads", ("tensor", "fsdp")),
      ("heads", "tensor"),
      ("conv_out", ("tensor", "fsdp")),
      ("conv_out", "tensor"),
  )


def optimizer_config(**overrides: Any) -> ml_collections.ConfigDict:
  """AdamW defaults (see jaxgen.train.state.make_optimizer)."""
  c = dict(
      name="adamw",          # "adamw" | "adam"
      learning_rate=1e-4,    # peak learning rate
      b1=0.9, b2=0.99,       # Adam's moment decay rates
      eps=1e-8,              # Adam's denominator epsilon
      weight_decay=0.0,      # decoupled (AdamW) weight decay
      grad_clip=1.0,         # global-norm clip (0 = off)
      schedule="cosine",     # "cosine" (to end of run) | "constant" |
                             # "wsd" (warmup-stable-decay)
      warmup_steps=0,        # linear warmup steps ...
      warmup_fraction=0.0,   # ... or a fraction of the run (wins if set)
      end_lr_fraction=0.0,   # cosine / wsd end at this fraction of the peak
      decay_fraction=0.2,    # wsd: linear decay over the run's last 20%
      mu_dtype="float32",    # Adam's first moment: "float32" | "bfloat16"
  )
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
  """Dotted keys of a (possibly nested) ConfigDict's or dict's leaves."""
  out = {}
  items = tree.items() if hasattr(tree, "items") else []
  for key, value in items:
    name = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Dict[str, Any],
                    open_sections: Sequence[str] = ()) -> None:
  """Sets dotted keys ("model.width") in place; unknown keys are errors.

  Args:
    config: an unlocked config.
    overrides: dotted key -> value. Lists become tuples (config fields hold
      tuples).
    open_sections: top-level sections where new keys may be added (e.g. a
      sweep's size ladder may set any `model` field).

  Raises:
    ValueError: an unknown key outside `open_sections`.
  """
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = config
    for p in path:
      if p not in node:
        raise ValueError(f"unknown config field {key!r}.")
      node = node[p]
    exists = leaf in node
    if not exists and (not path or path[0] not in open_sections):
      raise ValueError(f"unknown config field {key!r}.")
    if isinstance(value, list):
      value = tuple(value)
    if exists and node[leaf] is None:
      # A None default (e.g. dataset.data_dir) fixes no type: replace it.
      del node[leaf]
    node[leaf] = value


def error_line(error: BaseException) -> str:
  """One readable line for an error from loading or overriding a config.

  ml_collections wraps them in tracebacks (an unknown preset) or a KeyError
  with a suggestion (a typo'd `--config.x` field); the line keeps the
  message and the suggestion.

  Args:
    error: the exception.

  Returns:
    The message, without traceback or exception type.
  """
  text = str(error).replace("\\n", "\n").replace("\\'", "'")
  typo = re.search(r'Did you mean "([\w.]+)" instead of "([\w.]+)"', text)
  if typo:
    return (f"unknown config field {typo.group(2)!r}; did you mean "
            f"{typo.group(1)!r}?")
  if isinstance(error, FileNotFoundError) and error.filename:
    # A file a command was given (results, weights), not a config file.
    return f"{error.filename} not found"
  missing = re.search(r"No such file or directory: '([^']+)'", text)
  if missing:
    path = missing.group(1)
    beside = os.path.join(REPO_ROOT, path)
    if not os.path.isabs(path) and os.path.exists(beside):
      # --config paths are read from the current directory.
      return (f"config file {path} not found in {os.getcwd()}; pass "
              f"--config={beside} or run from {REPO_ROOT}")
    return f"config file {path} not found"
  required = re.search(r"Flag --(\w+) must have a value other than None",
                       text)
  if required:
    return f"pass --{required.group(1)} (it is required; --help lists flags)"
  no_fn = re.search(r"module '(\w+)_config' has no attribute 'get_config'",
                    text)
  if no_fn:
    # config_flags names the module after the flag (--sweep: sweep_config).
    return (f"--{no_fn.group(1)} names a file without get_config(arg); "
            "give a file that defines it (see configs/).")
  lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
  last = lines[-1] if lines else type(error).__name__
  last = re.sub(r"^[\w.]*(Error|Exception): ", "", last).strip()
  while len(last) > 1 and last[0] == last[-1] and last[0] in "'\"":
    last = last[1:-1]  # A KeyError's repr (of a repr); inner quotes stay.
  if isinstance(error, (KeyError, AttributeError)) and re.fullmatch(
      r"[\w.]+", last):
    return f"unknown config field {last!r}"
  not_bool = re.match(r"(flag --[\w.]+=[^:]*): \('Non-boolean argument to "
                      r"boolean flag', ", last)
  if not_bool:
    return f"{not_bool.group(1)}: expects true or false"
  not_int = re.search(r"invalid literal for int\(\) with base 10: '([^']*)'",
                      last)
  if not_int and re.match(r"flag --[\w.]+=", last):
    # An integer flag or field given 1e3 or 0.5: say what it takes.
    value = not_int.group(1)
    try:
      whole = float(value).is_integer() and abs(float(value)) < 2**53
    except ValueError:
      whole = False
    hint = (f"write {value} as {int(float(value))}" if whole
            else f"not {value!r}")
    last = last[:not_int.start()] + f"expects an integer ({hint})"
  return last


def with_notes(error: BaseException, text: Optional[str] = None) -> str:
  """The error's line followed by its one-line notes, still one line.

  A note says, for example, that a checkpoint of the state the error
  interrupted was saved; libraries' longer notes (Grain's about the frames
  it filtered from the traceback) are left out.

  Args:
    error: the exception.
    text: its line, when not `str(error)`.

  Returns:
    The line.
  """
  return " ".join([str(error) if text is None else text,
                   *(n for n in getattr(error, "__notes__", ())
                     if "\n" not in n.strip())])


def usage_error(message: str) -> NoReturn:
  """Exits with `error: message` on stderr (status 2), without the usage
  text `app.UsageError` prints first.

  Args:
    message: what is wrong and what to pass instead.
  """
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def check_no_arguments(argv: Sequence[str]) -> None:
  """One error line for positional arguments (a flag missing its `--`).

  Args:
    argv: what `app.run` passes to main (the program name first).
  """
  if len(argv) > 1:
    usage_error(f"unexpected arguments {' '.join(argv[1:])}; flags take the "
                "form --name=value")


def parse_flags(argv: List[str]) -> List[str]:
  """absl flag parsing whose config errors are one line (`app.run`'s
  `flags_parser`)."""
  for i, arg in enumerate(argv):
    # Before parsing, which executes the file.
    if arg.startswith("--config="):
      spec = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
    else:
      continue
    try:
      check_config_file(spec)
    except ValueError as e:
      usage_error(str(e))
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    override = re.search(r"Unknown command line flag '(\w+)\.", str(e))
    name = override.group(1) if override else ""
    if name and name in flags.FLAGS and not any(
        a.startswith((f"--{name}=", f"-{name}=")) for a in argv):
      # Overrides of a config flag that was not given at all.
      example = ("configs/scaling/simple_diffusion.py:cpu" if name == "sweep"
                 else "configs/simple_diffusion.py:tiny")
      usage_error(f"--{name}.* overrides need --{name}=FILE:ARG first "
                  f"(e.g. --{name}={example}).")
    line = error_line(e)
    usage_error(line + _file_section_hint(line, argv))


def _file_section_hint(line: str, argv: List[str]) -> str:
  """`section_hint` for a `--config=FILE:ARG` command line (the config is
  loaded again: the flag holds none after a failed override)."""
  spec = next((a.split("=", 1)[1] for a in argv
               if a.startswith("--config=")), None)
  if not spec or not line.startswith("unknown config field"):
    return ""
  try:
    return section_hint(line, load_config_file(spec), argv)
  except Exception:  # pylint: disable=broad-except  (only a hint)
    return ""


def section_hint(line: str, config: ml_collections.ConfigDict,
                 argv: List[str]) -> str:
  """What to add to an `error_line` naming an unknown top-level section of
  a run's config (e.g. --config.diffusion.x on an R3GAN run): its family.

  Args:
    line: the `error_line`.
    config: the run's config.
    argv: the command line (the hint is for `--config.NAME.x=...`).

  Returns:
    " (a 'FAMILY' config has no 'NAME' section)", "; did you mean
    --config.SECTION.NAME?" for a section's field given at the top level,
    " (--config.SECTION.NAME); did you mean --config.NAME?" for a top-level
    field given in a section, or "".
  """
  unknown = re.fullmatch(r"unknown config field '(\w+)'", line)
  if not unknown:
    return ""
  name = unknown.group(1)
  if name in config:
    # A top-level field given inside a section (--config.model.dtype for
    # config.dtype): name the flag as given and the field it meant.
    given = sorted({a.split("=", 1)[0] for a in argv
                    if re.fullmatch(rf"--config\.[\w.]+\.{name}",
                                    a.split("=", 1)[0])})
    return (f" ({given[0]}); did you mean --config.{name}?" if given
            else "")
  if any(a.startswith(f"--config.{name}=") for a in argv):
    # A field given at the top level that lives in a section
    # (--config.learning_rate for optimizer.learning_rate).
    nested = sorted(k for k in flatten(config.to_dict())
                    if k.rsplit(".", 1)[-1] == name and "." in k)
    if nested:
      return "; did you mean " + " or ".join(
          f"--config.{k}" for k in nested[:3]) + "?"
  family = config.get("family")
  if not family or not any(a.startswith(f"--config.{name}.") for a in argv):
    return ""
  return f" (a {family!r} config has no {name!r} section)"


COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")
PARAM_DTYPES = ("float32", "bfloat16")


def check_dtypes(config: ml_collections.ConfigDict) -> None:
  """One-line ValueErrors for `config.dtype`, `config.param_dtype` and
  `config.optimizer.mu_dtype`."""
  optimizer = config.get("optimizer") or {}
  for key, value, allowed in (
      ("dtype", config.get("dtype", "auto"), COMPUTE_DTYPES),
      ("param_dtype", config.get("param_dtype", "float32"), PARAM_DTYPES),
      ("optimizer.mu_dtype", optimizer.get("mu_dtype", "float32"),
       PARAM_DTYPES)):
    if value not in allowed:
      raise ValueError(f"config.{key}={value!r}; use one of "
                       f"{', '.join(allowed)}.")


def compute_dtype(config: ml_collections.ConfigDict):
  """The networks' compute dtype: `config.dtype`, with "auto" resolved to
  bfloat16 on accelerators and float32 on CPU.

  Args:
    config: the run config.

  Returns:
    A numpy dtype.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  check_dtypes(config)
  name = config.get("dtype", "auto")
  if name == "auto":
    name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return jnp.dtype(name)


def param_dtype(config: ml_collections.ConfigDict):
  """`config.param_dtype` as a numpy dtype."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  check_dtypes(config)
  return jnp.dtype(config.get("param_dtype", "float32"))


def check_range(name: str, value: Any, *, low: Optional[float] = None,
                high: Optional[float] = None, low_open: bool = False,
                high_open: bool = False, integer: bool = False,
                finite: bool = False) -> None:
  """One-line ValueError unless `value` is a number in the given range.

  For fields whose bad values would otherwise fail deep inside a model (a
  division by zero in an initialiser) or train silently on nonsense (a
  label-dropout rate above 1).

  Args:
    name: the field as the user writes it, e.g. "config.model.num_heads".
    value: its value.
    low: lower bound (None: none).
    high: upper bound (None: none).
    low_open: the lower bound itself is excluded.
    high_open: the upper bound itself is excluded.
    integer: the value must be an integer.
    finite: infinities are refused too (NaN always is).

  Raises:
    ValueError: "config.x=v must be ..." with the allowed range.
  """
  is_number = (isinstance(value, (int, float)) and not isinstance(value, bool)
               and not math.isnan(value)
               and (not finite or math.isfinite(value))
               and (not integer or float(value).is_integer()))
  ok = is_number and not (
      (low is not None and (value <= low if low_open else value < low)) or
      (high is not None and (value >= high if high_open else value > high)))
  if ok:
    return
  what = "an integer" if integer else ("a finite number" if finite
                                       else "a number")
  if low is not None and high is not None:
    bounds = (f"in {'(' if low_open else '['}{low:g}, {high:g}"
              f"{')' if high_open else ']'}")
  elif low is not None:
    bounds = f"{'>' if low_open else '>='} {low:g}"
  elif high is not None:
    bounds = f"{'<' if high_open else '<='} {high:g}"
  else:
    bounds = ""
  raise ValueError(f"{name}={value!r} must be {what}"
                   f"{' ' + bounds if bounds else ''}.")
