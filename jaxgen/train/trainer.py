"""The family-agnostic trainer: `train_and_evaluate(config, workdir)`.

It builds the mesh, asks the family's objective (looked up by
`config.family`) for an abstract state, derives `NamedSharding`s from the
logical axis names, creates the state directly sharded, compiles the step with
`jax.jit(in_shardings, out_shardings, donate_argnums)` and runs the loop:
per-process grain batches → global arrays, metrics (clu + metrics.jsonl),
sample grids, eval, orbax checkpoints with the data iterator, and resume.
"""

import dataclasses
import functools
import os
import time
from typing import (Any, Callable, Dict, NamedTuple, Optional, Sequence,
                    Tuple)

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen import paths
from jaxgen.autoencoders import latent_decode
from jaxgen.data import pipeline as data_pipeline
from jaxgen.eval import sample_metrics
from jaxgen.parallel import mesh as mesh_lib
from jaxgen.parallel import multihost
from jaxgen.parallel import sharding as sharding_lib
from jaxgen.train import checkpoint as checkpoint_lib
from jaxgen.train import checks
from jaxgen.train import data_position
from jaxgen.train import durations
from jaxgen.train import evaluation
from jaxgen.train import flops as flops_lib
from jaxgen.train import logs
from jaxgen.train import metrics as metrics_lib
from jaxgen.train import preemption
from jaxgen.train import profiling
from jaxgen.train import provenance
from jaxgen.train import run_record
from jaxgen.train import warm_start as warm_start_lib
from jaxgen.train import workdir as workdir_lib


@dataclasses.dataclass
class Setup:
  """Everything resolved from a config before anything is compiled."""
  mesh: jax.sharding.Mesh
  rules: Any
  objective: Any
  total_steps: int
  flops_per_example: float
  data_info: Any
  # The train step's batch: `objective.batches_per_step * batch_size` rows.
  batch_spec: Dict[str, jax.ShapeDtypeStruct]


def train_batch_size(config: ml_collections.ConfigDict, objective) -> int:
  """Examples per train-pipeline batch: batch_size x batches_per_step."""
  return int(config.batch_size) * int(objective.batches_per_step)


def batch_spec(info: Any, global_batch: int) -> Dict[str, jax.ShapeDtypeStruct]:
  """Global batch shapes the pipeline yields, from its dataset info.

  Args:
    info: `jaxgen.data.pipeline` dataset info.
    global_batch: the global batch size.

  Returns:
    Dict of ShapeDtypeStructs ("image" or "video", and "label").
  """
  spatial = (info.image_size, info.image_size, info.channels)
  if info.kind == "video":
    spec = {"video": jax.ShapeDtypeStruct(
        (global_batch, info.num_frames) + spatial, jnp.float32)}
  else:
    spec = {"image": jax.ShapeDtypeStruct((global_batch,) + spatial,
                                          jnp.float32)}
  spec["label"] = jax.ShapeDtypeStruct((global_batch,), jnp.int32)
  return spec


