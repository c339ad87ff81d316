"""Checks a run's config before anything is prepared or compiled.

Each raises a one-line `ValueError` that says what to change. The trainer
calls `check_config` before the dataset is prepared (it needs no data) and the
data-dependent checks (`check_video`, `check_eval_interval`) once the
pipeline's info and the run length are known; commands that build a state
without training (`jaxgen.autoencoders.convert`) call `check_config` too.
"""

import os
from typing import Any, Dict, Optional, Sequence

from absl import logging
import etils.epath as epath
import jax
import ml_collections

from jaxgen import config_lib
from jaxgen import registry
from jaxgen.autoencoders import latent_decode
from jaxgen.eval import sample_metrics
from jaxgen.nn import remat as remat_lib
from jaxgen.parallel import mesh as mesh_lib
from jaxgen.parallel import multihost
from jaxgen.train import accumulate
from jaxgen.train import checkpoint
from jaxgen.train import durations
from jaxgen.train import provenance


def check_config(config: ml_collections.ConfigDict,
                 devices: Optional[Sequence[jax.Device]] = None):
  """The checks that need no data: run before the dataset is prepared.

  Args:
    config: the run config.
    devices: devices of the mesh (default: all).

  Returns:
    (mesh, data-parallel size, the family's objective built without a run
    length).

  Raises:
    ValueError: one line saying what to change.
  """
  check_trainer_fields(config)
  durations.check_length(config)
  if not registry.OBJECTIVES.names():
    raise ValueError("no model family is registered; import jaxgen.families "
                     "(jaxgen.main does) before training.")
  objective_cls = registry.OBJECTIVES.get(config.family)
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  dp = mesh_lib.data_parallel_size(mesh)
  if config.batch_size % dp:
    raise ValueError(
        f"config.batch_size={config.batch_size} is not divisible by the "
        f"{dp} data-parallel devices (mesh data×fsdp = "
        f"{mesh.shape['data']}×{mesh.shape['fsdp']}); use a multiple of {dp}.")
  if config.batch_size % jax.process_count():
    raise ValueError(
        f"config.batch_size={config.batch_size} is not divisible by the "
        f"{jax.process_count()} processes.")
  multihost.check_batch_layout(mesh, config.batch_size)
  _check_heads(config, mesh)
  objective = objective_cls(config)
  k = int(config.get("grad_accum_steps", 1))
  if k != 1 and not objective.accumulates_micro_batches:
    raise ValueError(f"config.grad_accum_steps={k}: the {config.family} step "
                     "does not accumulate micro-batches; set it to 1.")
  objective.validate(dp)
  return mesh, dp, objective


def check_restorable(config: ml_collections.ConfigDict,
                     devices: Optional[Sequence[jax.Device]] = None):
  """`check_config` for a run restored or traced, not trained.

  Restoring a run (to sample, encode, or warm-start from it) or tracing its
  state (a warm start's check) builds its training setup, whose checks ask
  the batch to divide over the data-parallel devices (and, for pyramidal
  flow, over the stage-ratio sum): a run trained on fewer devices than it
  is restored on would be refused for a batch nothing draws. The batch
  times this mesh's data-parallel size divides wherever the run's own batch
  did.

  Args:
    config: the run's config.
    devices: devices of the mesh (default: all).

  Returns:
    (`config`, or a copy with that wider batch when `config`'s own fails
    here; `check_config`'s result for it).

  Raises:
    ValueError: one line, for a problem the batch is not part of.
  """
  try:
    return config, check_config(config, devices)
  except ValueError:
    pass
  dp = mesh_lib.data_parallel_size(mesh_lib.make_mesh(config.mesh, devices))
  wider = config.copy_and_resolve_references()
  wider.batch_size = int(config.batch_size) * dp
  # Any error left is not the batch's.
  return wider, check_config(wider, devices)


def _check_heads(config: ml_collections.ConfigDict, mesh) -> None:
  """Attention heads split over the tensor axis must divide evenly (else XLA
  fails at compile time with a sharding error that names no config field)."""
  heads = (config.get("model") or {}).get("num_heads")
  tensor = mesh.shape["tensor"]
  if not heads or tensor == 1 or int(heads) % tensor == 0:
    return
  axes = [a for name, a in config.logical_axis_rules if name == "act_heads"]
  if any(a == "tensor" or (isinstance(a, (list, tuple)) and "tensor" in a)
         for a in axes):
    raise ValueError(f"config.model.num_heads={heads} is not divisible by "
                     f"the mesh's tensor axis ({tensor}, config.mesh.tensor); "
                     "use a tensor size that divides the heads.")


