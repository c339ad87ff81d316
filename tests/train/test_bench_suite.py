"""The benchmark suite for a lent GPU, run here on CPU presets."""

import json
import os
import subprocess
import sys

import pytest

from jaxgen import bench
from jaxgen import bench_suite
from jaxgen import config_lib
from jaxgen.parallel import mesh as mesh_lib
from tests.train import common


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
  assert row["init_s"] > 0 and row["first_step_s"] > 0
  text = bench_suite.table(rows)
  assert text.count("\n") == 2 and "| pyramidal_flow tiny | 32 |" in text
  assert "unknown" in text  # no peak FLOP/s is known for a CPU


def test_batches_halve_until_they_fit_and_errors_stay_one_line(monkeypatch):
  tried = []

  def fake_run(config, steps, memory_limit_bytes=None):
    del steps, memory_limit_bytes
    tried.append(config.batch_size)
    if config.batch_size > 8:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying "
                         "to allocate\nmore lines")
    if config.family == "r3gan":
      raise ValueError("a bad config\nsecond line")
    return {"batch_size": config.batch_size, "params": 10, "compile_s": 1.0,
            "step_time_s": 0.5, "examples_per_sec": 16.0,
            "tflops_per_device": 0.0123, "mfu": 0.25,
            "memory_total_bytes": 2**30}

  monkeypatch.setattr(bench, "run", fake_run)
  rows = bench_suite.run_suite(
      [("sd", "configs/simple_diffusion.py:tiny", {}, 32),
       ("gan", "configs/r3gan.py:tiny", {}, 4)],
      steps=1, budget_s=600, log=lambda _: None)
  assert tried == [32, 16, 8, 4]
  assert rows[0]["batch_size"] == 8 and rows[1]["error"] == "a bad config"
  text = bench_suite.table(rows)
  # TFLOP/s to 3 significant digits: small presets do not read 0.0.
  assert ("| sd | 8 | 0.0M | 1 | 0 | 500.0 | 16.0 | 0.0123 | 25.0% | 1.0 |"
          in text)
  skipped = bench_suite.run_suite(
      [("sd", "configs/simple_diffusion.py:tiny", {}, 8)], steps=1,
      budget_s=-1, log=lambda _: None)
  assert "over the time budget" in bench_suite.table(skipped)


def test_predicted_batch_is_the_power_of_two_the_memory_allows():
  gib = 2**30
  # 10 GiB fixed + 64 GiB of temporaries at batch 64 (1 GiB per example).
  # A 100 GiB limit has room for 90 examples, but the prediction is always
  # below the batch that did not fit (63 -> 32).
  memory = {"memory_total_bytes": 74 * gib, "memory_temp_bytes": 64 * gib}
  assert bench_suite.predicted_batch(64, memory, 40 * gib) == 16  # 30 -> 16
  assert bench_suite.predicted_batch(64, memory, 100 * gib) == 32  # 63 -> 32
  assert bench_suite.predicted_batch(64, memory, 10.5 * gib) == 1  # 0.5
  # No temporaries reported: halve. No room even for the fixed part, or
  # batch 1 already: nothing smaller to try.
  assert bench_suite.predicted_batch(64, {}, 40 * gib) == 32
  assert bench_suite.predicted_batch(
      64, {"memory_total_bytes": 50 * gib, "memory_temp_bytes": gib},
      40 * gib) == 0
  assert bench_suite.predicted_batch(1, memory, 40 * gib) == 0


@pytest.mark.parametrize("fixed,first", [(20, 64), (2, 2)])
def test_an_entry_that_fits_at_no_batch_ends_with_an_error(
    monkeypatch, fixed, first):
  tried = []

  def fake_run(config, steps, memory_limit_bytes=None):
    del steps
    tried.append(config.batch_size)
    raise bench.DoesNotFit(
        "RESOURCE_EXHAUSTED: too big",
        {"memory_total_bytes": fixed + 10 * config.batch_size,
         "memory_temp_bytes": 10 * config.batch_size})

  monkeypatch.setattr(bench, "run", fake_run)
  row = bench_suite.run_entry("sd", "configs/simple_diffusion.py:tiny", {},
                              first, steps=1, log=lambda _: None,
                              memory_limit_bytes=14)
  # Fixed part over the limit: given up at once. Else down to batch 1,
  # which is tried once.
  assert tried == ([64] if fixed > 14 else [2, 1])
  assert row["error"].startswith("RESOURCE_EXHAUSTED")


