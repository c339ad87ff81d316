"""The extrapolation check: a run at a larger budget against a fit's
prediction (`scaling.run --optimal_from=fit.json`).
"""

import json
from typing import Any, Dict, Optional, Sequence, Tuple

import etils.epath as epath

from scaling import flops_law
from scaling import metrics as metrics_lib
from scaling import results as results_lib
from scaling import rows


def _param_key(fit: Dict[str, Any]) -> str:
  """The run field a fit.json's N was read from ("params" by default)."""
  return fit.get("settings", {}).get("param_key", "params")


def _fitted_field(fit: Dict[str, Any]) -> Optional[str]:
  """The results field a fit.json fitted, a loss fit's as "eval_loss".

  "loss" is the fit's default (fits before it was named by its field: the
  rows' loss fields, eval_loss first), and a fit of the train loss (points
  without a held-out split) stands for the same quantity: both stand for a
  spec fitting eval_loss, not one fitting a sample metric.
  """
  metric = (fit.get("settings") or {}).get("metric")
  return "eval_loss" if metric in ("loss", "final_train_loss") else metric


def predicted_optimum(fit: Dict[str, Any], budget: float) -> Dict[str, Any]:
  """N_opt and loss at `budget` from a fit.json (approaches 2 and 3)."""
  from scaling import bootstrap  # pylint: disable=g-import-not-at-top
  out = {}
  if fit.get("approach2"):
    out["approach2"] = {k: float(v) for k, v in bootstrap.approach2_predict(
        fit["approach2"], budget).items()}
  # An approach-3 fit without a compute-optimal frontier predicts nothing.
  if fit.get("approach3") and fit["approach3"].get("frontier", True):
    out["approach3"] = {k: float(v) for k, v in bootstrap.approach3_predict(
        fit["approach3"], budget,
        flops_law.FlopsLaw.from_json(fit["approach3"])).items()}
  if not out:
    raise ValueError("fit.json has neither an approach2 nor an approach3 "
                     "fit with a compute-optimal frontier")
  return out


def check_report(fit: Dict[str, Any], row: Dict[str, Any]) -> Dict[str, Any]:
  """Predicted vs measured loss for a run at an extrapolated budget.

  Args:
    fit: a fit.json written by `python -m scaling.fit`.
    row: the results row of the check run.

  Returns:
    A JSON-ready dict: the run, the predictions and relative errors
    (predicted / measured - 1) of the quantity the fit used: the eval (else
    train) loss, or the fitted metric (a higher-is-better one as the
    falling quantity fitted, e.g. 1 / IS; `measured_metric` is its value).

  Raises:
    ValueError: the run did not finish, or its row lacks the fit's metric.
  """
  if row["status"] != rows.OK:
    raise ValueError(f"the check run {row['point']} is {row['status']} "
                     f"({row.get('error')}); nothing to compare the fit with")
  settings = fit.get("settings") or {}
  name = settings.get("metric", "loss")
  if _fitted_field(fit) in (None, "eval_loss"):
    measured = row.get("eval_loss")
    if measured is None:
      measured = row.get("final_train_loss")
    raw = measured
  else:
    # Predictions are in the fitted metric's space (an FD, 1 / IS, ...): the
    # eval loss of a GAN says nothing about them.
    raw = row.get(name)
    if raw is None:
      raise ValueError(f"the fit predicts {name} and the check run "
                       f"{row['point']} logged none; nothing to compare")
    metric = metrics_lib.resolve(name, "higher" if settings.get(
        "higher_is_better") else "lower")
    measured = float(metric.to_loss(raw))
  pred = predicted_optimum(fit, row["budget_flops"])
  out = {"point": row["point"], "budget_flops": row["budget_flops"],
         "params": row["params"], "examples_seen": row["examples_seen"],
         "status": row["status"], "metric": settings.get("fitted", name),
         "measured_metric": raw, "measured_loss": measured,
         "predictions": pred, "errors": {}}
  if "approach2" in pred:
    out["errors"]["approach2_loss_at_optimum"] = pred["approach2"]["loss"]
  if "approach3" in pred:
    p = fit["approach3"]
    n = row[_param_key(fit)]
    at_run = p["E"] + p["A"] / n**p["alpha"] + (
        p["B"] / row["examples_seen"]**p["beta"])
    pred["approach3"]["loss_at_run"] = at_run
    out["errors"]["approach3_loss_at_optimum"] = pred["approach3"]["loss"]
    out["errors"]["approach3_loss_at_run"] = at_run
  out["errors"] = {k: (v / measured - 1 if measured else None)
                   for k, v in out["errors"].items()}
  return out


