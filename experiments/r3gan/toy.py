r"""R3GAN toy experiments: DiracRpGAN (App. B/C) and a 2-D Gaussian mixture.

  python -m experiments.r3gan.toy --out=experiments/r3gan

1. DiracRpGAN. p_D = δ(0), G = δ(θ), D(x) = ψ·x, trained with alternating
   gradient steps (small lr, close to the continuous flow) from (θ, ψ) =
   (1, 0). Variants: the zero-sum RpGAN game of the paper's Prop. I (G
   maximises D's loss), the mirrored non-saturating G loss the reference code
   trains with, and both with R1 or R1 + R2 (γ = 1).
2. A 2-D Gaussian mixture (default: 8 modes on a circle of radius 2,
   σ = 0.05; or a 5x5 grid) learned by MLPs (G: 16 → 128 → 128 → 2,
   D: 2 → 128 → 128 → 1, leaky ReLU 0.2), Adam (lr 2e-3, β1 = 0,
   β2 = 0.99), batch 256, γ = 0.1, separate real batches for the D and G
   steps as in the reference loop. Variants: RpGAN + R1 + R2, RpGAN + R1,
   RpGAN without penalty, GAN + R1 + R2; several seeds each. Metrics on
   10k samples: modes covered (≥ 20 samples within 3σ), fraction of
   samples within 3σ of a mode ("high quality"), and KL(histogram of
   high-quality samples ‖ uniform over the modes), plus E‖∇ₓD‖² on fakes
   (the R2 value) along training, which the paper (Sec. 2.4) reports to
   blow up without R2.

Writes figures/dirac.png, figures/mixture_samples.png,
figures/mixture_curves.png and results/toy.json under --out.
"""

import json
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxgen.gan import losses  # pylint: disable=g-import-not-at-top,wrong-import-position

# -- DiracRpGAN ---------------------------------------------------------------


def dirac_run(mode: str, gamma: float, penalties: int, steps: int = 6000,
              lr: float = 0.02) -> np.ndarray:
  """Trajectory [(θ, ψ)] of the DiracRpGAN under alternating GD.

  Args:
    mode: "zero_sum" (G maximises D's loss) or "non_saturating" (the code).
    gamma: penalty weight.
    penalties: 0 (none), 1 (R1) or 2 (R1 + R2).
    steps: number of (D, G) updates.
    lr: step size of both players.

  Returns:
    f[steps + 1, 2] array of (θ, ψ).
  """
  def d_loss(psi, theta):
    d_fn = lambda x: psi * x[:, 0]
    d_real, r1 = losses.logits_and_penalty(d_fn, jnp.zeros((1, 1)))
    d_fake, r2 = losses.logits_and_penalty(d_fn, jnp.full((1, 1), theta))
    pen = (r1 if penalties >= 1 else 0.0) + (r2 if penalties >= 2 else 0.0)
    return losses.rpgan_d_loss(d_real, d_fake) + gamma / 2 * pen

  def g_loss(theta, psi):
    d_real, d_fake = jnp.zeros(1), psi * jnp.full((1,), theta)
    if mode == "zero_sum":
      return -losses.rpgan_d_loss(d_real, d_fake)
    return losses.rpgan_g_loss(d_real, d_fake)

  def step(carry, _):
    theta, psi = carry
    psi = psi - lr * jax.grad(d_loss)(psi, theta)
    theta = theta - lr * jax.grad(g_loss)(theta, psi)
    return (theta, psi), jnp.stack([theta, psi])

  _, traj = jax.jit(lambda c: jax.lax.scan(step, c, None, length=steps))(
      (jnp.float32(1.0), jnp.float32(0.0)))
  return np.concatenate([[[1.0, 0.0]], np.asarray(traj)])