def test_a_step_over_the_memory_limit_is_not_run(monkeypatch):
  tried = []

  def fake_run(config, steps, memory_limit_bytes=None):
    del steps
    tried.append(config.batch_size)
    memory = {"memory_total_bytes": 2 + config.batch_size,
              "memory_temp_bytes": config.batch_size}
    if memory["memory_total_bytes"] > memory_limit_bytes:
      raise bench.DoesNotFit("RESOURCE_EXHAUSTED: too big", memory)
    return {"batch_size": config.batch_size, "step_time_s": 0.5}

  monkeypatch.setattr(bench, "run", fake_run)
  row = bench_suite.run_entry("sd", "configs/simple_diffusion.py:tiny", {},
                              64, steps=1, log=lambda _: None,
                              memory_limit_bytes=14)
  # 64 needs 66 > 14: 12 bytes of room at 1 per example -> 8, which fits.
  assert tried == [64, 8] and row["batch_size"] == 8


def test_precompiling_finds_the_batch_and_the_timed_run_reads_it_back(
    monkeypatch):
  calls = []

  def fake_run(config, steps=10, compile_only=False, memory_limit_bytes=None):
    del steps
    calls.append((config.family, config.batch_size, compile_only))
    memory = {"memory_total_bytes": 2 + config.batch_size,
              "memory_temp_bytes": config.batch_size}
    if memory["memory_total_bytes"] > memory_limit_bytes:
      raise bench.DoesNotFit("RESOURCE_EXHAUSTED: too big", memory)
    if config.family == "r3gan":
      raise ValueError("a bad config")
    out = dict(memory, batch_size=config.batch_size,
               compile_s=0.1 if not compile_only else 30.0,
               compile_cached=not compile_only)
    if not compile_only:
      out["step_time_s"] = 0.5
    return out

  monkeypatch.setattr(bench, "run", fake_run)
  written = []
  rows = bench_suite.run_suite(
      [("sd", "configs/simple_diffusion.py:tiny", {}, 64),
       ("gan", "configs/r3gan.py:tiny", {}, 4)],
      steps=1, budget_s=600, log=lambda _: None, memory_limit_bytes=14,
      compile_workers=2,
      on_row=lambda rows: written.append([r["name"] for r in rows]))
  # The rows so far are handed on after every entry (a lease that ends
  # mid-suite keeps them).
  assert written == [["sd"], ["sd", "gan"]]
  # Compile-only: sd 64 (over), sd 8 (fits), gan 4 (a config error). Timed:
  # only sd at 8; the failed entry is not tried again.
  assert sorted(c for c in calls if c[2]) == [
      ("r3gan", 4, True), ("simple_diffusion", 8, True),
      ("simple_diffusion", 64, True)]
  assert [c for c in calls if not c[2]] == [("simple_diffusion", 8, False)]
  assert rows[0]["batch_size"] == 8 and rows[0]["compile_s"] == 30.0
  assert rows[0]["cache_read_s"] == 0.1
  assert rows[1]["error"] == "a bad config"
  calls.clear()
  skipped = bench_suite.run_suite(
      [("sd", "configs/simple_diffusion.py:tiny", {}, 64)], steps=1,
      budget_s=-1, log=lambda _: None, memory_limit_bytes=14,
      compile_workers=2)
  assert not calls and "over the time budget" in skipped[0]["skipped"]