def setup(config: ml_collections.ConfigDict, *, data_info: Any,
          devices: Optional[Sequence[jax.Device]] = None,
          checked: Optional[Tuple[Any, int, Any]] = None) -> Setup:
  """Validates the config and resolves mesh, objective and run length.

  Every check here raises a one-line ValueError before compilation.

  Args:
    config: the run config.
    data_info: info of the input pipeline (`jaxgen.data.pipeline`).
    devices: devices of the mesh (default: all).
    checked: the result of `checks.check_config(config, devices)` if already
      computed (it is not repeated).

  Returns:
    A `Setup`.
  """
  mesh, _, objective = checked or checks.check_config(config, devices)
  declared = config.dataset.get("num_classes")
  # Only a model that conditions on classes (an unconditional one ignores
  # the field).
  conditional = getattr(objective, "num_classes", 0)
  if declared and conditional and data_info.num_classes == 0:
    # Every label would be 0: the other classes' embeddings never train,
    # and samples drawn for them show it.
    also = "".join(f" {flag}" for flag in getattr(
        objective, "unconditional_flags", ()))
    raise ValueError(
        f"config.dataset.num_classes={declared} but dataset "
        f"{config.dataset.name!r} has no class labels; set "
        f"--config.dataset.num_classes=0{also} for an unconditional model.")
  if (declared and conditional and data_info.num_classes
      and declared != data_info.num_classes):
    raise ValueError(
        f"config.dataset.num_classes={declared} but dataset "
        f"{config.dataset.name!r} has {data_info.num_classes} classes; set "
        f"--config.dataset.num_classes={data_info.num_classes}.")
  channels = int(config.dataset.get("channels", 3))
  if data_info.channels != channels:
    # Models are built for config.dataset.channels (default 3).
    raise ValueError(
        f"dataset {config.dataset.name!r} has {data_info.channels} channels "
        f"but the model is built for {channels}; set "
        f"--config.dataset.channels={data_info.channels}.")
  checks.check_video(config, data_info, objective)
  size = int(config.dataset.image_size)
  if data_info.image_size != size:
    # Float sources (latents) keep their own size; models are built for
    # config.dataset.image_size.
    raise ValueError(
        f"dataset {config.dataset.name!r} has {data_info.image_size} px "
        f"examples but the model is built for {size}; set "
        f"--config.dataset.image_size={data_info.image_size}.")
  # One objective: its FLOPs resolve a FLOP budget into the run length,
  # which its schedules then use.
  flops = float(objective.flops_per_example())
  steps = durations.total_steps(
      config, num_examples=data_info.num_examples, flops_per_example=flops,
      batches_per_step=objective.batches_per_step)
  objective.set_total_steps(steps)
  checks.check_eval_interval(config, steps)
  return Setup(mesh=mesh,
               rules=sharding_lib.rules_from_config(config.logical_axis_rules),
               objective=objective,
               total_steps=steps, flops_per_example=flops,
               data_info=data_info,
               batch_spec=batch_spec(data_info,
                                     train_batch_size(config, objective)))


def example_batch(spec: Dict[str, jax.ShapeDtypeStruct]) -> Dict[str, Any]:
  """Zeros shaped like a batch spec (what `init` needs to see shapes)."""
  return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), spec)


def abstract_state(s: Setup, rng: jax.Array):
  """The state's init function, shapes and shardings; nothing is allocated.

  Must be called under `jax.set_mesh(s.mesh)` and the logical axis rules.

  Args:
    s: the resolved setup.
    rng: init key (only its shape matters here).

  Returns:
    (init_fn, abstract_state, state_shardings); `init_fn(rng)` builds the
    state, e.g. with `sharding.create_sharded(init_fn, shardings, rng)`.
  """
  init_fn = lambda key: s.objective.init(key, example_batch(s.batch_spec))
  abstract, shardings = sharding_lib.abstract_state_and_shardings(
      init_fn, s.mesh, s.rules, rng)
  return init_fn, abstract, shardings


class CompiledStep(NamedTuple):
  """What `compile_step` returns (it also unpacks as a 5-tuple)."""
  init_fn: Callable[[jax.Array], Any]
  abstract: Any
  shardings: Any
  step: Any
  batch_shardings: Dict[str, Any]


class BoundStep:
  """`step(state, batch)`: a compiled step with its run length bound.

  The compiled program takes the run length as an argument (schedules read
  it at run time); this binds the run's own value. `memory_analysis` and
  `cost_analysis` are the compiled program's.
  """

  def __init__(self, compiled: Any, total_steps: jax.Array):
    self.compiled = compiled
    self.total_steps = total_steps

  def __call__(self, state, batch):
    return self.compiled(state, batch, self.total_steps)

  def memory_analysis(self):
    return self.compiled.memory_analysis()

  def cost_analysis(self):
    return self.compiled.cost_analysis()


