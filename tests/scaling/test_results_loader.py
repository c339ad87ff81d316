"""Loading results.jsonl / CSV files into Runs, and cleaning them."""

import json

import numpy as np
import pytest

from scaling import flops_law
from scaling import results
from tests.scaling import test_approach3 as t3


def _jaxgen_row(**kw):
  row = {"family": "dit", "params": 1e8, "params_non_embedding": 9e7,
         "budget_flops": 1e18, "flops": 1.02e18, "examples_seen": 1e6,
         "final_train_loss": 0.52, "eval_loss": 0.5, "status": "ok",
         "wall_time_s": 12.0, "config": {"model": "dit", "lr": 3e-4}}
  row.update(kw)
  return row


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_jaxgen_schema(tmp_path):
  rows = [_jaxgen_row(), _jaxgen_row(params=2e8, eval_loss=0.45)]
  runs = results.load_runs(_write_jsonl(tmp_path / "results.jsonl", rows))
  np.testing.assert_array_equal(runs.n, [1e8, 2e8])
  np.testing.assert_array_equal(runs.loss, [0.5, 0.45])  # eval_loss first
  np.testing.assert_array_equal(runs.budget, [1e18, 1e18])
  np.testing.assert_array_equal(runs.c, [1.02e18, 1.02e18])  # spent
  np.testing.assert_array_equal(runs.d, [1e6, 1e6])
  assert runs.has_budgets and runs.families == ["dit"]
  # Same C and D at two sizes: FLOPs per example do not grow with N, and
  # no frontier follows.
  with pytest.raises(ValueError, match="do not grow with N"):
    flops_law.FlopsLaw.fit(runs.n, runs.c, runs.d)
  runs = results.load_runs(str(tmp_path / "results.jsonl"),
                           param_key="params_non_embedding")
  np.testing.assert_array_equal(runs.n, [9e7, 9e7])
  # A row without the field is dropped, not fitted at its total N.
  rows.append(_jaxgen_row(params=3e8))
  del rows[-1]["params_non_embedding"]
  with pytest.warns(results.FitWarning, match=r"dropped 1 of 3 runs: 1 with "
                    r"unusable N"):
    runs = results.load_runs(_write_jsonl(tmp_path / "mixed.jsonl", rows),
                             param_key="params_non_embedding")
  np.testing.assert_array_equal(runs.n, [9e7, 9e7])


def test_train_loss_fallback_warns_when_mixed(tmp_path):
  rows = [_jaxgen_row(), _jaxgen_row(eval_loss=None)]
  with pytest.warns(results.FitWarning, match="different fields"):
    runs = results.load_runs(_write_jsonl(tmp_path / "r.jsonl", rows))
  np.testing.assert_array_equal(runs.loss, [0.5, 0.52])


def test_diverged_and_nan_rows_are_dropped_with_counts(tmp_path):
  rows = [_jaxgen_row(params=p) for p in (1e8, 2e8, 3e8, 4e8)]
  rows += [_jaxgen_row(status="diverged", eval_loss=float("nan")),
           _jaxgen_row(status="diverged"), _jaxgen_row(eval_loss=float("nan")),
           _jaxgen_row(params=float("inf"))]
  path = _write_jsonl(tmp_path / "r.jsonl", rows)
  with pytest.warns(results.FitWarning,
                    match=r"dropped 4 of 8 runs: 2 with status 'diverged', "
                    r"1 with NaN/inf/non-positive loss, 1 with unusable N"):
    runs = results.load_runs(path)
  np.testing.assert_array_equal(runs.n, [1e8, 2e8, 3e8, 4e8])


def test_generic_jsonl_names(tmp_path):
  rows = [{"params": 1e8, "final_loss": 3.0, "budget": 6e17, "D": 1e9},
          {"params": 1e8, "loss": 2.9, "flops": 6e17}]
  with pytest.warns(results.FitWarning) as record:
    runs = results.load_runs(_write_jsonl(tmp_path / "r.jsonl", rows))
  messages = " ".join(str(w.message) for w in record)
  assert "losses come from different fields (final_loss, loss)" in messages
  assert "only 1 of 2 runs give a budget" in messages
  np.testing.assert_allclose(runs.d, [1e9, 1e9])
  np.testing.assert_allclose(runs.c, [6e17, 6e17])
  assert not runs.has_budgets


def test_csv_with_d_or_c(tmp_path):
  path = tmp_path / "runs.csv"
  path.write_text("N,D,loss\n1e8,2e9,3.0\n2e8,1e9,3.1\n")
  runs = results.load_runs(str(path))
  np.testing.assert_allclose(runs.c, [1.2e18, 1.2e18])
  path.write_text("N,C,loss,family\n1e8,1.2e18,3.0,lm\n2e8,1.2e18,3.1,lm\n")
  runs = results.load_runs(str(path))
  np.testing.assert_allclose(runs.d, [2e9, 1e9])
  assert runs.families == ["lm"]