def test_precompiled_entry_is_read_back_from_the_cache():
  # The seed is a constant of the step program: a new one is a new cache
  # key, so the pre-compile must compile and the timed run must read.
  seed = int.from_bytes(os.urandom(4), "little") % 2**31
  entry = ("pyramidal_flow tiny", "configs/pyramidal_flow.py:tiny",
           {"model.depth": 1, "model.width": 24, "model.num_heads": 2,
            "seed": seed}, 32)
  rows = bench_suite.run_suite([entry], steps=1, budget_s=600,
                               log=lambda _: None, compile_workers=2)
  assert "error" not in rows[0], rows[0]
  # The tests run with the persistent cache on (conftest). cache_read_s is
  # set only when the pre-compile missed and the timed compile hit.
  assert rows[0]["compile_cached"] and "cache_read_s" in rows[0], rows[0]
  assert rows[0]["compiled_beside"] == 1 and rows[0]["step_time_s"] > 0


def test_bench_raises_before_allocating_a_step_over_the_limit():
  config = bench_suite.load_config(
      "configs/pyramidal_flow.py:tiny",
      {"model.depth": 1, "model.width": 32, "model.num_heads": 2}, 32)
  with pytest.raises(bench.DoesNotFit, match="RESOURCE_EXHAUSTED") as info:
    bench.run(config, steps=1, memory_limit_bytes=1024)
  assert info.value.memory["memory_total_bytes"] > 1024
  assert "init_s" not in info.value.memory  # no state was created


