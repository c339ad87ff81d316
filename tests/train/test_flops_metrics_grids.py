"""Device peaks/MFU, XLA cost analysis helper, JSONL metrics, sample grids."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from jaxgen.eval import grids
from jaxgen.train import flops as flops_lib
from jaxgen.train import metrics as metrics_lib
from jaxgen.train import run_record
from tests.train import common


def test_peak_table_matches_device_kinds():
  dev = lambda kind: types.SimpleNamespace(device_kind=kind)
  assert flops_lib.peak_flops_per_device(dev("TPU v4")) == 275e12
  assert flops_lib.peak_flops_per_device(dev("TPU v5 lite")) == 197e12
  assert flops_lib.peak_flops_per_device(dev("TPU v5p")) == 459e12
  assert flops_lib.peak_flops_per_device(dev("TPU v6 lite")) == 918e12
  assert flops_lib.peak_flops_per_device(dev("NVIDIA H100 80GB HBM3")) == 989.5e12
  assert flops_lib.peak_flops_per_device(dev("NVIDIA H100 PCIe")) == 756.5e12
  assert flops_lib.peak_flops_per_device(dev("NVIDIA A100-SXM4-40GB")) == 312e12
  assert flops_lib.peak_flops_per_device(dev("cpu")) is None
  # NVL boards before the generic H100 / H200 (which read 989.5, ~18% more,
  # so MFU came out low); the v4i inference chip is not a v4.
  assert flops_lib.peak_flops_per_device(dev("NVIDIA H100 NVL")) == 835.5e12
  assert flops_lib.peak_flops_per_device(dev("NVIDIA H200 NVL")) == 835.5e12
  assert flops_lib.peak_flops_per_device(dev("NVIDIA H200")) == 989.5e12
  assert flops_lib.peak_flops_per_device(dev("TPU v4 lite")) is None


def test_logged_throughput_is_per_device_of_the_runs_mesh():
  # A run on 2 of the 8 devices divided by all 8: a quarter of its TFLOP/s.
  config = common.tiny_config()
  mesh = jax.make_mesh((2, 1, 1), ("data", "fsdp", "tensor"),
                       devices=jax.devices()[:2],
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  s = types.SimpleNamespace(flops_per_example=1e9, mesh=mesh)
  seen = types.SimpleNamespace(at=lambda step: {"examples": 0, "flops": 0})
  row = run_record.progress(config, s, seen, 10, 5.0, 1e13)
  per_device = 1e9 * 5.0 * config.batch_size / 2
  assert row["tflops_per_device"] == pytest.approx(per_device / 1e12)
  assert row["mfu"] == pytest.approx(per_device / 1e13)


def test_throughput_and_mfu():
  out = flops_lib.throughput(1e12, 100.0, 4, 1e14)
  assert out["tflops_per_device"] == 25.0
  assert out["mfu"] == 0.25
  assert flops_lib.throughput(1e12, 1.0, 1, None)["mfu"] == "unknown"


def test_compiled_flops_of_a_matmul():
  a = jax.ShapeDtypeStruct((64, 32), jnp.float32)
  b = jax.ShapeDtypeStruct((32, 16), jnp.float32)
  compiled = jax.jit(jnp.dot).lower(a, b).compile()
  np.testing.assert_allclose(flops_lib.compiled_flops(compiled),
                             2 * 64 * 32 * 16, rtol=0.01)


def test_matmul_flops_counts_a_scan_body_per_iteration():
  # A 4-step scan of a (2x8) @ (8x8) matmul: 4 x 2 x 2 x 8 x 8 = 1024
  # (was 256: the body counted once).
  def scanned(x, w):
    return jax.lax.scan(lambda h, _: (h @ w, None), x, None, length=4)[0]
  x, w = jnp.ones((2, 8)), jnp.ones((8, 8))
  assert flops_lib.matmul_flops(scanned, x, w) == 4 * 2 * 2 * 8 * 8
  def looped(x, w):
    return jax.lax.while_loop(lambda c: c[1] < 3,
                              lambda c: (c[0] @ w, c[1] + 1), (x, 0))[0]
  with pytest.raises(ValueError, match="cannot count a while loop"):
    flops_lib.matmul_flops(looped, x, w)


def test_memory_of_a_compiled_step_reads_in_mib():
  x = jnp.zeros((512, 1024), jnp.float32)  # 2 MiB
  compiled = jax.jit(lambda a: a * 2, donate_argnums=0).lower(x).compile()
  mem = flops_lib.memory_summary(compiled)
  assert mem["argument_bytes"] == 2 * 2**20
  line = flops_lib.memory_line(mem)
  assert line.startswith(f"{mem['total_bytes'] / 2**20:.0f} MiB (arguments "
                         "2 MiB, outputs 2 MiB of which ")
  assert flops_lib.memory_line({}) == "not reported"


def test_jsonl_writer_truncate_and_rotate(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  w = metrics_lib.JsonlWriter(path)
  for s in (10, 20, 30):
    w.write_scalars(s, {"loss": np.float32(s / 10), "bad": float("nan")})
  w.close()
  rows = [json.loads(l) for l in open(path)]
  assert [r["step"] for r in rows] == [10, 20, 30]
  assert rows[0]["loss"] == 1.0 and rows[0]["bad"] == "nan"
  assert metrics_lib.truncate_jsonl(path, 20) == 1
  assert [json.loads(l)["step"] for l in open(path)] == [10, 20]
  # A fresh start keeps earlier rows: metrics.jsonl -> .1, an older .1 -> .2.
  assert metrics_lib.rotate_jsonl(path) == path + ".1"
  assert not (tmp_path / "metrics.jsonl").exists()
  open(path, "w").write('{"step": 5}\n')
  metrics_lib.rotate_jsonl(path)
  assert [json.loads(l)["step"] for l in open(path + ".2")] == [10, 20]
  assert [json.loads(l)["step"] for l in open(path + ".1")] == [5]
  assert metrics_lib.rotate_jsonl(path) is None  # nothing to keep


def test_first_non_finite_names_the_metric():
  assert metrics_lib.first_non_finite({"a": 1.0, "b": 2}) is None
  assert metrics_lib.first_non_finite(
      {"loss": 1.0, "grad_norm": np.inf, "z": np.nan}) == "grad_norm"


def test_grid_layout_and_png(tmp_path):
  imgs = np.stack([np.full((4, 4, 3), v) for v in (-1.0, 0.0, 1.0, 1.0, 1.0)])
  g = grids.make_grid(imgs, pad=1)
  assert g.shape == (2 * 5 + 1, 3 * 5 + 1, 3)      # 5 images -> 2 rows of 3
  assert g[1, 1, 0] == 0 and g[1, 6, 0] == 128 and g[1, 11, 0] == 255
  video = np.zeros((2, 3, 4, 4, 3))
  assert grids.make_grid(video, pad=0).shape == (8, 12, 3)  # 1 clip per row
  path = grids.save_grid(imgs, str(tmp_path / "s.png"), scale=2)
  assert Image.open(path).size == (32, 22)


def test_jsonl_writer_without_append_rewrites_the_whole_file(tmp_path):
  # The object-store path (gs:// cannot append), run on a local file.
  path = str(tmp_path / "run" / "metrics.jsonl")
  w = metrics_lib.JsonlWriter(path, append=False)
  w.write_scalars(1, {"loss": 1.0})
  w.write_scalars(2, {"loss": 0.5})
  w.flush()
  w.close()
  w = metrics_lib.JsonlWriter(path, append=False)  # A resumed run.
  w.write_scalars(3, {"loss": 0.25})
  w.close()
  assert [json.loads(l)["step"] for l in open(path)] == [1, 2, 3]
  assert metrics_lib.read_rows(path)[-1] == {"step": 3, "loss": 0.25}


@pytest.mark.parametrize("append", [True, False])
def test_replace_row_swaps_the_rows_from_its_step_in_one_write(
    tmp_path, monkeypatch, append):
  # Both paths: a local file appended to, an object store rewritten whole.
  path = str(tmp_path / "metrics.jsonl")
  w = metrics_lib.JsonlWriter(path, append=append)
  for step in (1, 2, 3):
    w.write_scalars(step, {"loss": step})
  w.write_scalars(4, {"loss": 4})  # Buffered: flushed, then dropped.
  writes = []
  monkeypatch.setattr(metrics_lib.jsonl, "write_atomic",
                      lambda p, text, real=metrics_lib.jsonl.write_atomic:
                      (writes.append(text), real(p, text)))
  w.replace_row(3, {"loss": 3, "eval_loss": 0.5})
  assert metrics_lib.read_rows(path) == [
      {"step": 1, "loss": 1}, {"step": 2, "loss": 2},
      {"step": 3, "loss": 3, "eval_loss": 0.5}]
  # The old rows went in the same rewrite that wrote the new one.
  assert len(writes) == (1 if append else 0)
  w.write_scalars(4, {"loss": 4})  # Writing goes on after it.
  w.close()
  assert [r["step"] for r in metrics_lib.read_rows(path)] == [1, 2, 3, 4]


def test_a_failed_replace_row_keeps_the_rows_and_the_writer_usable(
    tmp_path, monkeypatch):
  # A full disk during the rewrite: the error is the disk's; close() then
  # works (it said "I/O operation on closed file", hiding it).
  path = str(tmp_path / "metrics.jsonl")
  w = metrics_lib.JsonlWriter(path)
  w.write_scalars(1, {"loss": 1.0})

  def full(*args):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(metrics_lib.jsonl, "write_atomic", full)
  with pytest.raises(OSError, match="No space left"):
    w.replace_row(1, {"loss": 1.0, "eval_loss": 0.5})
  w.close()
  assert metrics_lib.read_rows(path) == [{"step": 1, "loss": 1.0}]


def test_log_lines_are_short_and_metrics_jsonl_keeps_every_digit(tmp_path,
                                                                  caplog):
  row = {"loss": np.float32(0.5016328), "examples_seen": 1280.0,
         "flops_seen": 1.2345678e12, "eval_fid": float("nan")}
  with caplog.at_level("INFO"):
    metrics_lib.LogWriter().write_scalars(3, row)
  assert caplog.records[-1].getMessage() == (
      "[3] eval_fid=nan, examples_seen=1280, flops_seen=1.235e+12, "
      "loss=0.5016")
  writer = metrics_lib.JsonlWriter(str(tmp_path / "metrics.jsonl"))
  writer.write_scalars(3, row)
  writer.close()
  (saved,) = metrics_lib.read_rows(str(tmp_path / "metrics.jsonl"))
  assert saved["flops_seen"] == 1.2345678e12
  assert saved["loss"] == float(np.float32(0.5016328))


def test_skipped_files_are_reported_again_only_when_more(caplog):
  skipped = {"a.png": "truncated", "b.png": "not an image"}
  info = types.SimpleNamespace(skipped_files=lambda: dict(skipped))
  with caplog.at_level("WARNING"):
    reported = run_record.report_skipped(info, "epoch 1")
    reported = run_record.report_skipped(info, "epoch 2", reported)
    skipped["c.png"] = "empty"
    reported = run_record.report_skipped(info, "epoch 3", reported)
  assert reported == 3
  assert [r.getMessage() for r in caplog.records] == [
      "epoch 1: 2 unreadable image files skipped so far (first: a.png: "
      "truncated).",
      "epoch 3: 3 unreadable image files skipped so far (first: a.png: "
      "truncated)."]