def test_epoch_csv_columns():
  runs = results.load_runs(t3.epoch_csv())
  assert len(runs) == 245
  np.testing.assert_allclose(runs.c, 6 * runs.n * runs.d)
  assert runs.n.min() == pytest.approx(5.73e7, rel=1e-3)
  assert runs.d.max() == pytest.approx(3.18e11, rel=1e-2)
  # C = 6 N D exactly: Chinchilla's k, phi = 1 to the last digit.
  law = flops_law.FlopsLaw.fit(runs.n, runs.c, runs.d)
  assert (law.kappa, law.phi) == (6.0, 1.0)
  assert law.max_miss == pytest.approx(1.0, abs=1e-12)
  dropped = results.drop_highest_loss(runs, 5)
  # Epoch's rule: keep losses below the 5th largest.
  assert dropped.loss.max() < np.sort(runs.loss)[-5]
  assert len(dropped) == 240


def test_missing_columns_are_errors(tmp_path):
  path = tmp_path / "runs.csv"
  path.write_text("N,loss\n1e8,3.0\n")
  with pytest.raises(ValueError,
                     match=r"1 runs have neither D \(examples_seen.*\) nor C"):
    results.load_runs(str(path))
  path.write_text("D,loss\n1e8,3.0\n")
  with pytest.raises(ValueError, match="no run has a usable N"):
    results.load_runs(str(path))


def test_several_families_is_one_line_error(tmp_path):
  rows = [_jaxgen_row(), _jaxgen_row(family="uvit"), _jaxgen_row()]
  runs = results.load_runs(_write_jsonl(tmp_path / "r.jsonl", rows))
  with pytest.raises(ValueError, match="2 families in one fit: 'dit', "
                     "'uvit'") as e:
    results.select_family(runs, None)
  assert "\n" not in str(e.value)
  assert len(results.select_family(runs, "dit")) == 2
  with pytest.raises(ValueError, match="'gan' not in the results"):
    results.select_family(runs, "gan")


def test_a_short_csv_row_is_one_line_naming_it(tmp_path):
  # DictReader fills missing fields with None: .strip() raised
  # AttributeError.
  path = tmp_path / "r.csv"
  path.write_text("N,D,loss\n1e6,1e8,3.0\n2e6,5e7\n")
  with pytest.raises(ValueError, match=r"r\.csv line 3: 2 fields where the "
                     "header has 3; fix or remove that row$"):
    results.load_runs(str(path))


def test_a_param_key_in_no_row_is_an_error_not_a_fallback(tmp_path):
  path = _write_jsonl(tmp_path / "r.jsonl", [_jaxgen_row()])
  with pytest.raises(ValueError, match="no row has param_key 'params_nonemb'; "
                     "N fields in this file: params, params_non_embedding$"):
    results.load_runs(path, param_key="params_nonemb")


def test_repeated_rows_count_once_and_the_last_is_kept(tmp_path):
  # Concatenated results files fitted every run twice: tighter intervals
  # from the same measurements.
  rows = [_jaxgen_row(point="C1_a", params=1e8, eval_loss=0.5),
          _jaxgen_row(point="C1_b", params=2e8, eval_loss=0.45)]
  again = rows + [dict(rows[0], eval_loss=0.49), rows[1]]
  with pytest.warns(results.FitWarning, match="2 repeated rows of the same "
                    "point dropped; the last of each is fitted"):
    runs = results.load_runs(_write_jsonl(tmp_path / "r.jsonl", again))
  np.testing.assert_array_equal(runs.n, [1e8, 2e8])
  np.testing.assert_array_equal(runs.loss, [0.49, 0.45])
  # The same point id in another sweep is another run; CSV rows (no ids)
  # that repeat exactly are warned about and kept.
  other = [rows[0], dict(rows[0], sweep="other", eval_loss=0.4)]
  assert len(results.load_runs(_write_jsonl(tmp_path / "o.jsonl",
                                            other))) == 2
  csv_path = tmp_path / "r.csv"
  csv_path.write_text("N,D,loss\n1e6,1e8,3.0\n1e6,1e8,3.0\n2e6,5e7,2.9\n")
  with pytest.warns(results.FitWarning, match="1 rows repeat another row "
                    "exactly; if a run was given twice, remove its copies"):
    assert len(results.load_runs(str(csv_path))) == 3


def test_the_sweep_metric_of_the_rows():
  assert results.sweep_metric([{"metric": "eval_fd_shapes"}] * 2) == (
      "eval_fd_shapes")
  # Older rows of the same sweep (before rows named it) do not decide.
  assert results.sweep_metric([{}, {"metric": "eval_fd_shapes"}]) == (
      "eval_fd_shapes")
  # The default loss, older rows, or rows of two metrics: no default.
  for rows in ([{"metric": "eval_loss"}], [{}], [{"metric": "eval_fid"},
                                                  {"metric": "eval_kid"}]):
    assert results.sweep_metric(rows) is None


def test_a_sweep_directory_or_a_torn_line_says_what_to_pass(tmp_path):
  (tmp_path / "results.jsonl").write_text(json.dumps(_jaxgen_row()) + "\n"
                                          + '{"family": "di')
  with pytest.raises(ValueError, match=f"^{tmp_path} is a directory; pass "
                     f"{tmp_path}/results.jsonl$"):
    results.load_runs(str(tmp_path))
  with pytest.raises(ValueError, match=r"results.jsonl:2: not JSON .*; if "
                     r"scaling.run wrote it, rerun it \(or with --collect\) "
                     "to repair the file$"):
    results.load_runs(str(tmp_path / "results.jsonl"))