def committed_steps(ckpt_dir: str) -> list:
  """The steps with a committed checkpoint under `ckpt_dir` (none: []);
  a `<step>` folder orbax has not finalized (a GCS save cut short) is not
  one."""
  path = epath.Path(ckpt_dir)
  if not path.is_dir():
    return []
  return [int(d.name) for d in path.iterdir()
          if d.name.isdigit() and checkpoint.finalized(d)]


# The optimizer fields every family's config may carry, and their ranges.
_OPTIMIZER_RANGES = {
    "learning_rate": dict(low=0, low_open=True),
    "end_learning_rate": dict(low=0),
    "b1": dict(low=0, high=1, high_open=True),
    "b2": dict(low=0, high=1, high_open=True),
    "end_b2": dict(low=0, high=1, high_open=True),
    "eps": dict(low=0),
    "weight_decay": dict(low=0),
    "warmup_steps": dict(low=0, integer=True),
}


def check_trainer_fields(config: ml_collections.ConfigDict) -> None:
  """One-line ValueErrors for trainer fields that cannot work.

  Args:
    config: the run config.
  """
  positive = ["batch_size", "log_every_steps", "checkpoint_every_steps",
              "keep_checkpoints", "eval_every_steps", "sample_every_steps"]
  for key in positive:
    value = config.get(key)
    if value is not None and int(value) < 1:
      raise ValueError(f"config.{key}={value} must be a positive integer.")
  # grain's and numpy's shuffles take 0 <= seed < 2^32: outside it the
  # error named no field (on the in-memory path, after compiling).
  seed = config.get("seed", 0)
  if isinstance(seed, bool) or not isinstance(seed, int) or not (
      0 <= seed < 2**32):
    raise ValueError(f"config.seed={seed!r} must be an integer in "
                     "[0, 2**32), e.g. 0.")
  for key in ("num_samples", "eval_batches", "profile_steps"):
    value = config.get(key)
    if value is not None and int(value) < 0:
      raise ValueError(f"config.{key}={value} must be >= 0 (0 turns it "
                       "off).")
  # A negative or NaN learning rate trains (ascends) without an error when
  # the divergence check is off (a sweep's tiny points).
  for key, bounds in _OPTIMIZER_RANGES.items():
    value = config.get("optimizer", {}).get(key)
    if value is not None:
      config_lib.check_range(f"config.optimizer.{key}", value, finite=True,
                             **bounds)
  if config.get("ema_decay") is not None:
    # Outside [0, 1) the EMA weights (sampled and scored) diverge or stay
    # at their initial values, with no error.
    config_lib.check_range("config.ema_decay", config.ema_decay, low=0,
                           high=1, high_open=True)
  sample_metrics.check(config)
  config_lib.check_dtypes(config)  # Before the optimizer reads mu_dtype.
  if config.get("optimizer") is not None:
    # An unknown name or schedule, or a wsd decay_fraction outside [0, 1],
    # fails here rather than after the data is read and the step traced.
    from jaxgen.train import state as state_lib  # pylint: disable=g-import-not-at-top
    state_lib.make_optimizer(config.optimizer, 1)
  # Every family, also those whose networks have no remat-able stack.
  remat_lib.remat_policy(config.get("remat", "none"))
  accumulate.unrolls(config.get("grad_accum_loop", "auto"))


def check_init_from(config: ml_collections.ConfigDict,
                     init_from: str) -> None:
  """A warm start needs a trained run of the same family.

  Args:
    config: the run config.
    init_from: the run to start from.

  Raises:
    ValueError: one line saying what to change (before compiling).
  """
  if not committed_steps(os.path.join(init_from, "checkpoints")):
    raise ValueError(f"config.init_from={init_from} has no checkpoint to "
                     "start from; train that run first.")
  family = provenance.load_config(init_from).get("family")
  if family != config.family:
    raise ValueError(f"config.init_from={init_from} is a {family!r} run; "
                     f"runs of {config.family!r} start from one of their "
                     "own family.")


