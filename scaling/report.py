"""Renders report.md from a fit summary (the dict written to fit.json).

`render` only reads the summary, so a report can be regenerated from a
fit.json alone. With a "reference" section (from `--compare=chinchilla`) the
report also sets the fit beside the published Chinchilla and Epoch numbers
(`CHINCHILLA_PUBLISHED`, sources in docs/references/scaling_laws.md).
"""

from typing import Dict, List, Optional

import numpy as np

from scaling import bootstrap as bootstrap_lib
from scaling import flops_law

# Published numbers for --compare=chinchilla.
CHINCHILLA_PUBLISHED = {
    # Besiroglu et al. 2024 (Epoch), Table 1, 240 points (BFGS from
    # Hoffmann's parameters, fitted Huber scale).
    "epoch_table1": {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478,
                     "beta": 0.3658, "a": 0.5126},
    # Epoch notebook's grid run = the Chinchilla protocol reproduced with
    # scipy from all 4500 starts (objective 1.0183e-3).
    "epoch_grid": {"E": 1.81724, "A": 477.84, "B": 2143.86, "alpha": 0.34731,
                   "beta": 0.36718, "a": 0.5139, "objective": 1.0183e-3},
    # Objective of Hoffmann et al.'s parameters on the same 240 points.
    "hoffmann_objective": {"hoffmann_unrounded": 1.2312e-3,
                           "hoffmann_rounded": 4.1210e-3},
    # Epoch's 95% bootstrap CIs (4000 resamples).
    "epoch_ci95": {"E": (1.769, 1.871), "A": (285.2, 743.6),
                   "B": (1042.4, 5810.3), "alpha": (0.317, 0.373),
                   "beta": (0.331, 0.415)},
    # Epoch: 80% CI width of a at n = 240 (Besiroglu et al. 2024).
    "epoch_a_width80": 0.051,
    # Reproduction targets (value, tolerance) from the research notes.
    "targets": {"alpha": (0.347, 0.003), "beta": (0.367, 0.003),
                "E": (1.817, 0.005), "a": (0.514, 0.005),
                "objective": (1.0183e-3, 1e-6)},
    # Hoffmann et al. 2022, Table 2 (10th-90th percentiles).
    "chinchilla_a": {"approach 2": (0.49, 0.462, 0.534),
                     "approach 3": (0.46, 0.454, 0.455)},
    # Approach 2 on Epoch's file, nearest of the nine budgets: +-0.05 dex
    # gives 0.502, +-10% gives 0.498 (all 245 rows; research notes).
    "approach2_a_notes": (0.502, 0.498),
}


def _f(x, digits: int = 4) -> str:
  if x is None:
    return "n/a"
  if isinstance(x, str):
    return x
  if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
    return f"{x:.{digits - 1}e}"
  return f"{x:.{digits}g}"


