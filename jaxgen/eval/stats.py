r"""Reference statistics of an image set for FID / KID / precision-recall.

  python -m jaxgen.eval.stats --weights=inception_fid.npz \
      --data=tfds:cifar10 --num=50000 --image_size=32 --out=cifar10_train.npz

Writes an .npz with `mu` (2048,), `sigma` (2048, 2048) (float64), the first
`--keep_features` pool3 features (float32, for KID and precision / recall),
`num`, `source`, `weights_hash` (FID refuses to compare statistics made
with different weights) and `image_size` (height, width; comparing with
images of another size is warned about). `--num=0` uses every image of the
set.
"""

import io
import sys
from typing import Any, Dict

from absl import app
from absl import flags
import etils.epath as epath
import numpy as np

from jaxgen import paths
from jaxgen.eval import distances
from jaxgen.eval import features as features_lib
from jaxgen.eval import imagesets
from jaxgen.train import logs


def compute(extractor: features_lib.FeatureExtractor, image_set, num: int,
            keep_features: int = 10_000) -> Dict[str, Any]:
  """Statistics of the first `num` images of an `ImageSet`.

  Args:
    extractor: the Inception feature extractor.
    image_set: an `imagesets.ImageSet` with batches.
    num: images to use (0: all it has).
    keep_features: features stored for KID / precision-recall (evenly
      spread over the images read).

  Returns:
    The arrays of a stats file.

  Raises:
    ValueError: the set is itself a stats file, or has too few images.
  """
  if image_set.stats is not None:
    raise ValueError(f"{image_set.name} already holds statistics.")
  num = imagesets.count(image_set, num)
  size = []
  feats, _ = extractor.of_batches(
      imagesets.noting_size(image_set.batches, size), num, image_set.name)
  mu, sigma = distances.gaussian_stats(feats)
  # Spread over all the images read, not the first ones: a folder dataset
  # lists its images class by class, and the first 10,000 of ImageNet's
  # are 8 of its classes (KID and precision / recall would compare the
  # samples with those).
  kept = np.unique(np.linspace(0, num - 1, min(int(keep_features), num),
                               dtype=np.int64)) if keep_features > 0 else []
  return {"mu": mu, "sigma": sigma,
          "features": feats[kept].astype(np.float32).reshape(
              len(kept), feats.shape[1]),
          "num": np.int64(num), "source": np.str_(image_set.name),
          "weights_hash": np.str_(extractor.weights_hash),
          "image_size": np.asarray(size[0], np.int64)}


def save(path: str, stats: Dict[str, Any]) -> None:
  """Writes a stats .npz (local or remote), whole or not at all."""
  buf = io.BytesIO()
  np.savez(buf, **stats)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_bytes(buf.getvalue())
  tmp.replace(path)


FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("weights", None,
                      "inception_fid.npz (jaxgen.eval.convert).")
  flags.DEFINE_string("data", None,
                      "Dataset spec, folder of PNGs or images .npz.")
  flags.DEFINE_integer("num", 50_000, "Images to use (0: all).",
                       lower_bound=0)
  flags.DEFINE_string("out", None, "Output stats .npz.")
  flags.DEFINE_integer("image_size", 32, "Resolution datasets are read at.",
                       lower_bound=1)
  flags.DEFINE_string("data_dir", None, "TFDS data dir.")
  flags.DEFINE_string("split", None, "Dataset split, replacing the spec's "
                      "(default: the spec's, else train).")
  flags.DEFINE_integer("batch_size", 200, "Images per feature batch.",
                       lower_bound=1)
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
  flags.DEFINE_integer("keep_features", 10_000,
                       "Features stored for KID / precision-recall.",
                       lower_bound=0)


def main(argv):
  del argv
  logs.quiet_libraries(FLAGS.verbosity)
  logs.one_line_warnings()
  logs.tool_log_lines()
  try:
    for name in ("weights", "data", "out"):
      if not FLAGS[name].value:
        raise ValueError(f"pass --{name}.")
    # Checked before the features are computed (minutes for 50,000).
    paths.prepare_output(FLAGS.out, "--out", ".npz")
    if not FLAGS.overwrite and epath.Path(FLAGS.out).exists():
      # Reference statistics of 50,000 images are worth keeping.
      raise ValueError(f"--out={FLAGS.out} exists; pass --overwrite to "
                       "replace it, or another --out.")
    extractor = features_lib.FeatureExtractor.from_file(
        FLAGS.weights, batch_size=FLAGS.batch_size)
    image_set = imagesets.open_set(
        FLAGS.data, image_size=FLAGS.image_size, data_dir=FLAGS.data_dir,
        split=FLAGS.split, batch_size=FLAGS.batch_size)
    stats = compute(extractor, image_set, FLAGS.num, FLAGS.keep_features)
    save(FLAGS.out, stats)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"wrote {FLAGS.out}: {int(stats['num'])} images of {FLAGS.data}, "
        f"weights {stats['weights_hash']}")


if __name__ == "__main__":
  _define_flags()
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  # Flag errors are one `error:` line.
  app.run(main, flags_parser=config_lib.parse_flags)
