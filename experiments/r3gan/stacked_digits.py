r"""Mode coverage on 1000 modes: "stacked digits" from scikit-learn's digits.

A small StackedMNIST (Metz et al. 2017; R3GAN Table 1) built from the 1797
real 8x8 handwritten digits bundled with scikit-learn (no download): an
image stacks three random digits, one per colour channel, so there are
10³ = 1000 modes. --size 8 keeps the native resolution; 16 or 32 upsample
bilinearly (no new information, 4-16x the compute).

  python -m experiments.r3gan.stacked_digits \
      --out=experiments/r3gan --steps=1500 --seeds=2

1. A small MLP digit classifier is trained in JAX on 80% of the digits
   (accuracy reported on the other 20%). It labels each channel of a sample,
   which gives one of the 1000 modes.
2. GANs trained with the jaxgen R3GAN objective (`jaxgen.gan.objective.
   R3GAN`: R1 + R2 every step with double backprop, burn-in schedules of γ
   and β2, Adam β1 = 0, EMA generator), for the same number of steps and
   seeds: RpGAN + R1 + R2 against the non-relativistic GAN + R1 + R2 (the
   paper's Table 1 pair). --arch=mlp (default) swaps small MLPs in for G
   and D so that thousands of steps fit a CPU budget; --arch=r3gan uses the
   family's ResNeXt networks (much slower on CPU).
3. 26,000 samples of each EMA generator (and, as a calibration, of the real
   stacked data) are classified: modes covered (classes with ≥ 1 sample)
   and reverse KL(generated mode histogram ‖ uniform).

Writes figures/stacked_*.png and results/stacked_digits.json under --out.
"""

import json
import os
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from sklearn import datasets

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import r3gan as r3gan_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxgen.eval import grids  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxgen.gan import objective as gan_objective  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_EVAL = 26_000  # Samples per mode count (the PacGAN / VEEGAN protocol).


# -- data -----------------------------------------------------------------------


def load_digits(size: int):
  """sklearn's digits as f32[N, size, size] in [-1, 1] and labels i32[N]."""
  d = datasets.load_digits()
  x = d.images.astype(np.float32) / 16.0
  if size != 8:
    x = np.asarray(jax.image.resize(jnp.asarray(x), (len(x), size, size),
                                    "linear"))
  return np.clip(x, 0, 1) * 2 - 1, d.target.astype(np.int32)


def stack(digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
          n: int):
  """n stacked images f32[n, s, s, 3] and their modes (100a + 10b + c)."""
  idx = rng.integers(0, len(digits), (n, 3))
  x = np.stack([digits[idx[:, c]] for c in range(3)], axis=-1)
  y = labels[idx[:, 0]] * 100 + labels[idx[:, 1]] * 10 + labels[idx[:, 2]]
  return x, y


# -- classifier ---------------------------------------------------------------


def to_8x8(x):
  """Average-pools single-channel digits f[B, s, s] down to 8x8."""
  f = x.shape[1] // 8
  return x.reshape(x.shape[0], 8, f, 8, f).mean(axis=(2, 4))


def classifier_apply(p, x):
  """Logits f[B, 10] of single-channel digits f[B, s, s] (s = 8·2^k)."""
  h = to_8x8(x).reshape(x.shape[0], 64)
  h = jax.nn.relu(h @ p["w1"] + p["b1"])
  h = jax.nn.relu(h @ p["w2"] + p["b2"])
  return h @ p["w3"] + p["b3"]