def _with_interval(value, interval: Optional[Dict], digits: int = 4) -> str:
  text = _f(value, digits)
  if interval and "lo" in interval:
    text += f" ({_f(interval['lo'], digits)} to {_f(interval['hi'], digits)})"
  return text


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
  lines = ["| " + " | ".join(header) + " |",
           "| " + " | ".join("---" for _ in header) + " |"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return lines


def _level_text(summary) -> str:
  s = summary["settings"]
  if not s.get("bootstrap"):
    return "no bootstrap (run with --bootstrap=N for intervals)"
  lo = 50 * (1 - s["level"])
  return (f"intervals: {lo:g}th to {100 - lo:g}th percentiles of "
          f"{s['bootstrap']} bootstrap resamples (seed {s['seed']})")


def _data_section(summary) -> List[str]:
  d = summary["data"]
  lines = ["## Data", "",
           f"- source: `{d['source']}`, family: `{d['family'] or '(none)'}`",
           f"- runs fitted: {d['n_runs']}"
           + (f" (after dropping the {d['dropped_highest_loss']} "
              "highest-loss runs)" if d.get("dropped_highest_loss") else ""),
           f"- N {_f(d['N_range'][0])} to {_f(d['N_range'][1])}, "
           f"D {_f(d['D_range'][0])} to {_f(d['D_range'][1])}, "
           f"C {_f(d['C_range'][0])} to {_f(d['C_range'][1])} FLOPs, "
           f"loss {_f(d['loss_range'][0])} to {_f(d['loss_range'][1])}",
           _flops_line(d),
           f"- {_level_text(summary)}", ""]
  settings = summary.get("settings", {})
  if settings.get("higher_is_better"):
    lines[-1:-1] = [f"- metric `{settings['metric']}` (higher is better) is "
                    f"fitted as the falling loss `{settings['fitted']}`; "
                    "\"loss\" below is that quantity"]
  elif settings.get("metric"):
    lines[-1:-1] = [f"- \"loss\" below is the rows' `{settings['metric']}`"]
  if summary.get("warnings"):
    lines += ["Warnings:", ""] + [f"- {w}" for w in summary["warnings"]]
    lines.append("")
  return lines


def _flops_line(data) -> str:
  """The training-compute law line of the Data section."""
  law = flops_law.FlopsLaw.from_json(data)
  if "k_range" not in data:  # An older fit.json: one median k.
    return f"- k in C = k N D: {_f(law.kappa)} (median C/(N D))"
  lo, hi = data["k_range"]
  if law.is_linear and hi <= lo * (1 + 1e-9):
    return f"- training compute {law} (C/(N D) = {_f(lo)} on every run)"
  if law.is_linear and hi <= lo * flops_law.CONSTANT_TOL:
    return (f"- training compute {law} (C/(N D) from {_f(lo)} to {_f(hi)}, "
            "within 1%: one k, the median)")
  if law.is_linear:  # Spread but one k: one model size, no exponent.
    return (f"- training compute {law} (one model size: C/(N D) from "
            f"{_f(lo)} to {_f(hi)}, one k, the median)")
  return (f"- training compute {law}: ln(C/D) fitted on ln N (C/(N D) runs "
          f"from {_f(lo)} to {_f(hi)}; worst run off by "
          f"{law.max_miss:.3f}x); the frontiers below take this law")


def _approach2_section(a2) -> List[str]:
  iv = a2.get("intervals", {})
  lines = ["## Approach 2: isoFLOP profiles", "",
           f"Budget rule: {a2['budget_rule']}. Per budget, a parabola of loss "
           "in ln N; its minimum is used only when the parabola is convex "
           "and the minimum lies inside the sampled N range (a curvature "
           "within 2 standard errors of 0 is warned about). "
           f"{a2['n_budgets_used']} budgets used, {a2['n_runs_used']} runs; "
           f"{a2['n_runs_unassigned']} runs near no budget.", ""]
  rows = []
  for b in a2["budgets"]:
    d_opt = (float(flops_law.FlopsLaw.from_json(a2).data(b["budget"],
                                                          b["n_opt"]))
             if b["used"] and b["n_opt"] else None)
    rows.append([_f(b["budget"], 3), str(b["n_runs"]),
                 f"{_f(b['n_min'], 3)} to {_f(b['n_max'], 3)}",
                 _f(b["curvature"], 3) + (
                     f" ± {_f(b['curvature_se'], 2)}"
                     if np.isfinite(b.get("curvature_se", np.nan)) else ""),
                 _with_interval(b["n_opt"], iv.get(bootstrap_lib.budget_key(
                     b["budget"], "N_opt")), 3) if b["used"] else "n/a",
                 _f(d_opt), _f(b["loss_opt"] if b["used"] else None),
                 "yes" if b["used"] else "no: " + b["reason"]])
  lines += _table(["budget C", "runs", "N range", "curvature (± SE)", "N_opt",
                   "D_opt", "L_opt", "used"], rows)
  lines += ["", "Fits (OLS in log space):", "",
            f"- N_opt = G C^a: a = {_with_interval(a2['a'], iv.get('a'))}, "
            f"G = {_with_interval(a2['G'], iv.get('G'))}",
            f"- D_opt = H C^b: b = {_with_interval(a2['b'], iv.get('b'))}, "
            f"H = {_with_interval(a2['H'], iv.get('H'))}",
            "- L_opt = L0 C^gamma: gamma = "
            f"{_with_interval(a2['loss_exponent'], iv.get('loss_exponent'))}"
            f", L0 = {_with_interval(a2['loss_coef'], iv.get('loss_coef'))}"]
  if "bootstrap_failed" in a2:
    lines.append(f"- bootstrap resamples with < 2 usable budgets (skipped): "
                 f"{a2['bootstrap_failed']}")
  return lines + [""]


def _full_grid_lines(a3) -> List[str]:
  check = a3.get("full_grid_check")
  if not check:
    return []
  return [f"- full-grid check: L-BFGS from all {check['n_starts']} starts "
          f"took {check['seconds']:.1f} s and reached objective "
          f"{_f(check['objective'], 6)} ({check['n_at_best']} starts at the "
          f"optimum); the top-{a3['n_starts']} fit differs by "
          f"{_f(check['objective_rel_diff'], 2)} in objective and at most "
          f"{_f(check['max_rel_param_diff'], 2)} (relative) in E, A, B, "
          "alpha, beta"]


def _approach3_section(a3) -> List[str]:
  iv = a3.get("intervals", {})
  lines = ["## Approach 3: parametric loss", "",
           "L(N, D) = E + A / N^alpha + B / D^beta, fitted on ln L with the "
           "log-sum-exp parameterisation, Huber loss (delta = "
           f"{_f(a3['huber_delta'])}) summed over {a3['n_points']} runs, "
           f"scipy L-BFGS-B from {a3['n_starts']} starts (the best of the "
           f"Chinchilla grid); {a3['n_at_best']} starts reached the optimum.",
           ""]
  rows = [[name, _with_interval(a3[name], iv.get(name), 5)]
          for name in ("E", "A", "B", "alpha", "beta", "a", "b", "G")]
  lines += _table(["parameter", "value (interval)"], rows)
  lines += ["", f"- objective: {_f(a3['objective'], 5)}; converged: "
            f"{a3['converged']}; fit time {a3['fit_seconds']:.2f} s"
            + (f"; bootstrap {a3['bootstrap_seconds']:.1f} s"
               if "bootstrap_seconds" in a3 else ""),
            *_full_grid_lines(a3)]
  law = flops_law.FlopsLaw.from_json(a3)
  if a3.get("frontier", True) and law.is_linear:
    lines.append(f"- frontier ({law}): N_opt = G (C/{_f(law.kappa)})^a, "
                 f"D_opt = (C/{_f(law.kappa)})^b / G, "
                 "a = beta/(alpha+beta), b = alpha/(alpha+beta)")
  elif a3.get("frontier", True):
    lines.append(f"- frontier ({law}): N_opt = G (C/{_f(law.kappa)})^a, "
                 f"D_opt = C / ({_f(law.kappa)} N_opt^{law.phi:.3f}) ∝ "
                 "C^b, G = (alpha A / (phi beta B))^(1/(alpha + phi beta)),"
                 " a = beta/(alpha + phi beta), b = 1 - phi a")
  else:
    # alpha or beta <= 0: loss does not fall along C = k N D to a minimum.
    lines.append("- no compute-optimal frontier: the loss does not fall "
                 "with both N and D (alpha and beta must be > 0), so "
                 "approach 3 gives no N_opt, D_opt or extrapolation")
  return lines + [""]


def _extrapolation_section(rows, metric=None) -> List[str]:
  lines = ["## Extrapolation to target budgets", ""]
  table = []
  # A metric column beside "loss" unless it is the loss itself (the same
  # numbers twice under one header).
  extra = [metric] if rows and metric and metric != "loss" and any(
      metric in row.get(n, {}) for row in rows
      for n in ("approach2", "approach3")) else []
  for row in rows:
    for name in ("approach2", "approach3"):
      if name not in row:
        continue
      p = row[name]
      ratio = p["D_opt"]["value"] / p["N_opt"]["value"]
      table.append([_f(row["flops"], 3), name[-1],
                    _with_interval(p["N_opt"]["value"], p["N_opt"], 3),
                    _with_interval(p["D_opt"]["value"], p["D_opt"], 3),
                    _f(ratio, 3),
                    _with_interval(p["loss"]["value"], p["loss"], 4)]
                   + [_with_interval(p[m]["value"], p[m], 4) for m in extra])
  lines += _table(["C (FLOPs)", "approach", "N_opt", "D_opt", "D/N",
                   "loss"] + extra, table)
  return lines + ["", "Approach 2's loss is the power law L0 C^gamma "
                  "through the isoFLOP minima: it has no irreducible term, "
                  "so far beyond the data it is optimistic. Approach 3's is "
                  "L(N_opt, D_opt) on its frontier.", ""]


def _reference_section(summary) -> List[str]:
  ref, pub = summary["reference"], CHINCHILLA_PUBLISHED
  a3, iv = summary["approach3"], summary["approach3"].get("intervals", {})
  lines = ["## Comparison with Hoffmann et al. (2022) and Epoch (2024)", "",
           "Reproduction targets (research notes, Epoch protocol):", ""]
  rows = []
  for name, (target, tol) in pub["targets"].items():
    ok = abs(a3[name] - target) <= tol
    rows.append([name, f"{_f(target, 5)} +- {_f(tol, 2)}", _f(a3[name], 5),
                 "yes" if ok else "NO"])
  lines += _table(["quantity", "target", "measured", "within"], rows)
  lines += ["", "Parameters (this fit's interval: "
            f"{_level_text(summary).replace('intervals: ', '')}; Epoch's: "
            "95%, 4000 resamples):", ""]
  rows = []
  for name in ("E", "A", "B", "alpha", "beta", "a"):
    ci = pub["epoch_ci95"].get(name)
    rows.append([name, _f(a3[name], 5),
                 _f(iv[name]["lo"], 4) + " to " + _f(iv[name]["hi"], 4)
                 if name in iv else "n/a",
                 _f(pub["epoch_grid"][name], 5),
                 _f(pub["epoch_table1"][name], 5),
                 f"{_f(ci[0])} to {_f(ci[1])}" if ci else "",
                 _f(ref["hoffmann_unrounded"][name], 5)])
  rows.append(["objective", _f(a3["objective"], 5), "",
               _f(pub["epoch_grid"]["objective"], 5), "", "",
               _f(ref["hoffmann_unrounded"]["objective"], 5)])
  lines += _table(["quantity", "this fit", "this fit's interval",
                   "Epoch grid run", "Epoch Table 1", "Epoch 95% CI",
                   "Hoffmann (unrounded)"], rows)
  lines += ["", "Published parameter sets scored on this data with the same "
            "objective (lower is better):", ""]
  rows = [[name, _f(ref[name]["objective"], 5),
           _f(pub["hoffmann_objective"].get(name), 5),
           _f(ref[name]["a"], 4),
           ", ".join(_f(x, 3) for x in ref[name]["N_opt"])]
          for name in ("hoffmann_unrounded", "hoffmann_rounded",
                       "epoch_2024")]
  rows.append(["this fit", _f(a3["objective"], 5),
               _f(pub["epoch_grid"]["objective"], 5), _f(a3["a"], 4),
               ", ".join(_f(r["approach3"]["N_opt"]["value"], 3)
                         for r in summary["extrapolation"])])
  lines += _table(["parameters", "objective here",
                   "objective (research notes)", "a",
                   "N_opt at " + ", ".join(_f(r["flops"], 3) for r in
                                          summary["extrapolation"])], rows)
  if "a" in iv:
    width = iv["a"]["hi"] - iv["a"]["lo"]
    lines += ["", f"Interval width of a here: {_f(width, 3)} at level "
              f"{summary['settings']['level']}; Epoch's 80% width at n = 240:"
              f" {pub['epoch_a_width80']}; Chinchilla's Table 2 approach-3 "
              "interval (0.454, 0.455) is far narrower than the data allow."]
  if "approach2" in summary:
    a2 = summary["approach2"]
    iv2 = a2.get("intervals", {}).get("a")
    c2 = pub["chinchilla_a"]["approach 2"]
    lines += ["", f"Approach 2: a = {_with_interval(a2['a'], iv2)} here; "
              f"Chinchilla Table 2: {c2[0]} ({c2[1]} to {c2[2]}); the "
              "research notes' reproduction on all 245 rows: "
              f"{pub['approach2_a_notes'][0]} (+-0.05 dex around the nine "
              f"budgets) / {pub['approach2_a_notes'][1]} (+-10%)."]
  return lines + [""]


def render(summary: Dict, plots: Dict[str, str]) -> str:
  """The markdown report for a fit summary.

  Args:
    summary: the fit.json dict (JSON types only).
    plots: plot name -> file name relative to the report.

  Returns:
    Markdown text.
  """
  lines = [f"# Scaling-law fit: {summary['data']['source']}", ""]
  if summary.get("command"):
    lines += ["Produced by:", "", "```", summary["command"], "```", ""]
  lines += _data_section(summary)
  if "approach2" in summary:
    lines += _approach2_section(summary["approach2"])
  if "approach3" in summary:
    lines += _approach3_section(summary["approach3"])
  lines += _extrapolation_section(summary["extrapolation"],
                                  summary.get("settings", {}).get("metric"))
  if "reference" in summary:
    lines += _reference_section(summary)
  if plots:
    lines += ["## Plots", ""]
    lines += [f"![{name}]({path})" for name, path in plots.items()]
    lines.append("")
  return "\n".join(lines)


def extrapolation_lines(summary: dict) -> List[str]:
  """One stdout line per target budget: N_opt, D_opt and the metric.

  Args:
    summary: a fit summary (`Fits.summary`, or fit.json read back).

  Returns:
    Lines like "at 1e+15 FLOPs: approach 2 N_opt 2.1e+06, D_opt 8e+07,
    loss 0.31 [0.29, 0.33]; approach 3 ...".
  """
  name = summary["settings"]["metric"]
  lines = []
  for row in summary.get("extrapolation", []):
    parts = []
    for approach in ("approach2", "approach3"):
      if approach not in row:
        continue
      pred = row[approach]
      value = pred.get(name, pred["loss"])
      text = (f"{approach.replace('approach', 'approach ')} N_opt "
              f"{pred['N_opt']['value']:.3g}, D_opt "
              f"{pred['D_opt']['value']:.3g}, {name} {value['value']:.4g}")
      if "lo" in value:
        text += f" [{value['lo']:.4g}, {value['hi']:.4g}]"
      parts.append(text)
    lines.append(f"at {row['flops']:.3g} FLOPs: " + "; ".join(parts))
  return lines
