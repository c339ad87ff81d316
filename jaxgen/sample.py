r"""Draws samples from a checkpoint of a run (the newest, or --step).

  python -m jaxgen.sample --workdir=DIR --num=50000 --out=DIR/fid_samples \
      [--batch_size=256] [--seed=0] [--step=N] \
      [--config.diffusion.sample_steps=256]

The run's config comes from DIR/config.json; `--config.x=y` overrides any
field (sampler settings such as `diffusion.sample_steps`,
`diffusion.guidance_scale`). Samples use the EMA weights where the family
keeps them, are sharded over all devices along the batch, and are written as
OUT/000000.png, ... (a clip as one strip of its frames, left to right) and,
once all are there, OUT/samples.npz ("images" uint8 [N, H, W, C], or
[N, T, H, W, C] for clips, "labels"). Batch k draws its images with
`fold_in(key(seed), k)` and class labels `index % num_classes`, so a rerun
skips the complete batches and produces the same set as an uninterrupted run.
OUT/sampling.json records the checkpoint step, seed, batch size and config
the PNGs were drawn with (and a latent-space run's decoding autoencoder
step); a folder holding other samples (an older step, say) is refused rather
than resumed or overwritten. Overrides of fields that only steer training
(optimizer, run length, mesh, ...) keep the folder.
"""

import io
import json
import os
import sys
from typing import Optional

from absl import app
from absl import flags
import etils.epath as epath
import ml_collections
from ml_collections import config_flags
import numpy as np
from PIL import Image

from jaxgen import paths

FLAGS = flags.FLAGS


def _png_bytes(image: np.ndarray) -> bytes:
  if image.ndim == 4:
    # A clip [T, H, W, C] is stored as one strip of its frames, left to
    # right ([H, T*W, C]); `_from_png` undoes it (frames are square).
    image = np.concatenate(list(image), axis=1)
  buf = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image
                  ).save(buf, format="PNG")
  return buf.getvalue()