def dirac_experiment(fig_dir: str):
  """Runs the Dirac variants, plots them and returns the final radii."""
  variants = [
      ("RpGAN zero-sum, no penalty (Prop. I)", "zero_sum", 0.0, 0),
      ("RpGAN non-saturating, no penalty", "non_saturating", 0.0, 0),
      ("RpGAN non-saturating + R1 (γ=1)", "non_saturating", 1.0, 1),
      ("RpGAN non-saturating + R1 + R2 (γ=1)", "non_saturating", 1.0, 2),
  ]
  out = {}
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
  for name, mode, gamma, pens in variants:
    traj = dirac_run(mode, gamma, pens)
    radius = np.hypot(traj[:, 0], traj[:, 1])
    out[name] = {"radius_at": {str(s): float(radius[s])
                               for s in (0, 1000, 3000, 6000)}}
    ax1.plot(traj[:, 0], traj[:, 1], label=name, lw=1)
    ax2.semilogy(np.maximum(radius, 1e-12), label=name)
  ax1.plot([0], [0], "k*", ms=10)
  ax1.set_xlabel("θ (generator)")
  ax1.set_ylabel("ψ (discriminator)")
  ax1.set_title("DiracRpGAN trajectories from (1, 0)")
  ax1.set_aspect("equal")
  ax2.set_xlabel("step (lr 0.02, alternating)")
  ax2.set_ylabel("√(θ² + ψ²)")
  ax2.set_title("distance to the equilibrium")
  ax2.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(fig_dir, "dirac.png"), dpi=110)
  plt.close(fig)
  return out


# -- 2-D mixture ----------------------------------------------------------------

# Mixtures: (mode centres, σ). "ring8": 8 modes on a circle of radius 2;
# "grid25": a 5x5 grid with spacing 2.
MIXTURES = {
    "ring8": (np.array([(2 * np.cos(a), 2 * np.sin(a))
                        for a in np.arange(8) * np.pi / 4], np.float32), 0.05),
    "grid25": (np.array([(x, y) for x in (-4, -2, 0, 2, 4)
                         for y in (-4, -2, 0, 2, 4)], np.float32), 0.05),
}
GRID, SIGMA = MIXTURES["ring8"]
Z_DIM = 16
# Training steps per scanned chunk (one metrics row per chunk).
CHUNK = 250


def set_mixture(name: str):
  """Selects the mixture the functions below sample and score."""
  global GRID, SIGMA  # pylint: disable=global-statement
  GRID, SIGMA = MIXTURES[name]


def sample_data(rng, n):
  k1, k2 = jax.random.split(rng)
  idx = jax.random.randint(k1, (n,), 0, len(GRID))
  return jnp.asarray(GRID)[idx] + SIGMA * jax.random.normal(k2, (n, 2))


def mlp_init(rng, sizes):
  params = []
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    w = jax.random.normal(jax.random.fold_in(rng, i), (a, b)) * np.sqrt(2 / a)
    params.append((w, jnp.zeros((b,))))
  return params


def mlp_apply(params, x):
  for w, b in params[:-1]:
    x = jax.nn.leaky_relu(x @ w + b, 0.2)
  w, b = params[-1]
  return x @ w + b


def mixture_metrics(samples: np.ndarray):
  """Modes covered, high-quality fraction, KL(HQ histogram ‖ uniform)."""
  d = np.linalg.norm(samples[:, None, :] - GRID[None], axis=-1)
  nearest, dist = d.argmin(1), d.min(1)
  hq = dist < 3 * SIGMA
  counts = np.bincount(nearest[hq], minlength=len(GRID))
  p = counts / max(counts.sum(), 1)
  nz = p > 0
  kl = float(np.sum(p[nz] * np.log(p[nz] * len(GRID))))
  return {"modes": int(np.sum(counts >= 20)), "hq": float(hq.mean()),
          "kl": kl}


