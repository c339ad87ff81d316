r"""Encodes a dataset into an autoencoder's latents (array_record shards).

  python -m jaxgen.autoencoders.encode --workdir=AE_RUN --data=jaxgen_shapes \
      --split=train --out=DIR [--image_size=64] [--batch_size=64]
  python -m jaxgen.autoencoders.encode --workdir=AE_RUN \
      --data='tfds:mnist:train[:10%]' --out=DIR   # DIR/train: 6,000 latents
  python -m jaxgen.autoencoders.encode --workdir=VIDEO_AE_RUN \
      --data=jaxgen_shapes_video --num_frames=9 --split=train --out=DIR

Reads the split in order (no augmentation), encodes it with the newest
checkpoint of the autoencoder run, sharded over all devices, and writes
DIR/<split>/latents-00000.array_record, ... (records: float32 latent, int32
label) and DIR/<split>/latents.json (latent shape, count, classes, and the
scaling factor 1 / std of the latents, applied when they are read). A video
autoencoder encodes clips of `num_frames` frames into latent clips
[T', h, w, c], read back as a video dataset. Shards
are written whole (temporary name, then rename) with their statistics and
what produced them (autoencoder run and step, data, split, image size,
frames, shard size), so a rerun of the same encode skips the finished ones;
a DIR/<split> holding another encode's latents is refused, and so is a
split whose autoencoder run, step, image size or clip length differ from
the other splits of DIR. A split other than train is scaled by the train
split's factor when that one is there (`sources.latents_meta`). The split
is --split, else the one the spec names, else train; a slice is encoded
into its split's folder (train[:10%] into DIR/train, recorded in
latents.json). A `folder:` dataset trained with `dataset.holdout_fraction`
is split the same way (--holdout_fraction, by default the run's when --data
is its dataset): --split=train encodes the images the run trained on,
--split=test the held-out ones. Train on
them with `--config.dataset.name=latents:DIR` (plus dataset.image_size and
dataset.channels of the latents, printed at the end).
"""

import json
import os
import sys

from absl import app
from absl import flags
import numpy as np

from jaxgen import config_lib
from jaxgen import paths
from jaxgen.data import sources


def _shard_name(k: int) -> str:
  return f"latents-{k:05d}.array_record"