def test_fit_memory_steps_in_the_batches_a_run_can_take(monkeypatch):
  # Batch 1 was the first probe: the pyramid (stage-ratio sum 4) and
  # grad_accum_steps=2 refused it and --fit_memory ended there.
  flow = bench_suite.load_config("configs/pyramidal_flow.py:tiny", {}, 8)
  dp = mesh_lib.data_parallel_size(mesh_lib.make_mesh(flow.mesh))
  assert bench.batch_granule(flow, dp) == 4
  accum = common.tiny_config(grad_accum_steps=2)
  assert bench.batch_granule(accum, dp) == 2
  compiled = []

  def fake_run(config, compile_only=False, **kwargs):
    del kwargs
    assert compile_only
    compiled.append(config.batch_size // dp)
    return {"memory_total_bytes": 10 * config.batch_size // dp}
  monkeypatch.setattr(bench, "run", fake_run)
  fit = bench.largest_batch(flow, 10 * 30, log=lambda _: None)
  # 4, 8, 16, 32 (too big), 24 (fits), 28 (fits); never a batch the pyramid
  # refuses.
  assert fit["per_device_batch"] == 28 and fit["global_batch"] == 28 * dp
  assert compiled == [4, 8, 16, 32, 24, 28]
  # XLA refusing to compile a batch over the device's memory (TPU) is
  # "does not fit", not the end of the search.
  def refusing_run(config, compile_only=False, **kwargs):
    if config.batch_size // dp > 20:
      raise RuntimeError("RESOURCE_EXHAUSTED: XLA:TPU compile permanent "
                         "error. Ran out of memory in memory space hbm.")
    return fake_run(config, compile_only, **kwargs)
  monkeypatch.setattr(bench, "run", refusing_run)
  lines = []
  fit = bench.largest_batch(flow, 1e9, log=lines.append)
  assert fit["per_device_batch"] == 20
  assert fit["tried"][32] is None and fit["tried"][24] is None
  assert lines[3] == ("per-device batch 32: out of memory (XLA refused to "
                      "compile it)")
  # Another failure is not taken for memory.
  monkeypatch.setattr(bench, "run", lambda config, **kw: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    bench.largest_batch(accum, 1e9, log=lambda _: None)
  # A backend without memory analysis: an error, not an endless doubling.
  monkeypatch.setattr(bench, "run", lambda config, **kw: {})
  with pytest.raises(ValueError, match="reports no memory analysis"):
    bench.largest_batch(accum, 1e9, log=lambda _: None)


def test_running_out_of_memory_is_one_line(monkeypatch):
  def oom(config, *args):
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                       "allocate 81.2GiB.")
  monkeypatch.setattr(bench, "run", oom)
  config = common.tiny_config()
  with pytest.raises(ValueError) as e:
    bench.run_fitting(config, 3)
  assert str(e.value) == (
      "the step at config.batch_size=8 does not fit the device memory "
      "(RESOURCE_EXHAUSTED: Out of memory while trying to allocate 81.2GiB.); "
      "find the largest batch that does with --fit_memory=GIB, or lower it "
      "(--config.batch_size, --config.remat=full).")
  # Only memory: a model or path named BLOOM is not "OOM".
  assert not bench.out_of_memory(ValueError("no such file: /ckpt/BLOOM-7b"))
  assert bench.out_of_memory(RuntimeError("XLA: OOM when allocating"))
  monkeypatch.setattr(bench, "run", lambda config, *a: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    bench.run_fitting(config, 3)


def test_fit_memory_json_is_the_only_stdout():
  # The per-batch progress lines went to stdout ahead of the JSON object.
  script = (
      "import sys\n"
      "from absl import app\n"
      "from jaxgen import bench, config_lib\n"
      "import jax\n"
      "bench.run = lambda c, compile_only=False, **k: {"
      "'memory_total_bytes': 2**20 * c.batch_size // jax.device_count()}\n"
      "sys.argv = ['bench', '--config=configs/simple_diffusion.py:tiny',"
      " '--fit_memory=0.01', '--json']\n"
      "bench.flags.mark_flags_as_required(['config'])\n"
      "app.run(bench.main, flags_parser=config_lib.parse_flags)\n")
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                        text=True, timeout=120, check=False,
                        env=common.process_env(), cwd=common.ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(proc.stdout)["per_device_batch"] == 10
  assert "per-device batch 1: " in proc.stderr


def test_the_suite_imports_beside_the_scaling_programs():
  # As in one pytest process: the suite defines its flags only as a program
  # (scaling.fit has an --out too), and shares jaxgen.bench's --steps.
  code = ("import scaling.fit, scaling.compare, scaling.run, "
          "jaxgen.bench_suite, jaxgen.bench")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=120, check=False,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-2000:]


def test_the_suite_runs_as_a_program(tmp_path):
  # jaxgen.bench and the suite share one absl flag namespace (a flag both
  # defined stopped `python -m jaxgen.bench_suite` at its first entry). A
  # zero budget skips every entry, so this runs main() end to end without
  # compiling; --out's folder is created.
  out_file = tmp_path / "new" / "table.md"
  out = subprocess.run(
      [sys.executable, "-m", "jaxgen.bench_suite", "--suite=cpu",
       "--budget_s=0", "--steps=1", f"--out={out_file}"],
      capture_output=True, text=True, timeout=120, check=False,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-2000:]
  assert "| simple_diffusion tiny |" in out.stdout
  assert out_file.read_text().count("over the time budget") == len(
      bench_suite.SUITES["cpu"])
  rows = json.loads((tmp_path / "new" / "table.md.json").read_text())
  assert [r["name"] for r in rows] == [e[0] for e in bench_suite.SUITES["cpu"]]


def test_bench_takes_a_run_length_given_on_the_command_line():
  # As jaxgen.main: --config.total_flops replaces the preset's total_steps
  # (bench said "Set exactly one of config.{total_steps, ...}").
  out = common.run_module(
      "jaxgen.bench", "--config=configs/simple_diffusion.py:tiny",
      "--config.total_flops=1e12", "--params_only", "--json", timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert json.loads(out.stdout)["params"] > 0


@pytest.mark.parametrize("args", [
    ["jaxgen.bench", "--config=configs/r3gan.py:nope", "--params_only"],
    ["jaxgen.bench_suite", "--suite=nope"],
    ["scaling.fit", "--results=r.jsonl", "--out=o", "--approaches=nope"],
    ["scaling.fit", "--results=r.jsonl", "--out=o", "--budgets=1e18,nope"],
    ["scaling.compare", "--targets=nope"],
    ["scaling.run", "--sweep=configs/scaling/simple_diffusion.py:tiny",
     "--workdir=w", "--only_budgets=nope"]])
def test_bad_command_lines_are_one_error_line(args):
  out = common.run_module(*args, timeout=120)
  lines = [l for l in out.stderr.splitlines() if l.startswith("error: ")]
  assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and "nope" in lines[0]


@pytest.mark.parametrize("args,expected", [
    (["jaxgen.bench", "--config=configs/simple_diffusion.py:tiny",
      "--steps=0"], "error: flag --steps=0: 0 is not a positive integer"),
    (["jaxgen.eval.stats", "--batch_size=0"], "error: flag --batch_size=0: "),
    (["jaxgen.autoencoders.encode", "--shard_size=0"],
     "error: flag --shard_size=0: "),
    (["jaxgen.flow.tokens", "--height=770"],
     "error: 770x1280 is not divisible by"),
    (["scaling.fit", "--results=nope.jsonl", "--out=o"],
     "error: nope.jsonl not found"),
    (["jaxgen.bench", "--config=configs/simple_diffusoin.py:tiny",
      "--params_only"], "error: config file configs/simple_diffusoin.py not "
     "found"),
    (["jaxgen.bench", "--config=configs/simple_diffusion.py:tiny",
      "--params_only", "--compile_only"], "error: --params_only compiles "
     "nothing"),
    (["jaxgen.bench", "--config=configs/simple_diffusion.py:tiny",
      "--fit_memory=0"], "error: --fit_memory=0 must be a positive number"),
    # A mesh larger than this machine: the flag that fakes its devices.
    (["jaxgen.bench", "--config=configs/simple_diffusion.py:tiny",
      "--params_only", "--config.mesh.fsdp=64", "--config.mesh.data=1"],
     "error: config.mesh {'data': 1, 'fsdp': 64, 'tensor': 1} needs 64 "
     "devices and this machine has "),
    # No batch fits: an error (it reported batch 0 and exited 0).
    (["jaxgen.bench", "--config=configs/simple_diffusion.py:tiny",
      "--fit_memory=1e-6"], "error: a per-device batch of 1 needs "),
    # Before the suite runs, not after it (a lent GPU's minutes).
    (["jaxgen.bench_suite", "--suite=cpu", "--out=README.md/table.md"],
     "error: cannot create the folder of --out=README.md/table.md"),
    # jaxgen.bench's flags were accepted by the suite and did nothing.
    (["jaxgen.bench_suite", "--suite=cpu", "--budget_s=0", "--params_only",
      "--config=configs/r3gan.py:tiny", "--config.batch_size=4"],
     "error: --config, --params_only, --config.batch_size: flags of "
     "jaxgen.bench, which the suite does not take"),
    # A plan-only flag beside the workers' mode trained a point anyway.
    (["scaling.run", "--sweep=configs/scaling/simple_diffusion.py:tiny",
      "--workdir=w", "--point=C9e9_w16d1", "--dry-run"],
     "error: --dry-run plans a sweep; --point / --chain train one point"),
    # Before the fit and its bootstrap (an unwritable --out was found after).
    (["scaling.fit", "--results=experiments/scaling_families/"
      "results_pyramidal_flow.jsonl", "--out=README.md/fit"],
     "error: --out=README.md/fit cannot be created: "),
    (["scaling.compare", "--results=experiments/scaling_families/"
      "results_pyramidal_flow.jsonl", "--metric=eval_fd_shapes",
      "--out=README.md/cmp"], "error: --out=README.md/cmp cannot be created: "),
    # Collecting from a typo'd workdir created it and reported 0 points.
    (["scaling.run", "--sweep=configs/scaling/simple_diffusion.py:tiny",
      "--workdir=/tmp/jaxgen_no_such_sweep", "--collect"],
     "error: --collect: no sweep in --workdir=/tmp/jaxgen_no_such_sweep"),
    # Missing flags and a flag without its "--": no usage text first.
    (["scaling.fit", "--results=r.jsonl"], "error: pass --results (a "
     "results.jsonl or CSV) and --out"),
    (["jaxgen.main", "--config=configs/simple_diffusion.py:tiny"],
     "error: pass --workdir (it is required; --help lists flags)"),
    # Another family's section is named as such (was a bare unknown field).
    (["jaxgen.main", "--config=configs/r3gan.py:tiny", "--workdir=w",
      "--config.diffusion.sample_steps=4"], "error: unknown config field "
     "'diffusion' (a 'r3gan' config has no 'diffusion' section)"),
    # A top-level field given inside a section ("unknown config field
    # 'dtype'" named neither the flag nor config.dtype).
    (["jaxgen.main", "--config=configs/simple_diffusion.py:tiny",
      "--workdir=w", "--config.model.dtype=bfloat16"],
     "error: unknown config field 'dtype' (--config.model.dtype); did you "
     "mean --config.dtype?"),
    # A record, not a setting: it relabelled a tiny run as imagenet256.
    (["jaxgen.main", "--config=configs/simple_diffusion.py:tiny",
      "--workdir=w", "--config.preset=imagenet256"],
     "error: --config.preset records what the config file built and cannot "
     "be set; choose the preset with --config=FILE:PRESET."),
    (["jaxgen.main", "--config=configs/simple_diffusion.py:tiny",
      "--workdir=w", "--config.diffusion.class_conditional=maybe"],
     "error: flag --config.diffusion.class_conditional=maybe: expects true "
     "or false"),
    (["jaxgen.main", "--config=configs/simple_diffusion.py:tiny",
      "--workdir=w", "--config.total_steps=1e3"],
     "error: flag --config.total_steps=1e3: expects an integer (write 1e3 "
     "as 1000)"),
    (["jaxgen.main", "--config=configs/simple_diffusion.py:tiny",
      "--workdir=w", "config.total_steps=3"],
     "error: unexpected arguments config.total_steps=3; flags take the form"),
])
def test_bad_values_and_missing_flags_are_one_error_line(args, expected):
  # Counts and sizes have lower bounds (a zero batch used to reach the
  # pipeline, zero timed steps printed a NaN throughput and exited 0).
  out = common.run_module(*args, timeout=120)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(expected), out.stderr[-2000:]


def test_a_sections_field_given_at_the_top_level_names_the_section():
  config = config_lib.load_config_file("configs/simple_diffusion.py:tiny")
  line = "unknown config field 'learning_rate'"
  assert config_lib.section_hint(
      line, config, ["--config.learning_rate=1e-3"]) == (
          "; did you mean --config.optimizer.learning_rate?")
  # Several sections hold it: each is named.
  hint = config_lib.section_hint("unknown config field 'image_size'", config,
                                 ["--config.image_size=32"])
  assert hint.startswith("; did you mean --config.dataset.image_size")
  # Not a field of any section: no hint.
  assert config_lib.section_hint("unknown config field 'nope'", config,
                                 ["--config.nope=1"]) == ""


def test_a_config_path_from_another_directory_names_the_repository(
    tmp_path, monkeypatch):
  # --config paths are read from the current directory: outside the
  # repository "configs/x.py not found" did not say where it is.
  monkeypatch.chdir(tmp_path)
  error = FileNotFoundError(
      "[Errno 2] No such file or directory: 'configs/r3gan.py'")
  root = config_lib.REPO_ROOT
  assert config_lib.error_line(error) == (
      f"config file configs/r3gan.py not found in {tmp_path}; pass "
      f"--config={os.path.join(root, 'configs/r3gan.py')} or run from {root}")
  error = FileNotFoundError(
      "[Errno 2] No such file or directory: 'configs/nope.py'")
  assert config_lib.error_line(error) == "config file configs/nope.py not found"


def test_verbosity_1_adds_the_traceback_of_an_error_line(tmp_path):
  args = ["jaxgen.main", "--config=configs/simple_diffusion.py:tiny",
          f"--workdir={tmp_path}", "--config.model.num_heads=3"]
  quiet = common.run_module(*args, timeout=120)
  loud = common.run_module(*args, "--verbosity=1", timeout=120)
  for out in (quiet, loud):
    assert out.returncode == 1
    assert any(ln.startswith("error: config.model.transformer_width=64 is "
                             "not divisible by")
               for ln in out.stderr.splitlines())
  assert "Traceback" not in quiet.stderr
  assert "Traceback (most recent call last)" in loud.stderr


@pytest.mark.parametrize("suite", list(bench_suite.SUITES))
def test_every_suite_entry_loads(suite):
  for _, spec, overrides, batch in bench_suite.SUITES[suite]:
    config = bench_suite.load_config(spec, overrides, batch)
    assert config.batch_size == batch