def compile_step(s: Setup, base_rng: jax.Array) -> CompiledStep:
  """Derives shardings and compiles the train step.

  Must be called under `jax.set_mesh(s.mesh)` and the logical axis rules.
  The run length is an argument of the compiled program, not a constant:
  runs of a size that differ only in length (a sweep's budgets) compile
  the same program, which the persistent compilation cache then serves.

  Args:
    s: the resolved setup.
    base_rng: key the per-step rng is folded from.

  Returns:
    A `CompiledStep`: the state's init function, abstract state and
    shardings, the compiled `step(state, batch) -> (state, metrics)` (a
    `BoundStep` of `s.total_steps`) and the batch shardings.
  """
  init_fn, abstract, shardings = abstract_state(s, base_rng)
  batch_shardings = {k: mesh_lib.batch_sharding(s.mesh, len(v.shape))
                     for k, v in s.batch_spec.items()}
  replicated = mesh_lib.replicated(s.mesh)

  def step_fn(state, batch, total_steps):
    # The step's rng is derived, never carried: resumes reproduce it exactly.
    rng = jax.random.fold_in(base_rng, state.step)
    with s.objective.runtime_run_length(total_steps):
      return s.objective.train_step(state, batch, rng)

  jitted = jax.jit(step_fn,
                   in_shardings=(shardings, batch_shardings, replicated),
                   out_shardings=(shardings, replicated),
                   donate_argnums=(0,))
  abstract_sharded = jax.tree.map(
      lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
      abstract, shardings)
  batch_abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                            sharding=batch_shardings[k])
                    for k, v in s.batch_spec.items()}
  length_abstract = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
  compiled = jitted.lower(abstract_sharded, batch_abstract,
                          length_abstract).compile()
  # From a callback: valid when the mesh spans several processes.
  total = jax.make_array_from_callback(
      (), replicated, lambda _: np.asarray(s.total_steps, np.int32))
  return CompiledStep(init_fn, abstract, shardings,
                      BoundStep(compiled, total), batch_shardings)


def traced_state(s: Setup):
  """The abstract train state of a setup, traced (not compiled) on its mesh.

  Args:
    s: the trainer's setup of a run.

  Returns:
    The abstract state, a pytree of `jax.ShapeDtypeStruct`.
  """
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    return abstract_state(s, jax.random.key(0))[1]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       devices: Optional[Sequence[jax.Device]] = None
                       ) -> Dict[str, Any]:
  """Trains `config.family` as configured; resumes from `workdir` if possible.

  The workdir is checked writable and locked (one trainer per workdir)
  before anything else. SIGTERM / SIGINT save the current step and raise
  `Preempted`; rerunning the same command continues with identical losses.

  Args:
    config: the run config (see configs/*.py).
    workdir: output directory: checkpoints/, TensorBoard events,
      metrics.jsonl, samples/*.png.
    devices: devices of the mesh (default: all devices of the job).

  Returns:
    The last logged metrics (host floats), including "eval_loss" if evaluated.

  Raises:
    ValueError: bad configuration or workdir (before compilation).
    FloatingPointError: a non-finite metric; the last good checkpoint stays.
    checkpoint.CheckpointWriteError: a checkpoint could not be written; the
      earlier ones stay.
    preemption.Preempted: stopped on a signal after saving.
  """
  created = paths.missing_folders(workdir) if jax.process_count() == 1 else []
  workdir_lib.prepare(workdir)
  with workdir_lib.Lock(workdir, jax.process_index()):
    try:
      # Signals are watched from here on: one during set-up or compilation
      # stops the run after its first step, with that step saved.
      with preemption.Watcher() as watcher:
        return _train(config, workdir, devices, watcher)
    except ValueError:
      # A run refused before it wrote anything leaves no workdir behind
      # (done holding the lock: never another trainer's).
      paths.remove_empty(created, ignore=(".lock",))
      raise