def _round_up(n: int, multiple: int) -> int:
  """The smallest positive multiple of `multiple` that is at least n."""
  return max(multiple, -(-n // multiple) * multiple)


def check_image_size(arch, image_size: int, multiple: int = 0) -> None:
  """Refuses a resolution the encoder cannot take, before anything compiles.

  Args:
    arch: the autoencoder's architecture (`objective.arch_from_config`).
    image_size: the --image_size flag's value.
    multiple: the size suggested is a multiple of this (default: the
      spatial compression).

  Raises:
    ValueError: one line naming --image_size and the compression.
  """
  f = arch.compression
  if image_size % f:
    raise ValueError(
        f"--image_size={image_size} is not divisible by the autoencoder's "
        f"spatial compression {f}; use e.g. "
        f"{_round_up(image_size, multiple or f)}.")


def check_frames(arch, workdir: str, frames: int, *, given: bool,
                 data: str) -> None:
  """Refuses clip lengths the causal video encoder cannot take.

  The rule is the trainer's (`objective.takes_frames`): 1 + k x the
  temporal compression of the run's architecture, not the patcher's time
  factor.

  Args:
    arch: the video autoencoder's architecture.
    workdir: the run (named in the error).
    frames: frames per clip that would be encoded.
    given: whether they came from --num_frames (else the stored length).
    data: dataset spec (named in the error).

  Raises:
    ValueError: one line naming --num_frames and the rule.
  """
  from jaxgen.autoencoders import objective as ae_objective  # pylint: disable=g-import-not-at-top
  tc = arch.temporal_compression
  if ae_objective.takes_frames(frames, tc):
    return
  fits = 1 + (frames - 1) // tc * tc if frames > tc else 1 + tc
  what = (f"--num_frames={frames}:" if given
          else f"{data} clips have {frames} frames;")
  raise ValueError(
      f"{what} the video autoencoder {workdir} needs 1 + k * {tc} frames "
      f"(temporal compression {tc}); pass e.g. --num_frames={fits}.")


def check_autoencoder_run(config, workdir: str) -> None:
  """Refuses the config of a run of another family.

  Args:
    config: the run's config.json.
    workdir: the run (named in the error).

  Raises:
    ValueError: one line naming --workdir.
  """
  family = config.get("family")
  if family != "autoencoder":
    raise ValueError(f"{workdir} is a {family!r} run, not an autoencoder; "
                     "pass the --workdir of an autoencoder run.")


def default_holdout(config, data: str) -> float:
  """The run's `dataset.holdout_fraction` when `data` is the folder it
  trained on, else 0 (its train split then leaves out what training did).

  Args:
    config: the autoencoder run's config.
    data: the dataset spec given to encode.

  Returns:
    The fraction to hold out.
  """
  from jaxgen.data import config as data_config  # pylint: disable=g-import-not-at-top
  fraction = float(config.dataset.get("holdout_fraction", 0.0) or 0.0)
  if not fraction:
    return 0.0
  ours = data_config.parse_spec(data)
  theirs = data_config.parse_spec(config.dataset.name)
  same = ours.scheme == theirs.scheme == "folder" and (
      os.path.realpath(os.path.expanduser(ours.name))
      == os.path.realpath(os.path.expanduser(theirs.name)))
  return fraction if same else 0.0


def _video_data_error(workdir: str) -> ValueError:
  return ValueError(
      f"{workdir} is a video autoencoder; pass a video dataset (e.g. "
      "jaxgen_shapes_video) and --num_frames.")


def _check_existing(root: str, producer: dict) -> None:
  """Refuses an output split written by another encode.

  Finished shards (and latents.json) record what produced them; the ones
  of this very encode are kept (a rerun resumes), anything else would end
  up mixed with the new latents under a latents.json describing only them.

  Args:
    root: OUT/<split>.
    producer: what this encode records (`encode_split`).

  Raises:
    ValueError: one line naming what differs.
  """
  if not os.path.isdir(root):
    return
  for name in sorted(os.listdir(root)):
    if name == sources.LATENTS_META:
      meta_path = os.path.join(root, name)
    elif name.startswith("latents-") and name.endswith(".array_record"):
      meta_path = os.path.join(root, name + ".json")
    else:
      continue
    try:
      with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
      theirs = meta.get("producer")
    except (OSError, ValueError, AttributeError):
      meta, theirs = {}, None
    if isinstance(theirs, dict) and "autoencoder_weights" not in theirs:
      # Written before producers recorded the digest: a latents.json of
      # then keeps it at its top level; shards had none (the rest must
      # match).
      theirs = dict(theirs, autoencoder_weights=meta.get(
          "autoencoder_weights", producer.get("autoencoder_weights")))
    if theirs == producer:
      continue
    fix = "pass another --out or delete it"
    if isinstance(theirs, dict):
      why = ", ".join(f"{k} {theirs.get(k)!r}, not {v!r}"
                      for k, v in producer.items() if theirs.get(k) != v)
      if theirs.get("holdout_fraction") != producer.get("holdout_fraction"):
        # An encode of before the run's fraction became the default.
        fix = (f"pass --holdout_fraction="
               f"{theirs.get('holdout_fraction') or 0} to finish that "
               "encode, another --out, or delete it")
    else:
      why = f"{name} does not record its autoencoder"
    raise ValueError(
        f"{root} holds latents of another encode ({why}); {fix}.")


def _recorded_origin(root: str):
  """The latents_origin of a split folder's latents.json, else of its first
  finished shard; None when it records none."""
  names = [sources.LATENTS_META] + sorted(
      n + ".json" for n in os.listdir(root)
      if n.startswith("latents-") and n.endswith(".array_record"))
  for name in names:
    try:
      with open(os.path.join(root, name), encoding="utf-8") as f:
        meta = json.load(f)
    except (OSError, ValueError):
      continue
    if isinstance(meta, dict) and (meta.get("producer")
                                   or meta.get("autoencoder")):
      return sources.latents_origin(meta)
  return None


def _check_other_splits(out: str, split: str, producer: dict) -> None:
  """Refuses a split unlike the other splits of OUT: one latents directory
  is one dataset (one autoencoder run and step, one image size and clip
  length), read with one scaling factor.

  Args:
    out: the output root.
    split: the split this encode writes.
    producer: what this encode records (`encode_split`).

  Raises:
    ValueError: one line naming the other split and what differs.
  """
  if not os.path.isdir(out):
    return
  ours = sources.latents_origin(producer)
  for other in sorted(os.listdir(out)):
    root = os.path.join(out, other)
    if other == split or not os.path.isdir(root):
      continue
    theirs = _recorded_origin(root)
    why = theirs and sources.origin_differences(theirs, ours, other, split)
    if why and theirs["holdout_fraction"] != ours["holdout_fraction"]:
      raise ValueError(
          f"{out} holds split {other!r} encoded at --holdout_fraction="
          f"{theirs['holdout_fraction']:g}, not {ours['holdout_fraction']:g}: "
          "a folder's splits are complements only at one fraction (a train "
          "split encoded at 0 holds the held-out images too); encode every "
          "split of it at one, or pass another --out.")
    if why:
      raise ValueError(
          f"{out} holds split {other!r} of other latents ({why}); every "
          "split of a latents directory comes from one autoencoder run and "
          "step at one --image_size (and --num_frames, --holdout_fraction): "
          "encode with those, "
          "or pass another --out.")


def _reference_factor(out: str, split: str):
  """The train split's scaling factor, which every other split uses (None
  for the train split itself or when it is not written yet)."""
  path = os.path.join(out, sources.REFERENCE_SPLIT, sources.LATENTS_META)
  if split == sources.REFERENCE_SPLIT or not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return float(json.load(f)["scaling_factor"])


def _weights(state) -> str:
  """The autoencoder weights' digest recorded in latents.json."""
  from jaxgen.autoencoders import latent_decode  # pylint: disable=g-import-not-at-top
  return latent_decode.weights_fingerprint(state)


def _readable(batches):
  """`batches`, with an unreadable image file a one-line error for encode."""
  from jaxgen.data import folders  # pylint: disable=g-import-not-at-top
  try:
    yield from batches
  except folders.BadImageError as e:
    if e.path is None:
      raise
    raise ValueError(
        f"cannot decode image {e.path}: {e.reason}; encode writes one latent "
        "per image, in order, so fix or remove it and rerun (the shards "
        "written so far are kept).") from None


def encode_split(config, workdir: str, *, data: str, split: str, out: str,
                 image_size: int, data_dir=None, batch_size: int = 64,
                 shard_size: int = 1024, num_frames: int = 0,
                 holdout_fraction: float = 0.0, log=print) -> dict:
  """Writes the latents of one split; returns its latents.json content.

  Every input is checked before the checkpoint is restored, anything is
  compiled or OUT/<split> is created.

  Args:
    config: the autoencoder run's config.
    workdir: the autoencoder run.
    data: dataset spec.
    split: split to encode; a slice ("train[:512]") is written to its
      split's folder (`sources.latents_split_folder`).
    out: output root (the split goes to out/<split>).
    image_size: resolution the images are read at.
    data_dir: TFDS data dir.
    batch_size: images per encoding step.
    shard_size: examples per shard (a multiple of batch_size).
    num_frames: frames per clip of a video dataset (0: images, or the
      clips' stored length).
    holdout_fraction: share of a `folder:` dataset's images held out
      (`dataset.holdout_fraction`): split train reads the rest, any other
      split the held-out ones; 0 means the folder has one split.
    log: result line.

  Returns:
    The metadata dict.

  Raises:
    ValueError: one line for a non-autoencoder run, a missing checkpoint,
      a shard size that is not a multiple of the batch, a batch the devices
      do not split, an image size or clip length the encoder cannot take,
      data of the wrong kind or channel count, an output folder that cannot
      be written, an output split holding another encode's latents, or one
      unlike the other splits of `out`.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from jaxgen.data import config as data_config  # pylint: disable=g-import-not-at-top
  from jaxgen.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxgen.eval import features  # pylint: disable=g-import-not-at-top
  from jaxgen.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import objective as ae_objective  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import runs as ae_runs  # pylint: disable=g-import-not-at-top
  check_autoencoder_run(config, workdir)
  # The batch is split over the mesh restore_run builds (the run's, or all
  # the devices here when the run's does not fit them); both size problems
  # are reported at once.
  config = ae_runs.on_these_devices(config)
  dp = mesh_lib.data_parallel_size(mesh_lib.make_mesh(config.mesh))
  problems = []
  if shard_size % batch_size:
    problems.append((f"--shard_size={shard_size} is not a multiple of "
                     f"--batch_size={batch_size}",
                     f"use e.g. --shard_size="
                     f"{_round_up(shard_size, batch_size)}"))
  if batch_size % dp:
    devices = ("devices" if dp == jax.device_count()
               else "data-parallel devices")
    problems.append((f"--batch_size={batch_size} is not divisible by the "
                     f"{dp} {devices}", f"use a multiple of {dp}"))
  if len(problems) == 1:
    raise ValueError(f"{problems[0][0]}; {problems[0][1]}.")
  if problems:
    raise ValueError("; ".join(f"{what} ({fix})" for what, fix in problems)
                     + ".")
  # A slice ("train[:512]") goes to its split's folder, which `latents:`
  # reads as that split.
  folder = sources.latents_split_folder(split)
  root = os.path.join(out, folder)
  paths.check_output_dir(out)
  if os.path.exists(root) and not os.path.isdir(root):
    raise ValueError(f"{root} is a file, not a split folder; move it or "
                     "pass another --out.")
  arch = ae_objective.arch_from_config(config)
  video = bool(getattr(arch, "video", False))
  check_image_size(arch, int(image_size))
  if num_frames and not video:
    raise ValueError(f"--num_frames={num_frames}: {workdir} is an image "
                     "autoencoder; drop --num_frames.")
  if num_frames:
    check_frames(arch, workdir, int(num_frames), given=True, data=data)
  c = data_config.default_dataset_config()
  c.name, c.image_size, c.data_dir = data, int(image_size), data_dir
  c.num_frames = int(num_frames)
  c.holdout_fraction = float(holdout_fraction)
  if not 0.0 <= c.holdout_fraction < 1.0:
    raise ValueError(f"--holdout_fraction={holdout_fraction} must be in "
                     "[0, 1) (the share of a folder's images held out).")
  if c.holdout_fraction and data_config.parse_spec(data).scheme != "folder":
    raise ValueError(f"--holdout_fraction holds out images of folder: "
                     f"datasets only; {data} has its own splits: drop it and "
                     "pass --split.")
  c.random_flip = False
  # One latent per image, in order: a skipped file's place was taken by the
  # next one, which was then encoded twice.
  c.skip_bad_files = False
  try:
    it, info = pipeline.build_input(c, global_batch_size=batch_size, seed=0,
                                    process_index=0, process_count=1,
                                    split=split, train=False, repeat=False)
  except pipeline.TooFewExamples as e:
    # The pipeline's message names config.batch_size, which encode has not.
    raise ValueError(
        f"{data} split {split!r} has {e.num_examples} examples, fewer than "
        f"--batch_size={batch_size}; pass a --batch_size of at most "
        f"{e.num_examples} that divides --shard_size={shard_size}.") from None
  except ValueError as e:
    # --num_frames on an image dataset: the pipeline names the config field.
    if video and "holds images" in str(e):
      raise _video_data_error(workdir) from e
    if "has one split" in str(e):
      # The folder's message names config fields, which encode has not.
      raise ValueError(
          f"{data} has one split (no images held out), so split {split!r} "
          "would be its training images; pass --holdout_fraction, the "
          "fraction the autoencoder run held out (e.g. 0.05).") from None
    raise
  if video and info.kind != "video":
    raise _video_data_error(workdir)
  if not video and info.kind == "video":
    raise ValueError(f"{data} holds video but {workdir} is an image "
                     "autoencoder; pass an image dataset (e.g. "
                     "jaxgen_shapes).")
  if info.channels != arch.in_channels:
    raise ValueError(
        f"{data} has {info.channels}-channel examples but {workdir} encodes "
        f"{arch.in_channels}-channel ones (config.dataset.channels); pass "
        "data like the images it was trained on.")
  if info.image_size != int(image_size):
    # Float pixels (latents, arrays) keep their own size.
    raise ValueError(f"{data} has {info.image_size} px examples, not "
                     f"--image_size={image_size}; pass data like the images "
                     f"{workdir} was trained on.")
  if video:
    check_frames(arch, workdir, int(info.num_frames), given=bool(num_frames),
                 data=data)
  _, s, step, state = ae_runs.restore_run(workdir, config)
  # Every example, in order: whole batches from the pipeline, then the rows
  # they leave over (padded to a batch for the compiled encoder).
  total = info.num_examples
  full = total // batch_size
  num_shards = -(-total // shard_size)
  # What makes a shard's latents: a rerun with all of it the same resumes.
  # JSON types only, so that it compares equal once read back.
  producer = {"autoencoder": (workdir if "://" in workdir
                              else os.path.realpath(workdir)),
              "autoencoder_step": int(step),
              # The weights themselves: a run retrained or replaced at the
              # same path and step must not resume onto the old shards.
              "autoencoder_weights": _weights(state),
              "data": data, "split": split,
              "image_size": int(image_size),
              "num_frames": int(info.num_frames or 0),
              "shard_size": int(shard_size), "num_examples": int(total)}
  if c.holdout_fraction:
    # Another fraction draws other images; recorded only when set, so the
    # shards of encodes before it was an option still resume.
    producer["holdout_fraction"] = c.holdout_fraction
  _check_existing(root, producer)
  _check_other_splits(out, folder, producer)
  model = s.objective.model
  key = "video" if info.kind == "video" else "image"

  def batches(todo):
    # Only the shards still to write are read: the iterator jumps to each
    # one's first row (a rerun at 90% decoded the whole split again, for
    # hours without a line of progress).
    for k in todo:
      first, last = k * shard_size, min(total, (k + 1) * shard_size)
      if first < full * batch_size:
        it.set_state({"next_index": first})
        for i in range(first // batch_size,
                       min(full, -(-last // batch_size))):
          yield i * batch_size, next(it)
      if last == total and total % batch_size:
        yield full * batch_size, pipeline.read_examples(
            c, split=split, start=full * batch_size, stop=total)

  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    encode = jax.jit(
        lambda p, x: model.apply({"params": p}, x, method=model.encode),
        in_shardings=(None, mesh_lib.batch_sharding(
            s.mesh, 5 if key == "video" else 4)))
    todo = [k for k in range(num_shards)
            if sources.shard_problem(root, _shard_name(k))]
    bar = features.Progress(
        sum(min(shard_size, total - k * shard_size) for k in todo),
        "encoding") if todo else None
    pending, labels = [], []
    # A shard is a whole number of batches (shard_size % batch_size == 0),
    # so no batch straddles two shards.
    for start, batch in _readable(batches(todo)):
      k, n = start // shard_size, len(batch["label"])
      x = batch[key]
      if n < batch_size:
        x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:],
                                        x.dtype)])
      z = np.asarray(jax.device_get(encode(state.params["model"], x)))
      pending.append(z[:n])
      labels.append(np.asarray(batch["label"]))
      bar.update(n)
      end = start + n
      if end % shard_size == 0 or end == total:
        _write_shard(array_record_module, root, k, np.concatenate(pending),
                     np.concatenate(labels), producer)
        pending, labels = [], []
    if bar:
      bar.close()
  stats = []
  for i in range(num_shards):
    with open(os.path.join(root, _shard_name(i) + ".json"),
              encoding="utf-8") as f:
      stats.append(json.load(f))
  n = sum(st["count"] for st in stats)
  mean = sum(st["sum"] for st in stats) / sum(st["size"] for st in stats)
  sq = sum(st["sumsq"] for st in stats) / sum(st["size"] for st in stats)
  std = float(np.sqrt(max(sq - mean ** 2, 1e-12)))
  # One factor for the whole dataset: the train split's, once there.
  reference = _reference_factor(out, folder)
  factor = 1.0 / std if reference is None else reference
  meta = {"shape": list(stats[0]["shape"]), "num_examples": n,
          "num_classes": info.num_classes, "scaling_factor": factor,
          "split_scaling_factor": 1.0 / std,
          "shards": [_shard_name(i) for i in range(num_shards)],
          "source": data, "split": split, "image_size": int(image_size),
          "autoencoder": producer["autoencoder"], "autoencoder_step": step,
          # Checked before decoding: a run replaced at the same path and
          # step would decode these latents into noise.
          "autoencoder_weights": producer["autoencoder_weights"],
          "producer": producer}
  tmp = os.path.join(root, sources.LATENTS_META + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  os.replace(tmp, os.path.join(root, sources.LATENTS_META))
  h, w, ch = meta["shape"][-3:]
  frames = (f"{meta['shape'][0]}x" if len(meta["shape"]) == 4 else "")
  frames_flag = (f" --config.dataset.num_frames={meta['shape'][0]}"
                 if frames else "")
  new = sum(min(shard_size, total - k * shard_size) for k in todo)
  what = f"{frames}{h}x{w}x{ch}"
  if not new:
    done = f"all {n} latents of {what} were already in {root}"
  elif new < n:
    done = (f"wrote {new} latents of {what} to {root} ({n - new} were "
            "already there)")
  else:
    done = f"wrote {n} latents of {what} to {root}"
  scale = (f"scaling factor {factor:.4g}"
           + ("" if reference is None
              else f" of the {sources.REFERENCE_SPLIT} split"))
  train_flags = (f"--config.dataset.name=latents:{out} "
                 f"--config.dataset.image_size={h} "
                 f"--config.dataset.channels={ch}{frames_flag}")
  if os.path.exists(os.path.join(out, sources.REFERENCE_SPLIT,
                                 sources.LATENTS_META)):
    log(f"{done} ({scale}); train with {train_flags}")
  else:
    # Training reads the train split, not encoded yet.
    log(f"{done} ({scale}); encode --split={sources.REFERENCE_SPLIT} too, "
        f"then train with {train_flags}")
  return meta


def _write_shard(module, root: str, k: int, latents: np.ndarray,
                 labels: np.ndarray, producer: dict) -> None:
  # Created with the first shard: an encode that stops earlier leaves no
  # empty OUT/<split>.
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, _shard_name(k))
  tmp = path + ".tmp"
  writer = module.ArrayRecordWriter(tmp, "group_size:1")
  for z, y in zip(latents, labels):
    writer.write(sources.encode_latent_record(z, int(y)))
  writer.close()
  stats = {"count": int(len(latents)), "size": int(latents.size),
           # The file's length: a truncated or damaged copy is found by it.
           "bytes": os.path.getsize(tmp),
           "sum": float(latents.astype(np.float64).sum()),
           "sumsq": float((latents.astype(np.float64) ** 2).sum()),
           "shape": list(latents.shape[1:]), "producer": producer}
  # Atomic: a half-written record would make a rerun refuse the split.
  with open(path + ".json.tmp", "w", encoding="utf-8") as f:
    json.dump(stats, f)
  os.replace(path + ".json.tmp", path + ".json")
  os.replace(tmp, path)  # Last: a shard file means a finished shard.


def _define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "The autoencoder run.")
  flags.DEFINE_string("data", None, "Dataset spec.")
  flags.DEFINE_string("split", None, "Split to encode, replacing the "
                      "spec's (default: the spec's, else train); a slice "
                      "such as train[:10%] is written to OUT/train.")
  flags.DEFINE_string("out", None, "Output root (the split goes to OUT/SPLIT).")
  flags.DEFINE_integer("image_size", 0,
                       "Resolution (default: the autoencoder's).",
                       lower_bound=0)
  flags.DEFINE_string("data_dir", None, "TFDS data dir.")
  flags.DEFINE_integer("batch_size", 64, "Images per encoding step.",
                       lower_bound=1)
  flags.DEFINE_integer("shard_size", 1024, "Examples per shard.",
                       lower_bound=1)
  flags.DEFINE_integer("num_frames", 0, "Frames per clip of a video dataset "
                       "(0: images, or the stored clip length).",
                       lower_bound=0)
  flags.DEFINE_float("holdout_fraction", None, "Share of a folder: dataset's "
                     "images held out (train: the rest; other splits: the "
                     "held-out ones). Default: the autoencoder run's "
                     "dataset.holdout_fraction when --data is its dataset, "
                     "else 0.")


def main(argv):
  del argv
  flags_ = flags.FLAGS
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.data import config as data_config  # pylint: disable=g-import-not-at-top
  from jaxgen.train import logs  # pylint: disable=g-import-not-at-top
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  logs.quiet_libraries(flags_.verbosity)
  logs.tool_log_lines()
  try:
    for name in ("workdir", "data", "out"):
      if not flags_[name].value:
        raise ValueError(f"pass --{name}.")
    split = (flags_.split or data_config.parse_spec(flags_.data).split
             or "train")
    config = provenance.load_config(flags_.workdir)
    encode_split(config, flags_.workdir, data=flags_.data,
                 split=split, out=flags_.out,
                 image_size=flags_.image_size or config.dataset.image_size,
                 data_dir=flags_.data_dir or config.dataset.data_dir,
                 batch_size=flags_.batch_size,
                 shard_size=flags_.shard_size,
                 num_frames=flags_.num_frames,
                 holdout_fraction=(
                     default_holdout(config, flags_.data)
                     if flags_.holdout_fraction is None
                     else flags_.holdout_fraction))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print("interrupted; rerun the same command to finish (the shards "
          "written are kept).", file=sys.stderr, flush=True)
    sys.exit(130)


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=config_lib.parse_flags)
