r"""Encodes a dataset into an autoencoder's latents (array_record shards).

  python -m jaxgen.autoencoders.encode --workdir=AE_RUN --data=jaxgen_shapes \
      --split=train --out=DIR [--image_size=64] [--batch_size=64]
  python -m jaxgen.autoencoders.encode --workdir=VIDEO_AE_RUN \
      --data=jaxgen_shapes_video --num_frames=9 --split=train --out=DIR

Reads the split in order (no augmentation), encodes it with the newest
checkpoint of the autoencoder run, sharded over all devices, and writes
DIR/<split>/latents-00000.array_record, ... (records: float32 latent, int32
label) and DIR/<split>/latents.json (latent shape, count, classes, and the
scaling factor 1 / std of the latents, applied when they are read). A video
autoencoder encodes clips of `num_frames` frames into latent clips
[T', h, w, c], read back as a video dataset. Shards
are written whole (temporary name, then rename) with their statistics, so a
rerun skips the finished ones. Train on them with
`--config.dataset.name=latents:DIR` (plus dataset.image_size and
dataset.channels of the latents, printed at the end).
"""

import json
import os
import sys

from absl import app
from absl import flags
import numpy as np

from jaxgen import config_lib
from jaxgen.data import sources


def _shard_name(k: int) -> str:
  return f"latents-{k:05d}.array_record"


def encode_split(config, workdir: str, *, data: str, split: str, out: str,
                 image_size: int, data_dir=None, batch_size: int = 64,
                 shard_size: int = 1024, num_frames: int = 0,
                 log=print) -> dict:
  """Writes the latents of one split; returns its latents.json content.

  Args:
    config: the autoencoder run's config.
    workdir: the autoencoder run.
    data: dataset spec.
    split: split to encode.
    out: output root (the split goes to out/split).
    image_size: resolution the images are read at.
    data_dir: TFDS data dir.
    batch_size: images per encoding step.
    shard_size: examples per shard (a multiple of batch_size).
    num_frames: frames per clip of a video dataset (0: images, or the
      clips' stored length).
    log: result line.

  Returns:
    The metadata dict.

  Raises:
    ValueError: one line for a non-autoencoder run, a missing checkpoint or
      a shard size that is not a multiple of the batch.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from jaxgen.data import config as data_config  # pylint: disable=g-import-not-at-top
  from jaxgen.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxgen.eval import features  # pylint: disable=g-import-not-at-top
  from jaxgen.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import objective as ae_objective  # pylint: disable=g-import-not-at-top
  if shard_size % batch_size:
    raise ValueError(f"--shard_size={shard_size} is not a multiple of "
                     f"--batch_size={batch_size}.")
  _, s, step, state = ae_objective.restore_run(workdir, config)
  c = data_config.default_dataset_config()
  c.name, c.image_size, c.data_dir = data, int(image_size), data_dir
  c.num_frames = int(num_frames)
  c.random_flip = False
  it, info = pipeline.build_input(c, global_batch_size=batch_size, seed=0,
                                  process_index=0, process_count=1,
                                  split=split, train=False, repeat=False)
  # Every example, in order: whole batches from the pipeline, then the rows
  # they leave over (padded to a batch for the compiled encoder).
  total = info.num_examples
  full = total // batch_size
  num_shards = -(-total // shard_size)
  root = os.path.join(out, split)
  os.makedirs(root, exist_ok=True)
  model = s.objective.model
  key = "video" if info.kind == "video" else "image"

  def batches():
    for i, batch in zip(range(full), it):
      yield i * batch_size, batch
    if total % batch_size:
      yield full * batch_size, pipeline.read_examples(
          c, split=split, start=full * batch_size, stop=total)

  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    encode = jax.jit(
        lambda p, x: model.apply({"params": p}, x, method=model.encode),
        in_shardings=(None, mesh_lib.batch_sharding(
            s.mesh, 5 if key == "video" else 4)))
    todo = [k for k in range(num_shards)
            if not os.path.exists(os.path.join(root, _shard_name(k)))]
    bar = features.Progress(
        sum(min(shard_size, total - k * shard_size) for k in todo),
        "encoding") if todo else None
    pending, labels = [], []
    # A shard is a whole number of batches (shard_size % batch_size == 0),
    # so no batch straddles two shards.
    for start, batch in batches():
      k, n = start // shard_size, len(batch["label"])
      if k in todo:
        x = batch[key]
        if n < batch_size:
          x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:],
                                          x.dtype)])
        z = np.asarray(jax.device_get(encode(state.params["model"], x)))
        pending.append(z[:n])
        labels.append(np.asarray(batch["label"]))
      end = start + n
      if end % shard_size == 0 or end == total:
        if k in todo:
          _write_shard(array_record_module, root, k, np.concatenate(pending),
                       np.concatenate(labels))
          bar.update(end - k * shard_size)
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
  meta = {"shape": list(stats[0]["shape"]), "num_examples": n,
          "num_classes": info.num_classes, "scaling_factor": 1.0 / std,
          "shards": [_shard_name(i) for i in range(num_shards)],
          "source": data, "split": split, "image_size": int(image_size),
          "autoencoder": workdir, "autoencoder_step": step}
  tmp = os.path.join(root, sources.LATENTS_META + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  os.replace(tmp, os.path.join(root, sources.LATENTS_META))
  h, w, ch = meta["shape"][-3:]
  frames = (f"{meta['shape'][0]}x" if len(meta["shape"]) == 4 else "")
  frames_flag = (f" --config.dataset.num_frames={meta['shape'][0]}"
                 if frames else "")
  log(f"wrote {n} latents of {frames}{h}x{w}x{ch} (scaling factor "
      f"{meta['scaling_factor']:.4g}) to {root}; train with "
      f"--config.dataset.name=latents:{out} --config.dataset.image_size={h} "
      f"--config.dataset.channels={ch}{frames_flag}")
  return meta


def _write_shard(module, root: str, k: int, latents: np.ndarray,
                 labels: np.ndarray) -> None:
  path = os.path.join(root, _shard_name(k))
  tmp = path + ".tmp"
  writer = module.ArrayRecordWriter(tmp, "group_size:1")
  for z, y in zip(latents, labels):
    writer.write(sources.encode_latent_record(z, int(y)))
  writer.close()
  stats = {"count": int(len(latents)), "size": int(latents.size),
           "sum": float(latents.astype(np.float64).sum()),
           "sumsq": float((latents.astype(np.float64) ** 2).sum()),
           "shape": list(latents.shape[1:])}
  with open(path + ".json", "w", encoding="utf-8") as f:
    json.dump(stats, f)
  os.replace(tmp, path)  # Last: a shard file means a finished shard.


def _define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "The autoencoder run.")
  flags.DEFINE_string("data", None, "Dataset spec.")
  flags.DEFINE_string("split", "train", "Split to encode.")
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


def main(argv):
  del argv
  flags_ = flags.FLAGS
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.train import logs  # pylint: disable=g-import-not-at-top
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  logs.quiet_libraries(flags_.verbosity)
  try:
    for name in ("workdir", "data", "out"):
      if not flags_[name].value:
        raise ValueError(f"pass --{name}.")
    config = provenance.load_config(flags_.workdir)
    encode_split(config, flags_.workdir, data=flags_.data,
                 split=flags_.split, out=flags_.out,
                 image_size=flags_.image_size or config.dataset.image_size,
                 data_dir=flags_.data_dir or config.dataset.data_dir,
                 batch_size=flags_.batch_size,
                 shard_size=flags_.shard_size,
                 num_frames=flags_.num_frames)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=config_lib.parse_flags)