def _train(config, workdir, devices, watcher) -> Dict[str, Any]:
  """`train_and_evaluate` once the workdir is checked and locked."""
  pidx, pcount = jax.process_index(), jax.process_count()
  # Processes started with other flags would hang in, or silently corrupt,
  # the collectives.
  multihost.check_same_config(config)
  # Before the dataset is prepared, which can take long.
  checked = checks.check_config(config, devices)
  if config.num_samples:
    # The autoencoder that decodes the sample grids: a missing one is an
    # error now, not after compiling.
    latent_decode.check_source(config.dataset)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  committed = checks.committed_steps(ckpt_dir)
  changed = provenance.check(workdir, config, resuming=bool(committed))
  # A resume onto re-encoded latents is refused now, not after compiling.
  latents = checks.check_latents_at_resume(config, ckpt_dir, committed)
  checks.check_resumed_batch(config, changed)
  checks.check_resumed_workers(changed)
  data_iter, info = data_pipeline.build_input(
      config.dataset, global_batch_size=train_batch_size(config, checked[2]),
      seed=config.seed, process_index=pidx, process_count=pcount, train=True)
  multihost.check_same_data(info)
  if committed:
    data_position.check_resumable(ckpt_dir, max(committed), data_iter)
  if config.eval_batches:
    # Opens the held-out split now: a missing one is an error before
    # compiling, not at the first evaluation.
    evaluation.held_out_input(config)
  s = setup(config, data_info=info, devices=devices, checked=checked)
  checks.warn_if_warmup_spans_run(config, s.total_steps)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  finished, unevaluated = evaluation.at_end(config, workdir, committed,
                                            s.total_steps)
  if finished is not None:
    return finished
  init_from = config.get("init_from") or ""
  if changed:
    # A changed optimizer or EMA field can change the state's arrays.
    checks.check_resumed_state(traced_state(s), ckpt_dir, max(committed),
                               changed, workdir)
  if init_from and not committed:
    checks.check_init_from(config, init_from)
    # Another architecture is refused now, not after minutes of compiling.
    warm_start_lib.check_compatible(traced_state(s), init_from, config)
  if changed:
    logging.warning("Resuming with changed config fields: %s.",
                    "; ".join(changed))
  init_rng, base_rng = jax.random.split(jax.random.key(config.seed))
  log_every = int(config.log_every_steps)

  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    # Weights and statistics are loaded (and checked) before compiling.
    score = (sample_metrics.SampleMetrics(
        config, s, functools.partial(evaluation.every_held_out_image,
                                     config),
        functools.partial(evaluation.held_out_images, config))
             if sample_metrics.enabled(config) else None)
    # Before compiling too: an autoencoder's grid examples (more than its
    # split holds is an error), and the autoencoder that decodes a latent
    # run's grids (one replaced since it encoded them is an error).
    preview = getattr(s.objective, "preview_fn", None)  # Autoencoders.
    sample_fn = (preview(config, s.mesh) if preview and config.num_samples
                 else jax.jit(functools.partial(
                     s.objective.sample, num=int(config.num_samples)),
                              out_shardings=mesh_lib.replicated(s.mesh)))
    # A latent-space run's grids show its samples decoded to images.
    decode = (latent_decode.make_decoder(config.dataset, s.mesh)
              if config.num_samples else None)
    if decode is not None:
      sample_fn = _then(sample_fn, decode)
    logging.info("Compiling the %s train step (batch %d, mesh %s)...",
                 config.family, config.batch_size, dict(s.mesh.shape))
    init_fn, abstract, shardings, p_step, _ = compile_step(s, base_rng)
    # Only a run that passed every check, compiled, restored and trains
    # records its config (a model that fails to trace writes none, nor does
    # a resume its checkpoint refuses); a finished run's config.json keeps
    # describing its checkpoints. An earlier run without a checkpoint keeps
    # its config.json, rows and grids (set aside).
    if pidx == 0 and not committed:
      run_record.set_aside(workdir)
    logging.info("Compiled train step; per-device memory: %s",
                 flops_lib.memory_line(flops_lib.memory_summary(p_step)))
    ckpt = checkpoint_lib.Checkpointer(
        ckpt_dir, max_to_keep=int(config.keep_checkpoints),
        save_every_steps=int(config.checkpoint_every_steps))
    start, state, extra = ckpt.restore(abstract, shardings, data_iter)
    provenance.write(workdir, config)
    if state is None:
      start = 0
      state = sharding_lib.create_sharded(init_fn, shardings, init_rng)
      if init_from:
        state = warm_start_lib.warm_start(state, shardings, init_from)
    else:
      data_position.align(data_iter, train_batch_size(config, s.objective),
                          pcount)
    counts = s.objective.num_params(state)
    logging.info("Parameters: %s; steps %d -> %d; %.3g FLOPs/example.",
                 counts, start, s.total_steps, s.flops_per_example)

    if unevaluated is not None and start != unevaluated.get("step"):
      # The newest checkpoint did not restore (an older one did): train, or
      # at least do not put its row's numbers under another step.
      unevaluated = None
    if pidx == 0:
      # Before the writer opens the file (it appends). A row to complete
      # stays until the completed one replaces it: its evaluation may be
      # stopped (a long FID, Ctrl-C twice, out of memory).
      if unevaluated is not None:
        metrics_lib.truncate_jsonl(metrics_path, start)
      else:
        run_record.reconcile_metrics(metrics_path, start)
    writer = metrics_lib.create_writer(
        workdir, tensorboard=bool(config.get("tensorboard", True)),
        # What the attempt before logged past its checkpoint (or the row
        # being completed) is logged again: TensorBoard hides the old.
        purge_step=(None if not start
                    else start if unevaluated is not None else start + 1))
    if pidx == 0:
      writer.write_hparams({k: str(v) for k, v in config.items()})
    profiler = None
    if config.get("profile_steps") and pidx == 0:
      # A few steps after the start, past compilation and warm-up.
      profiler = profiling.StepProfiler(
          workdir, first_step=min(start + 5, s.total_steps),
          num_steps=int(config.profile_steps), last_step=s.total_steps)

    eval_fn = evaluation.make_eval(config, s, shardings)
    peak = flops_lib.peak_flops_per_device()
    # Per-step rows since the last log step travel with the checkpoint, so a
    # run resumed off the logging grid logs the same averages.
    buf = run_record.MetricBuffer(extra.get("pending_rows", []))
    seen = run_record.Seen(config, s, start, extra.get("seen"))
    skipped_reported = 0  # Unreadable files warned about (per epoch).
    checks.warn_if_schedule_moves(config, start, extra.get("total_steps"),
                                  s.total_steps, extra.get("optimizer"))
    checks.warn_if_data_changed(config, start, extra.get("num_examples"),
                                info.num_examples)
    checks.check_latents_unchanged(config, start, extra.get("latents"),
                                   latents)
    last: Dict[str, Any] = {}
    eval_error = None
    # The ETA counts the evaluations still ahead at their measured times.
    eval_times = logs.EvaluationTimes()
    eval_every = {"eval": int(config.eval_every_steps),
                  "score": int(score.every or 0) if score else 0}
    t0, steps_since = time.time(), 0
    failed = True

    optimizer_record = (config.optimizer.to_dict()
                        if "optimizer" in config else None)

    def save(step, force):
      buf.flush()  # Never save a state whose metrics were unchecked.
      ckpt.guarded(workdir, writer.flush)  # Rows reach the disk first.
      ckpt.save(step, state, data_iter, force=force,
                extra={"pending_rows": buf.rows_for_json(),
                       "seen": seen.at(step), "total_steps": s.total_steps,
                       # The schedule it trained on (a resume at another
                       # length compares the rates).
                       "optimizer": optimizer_record,
                       "num_examples": info.num_examples,
                       "latents": latents})

    try:
      if unevaluated is not None:
        last = (evaluation.complete_row(unevaluated, state, start, eval_fn,
                                        score, workdir)
                if evaluation.missing_at_end(config, unevaluated, start,
                                             workdir)
                else unevaluated)
        ckpt.guarded(workdir, writer.replace_row, start,
                     {k: v for k, v in last.items() if k != "step"})
        evaluation.note_scored(workdir, config, start, last, score)
        if config.num_samples and not run_record.has_grid(
            workdir, start):
          run_record.write_samples(sample_fn, state, base_rng, start,
                                   workdir, writer)
      for step in range(start + 1, s.total_steps + 1):
        if profiler:
          profiler(step)
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          batch = multihost.global_batch(s.mesh, next(data_iter))
          state, metrics = p_step(state, batch)
        if profiler:  # The trace holds steps, not evaluations or saves.
          profiler.after(step, metrics)
        buf.push(step, metrics)
        # A background save that failed surfaces here, one step later.
        ckpt.poll()
        steps_since += 1
        is_last = step == s.total_steps
        # Asked before evaluating: a signal's grace period (~30 s) is too
        # short for a held-out evaluation or FID ahead of the save.
        stop = watcher.should_stop(step)
        if step % log_every == 0 or is_last:
          buf.flush()
          dt = time.time() - t0
          row = buf.mean_and_reset()
          sps = steps_since / max(dt, 1e-9)
          # Steps/s and ETA go to the log; metrics.jsonl keeps the row.
          logs.log_progress(step, s.total_steps, sps, eval_times.ahead(
              step, s.total_steps, eval_every))
          row.update(run_record.progress(config, s, seen, step, sps, peak,
                                         info.num_examples))
          saved_first = (is_last or stop) and bool(eval_fn or score)
          if saved_first:
            # A long final FID killed (or one at a preempted step): state
            # and row are safe, as after a failed evaluation; the full row
            # replaces this one below.
            ckpt.guarded(workdir, metrics_lib.record_only, writer, step,
                         row)
            save(step, force=True)
            ckpt.wait()
          try:
            if eval_fn and (step % int(config.eval_every_steps) == 0
                            or is_last):
              began = time.time()
              row.update(eval_fn(state, step))
              eval_times.add("eval", time.time() - began)
            if score and score.due(step, is_last):
              began = time.time()
              row.update(score(state, step))
              eval_times.add("score", time.time() - began)
          except Exception as e:  # pylint: disable=broad-except
            if pcount > 1:
              # The save is collective: with one process failing alone it
              # would wait forever for the others.
              raise
            # The trained state is sound: it is saved below before the
            # error propagates, so a failing evaluation loses no steps.
            eval_error = e
          ckpt.guarded(workdir, (writer.replace_row if saved_first
                                 else writer.write_scalars), step, row)
          evaluation.note_scored(workdir, config, step, row, score)
          last = dict(row, step=step)
          t0, steps_since = time.time(), 0
        if info.batches_per_epoch and step % info.batches_per_epoch == 0:
          skipped_reported = run_record.report_skipped(
              info, f"epoch {step // info.batches_per_epoch}",
              skipped_reported)
        # Saves and sample grids are not steps: their time is taken out of
        # the interval (t0 moves on), or the next row's steps/s and MFU
        # count it.
        began = time.time()
        if is_last or stop or eval_error or ckpt.is_save_step(step):
          try:
            save(step, force=is_last or stop or bool(eval_error))
            if eval_error:
              ckpt.wait()
          except BaseException as e:
            if eval_error:  # Said first: it is why this save was made.
              e.add_note(f"(After the evaluation at step {step} failed: "
                         f"{checkpoint_lib.error_reason(eval_error)})")
            raise
        if eval_error:
          evaluation.saved_after_failure(eval_error, step, s.total_steps,
                                         ckpt_dir)
          if not (stop and not is_last):
            raise eval_error
          logging.warning("%s", eval_error.__notes__[-1])  # Then preempted.
        # After the save: its writes (in the background) overlap sampling.
        if config.num_samples and not stop and (
            step % int(config.sample_every_steps) == 0 or is_last):
          run_record.write_samples(sample_fn, state, base_rng, step,
                                   workdir, writer)
        t0 += time.time() - began
        if stop and not is_last:
          ckpt.wait()
          raise preemption.Preempted(
              f"preempted by {watcher.signal_name} at step {step}: "
              f"checkpoint {step} saved in {ckpt_dir}; rerun the same "
              "command to continue.", step)
      failed = False
      run_record.report_skipped(info, "run")
    except FloatingPointError as e:
      try:
        ckpt.wait()
      except checkpoint_lib.CheckpointWriteError:
        pass
      good = ckpt.last_good_step
      error = FloatingPointError(
          f"{e} The last good checkpoint is step {good} in {ckpt_dir}."
          if good is not None else f"{e} No checkpoint was saved yet.")
      for note in getattr(e, "__notes__", ()):
        error.add_note(note)
      raise error from None
    finally:
      if profiler:
        profiler.stop()
      try:
        # Also releases the event file (e.g. for umount).
        ckpt.guarded(workdir, writer.close)
      except checkpoint_lib.StorageError:
        if not failed:
          raise
      finally:
        ckpt.close(raise_errors=not failed)
  return last


def _then(first, second):
  """x -> second(first(x)), keeping each of them separately jitted."""
  return lambda *args: second(first(*args))