def check_video(config: ml_collections.ConfigDict, data_info: Any,
                 objective: Any) -> None:
  """Clips need a family that models them, built for clips.

  Args:
    config: the run config.
    data_info: the input pipeline's info.
    objective: the family's objective.

  Raises:
    ValueError: one line saying what to change.
  """
  frames = data_info.num_frames
  if not frames:
    return  # Images: the pipeline refuses dataset.num_frames > 0 for them.
  name = config.dataset.name
  if not objective.models_video:
    raise ValueError(f"dataset {name!r} holds clips but {config.family} "
                     "models images; use an image dataset.")
  if not int(config.dataset.get("num_frames", 0) or 0):
    raise ValueError(f"dataset {name!r} holds clips of {frames} frames but "
                     "config.dataset.num_frames=0 builds an image model; set "
                     "--config.dataset.num_frames or use a video preset.")


def check_eval_interval(config: ml_collections.ConfigDict,
                         steps: int) -> None:
  """Evaluations run at log steps: an interval off that grid would never run.

  Args:
    config: the run config.
    steps: the run's resolved length.

  Raises:
    ValueError: one line saying what to change.
  """
  every, log_every = int(config.eval_every_steps), int(config.log_every_steps)
  if int(config.get("eval_batches", 0)) and every < steps and every % log_every:
    raise ValueError(
        f"config.eval_every_steps={every} must be a multiple of "
        f"log_every_steps={log_every} (evaluations run at log steps), or at "
        f"least the run's {steps} steps (one evaluation, at the end).")




def warn_if_warmup_spans_run(config: ml_collections.ConfigDict,
                             steps: int) -> None:
  """Warns when `optimizer.warmup_steps` is not shorter than the run: the
  schedule then rises over the whole run (it is capped at steps - 1) and
  reaches the peak rate only at the end, never decaying; and when a wsd
  cooldown starts inside the warmup (the sweeps refuse that; a hand-written
  config is warned).

  Args:
    config: the run config.
    steps: the run's resolved length.
  """
  opt = config.get("optimizer")
  if (opt is None or "schedule" not in opt or steps <= 1
      or jax.process_index() != 0):
    return
  from jaxgen.train import state as state_lib  # pylint: disable=g-import-not-at-top
  fraction = float(opt.get("warmup_fraction") or 0.0)
  warmup = (state_lib.fraction_of_steps(fraction, steps) if fraction
            else int(opt.get("warmup_steps", 0) or 0))
  start = steps - state_lib.fraction_of_steps(
      float(opt.get("decay_fraction", 0.2)), steps)
  if opt.get("schedule") == "wsd" and start < min(warmup, steps - 1):
    # The schedule's ramp wins until the warmup ends, then the rate drops
    # to the cooldown's already decayed value.
    logging.warning(
        "optimizer.schedule='wsd': the cooldown starts at step %d of %d, "
        "inside the %d-step warmup; the rate never holds its peak and drops "
        "when the warmup ends; lower the warmup or "
        "optimizer.decay_fraction.", start, steps, warmup)
  if fraction:
    return
  if warmup >= steps:
    logging.warning(
        "optimizer.warmup_steps=%d is not shorter than the run's %d steps: "
        "the learning rate rises over the whole run, reaches "
        "optimizer.learning_rate only at its last step and never decays; "
        "lower it or set optimizer.warmup_fraction.", warmup, steps)