def mixture_run(loss: str, r1: bool, r2: bool, gamma: float, seed: int,
                steps: int, chunk: int = CHUNK, lr: float = 2e-3,
                batch: int = 256):
  """Trains the MLP GAN; returns metric curves and final samples."""
  d_loss_fn, g_loss_fn, g_needs_real = losses.get_losses(loss)
  rng = jax.random.key(seed)
  gp = mlp_init(jax.random.fold_in(rng, 1), (Z_DIM, 128, 128, 2))
  dp = mlp_init(jax.random.fold_in(rng, 2), (2, 128, 128, 1))
  tx = optax.adam(lr, b1=0.0, b2=0.99)
  state = (gp, dp, tx.init(gp), tx.init(dp))

  def d_objective(dp, x_real, x_fake):
    d_fn = lambda x: mlp_apply(dp, x)[:, 0]
    zero = jnp.zeros(())
    d_real, p1 = (losses.logits_and_penalty(d_fn, x_real) if r1
                  else (d_fn(x_real), zero))
    d_fake, p2 = (losses.logits_and_penalty(d_fn, x_fake) if r2
                  else (d_fn(x_fake), zero))
    # Both gradient norms are logged, whichever enters the loss.
    g_real = losses.gradient_penalty(d_fn, jax.lax.stop_gradient(x_real))
    g_fake = losses.gradient_penalty(d_fn, jax.lax.stop_gradient(x_fake))
    loss = d_loss_fn(d_real, d_fake) + gamma / 2 * (p1 + p2)
    return loss, (jax.lax.stop_gradient(g_real),
                  jax.lax.stop_gradient(g_fake))

  def g_objective(gp, dp, x_real, z):
    d_fake = mlp_apply(dp, mlp_apply(gp, z))[:, 0]
    d_real = (jax.lax.stop_gradient(mlp_apply(dp, x_real)[:, 0])
              if g_needs_real else jnp.zeros_like(d_fake))
    return g_loss_fn(d_real, d_fake)

  def step(state, key):
    gp, dp, gs, ds = state
    k = jax.random.split(key, 4)
    x_fake = jax.lax.stop_gradient(
        mlp_apply(gp, jax.random.normal(k[0], (batch, Z_DIM))))
    (_, (g_real, g_fake)), grads = jax.value_and_grad(
        d_objective, has_aux=True)(dp, sample_data(k[1], batch), x_fake)
    upd, ds = tx.update(grads, ds, dp)
    dp = optax.apply_updates(dp, upd)
    grads = jax.grad(g_objective)(gp, dp, sample_data(k[2], batch),
                                  jax.random.normal(k[3], (batch, Z_DIM)))
    upd, gs = tx.update(grads, gs, gp)
    gp = optax.apply_updates(gp, upd)
    return (gp, dp, gs, ds), jnp.stack([g_real, g_fake])

  @jax.jit
  def run_chunk(state, key):
    return jax.lax.scan(step, state, jax.random.split(key, chunk))

  sample = jax.jit(lambda gp, key: mlp_apply(
      gp, jax.random.normal(key, (10_000, Z_DIM))))
  curves = []
  for c in range(steps // chunk):
    state, grad_norms = run_chunk(state, jax.random.fold_in(rng, 100 + c))
    samples = np.asarray(sample(state[0], jax.random.fold_in(rng, 7)))
    m = mixture_metrics(samples) if np.all(np.isfinite(samples)) else {
        "modes": 0, "hq": 0.0, "kl": float("nan")}
    gn = np.asarray(grad_norms)
    m.update(step=(c + 1) * chunk, grad_sq_real=float(np.mean(gn[:, 0])),
             grad_sq_fake=float(np.mean(gn[:, 1])))
    curves.append(m)
  return curves, samples


MIXTURE_VARIANTS = [
    ("RpGAN + R1 + R2", "rpgan", True, True),
    ("RpGAN + R1", "rpgan", True, False),
    ("RpGAN, no penalty", "rpgan", False, False),
    ("GAN + R1 + R2", "gan", True, True),
]


def mixture_experiment(fig_dir: str, seeds, steps: int, gamma: float):
  """Runs all variants x seeds; plots samples and curves; returns numbers."""
  results = {}
  fig_s, axes_s = plt.subplots(len(seeds), len(MIXTURE_VARIANTS),
                               figsize=(3.2 * len(MIXTURE_VARIANTS),
                                        3.2 * len(seeds)), squeeze=False)
  fig_c, axes_c = plt.subplots(1, 3, figsize=(15, 4))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for j, (name, loss, r1, r2) in enumerate(MIXTURE_VARIANTS):
    results[name] = []
    for i, seed in enumerate(seeds):
      t = time.time()
      curves, samples = mixture_run(loss, r1, r2, gamma, seed, steps)
      final = curves[-1]
      results[name].append({"seed": seed, "final": final, "curve": curves})
      print(f"{name:20s} seed {seed}: modes {final['modes']:2d}/{len(GRID)} "
            f"hq {final['hq']:.3f} kl {final['kl']:.3f} "
            f"({time.time() - t:.0f}s)", flush=True)
      ax = axes_s[i, j]
      ok = np.all(np.isfinite(samples), axis=1)
      ax.scatter(GRID[:, 0], GRID[:, 1], c="k", s=8, marker="x")
      ax.scatter(samples[ok, 0][:2000], samples[ok, 1][:2000], s=1,
                 alpha=0.4, color=colors[j])
      lim = 1.5 * np.abs(GRID).max()
      ax.set_xlim(-lim, lim)
      ax.set_ylim(-lim, lim)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f"{name}, seed {seed}\n{final['modes']}/{len(GRID)} modes, "
                   f"hq {final['hq']:.2f}", fontsize=8)
      steps_axis = [c["step"] for c in curves]
      lab = name if i == 0 else None
      axes_c[0].plot(steps_axis, [c["modes"] for c in curves], c=colors[j],
                     label=lab, alpha=0.8)
      axes_c[1].plot(steps_axis, [c["hq"] for c in curves], c=colors[j],
                     label=lab, alpha=0.8)
      axes_c[2].semilogy(steps_axis, [c["grad_sq_fake"] for c in curves],
                         c=colors[j], label=lab, alpha=0.8)
  axes_c[0].set_ylabel(f"modes covered (of {len(GRID)})")
  axes_c[1].set_ylabel("fraction of samples within 3σ")
  axes_c[2].set_ylabel("E‖∇ₓD(fake)‖² (R2 value)")
  for ax in axes_c:
    ax.set_xlabel("step")
  axes_c[0].legend(fontsize=8)
  fig_s.tight_layout()
  fig_s.savefig(os.path.join(fig_dir, "mixture_samples.png"), dpi=90)
  fig_c.tight_layout()
  fig_c.savefig(os.path.join(fig_dir, "mixture_curves.png"), dpi=100)
  plt.close(fig_s)
  plt.close(fig_c)
  return results


