r"""FID (and KID, IS, precision / recall where the inputs allow) of two sets.

  python -m jaxgen.eval.fid --weights=inception_fid.npz \
      --a=cifar10_train.npz --b=workdirs/run/sampled

--b is what `python -m jaxgen.sample` wrote (by default WORKDIR/sampled;
WORKDIR/samples holds the training run's sample grids, not samples).
Each of --a (the reference) and --b (the evaluated set) is a stats file, an
images .npz, a folder of PNGs or a dataset spec (see `jaxgen.eval.imagesets`).
Prints `FID: <value>` on stdout, then `KID:` (when both sides have features),
`IS:` (when --b is at least 10 images) and `precision:` / `recall:` (when
both sides have features). Statistics
made with other Inception weights than --weights are refused.
"""

import sys
from typing import Any, Dict, List, Optional, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np

from jaxgen.eval import distances
from jaxgen.eval import features as features_lib
from jaxgen.eval import imagesets
from jaxgen.train import logs


def _side(extractor, image_set, num: int
          ) -> Tuple[Tuple[np.ndarray, np.ndarray], Optional[np.ndarray],
                     Optional[np.ndarray], Optional[Tuple[int, int]]]:
  """((mu, sigma), features or None, logits or None, (height, width) or
  None) of one set; `num` is the count `_count` resolved."""
  if image_set.stats is not None:
    s = image_set.stats
    return (s["mu"], s["sigma"]), s.get("features"), None, None
  size = []
  feats, logits = extractor.of_batches(
      imagesets.noting_size(image_set.batches, size), num, image_set.name)
  return distances.gaussian_stats(feats), feats, logits, size[0]


def _count(extractor, image_set, num: int) -> int:
  """Checks a set before any features are computed; its image count (0 for
  statistics)."""
  if image_set.stats is not None:
    imagesets.check_weights(image_set, extractor.weights_hash,
                            " (--weights); recompute it with "
                            "jaxgen.eval.stats and these weights.")
    return 0
  return imagesets.count(image_set, num)


def compare(extractor, set_a, set_b, num: int = 0) -> Dict[str, Any]:
  """Metrics of set_b against the reference set_a.

  Args:
    extractor: the Inception feature extractor.
    set_a: reference `ImageSet`.
    set_b: evaluated `ImageSet`.
    num: images per image set (0: all).

  Returns:
    {"fid", and "kid", "kid_std", "precision", "recall", "is", "is_std"
    where the inputs allow}.
  """
  # Both sides are checked before either's features are computed.
  num_a, num_b = (_count(extractor, s, num) for s in (set_a, set_b))
  stats_a, feats_a, _, size_a = _side(extractor, set_a, num_a)
  stats_b, feats_b, logits_b, size_b = _side(extractor, set_b, num_b)
  if set_a.stats is not None and size_b:
    imagesets.check_size(set_a, size_b, set_b.name)
  if set_b.stats is not None and size_a:
    imagesets.check_size(set_b, size_a, set_a.name)
  if size_a and size_b and tuple(size_a) != tuple(size_b):
    logging.warning(
        "%s holds %dx%d images but %s %dx%d: Inception resizes both to "
        "299x299, so the FID mixes resolution with quality; compare sets of "
        "one size (--image_size sets a dataset's).", set_a.name, *size_a,
        set_b.name, *size_b)
  return distances.all_metrics(stats_a, stats_b, features_a=feats_a,
                               features_b=feats_b, logits_b=logits_b,
                               progress=features_lib.Progress)


def open_sets(name_a: str, name_b: str, *, image_size: int,
              size_given: bool, data_dir: Optional[str],
              batch_size: int) -> List[imagesets.ImageSet]:
  """Opens --a and --b; a dataset side takes the other side's size.

  Without --image_size, a dataset compared with samples (or statistics) of
  one square size is read at that size: reading it at the flag's default
  would compare, say, 32 px CIFAR-10 with 64 px samples.

  Args:
    name_a: the reference set's name.
    name_b: the evaluated set's name.
    image_size: --image_size.
    size_given: whether --image_size was passed.
    data_dir: TFDS data dir for dataset specs.
    batch_size: images per batch.

  Returns:
    [set_a, set_b].
  """
  names = [name_a, name_b]
  sets = [None if imagesets.is_dataset_spec(n) else imagesets.open_set(
      n, batch_size=batch_size) for n in names]
  known = [s.size for s in sets if s is not None and s.size]
  adopted = not size_given and known and known[0][0] == known[0][1]
  if adopted:
    image_size = known[0][0]
  for i, name in enumerate(names):
    if sets[i] is None:
      if adopted:
        logging.info("Reading %s at %dx%d, the size of the other set "
                     "(--image_size changes it).", name, image_size,
                     image_size)
      sets[i] = imagesets.open_set(name, image_size=image_size,
                                   data_dir=data_dir, batch_size=batch_size)
  return sets


def format_lines(metrics: Dict[str, Any]) -> str:
  """`FID: x` then the other metrics, one per line."""
  # A set against its own statistics gives 0 up to round-off,
  # which may be below 0: shown as 0.0000, not -0.0000.
  lines = [f"FID: {round(float(metrics['fid']), 4) + 0.0:.4f}"]
  if "kid" in metrics:
    # Sets no larger than the subset size make every subset the whole set:
    # a spread of 0 would read as an exact value.
    spread = (f" ± {metrics['kid_std']:.6f}" if metrics["kid_std"] > 0
              else " (one subset: the sets are no larger than the subset "
              "size, so no spread)")
    lines.append(f"KID: {metrics['kid']:.6f}{spread}")
  if "is" in metrics:
    lines.append(f"IS: {metrics['is']:.3f} ± {metrics['is_std']:.3f}")
  if "precision" in metrics:
    lines.append(f"precision: {metrics['precision']:.4f}")
    lines.append(f"recall: {metrics['recall']:.4f}")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("weights", None,
                      "inception_fid.npz (jaxgen.eval.convert).")
  flags.DEFINE_string("a", None, "Reference set.")
  flags.DEFINE_string("b", None, "Evaluated set.")
  flags.DEFINE_integer("num", 0, "Images per image set (0: all).",
                       lower_bound=0)
  flags.DEFINE_integer("image_size", 32, "Resolution datasets are read at "
                       "(default: the other set's, else 32).",
                       lower_bound=1)
  flags.DEFINE_string("data_dir", None, "TFDS data dir for dataset specs.")
  flags.DEFINE_integer("batch_size", 200, "Images per feature batch.",
                       lower_bound=1)


def main(argv):
  del argv
  logs.quiet_libraries(FLAGS.verbosity)
  logs.one_line_warnings()
  logs.tool_log_lines()
  try:
    for name in ("weights", "a", "b"):
      if not FLAGS[name].value:
        raise ValueError(f"pass --{name}.")
    extractor = features_lib.FeatureExtractor.from_file(
        FLAGS.weights, batch_size=FLAGS.batch_size)
    sets = open_sets(FLAGS.a, FLAGS.b, image_size=FLAGS.image_size,
                     size_given=FLAGS["image_size"].present,
                     data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size)
    metrics = compare(extractor, *sets, num=FLAGS.num)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(format_lines(metrics))


if __name__ == "__main__":
  _define_flags()
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  # Flag errors are one `error:` line.
  app.run(main, flags_parser=config_lib.parse_flags)
