"""The benchmark suite for a lent GPU, run here on CPU presets."""

import pytest

from jaxgen import bench
from jaxgen import bench_suite


def test_cpu_suite_entry_measures_a_real_step():
  entries = [e for e in bench_suite.SUITES["cpu"] if "pyramidal" in e[0]]
  name, spec, overrides, _ = entries[0]
  rows = bench_suite.run_suite(
      [(name, spec, dict(overrides, **{"model.depth": 1, "model.width": 32,
                                       "model.num_heads": 2}), 32)],
      steps=1, budget_s=600, log=lambda _: None)
  row = rows[0]
  assert "error" not in row, row
  assert row["batch_size"] == 32 and row["step_time_s"] > 0
  assert row["train_flops_per_example"] > 0
  text = bench_suite.table(rows)
  assert text.count("\n") == 2 and "| pyramidal_flow tiny | 32 |" in text
  assert "unknown" in text  # no peak FLOP/s is known for a CPU


def test_batches_halve_until_they_fit_and_errors_stay_one_line(monkeypatch):
  tried = []

  def fake_run(config, steps):
    del steps
    tried.append(config.batch_size)
    if config.batch_size > 8:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying "
                         "to allocate\nmore lines")
    if config.family == "r3gan":
      raise ValueError("a bad config\nsecond line")
    return {"batch_size": config.batch_size, "params": 10, "compile_s": 1.0,
            "step_time_s": 0.5, "examples_per_sec": 16.0,
            "tflops_per_device": 1.0, "mfu": 0.25,
            "memory_total_bytes": 2**30}

  monkeypatch.setattr(bench, "run", fake_run)
  rows = bench_suite.run_suite(
      [("sd", "configs/simple_diffusion.py:tiny", {}, 32),
       ("gan", "configs/r3gan.py:tiny", {}, 4)],
      steps=1, budget_s=600, log=lambda _: None)
  assert tried == [32, 16, 8, 4]
  assert rows[0]["batch_size"] == 8 and rows[1]["error"] == "a bad config"
  text = bench_suite.table(rows)
  assert "| sd | 8 | 0.0M | 1 | 500.0 | 16.0 | 1.0 | 25.0% | 1.0 |" in text
  skipped = bench_suite.run_suite(
      [("sd", "configs/simple_diffusion.py:tiny", {}, 8)], steps=1,
      budget_s=-1, log=lambda _: None)
  assert "over the time budget" in bench_suite.table(skipped)


@pytest.mark.parametrize("suite", list(bench_suite.SUITES))
def test_every_suite_entry_loads(suite):
  for _, spec, overrides, batch in bench_suite.SUITES[suite]:
    config = bench_suite.load_config(spec, overrides, batch)
    assert config.batch_size == batch