def check_fit_matches(fit: Dict[str, Any], spec: Any, path: str) -> None:
  """Refuses a fit of another family or metric as this sweep's optimum.

  Args:
    fit: a fit.json (scaling.fit) dict.
    spec: the sweep spec (its `family` and `metric`).
    path: the fit's file, for the message.

  Raises:
    ValueError: one line saying what differs.
  """
  family = (fit.get("data") or {}).get("family")
  if family and family != spec.family:
    raise ValueError(f"--optimal_from={path} fits {family} runs and this "
                     f"sweep trains {spec.family}; pass a fit of this "
                     "sweep's results")
  metric = _fitted_field(fit)
  if metric and metric != spec.metric:
    raise ValueError(f"--optimal_from={path} fits {metric} and this sweep's "
                     f"metric is {spec.metric}; refit with --metric="
                     f"{spec.metric} or set --sweep.metric={metric}")


def load_optimum(path: str, spec: Any, budgets: Optional[Sequence[float]]
                 ) -> Tuple[Dict[str, Any], float, str]:
  """Reads a fit.json for `scaling.run --optimal_from` and its N_opt.

  Args:
    path: the fit.json scaling.fit wrote.
    spec: the sweep spec (checked against the fit).
    budgets: --only_budgets (exactly one).

  Returns:
    (the fit, its predicted N_opt at that budget, the parameter count it
    fitted: "params" or "params_non_embedding").

  Raises:
    ValueError: one line (not one budget, not JSON, another family or
      metric, no usable prediction).
  """
  if not budgets or len(budgets) != 1:
    raise ValueError("--optimal_from needs exactly one --only_budgets value")
  try:
    fit = json.loads(epath.Path(path).read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"--optimal_from={path} is not JSON ({e.msg}); pass "
                     "the fit.json scaling.fit wrote") from None
  check_fit_matches(fit, spec, path)
  pred = predicted_optimum(fit, budgets[0])
  nearest = (pred.get("approach2") or pred["approach3"])["N_opt"]
  if not results_lib.are_numbers([nearest], positive=True):
    raise ValueError(f"{path} predicts N_opt={nearest} at {budgets[0]:.3g} "
                     "FLOPs; refit, or pass --nearest_params instead of "
                     "--optimal_from")
  return fit, nearest, _param_key(fit)


# The sample metrics (config.eval.sample_metrics): the shape classifier's,
# Inception's (logged only with its weights: a reconstruction family
# without them logs PSNR / SSIM alone) and the pixel ones. Anything else
# the trainer logs (eval_loss and its parts, eval_eps_mse, eval_l1, ...)
# needs no section.
_SHAPE_METRICS = ("eval_fd_shapes", "eval_accuracy_shapes")
_INCEPTION_METRICS = ("eval_fid", "eval_kid", "eval_is", "eval_precision",
                      "eval_recall", "eval_rfid")
_PIXEL_METRICS = ("eval_psnr", "eval_ssim", "eval_lpips")


def check_metric_logged(spec: Any, config: Any) -> None:
  """Refuses a sweep whose points would not log the metric it fits.

  A spec fitting a sample metric (R3GAN's `eval_fd_shapes` / `eval_fid`)
  needs `config.eval.sample_metrics` on, with weights only the user can
  give: without it every row lacks the metric and the fit can only take an
  adversarial loss.

  Args:
    spec: the sweep spec (its `metric`).
    config: the run config of one of its points (after --set).

  Raises:
    ValueError: one line with the --set flags (or the other metric) to use.
  """
  from jaxgen.eval import sample_metrics  # pylint: disable=g-import-not-at-top
  metric = str(spec.metric)
  if metric not in _SHAPE_METRICS + _INCEPTION_METRICS + _PIXEL_METRICS:
    return
  features = ((config.get("eval") or {}).get("sample_metrics") or {}).get(
      "features", "inception")
  if not sample_metrics.enabled(config):
    problem = "config.eval.sample_metrics is off"
    fix = ("--set=eval.sample_metrics.enabled=True with its weights "
           + ("(--set=eval.sample_metrics.features=shape_classifier "
              "--set=eval.sample_metrics.classifier_weights=FILE"
              if metric in _SHAPE_METRICS else
              "(--set=eval.sample_metrics.inception_weights=FILE "
              "--set=eval.sample_metrics.reference_stats=FILE")
           + "; the spec file's docstring)")
  elif (metric in _SHAPE_METRICS) != (features == "shape_classifier"):
    problem = f"the points score {features} features"
    fix = ("--set=eval.sample_metrics.features=" + (
        "shape_classifier" if metric in _SHAPE_METRICS else "inception"))
  elif (metric in _INCEPTION_METRICS
        and not config.eval.sample_metrics.get("inception_weights")):
    problem = "no Inception weights are set (PSNR / SSIM alone)"
    fix = ("--set=eval.sample_metrics.inception_weights=FILE "
           "--set=eval.sample_metrics.reference_stats=FILE")
  else:
    return
  raise ValueError(f"sweep.metric={metric} (what scaling.fit fits) would be "
                   f"in no row: {problem}; pass {fix}, or fit the loss with "
                   "--sweep.metric=eval_loss")