def warn_if_schedule_moves(config: ml_collections.ConfigDict, start: int,
                           saved_steps: Optional[int],
                           total_steps: int,
                           saved_optimizer: Optional[dict] = None) -> None:
  """One warning when a resumed run's new length moves its learning rate.

  Run-length fields may change on resume (a finished run trains further),
  but the schedule spans the run: a cosine run of 40 steps extended to 60
  goes from a rate near 0 at step 40 back up the new curve. That is
  allowed; doing it unannounced is not.

  Args:
    config: the run config (its `optimizer` section).
    start: the checkpoint step the run resumes from.
    saved_steps: the run length that checkpoint was trained for (None for
      checkpoints that do not record it).
    total_steps: the run length now.
    saved_optimizer: the optimizer section that checkpoint was trained with
      (None for checkpoints that do not record it: this config's then). A
      wsd branch resumes the stable run's checkpoint, trained with no
      decay: its rate there is the peak, as the branch's is.
  """
  if not (start and saved_steps and int(saved_steps) != int(total_steps)
          and jax.process_index() == 0):
    return
  gan = config.get("gan") or {}
  fraction = float(gan.get("burn_in_fraction", 0.0))
  if float(gan.get("ema_half_life_fraction", 0.0)) > 0:
    # A share of the run's images: it moves at once, burn-in or not.
    logging.warning(
        "Run length %d -> %d steps since checkpoint %d: the EMA half-life "
        "(gan.ema_half_life_fraction=%g) changes in proportion from step %d "
        "on.", int(saved_steps), int(total_steps), start,
        float(gan.ema_half_life_fraction), start)
  if fraction > 0:
    if start >= fraction * max(int(saved_steps), int(total_steps)):
      return  # Past both burn-ins: nothing moves.
    # R3GAN's rates, gamma, beta2, EMA half-life and augmentation follow a
    # burn-in that is a share of the run.
    logging.warning(
        "Run length %d -> %d steps since checkpoint %d: the burn-in "
        "(gan.burn_in_fraction=%g) now spans %d steps instead of %d, so the "
        "learning rate, gamma, beta2, EMA half-life and augmentation move "
        "from step %d on.", int(saved_steps), int(total_steps), start,
        fraction, round(fraction * int(total_steps)),
        round(fraction * int(saved_steps)), start)
    return
  opt = config.get("optimizer")
  # Families with schedules of their own (R3GAN's burn-in in images) have no
  # optimizer.schedule: learning_rate_schedule would describe a cosine.
  if opt is None or "schedule" not in opt:
    return
  from jaxgen.train import state as state_lib  # pylint: disable=g-import-not-at-top
  then = (ml_collections.ConfigDict(saved_optimizer)
          if isinstance(saved_optimizer, dict)
          and "schedule" in saved_optimizer else opt)
  before = float(state_lib.learning_rate_schedule(then, int(saved_steps))(
      start))
  now = float(state_lib.learning_rate_schedule(opt, int(total_steps))(start))
  if abs(now - before) <= 1e-3 * max(abs(before), abs(now), 1e-30):
    return
  logging.warning(
      "Run length %d -> %d steps since checkpoint %d: the %s schedule now "
      "spans %d steps, so the learning rate at step %d goes from %.3g to "
      "%.3g (train at the full length from the start to anneal once).",
      int(saved_steps), int(total_steps), start, opt.get("schedule", "?"),
      int(total_steps), start, before, now)


def check_resumed_batch(config: ml_collections.ConfigDict,
                        changed: Sequence[str]) -> None:
  """Refuses a batch-size change on resume of a run measured in examples.

  A run length in examples, epochs or FLOPs becomes a step count at the
  batch size: at another batch size the steps already taken stand for
  another number of examples, and the budget would be over- or under-spent.
  A run measured in steps may change its batch size (with a warning).

  Args:
    config: the run config.
    changed: `provenance.check`'s changed fields ("key: old -> new").

  Raises:
    ValueError: one line saying what to change.
  """
  batch = [c for c in changed if c.startswith("batch_size: ")]
  unit = durations.check_length(config)
  if batch and unit != "total_steps":
    raise ValueError(
        f"{batch[0]} on resume of a run whose length is config.{unit}: its "
        "steps so far stand for the old batch, so the budget would no "
        "longer hold; keep batch_size, or give the length as total_steps.")


def check_resumed_workers(changed: Sequence[str]) -> None:
  """Refuses a `dataset.worker_count` change on resume (one process).

  The data position saved with each checkpoint is grain's iterator state,
  whose form depends on the worker count (0: an example count; N: N
  workers' interleaved states): another count cannot restore it, and every
  checkpoint was set aside as unreadable, restarting the run from step 0.

  Args:
    changed: `provenance.check`'s changed fields ("key: old -> new").

  Raises:
    ValueError: one line saying what to change.
  """
  workers = [c for c in changed if c.startswith("dataset.worker_count: ")]
  # One process: config.json holds its own count. With several, hosts may
  # each set theirs (jaxgen.parallel.multihost's per-host fields) while
  # config.json holds process 0's, and a refusal on one process alone
  # would leave the others waiting in a collective.
  if workers and jax.process_count() == 1:
    raise ValueError(
        f"{workers[0]} on resume: the data position saved with the "
        "checkpoints is grain's state for the old worker count, which "
        "another count cannot restore; keep dataset.worker_count (or start "
        "a new run in another workdir).")


def warn_if_data_changed(config: ml_collections.ConfigDict, start: int,
                         saved_examples: Optional[int],
                         num_examples: int) -> None:
  """One warning when the training split's size changed since a checkpoint.

  The iterator resumes at its saved position in the shuffled order of the
  split it was saved with; with files added or removed (a `folder:` dataset
  growing) that order is another one, so the batches from here differ from
  an uninterrupted run's.

  Args:
    config: the run config (its dataset name, for the message).
    start: the checkpoint step the run resumes from.
    saved_examples: the split's size when that checkpoint was written (None
      for checkpoints that do not record it).
    num_examples: the split's size now.
  """
  if (start and saved_examples is not None
      and int(saved_examples) != int(num_examples)
      and jax.process_index() == 0):
    logging.warning(
        "The training split of %s has %d examples, %d when checkpoint %d was "
        "written: the data order from here is not the uninterrupted run's.",
        config.dataset.name, int(num_examples), int(saved_examples), start)