FLAGS = flags.FLAGS
flags.DEFINE_string("out", os.path.dirname(__file__), "Output directory.")
flags.DEFINE_enum("mixture", "ring8", sorted(MIXTURES), "2-D mixture.")
flags.DEFINE_integer("steps", 3000, "Training steps per run.")
flags.DEFINE_integer("seeds", 2, "Seeds per setting.")
flags.DEFINE_float("gamma", 0.1, "R1 / R2 weight.")
# Metrics are taken once per scanned chunk of steps.
flags.register_validator(
    "steps", lambda v: v > 0 and v % CHUNK == 0,
    f"must be a positive multiple of {CHUNK} (metrics are taken every "
    f"{CHUNK} steps).")
flags.register_validator("seeds", lambda v: v > 0, "must be at least 1.")


def _flag_values():
  """This script's flags as plain values (for the results JSON)."""
  return {name: FLAGS[name].value
          for name in ("out", "mixture", "steps", "seeds", "gamma")}


def main(argv):
  del argv
  args = FLAGS
  set_mixture(args.mixture)
  fig_dir = os.path.join(args.out, "figures")
  res_dir = os.path.join(args.out, "results")
  os.makedirs(fig_dir, exist_ok=True)
  os.makedirs(res_dir, exist_ok=True)
  t0 = time.time()
  dirac = dirac_experiment(fig_dir)
  for k, v in dirac.items():
    print(f"Dirac {k}: radius {v['radius_at']}")
  mixture = mixture_experiment(fig_dir, list(range(args.seeds)), args.steps,
                               args.gamma)
  summary = {
      name: {k: [r["final"][k] for r in runs]
             for k in ("modes", "hq", "kl")}
      for name, runs in mixture.items()}
  with open(os.path.join(res_dir, "toy.json"), "w") as f:
    json.dump({"dirac": dirac, "mixture_final": summary,
               "mixture": mixture, "args": _flag_values(),
               "seconds": time.time() - t0}, f, indent=1)
  print(json.dumps(summary, indent=1))
  print(f"toy experiments: {time.time() - t0:.0f}s")


if __name__ == "__main__":
  app.run(main)