def _from_png(image: np.ndarray, clip: bool) -> np.ndarray:
  """A PNG's array [H, W, C]: the image, or a clip [T, H, W, C] from its
  frame strip (told by the run, not the shape: a 1-frame strip is square)."""
  if clip:
    h = image.shape[0]
    image = image.reshape(h, image.shape[1] // h, h, -1).transpose(1, 0, 2, 3)
  return image


def _write_png(path: epath.Path, image: np.ndarray) -> None:
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_bytes(_png_bytes(image))
  tmp.replace(path)


def _batches_to_draw(files) -> list:
  """The batches (indices into `files`) with a PNG missing, as process 0
  sees them: with an --out that is not shared, the others would otherwise
  draw every batch while process 0 draws the missing ones, and the
  collectives of the sampling steps would hang."""
  import jax  # pylint: disable=g-import-not-at-top
  todo = [k for k in range(len(files))
          if not all(p.exists() for p in files[k])]
  if jax.process_count() == 1:
    return todo
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  missing = np.zeros(len(files), np.int32)
  missing[todo] = 1
  missing = np.asarray(multihost_utils.broadcast_one_to_all(missing))
  return [int(k) for k in np.flatnonzero(missing)]


_RECORD = "sampling.json"
# Config fields that only steer training, beyond those `provenance.compare`
# already ignores (run length, mesh, evaluation, ...): a checkpoint's
# samples do not depend on them, so overriding them keeps an --out.
_TRAINING_ONLY = ("optimizer", "batch_size", "tensorboard",
                  "dataset.worker_count")


def _record(config, step: int, seed: int, batch: int, decoder) -> dict:
  """What decides the pixels of OUT/NNNNNN.png (see `_check_record`)."""
  record = {"step": int(step), "seed": int(seed), "batch": int(batch),
            "config": json.loads(config.to_json_best_effort())}
  if decoder is not None:
    # A latent-space run's images are its autoencoder's decodings.
    record["decoder_step"] = decoder.step
  return record


def _check_record(out_dir: epath.Path, record: dict, num: int, dp: int,
                  write: bool, early: bool = False) -> None:
  """Refuses an output folder holding other samples; records this run's.

  The skip-complete-batches resume is only right when the PNGs there were
  drawn from the same checkpoint step, seed, batch size (batch k uses
  `fold_in(key(seed), k)` for its rows) and sampler config.

  Args:
    out_dir: the output folder.
    record: `_record` of this command.
    num: samples requested (for the batch-size hint).
    dp: data-parallel devices (the batch is a multiple of it).
    write: this process writes the record (process 0).
    early: before the checkpoint is restored (the batch and the decoder
      are not known yet): compares the rest (pass write=False).

  Raises:
    ValueError: one line naming what differs and what to pass.
  """
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  path = out_dir / _RECORD
  drawn = any(p.suffix == ".png" for p in out_dir.iterdir())
  # A record without PNGs is of an attempt that drew nothing (out of memory
  # at its first batch, Ctrl-C while compiling): this command's replaces it.
  if path.exists() and drawn:
    try:
      old = json.loads(path.read_text())
      old = dict({k: old[k] for k in ("step", "seed", "batch", "config")},
                 decoder_step=old.get("decoder_step"))
    except (ValueError, KeyError, TypeError):
      raise ValueError(f"{path} is not readable; pass another --out or "
                       f"delete {out_dir}.") from None
    where = f"{out_dir} holds samples of"
    fix = f"another --out, or delete {out_dir}."
    if old["step"] != record["step"]:
      raise ValueError(f"{where} step {old['step']}, this command samples "
                       f"step {record['step']}; pass --step={old['step']} "
                       f"(if still kept), {fix}")
    if old["seed"] != record["seed"]:
      raise ValueError(f"{where} --seed={old['seed']}; pass it again, {fix}")
    if not early and old["batch"] != record["batch"]:
      hint = (f"--batch_size={old['batch']}, "
              if old["batch"] <= num and old["batch"] % dp == 0 else "")
      raise ValueError(f"{where} batch size {old['batch']}, this command "
                       f"draws batches of {record['batch']} (--batch_size, "
                       "at most --num; batch k's noise depends on both); "
                       f"pass {hint}{fix}")
    if not early and old["decoder_step"] != record.get("decoder_step"):
      raise ValueError(f"{where} latents decoded by autoencoder step "
                       f"{old['decoder_step']}, this command decodes with "
                       f"step {record.get('decoder_step')}; pass {fix}")
    shape, other = provenance.compare(old["config"], record["config"])
    steers = lambda change: any(  # noqa: E731
        change.split(":", 1)[0] == f or change.startswith(f + ".")
        for f in _TRAINING_ONLY)
    shape, other = ([c for c in changes if not steers(c)]
                    for changes in (shape, other))
    if shape or other:
      raise ValueError(f"{where} another config ({(shape + other)[0]}); "
                       f"pass the same --config overrides, {fix}")
    return
  if drawn:
    # Not "or delete them": they may be a training run's grids.
    raise ValueError(f"{out_dir} holds PNGs without a {_RECORD} (not "
                     "written by this command); pass another --out.")
  if write:
    tmp = out_dir / (_RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(path)


def sample_run(config, workdir: str, *, num: int, out: str,
               batch_size: int = 256, seed: int = 0, npz: bool = True,
               step: Optional[int] = None, log=print) -> dict:
  """Draws `num` samples of the run in `workdir` into `out` (resumable).

  Args:
    config: the run's config (with any overrides).
    workdir: the run directory.
    num: number of samples.
    out: output folder.
    batch_size: samples per step, at most `num` (rounded up to a multiple of
      the devices).
    seed: sampling seed.
    npz: write out/samples.npz once all PNGs exist.
    step: the checkpoint to sample (default: the newest verified one).
    log: progress and result lines.

  Returns:
    {"step": checkpoint step, "num": num, "batch": the batch drawn,
    "drawn": samples written now, "out": out}.

  Raises:
    ValueError: one line if the run has no checkpoint or num < 1.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import latent_decode  # pylint: disable=g-import-not-at-top
  from jaxgen.eval import features  # pylint: disable=g-import-not-at-top
  from jaxgen.eval import sampling  # pylint: disable=g-import-not-at-top
  from jaxgen.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from jaxgen.train import checks  # pylint: disable=g-import-not-at-top
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  from jaxgen.train import run_state  # pylint: disable=g-import-not-at-top
  if not num or num < 1:
    raise ValueError("pass --num, the number of samples (>= 1).")
  if config.get("family") == "autoencoder":
    # Before --out and its sampling.json exist (a record left there refused
    # the next, valid command on the same folder).
    raise ValueError("an autoencoder run has nothing to sample (it "
                     "reconstructs); pass the --workdir of a generative run "
                     "(for latents: the run trained on them).")
  no_checkpoint = ValueError(f"{workdir} has no checkpoint to sample from; "
                             "train first or pass the --workdir of a trained "
                             "run.")
  kept = sorted(checks.committed_steps(os.path.join(workdir, "checkpoints")))
  if not kept:
    raise no_checkpoint  # Before restoring, which would create the folder.
  if step is not None and step not in kept:
    raise ValueError(f"{workdir} keeps no checkpoint {step}; pass --step="
                     f"one of {', '.join(map(str, kept))}, or leave it out "
                     "for the newest.")
  # Latents encoded again (or another latents: folder) would be decoded by
  # another autoencoder than the one the checkpoint learnt the space of.
  from jaxgen.train import checkpoint  # pylint: disable=g-import-not-at-top
  chosen = max(kept) if step is None else step
  checks.check_latents_unchanged(
      config, chosen, checkpoint.saved_extra(
          os.path.join(workdir, "checkpoints"), chosen).get("latents"),
      latent_decode.origin(config.dataset), sampling=True)
  changed = provenance.shape_differences(workdir, config)
  if changed:
    # The checkpoint may even load (a DiT with RoPE runs at any size), but
    # its samples would be of a model and data the run never trained on.
    raise ValueError("sampling overrides may not change the model or data "
                     "shape the run trained with: "
                     f"{provenance.first_changes(changed, 4)}; drop them.")
  # The family's own checks (a sampler or schedule setting it cannot use)
  # before --out and its sampling.json exist, not after restoring.
  checks.check_restorable(config)
  out_dir = epath.Path(out)
  try:
    out_dir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create --out={out}: {e.strerror or e}; pass a "
                     "folder you can write to.") from None
  # A folder of other samples is refused before minutes of restoring too
  # (the batch and the decoder are compared once known).
  _check_record(out_dir, _record(config, chosen, seed, 0, None), num, 1,
                write=False, early=True)
  _check_not_more(out_dir, num)
  # The training data may be elsewhere (a run copied off the cluster).
  s, step, state = run_state.restore(config, workdir, step=step,
                                     data_optional=True)
  if state is None:
    raise no_checkpoint
  dp = mesh_lib.data_parallel_size(s.mesh)
  # No larger than `num` needs (16 samples do not draw a batch of 256).
  batch = -(-min(int(batch_size), num) // dp) * dp
  # Before anything is drawn: PNGs of another step, seed, batch layout or
  # config must not be counted as this run's (nor be overwritten).
  with jax.set_mesh(s.mesh):
    decoder = latent_decode.make_decoder(config.dataset, s.mesh)
  _check_record(out_dir, _record(config, step, seed, batch, decoder), num, dp,
                write=jax.process_index() == 0)
  paths = [out_dir / f"{i:06d}.png" for i in range(num)]
  # The files of batch k (the last one may be short of a whole batch).
  files = [paths[k:k + batch] for k in range(0, num, batch)]
  batches = len(files)
  todo = _batches_to_draw(files)
  if len(todo) < batches:
    log(f"{out}: {batches - len(todo)} of {batches} batches already there")
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    draw = sampling.make_batch_sampler(s.objective, s.mesh, batch, seed,
                                       decode=decoder)
    bar = (features.Progress(sum(len(files[k]) for k in todo), "sampling")
           if todo else None)
    for k in todo:
      images = draw(state, k)
      if jax.process_index() == 0:
        for i, p in enumerate(files[k]):
          _write_png(p, images[i])
      bar.update(len(files[k]))
    if bar:
      bar.close()
  if npz and jax.process_index() == 0:
    from jaxgen.data import folders  # pylint: disable=g-import-not-at-top
    from jaxgen.eval import imagesets  # pylint: disable=g-import-not-at-top
    # One array filled in place and written straight to the file: 50k
    # 256 px samples are 9.8 GB, held once, not three times (a list, its
    # stack and an in-memory zip).
    images = None
    # 50,000 PNGs take minutes to read back: a bar, updated per 1,000.
    bar = features.Progress(num, "samples.npz") if num >= 1000 else None
    for i, p in enumerate(paths):
      if bar is not None and i and i % 1000 == 0:
        bar.update(1000)
      try:
        with p.open("rb") as f:
          image = np.asarray(Image.open(f))
      except folders.DECODE_ERRORS as e:
        # A PNG damaged since it was drawn (a copy cut short): was a PIL
        # traceback, with the old samples.npz left beside the new PNGs.
        raise imagesets.damaged_png(p, out, e) from None
      image = _from_png(image if image.ndim == 3 else image[..., None],
                        clip=s.data_info.kind == "video")
      if images is None:
        images = np.empty((num,) + image.shape, image.dtype)
      images[i] = image
    if bar is not None:
      bar.update(num - bar.done)
      bar.close()
    labels = sampling.labels_of(num, s.objective)
    labels = np.zeros(num, np.int64) if labels is None else labels
    tmp = out_dir / "samples.npz.tmp"
    with tmp.open("wb") as f:
      np.savez(f, images=images, labels=labels, step=step)
    tmp.replace(out_dir / "samples.npz")
  log(f"{num} samples of step {step} in {out}"
      + (" (+ samples.npz)" if npz else ""))
  return {"step": step, "num": num, "batch": batch,
          "drawn": sum(len(files[k]) for k in todo), "out": out}


def _check_not_more(out_dir: epath.Path, num: int) -> None:
  """Refuses a folder with more samples than `num` (before restoring)."""
  have = sum(p.suffix == ".png" for p in out_dir.iterdir())
  if have > num:
    # samples.npz would hold `num` while the folder, which the metric
    # commands also read, holds more.
    raise ValueError(f"{out_dir} holds {have} samples, more than --num={num}; "
                     f"pass --num={have} or more, or another --out.")


def _workdir_from_argv(argv) -> str:
  for i, a in enumerate(argv):
    if a.startswith("--workdir="):
      return a.split("=", 1)[1]
    if a == "--workdir" and i + 1 < len(argv):
      return argv[i + 1]
  return ""


def _define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "The run directory.")
  flags.DEFINE_integer("num", None, "Number of samples.", lower_bound=1)
  flags.DEFINE_string("out", None, "Output folder (default WORKDIR/sampled).")
  flags.DEFINE_integer("batch_size", 256,
                       "Samples per step (rounded up to the device count).",
                       lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("step", None, "Checkpoint step to sample (default: "
                       "the newest verified one).", lower_bound=0)
  flags.DEFINE_bool("npz", True, "Also write OUT/samples.npz at the end.")


def main(argv):
  config_lib.check_no_arguments(argv)
  os.environ.setdefault("CUDA_VISIBLE_DEVICES_FOR_TF", "")
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.train import logs  # pylint: disable=g-import-not-at-top
  logs.quiet_libraries(FLAGS.verbosity)
  logs.tool_log_lines()
  logs.one_line_warnings()
  out = FLAGS.out or os.path.join(FLAGS.workdir, "sampled")
  created = paths.missing_folders(out)
  try:
    sample_run(FLAGS.config, FLAGS.workdir, num=FLAGS.num, out=out,
               batch_size=FLAGS.batch_size, seed=FLAGS.seed, npz=FLAGS.npz,
               step=FLAGS.step)
  except ValueError as e:
    # A refused command leaves no empty --out behind.
    paths.remove_empty(created)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print("interrupted; rerun the same command to finish (the batches "
          "written are kept).", file=sys.stderr, flush=True)
    sys.exit(130)


if __name__ == "__main__":
  _define_flags()
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  workdir = _workdir_from_argv(sys.argv[1:])
  wants_help = any(a in ("-h", "--help", "--helpshort", "--helpfull")
                   for a in sys.argv[1:])
  if not workdir and not wants_help:
    print("error: pass --workdir, the run to sample from.", file=sys.stderr)
    sys.exit(2)
  if any(a == "--config" or a.startswith("--config=") for a in sys.argv[1:]):
    print("error: jaxgen.sample takes the run's config from "
          "WORKDIR/config.json; change its fields with --config.x=y, not "
          "--config=FILE.", file=sys.stderr)
    sys.exit(2)
  try:
    # --help without a run lists the flags; the --config.x fields are the
    # run's, so they are listed only with --workdir.
    run_config = (provenance.load_config(workdir) if workdir
                  else ml_collections.ConfigDict())
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
  # The run's config, overridable as --config.x=y (ml_collections applies
  # the overrides here, from sys.argv).
  try:
    config_flags.DEFINE_config_dict("config", run_config)
  except (KeyError, AttributeError, ValueError, TypeError) as err:
    line = config_lib.error_line(err)
    config_lib.usage_error(
        line + config_lib.section_hint(line, run_config, sys.argv[1:]))
  app.run(main, flags_parser=config_lib.parse_flags)