def check_latents_unchanged(config: ml_collections.ConfigDict, start: int,
                            saved: Optional[Dict[str, Any]],
                            now: Optional[Dict[str, Any]],
                            sampling: bool = False) -> None:
  """Refuses to resume onto latents another autoencoder encoded.

  A `latents:` folder deleted and encoded again (another autoencoder, step
  or weights) is another data space: the checkpoint's model learnt the old
  one, and its sample grids would be decoded by the new autoencoder.

  Args:
    config: the run config (its dataset name, for the message).
    start: the checkpoint step the run resumes from.
    saved: `latent_decode.origin` when that checkpoint was written (None
      for pixel data or checkpoints that do not record it).
    now: the same for the latents there now.
    sampling: the check of `jaxgen.sample` (whose decoder would be the
      new autoencoder), not of a resume.

  Raises:
    ValueError: one line naming what differs.
  """
  if not (start and saved and now):
    return
  # The weights' digest says it all when both have one (a run moved to
  # another path is the same autoencoder); else its path and step. The
  # scaling factor is not compared: encoding the train split later gives
  # the others its factor without re-encoding anything.
  keys = (("autoencoder_weights",) if saved.get("autoencoder_weights")
          and now.get("autoencoder_weights") else
          ("autoencoder", "autoencoder_step"))
  differ = [k for k in keys if saved.get(k) is not None
            and now.get(k) is not None and saved[k] != now[k]]
  if not differ:
    return
  what = ", ".join(f"{k} {saved[k]!r} then, {now[k]!r} now" for k in differ)
  if sampling:
    raise ValueError(
        f"{config.dataset.name} is not what checkpoint {start} trained on "
        f"(another autoencoder encoded it: {what}); its samples would be "
        "decoded by the wrong autoencoder: pass the latents the run trained "
        "on (--config.dataset.name=latents:DIR)")
  raise ValueError(
      f"{config.dataset.name} was encoded again since checkpoint {start} "
      f"({what}); resume needs the latents it trained on: restore them, or "
      "train the new ones in another --workdir (config.init_from to start "
      "from this run)")


def check_resumed_state(abstract: Any, ckpt_dir: str, step: int,
                        changed: Sequence[str], workdir: str) -> None:
  """Refuses, before compiling, config changes that give the train state
  other arrays than checkpoint `step` holds.

  Fields outside the model (an optimizer's gradient clipping or weight
  decay, EMA on or off) can add or drop optimizer-state or EMA arrays; the
  restore found it only after compiling, naming array paths.

  Args:
    abstract: this run's abstract train state (`trainer.traced_state`).
    ckpt_dir: WORKDIR/checkpoints.
    step: the newest committed step.
    changed: the changed config fields ("key: old -> new",
      `provenance.check`).
    workdir: the run directory (for the message).

  Raises:
    ValueError: one line naming the changed fields and the first array
      that differs.
  """
  saved = checkpoint.saved_state_metadata(ckpt_dir, step)
  diffs = checkpoint.structure_diff(saved, abstract) if saved else []
  if diffs:
    raise ValueError(
        f"checkpoint {step} in {workdir} holds another train state than "
        f"this config makes ({provenance.first_changes(list(changed), 3)}: "
        f"{diffs[0]}); resume with --config=configs/run.py:{workdir} or pass "
        "another --workdir.")


def check_latents_at_resume(config: ml_collections.ConfigDict, ckpt_dir: str,
                            committed: Sequence[int]
                            ) -> Optional[Dict[str, Any]]:
  """`check_latents_unchanged` against the newest committed checkpoint's
  extras, before compiling (checked again on the one that restores).

  Args:
    config: the run config.
    ckpt_dir: WORKDIR/checkpoints.
    committed: its committed steps (`committed_steps`).

  Returns:
    `latent_decode.origin` of the run's latents now (None for pixel data),
    for the checkpoints to record and the restored one to be checked
    against.

  Raises:
    ValueError: one line naming what differs.
  """
  now = latent_decode.origin(config.dataset)
  if now is not None and committed:
    step = max(committed)
    check_latents_unchanged(config, step, checkpoint.saved_extra(
        ckpt_dir, step).get("latents"), now)
  return now
