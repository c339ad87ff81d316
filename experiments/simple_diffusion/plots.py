"""The simple-diffusion experiment's figures (losses, ε-MSE probe, metrics).

Written by `experiments.simple_diffusion.run` into its output folder.
"""

import os

import matplotlib
matplotlib.use("Agg")
# pylint: disable-next=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt

from jaxgen import jsonl


def plot_losses(exp: str, arms, workdirs, out: str):
  """Train/eval loss (and eval ε-MSE) against examples seen."""
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for name in arms:
    rows = jsonl.read(
        os.path.join(workdirs[name], "metrics.jsonl"))
    ex = [r["examples_seen"] for r in rows]
    axes[0].plot(ex, [r["loss"] for r in rows], label=name)
    ev = [(r["examples_seen"], r["eval_loss"], r["eval_eps_mse"])
          for r in rows if "eval_loss" in r]
    axes[1].plot([e[0] for e in ev], [e[1] for e in ev], "o-", label=name)
    axes[2].plot([e[0] for e in ev], [e[2] for e in ev], "o-", label=name)
  titles = ("train loss (per-arm definition)", "eval loss (held-out)",
            "eval per-pixel ε-MSE (own schedule)")
  for ax, title in zip(axes, titles):
    ax.set_title(title)
    ax.set_xlabel("examples seen")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  fig.suptitle(f"{exp}: losses are NOT comparable across schedules/losses")
  fig.tight_layout()
  fig.savefig(os.path.join(out, f"loss_{exp}.png"), dpi=80)
  plt.close(fig)


def plot_probe(results, experiments, logsnrs, out: str):
  """ε-MSE vs logSNR of each arm (comparable across schedules).

  Args:
    results: the experiment's results (results.json).
    experiments: {experiment: its arms}, one panel each.
    logsnrs: the probe's logSNRs (the x axis).
    out: the folder the figure goes to.
  """
  fig, axes = plt.subplots(1, len(experiments), figsize=(15, 4))
  for ax, (exp, arms) in zip(axes, experiments.items()):
    for name in arms:
      ax.plot(logsnrs, results["arms"][name]["probe_eps_mse"], "o-",
              label=name)
    ax.set_title(exp)
    ax.set_xlabel("logSNR")
    ax.set_ylabel("held-out ε-MSE (EMA)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "probe_eps_mse_vs_logsnr.png"), dpi=80)
  plt.close(fig)


def plot_metrics(results, out: str):
  """FD and accuracy per arm, error bars ±1.96 bootstrap std."""
  names = list(results["arms"])
  fig, axes = plt.subplots(1, 2, figsize=(13, 4))
  for ax, key in zip(axes, ("fd", "accuracy")):
    vals = [results["arms"][n]["metrics"][key] for n in names]
    err = [1.96 * results["arms"][n]["metrics"][f"{key}_boot_std"]
           for n in names]
    ax.bar(range(len(names)), vals, yerr=err, capsize=4,
           color=["C0", "C1", "C2", "C0", "C1"][:len(names)])
    for size in (64, 128):
      floor = results["real_floor"][str(size)][key]
      ax.axhline(floor, ls="--", lw=1, color="k" if size == 128 else "grey",
                 label=f"real test images {size}px")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, fontsize=8)
    ax.set_title("classifier FD to real (lower is better)" if key == "fd"
                 else "class accuracy of conditional samples")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "metrics.png"), dpi=80)
  plt.close(fig)