def train_classifier(digits, labels, seed=0, steps=2000):
  """Trains a digit MLP on 80% of the digits.

  Args:
    digits: f[N, s, s] in [-1, 1].
    labels: i32[N].
    seed: split and init seed.
    steps: Adam steps of batch 128 (random one-pixel shifts).

  Returns:
    (params, accuracy on the held-out 20%).
  """
  rng = np.random.default_rng(seed)
  perm = rng.permutation(len(digits))
  cut = int(0.8 * len(digits))
  tr, te = perm[:cut], perm[cut:]
  x8 = np.asarray(to_8x8(jnp.asarray(digits)))
  k = jax.random.split(jax.random.key(seed), 3)
  p = {"w1": jax.random.normal(k[0], (64, 256)) * np.sqrt(2 / 64),
       "b1": jnp.zeros(256),
       "w2": jax.random.normal(k[1], (256, 256)) * np.sqrt(2 / 256),
       "b2": jnp.zeros(256),
       "w3": jax.random.normal(k[2], (256, 10)) * np.sqrt(1 / 256),
       "b3": jnp.zeros(10)}
  tx = optax.adam(1e-3)
  opt = tx.init(p)

  @jax.jit
  def step(p, opt, x, y):
    def loss(p):
      logits = classifier_apply(p, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    g = jax.grad(loss)(p)
    upd, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, upd), opt

  padded = np.pad(x8, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
  for _ in range(steps):
    b = rng.choice(tr, 128)
    # Random shifts of up to one pixel (per batch), for robustness.
    dx, dy = rng.integers(0, 3, 2)
    p, opt = step(p, opt, padded[b, dy:dy + 8, dx:dx + 8], labels[b])
  pred = np.asarray(jnp.argmax(classifier_apply(p, x8[te]), -1))
  return p, float(np.mean(pred == labels[te]))


def count_modes(classifier, images: np.ndarray):
  """(modes covered, reverse KL vs uniform, histogram) of f[N, s, s, 3]."""
  apply = jax.jit(lambda x: jnp.argmax(classifier_apply(classifier, x), -1))
  digits = [np.asarray(apply(jnp.asarray(images[..., c]))) for c in range(3)]
  modes = digits[0] * 100 + digits[1] * 10 + digits[2]
  hist = np.bincount(modes, minlength=1000)
  p = hist / hist.sum()
  nz = p > 0
  kl = float(np.sum(p[nz] * np.log(p[nz] * 1000)))
  return int(np.sum(hist > 0)), kl, hist


# -- GAN ----------------------------------------------------------------------


class MLPGenerator(nn.Module):
  """z -> (Dense, lrelu 0.2) x depth -> Dense to pixels (no norm, no tanh)."""
  size: int
  width: int = 256
  depth: int = 2

  @nn.compact
  def __call__(self, z, labels=None):
    del labels
    h = z
    for _ in range(self.depth):
      h = jax.nn.leaky_relu(nn.Dense(self.width)(h), 0.2)
    return nn.Dense(self.size * self.size * 3)(h).reshape(
        -1, self.size, self.size, 3)


class MLPDiscriminator(nn.Module):
  """pixels -> (Dense, lrelu 0.2) x depth -> one logit (no norm)."""
  width: int = 256
  depth: int = 2

  @nn.compact
  def __call__(self, x, labels=None):
    del labels
    h = x.reshape(x.shape[0], -1)
    for _ in range(self.depth):
      h = jax.nn.leaky_relu(nn.Dense(self.width)(h), 0.2)
    return nn.Dense(1)(h)[:, 0]


def gan_config(loss: str, size: int, widths, batch: int, steps: int,
               lr: float):
  """The R3GAN config of this experiment: the paper's StackedMNIST recipe
  (unconditional, constant lr, γ 1 → 0.1, β2 0.9 → 0.99, EMA half-life
  ramping up), its burn-in compressed to the first half of the run and the
  EMA half-life to 1/10 of the images seen."""
  c = r3gan_config.get_config("tiny")
  c.dataset.image_size = size
  c.dataset.num_classes = 0
  c.gan.class_conditional = False
  c.gan.loss = loss
  # The loop below feeds one batch of `batch` images a step, shared by the
  # D and G phases (the recorded results were measured this way).
  c.gan.g_own_real_batch = False
  c.model.widths = tuple(widths)
  c.model.blocks_per_stage = 1
  c.model.noise_dim = 64
  c.batch_size = batch
  c.total_steps = steps
  c.gan.burn_in_examples = steps * batch // 2
  c.gan.gamma, c.gan.end_gamma = 1.0, 0.1
  c.gan.ema_half_life_examples = steps * batch // 10
  c.optimizer.learning_rate = c.optimizer.end_learning_rate = lr
  return c


def train_gan(config, digits, labels, seed: int, arch: str,
              mlp_width: int = 256, log_every: int = 250):
  """Trains with `R3GAN.train_step` on stacked digits.

  Args:
    config: from `gan_config`.
    digits: f[N, s, s] single digits in [-1, 1].
    labels: their classes.
    seed: init, data and noise seed.
    arch: "r3gan" (the family's ResNeXt G and D) or "mlp" (the objective
      with small MLP networks swapped in: same losses, penalties, schedules,
      optimizer and EMA, a fraction of the compute).
    mlp_width: hidden width of the MLPs.
    log_every: steps per logged (averaged) metrics row.

  Returns:
    (objective, final state, log rows).
  """
  networks = {}
  if arch == "mlp":
    networks = dict(
        generator=MLPGenerator(config.dataset.image_size, mlp_width),
        discriminator=MLPDiscriminator(mlp_width))
  obj = gan_objective.R3GAN(config, total_steps=config.total_steps,
                            **networks)
  size = config.dataset.image_size
  data_rng = np.random.default_rng(seed)
  state = jax.jit(lambda k, b: nn.unbox(obj.init(k, b)))(
      jax.random.key(seed), {"image": jnp.zeros((1, size, size, 3)),
                             "label": jnp.zeros((1,), jnp.int32)})
  step = jax.jit(obj.train_step, donate_argnums=0)
  base = jax.random.key(seed + 1000)
  rows, acc, t0 = [], [], time.time()
  for i in range(config.total_steps):
    x, _ = stack(digits, labels, data_rng, config.batch_size)
    state, m = step(state, {"image": jnp.asarray(x),
                            "label": jnp.zeros((len(x),), jnp.int32)},
                    jax.random.fold_in(base, i))
    acc.append(m)
    if (i + 1) % log_every == 0:
      avg = {k: float(np.mean([float(a[k]) for a in acc])) for k in acc[0]}
      avg.update(step=i + 1, seconds=time.time() - t0)
      rows.append(avg)
      acc = []
      print(f"  [{config.gan.loss}] step {i + 1}: d {avg['loss']:.3f} "
            f"g {avg['g_loss']:.3f} r1 {avg['r1']:.3g} r2 {avg['r2']:.3g} "
            f"({avg['seconds']:.0f}s)", flush=True)
  return obj, state, rows


def sample_many(obj, state, n: int, seed: int):
  fn = jax.jit(lambda k: obj.sample(state, k, 1000))
  return np.concatenate([np.asarray(fn(jax.random.fold_in(
      jax.random.key(seed), i))) for i in range(n // 1000)])


LOSSES = (("rpgan", "RpGAN + R1 + R2"), ("gan", "GAN + R1 + R2"))


def plot(results, hists, fig_dir):
  """Mode histograms (first seed), losses and penalties along training."""
  fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
  for name, hist in hists.items():
    axes[0].plot(np.sort(hist)[::-1], label=name)
  axes[0].axhline(NUM_EVAL / 1000, c="k", ls="--", lw=0.8, label="uniform")
  axes[0].set_xlabel("mode (sorted by count), first seed")
  axes[0].set_ylabel(f"samples of {NUM_EVAL}")
  axes[0].set_yscale("symlog")
  axes[0].legend(fontsize=8)
  for name in hists:
    log = results["runs"][name][0]["log"]
    steps = [r["step"] for r in log]
    axes[1].plot(steps, [r["loss"] for r in log], label=f"{name}: D")
    axes[1].plot(steps, [r["g_loss"] for r in log], ls="--",
                 label=f"{name}: G")
    axes[2].semilogy(steps, [r["r1"] for r in log], label=f"{name}: R1")
    axes[2].semilogy(steps, [r["r2"] for r in log], ls="--",
                     label=f"{name}: R2")
  for ax, label in ((axes[1], "loss"), (axes[2], "E‖∇ₓD‖²")):
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(fig_dir, "stacked_modes.png"), dpi=100)
  plt.close(fig)


FLAGS = flags.FLAGS
flags.DEFINE_string("out", os.path.dirname(__file__), "Output directory.")
flags.DEFINE_integer("size", 8, "Pixels: 8 (native), or 16/32 (upsampled).")
flags.DEFINE_enum("arch", "mlp", ["mlp", "r3gan"], "G and D architecture.")
flags.DEFINE_integer("mlp_width", 256, "Hidden width of the MLP G and D.")
flags.DEFINE_string("widths", "", "R3GAN stage widths (arch=r3gan); "
                    "default 32 per stage, log2(size) - 1 stages.")
flags.DEFINE_integer("batch", 128, "Batch size.")
flags.DEFINE_integer("steps", 1500, "Training steps per run.")
flags.DEFINE_float("lr", 5e-4, "Learning rate.")
flags.DEFINE_integer("seeds", 2, "Seeds per setting.")


def _flag_values():
  """This script's flags as plain values (for the results JSON)."""
  return {name: FLAGS[name].value
          for name in ("out", "size", "arch", "mlp_width", "widths", "batch",
                       "steps", "lr", "seeds")}


def main(argv):
  del argv
  args = FLAGS
  fig_dir = os.path.join(args.out, "figures")
  res_dir = os.path.join(args.out, "results")
  os.makedirs(fig_dir, exist_ok=True)
  os.makedirs(res_dir, exist_ok=True)
  try:
    widths = ([int(w) for w in args.widths.split(",")] if args.widths else
              [32] * max(1, int(np.log2(args.size)) - 1))
  except ValueError:
    raise app.UsageError(f"--widths={args.widths}: give integers, e.g. "
                         "32,32,32") from None
  if args.arch == "r3gan":
    # Before the classifier trains: a width list that does not fit the size
    # is one line, not a shape error inside D.
    try:
      gan_objective.R3GAN(gan_config(LOSSES[0][0], args.size, widths,
                                     args.batch, args.steps, args.lr),
                          total_steps=args.steps).validate(1)
    except ValueError as e:
      raise app.UsageError(f"--size={args.size} --widths="
                           f"{','.join(map(str, widths))}: {e}") from None
  scale = max(1, 64 // args.size)
  t0 = time.time()

  digits, labels = load_digits(args.size)
  classifier, acc = train_classifier(digits, labels)
  print(f"digit classifier held-out accuracy: {acc:.4f} "
        f"({time.time() - t0:.0f}s)", flush=True)
  real, _ = stack(digits, labels, np.random.default_rng(123), NUM_EVAL)
  real_modes, real_kl, _ = count_modes(classifier, real)
  print(f"real stacked data: {real_modes} modes, KL {real_kl:.4f}")
  results = {"classifier_accuracy": acc,
             "real": {"modes": real_modes, "kl": real_kl},
             "args": _flag_values(), "num_eval": NUM_EVAL,
             "runs": {name: [] for _, name in LOSSES}}
  grids.save_grid(real[:64], os.path.join(fig_dir, "stacked_real.png"),
                  ncols=8, scale=scale)

  hists = {}
  for seed in range(args.seeds):
    for loss, name in LOSSES:
      t = time.time()
      config = gan_config(loss, args.size, widths, args.batch, args.steps,
                          args.lr)
      obj, state, rows = train_gan(config, digits, labels, seed, args.arch,
                                   args.mlp_width)
      samples = sample_many(obj, state, NUM_EVAL, seed=7)
      modes, kl, hist = count_modes(classifier, samples)
      secs = time.time() - t
      print(f"{name}, seed {seed}: {modes} modes, reverse KL {kl:.4f} "
            f"({secs:.0f}s)", flush=True)
      results["runs"][name].append(
          {"seed": seed, "modes": modes, "kl": kl, "seconds": secs,
           "log": rows, "params": obj.num_params(state)})
      if seed == 0:
        hists[name] = hist
        grids.save_grid(samples[:64], os.path.join(
            fig_dir, f"stacked_{loss}_samples.png"), ncols=8, scale=scale)

  plot(results, hists, fig_dir)
  results["summary"] = {
      name: {"modes": [r["modes"] for r in runs],
             "kl": [r["kl"] for r in runs]}
      for name, runs in results["runs"].items()}
  results["seconds"] = time.time() - t0
  with open(os.path.join(res_dir, "stacked_digits.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(json.dumps({"classifier_accuracy": acc, "real": results["real"],
                    "summary": results["summary"]}, indent=1))
  print(f"stacked digits: {time.time() - t0:.0f}s")


if __name__ == "__main__":
  app.run(main)
