r"""Start-up and host overhead of short runs, measured side by side (CPU).

  (a) Two identical short `simple_diffusion:tiny` runs (`jaxgen.main`, 20
      steps) with a fresh compilation cache: wall time of the first (cold)
      and the second (warm), alternating cold/warm pairs `--repeats` times.
  (b) The smallest sweep rung (w16d1, 16 px, batch 32), one core: the
      trainer loop's time per step (steps/s of its logged rows, steady
      state: after the first epoch) against the bare compiled step
      (`jaxgen.bench`), for the in-memory and the grain batch paths.
  (c) A sweep point's fixed cost: a worker's wall time minus its steps at
      the loop's steady-state step time (so the first epoch's decoding
      counts as fixed), cold and warm cache; with the step time of (b), and
      with the point's own (from its metrics, after the first epoch).

  python -m experiments.performance.overhead --data_dir=/tmp/jaxgen_test_tfds

Every measurement runs in a fresh process; (b) and (c) pinned to one core
(`taskset`) with the sweep spec's environment, as sweep workers run. Writes overhead.json next to this file (or --out).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SPEC = "configs/scaling/simple_diffusion.py:cpu"

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "/tmp/jaxgen_test_tfds", "TFDS data dir.")
flags.DEFINE_integer("repeats", 3, "Cold/warm pairs in (a).")
flags.DEFINE_integer("rung_steps", 800, "Steps of the rung run in (b).")
flags.DEFINE_string("out", os.path.join(HERE, "overhead.json"), "Results.")
flags.DEFINE_list("parts", ["startup", "rung", "point"], "What to measure.")


def _env(spec_env):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=ROOT)
  if spec_env:
    # What the sweep runner gives its workers (single-threaded XLA).
    from scaling import sweep  # pylint: disable=g-import-not-at-top
    env.update({k: str(v) for k, v in
                sweep.load_config_file(SPEC).env.items()})
  return env


def _timed(cmd, core="0", spec_env=True):
  """Runs `cmd` pinned to `core`; returns (wall seconds, stdout+stderr)."""
  start = time.perf_counter()
  out = subprocess.run(["taskset", "-c", core] + cmd, cwd=ROOT,
                       env=_env(spec_env),
                       capture_output=True, text=True, check=False)
  wall = time.perf_counter() - start
  if out.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
  return wall, out.stdout + out.stderr


def startup(tmp):
  """(a): cold and warm wall time of identical 20-step tiny runs."""
  rows = []
  for r in range(FLAGS.repeats):
    cache = os.path.join(tmp, f"cache{r}")
    walls = []
    for k in range(2):
      workdir = os.path.join(tmp, f"tiny{r}_{k}")
      wall, _ = _timed([
          sys.executable, "-m", "jaxgen.main",
          "--config=configs/simple_diffusion.py:tiny", f"--workdir={workdir}",
          f"--config.dataset.data_dir={FLAGS.data_dir}",
          "--config.total_steps=20", "--config.log_every_steps=10",
          f"--compilation_cache={cache}"], core="0-1", spec_env=False)
      walls.append(wall)
    rows.append({"cold_s": walls[0], "warm_s": walls[1],
                 "ratio": walls[1] / walls[0]})
    print(f"startup pair {r}: cold {walls[0]:.1f} s, warm {walls[1]:.1f} s")
  return {"pairs": rows,
          "median_cold_s": statistics.median(r["cold_s"] for r in rows),
          "median_warm_s": statistics.median(r["warm_s"] for r in rows),
          "median_ratio": statistics.median(r["ratio"] for r in rows)}


_RUNG = """
import json, sys
from jaxgen import families, bench
from jaxgen.train import compile_cache, trainer
from scaling import sweep
compile_cache.enable(sys.argv[3])
spec = sweep.load_config_file(%r)
config, _ = sweep.point_config(spec, 2.5e11, "w16d1",
                               {"dataset.data_dir": sys.argv[5]})
config.total_steps = int(sys.argv[2])
config.dataset.in_memory = sys.argv[1]
config.eval_batches = 0
config.log_every_steps = 25
config.checkpoint_every_steps = 10**6
if sys.argv[1] == "bare":
  print(json.dumps(bench.run(config, steps=200)))
else:
  trainer.train_and_evaluate(config, sys.argv[4])
""" % SPEC


def rung(tmp):
  """(b): loop vs bare step of the smallest rung, one core."""
  out = {}
  cache = os.path.join(tmp, "rung_cache")
  _, text = _timed([sys.executable, "-c", _RUNG, "bare", "1", cache, "",
                    FLAGS.data_dir])
  bare = json.loads(text.strip().splitlines()[-1])
  out["bare_step_ms"] = bare["step_time_s"] * 1e3
  out["params"] = bare.get("params")
  for mode in ("always", "never"):
    workdir = os.path.join(tmp, f"rung_{mode}")
    _timed([sys.executable, "-c", _RUNG, mode, str(FLAGS.rung_steps), cache,
            workdir, FLAGS.data_dir])
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f]
    # Steady state: past the first epoch (256 batches of the 8192 training
    # images), which the in-memory path spends decoding them.
    sps = [r["steps_per_sec"] for r in rows if r["step"] > 300]
    loop_ms = 1e3 / statistics.median(sps)
    name = "memory" if mode == "always" else "grain"
    out[f"loop_step_ms_{name}"] = loop_ms
    out[f"loop_over_bare_{name}"] = loop_ms / out["bare_step_ms"]
    print(f"rung loop ({name}): {loop_ms:.2f} ms/step vs bare "
          f"{out['bare_step_ms']:.2f} ms ({loop_ms / out['bare_step_ms']:.2f}x)")
  return out


def point(tmp, loop_ms):
  """(c): fixed cost of one sweep point (worker process), cold and warm."""
  out = {}
  cache = os.path.join(tmp, "point_cache")
  for label in ("cold", "warm"):
    workdir = os.path.join(tmp, f"sweep_{label}")
    cmd = [sys.executable, "-m", "scaling.run", f"--sweep={SPEC}",
           f"--workdir={workdir}", "--point=C2.5e11_w16d1",
           f"--compilation_cache={cache}",
           f"--set=dataset.data_dir={FLAGS.data_dir}"]
    wall, _ = _timed(cmd)
    with open(os.path.join(workdir, "runs", "C2.5e11_w16d1",
                           "result.json")) as f:
      row = json.load(f)
    steps = row["examples_seen"] / row["config"]["overrides"]["batch_size"]
    fixed = wall - steps * loop_ms / 1e3
    # The same with the point's own steady-state step time (its logged rows
    # after the first epoch): no second process's speed enters, so a busy
    # moment of the machine during (b) does not move this figure.
    with open(os.path.join(workdir, "runs", "C2.5e11_w16d1",
                           "metrics.jsonl")) as f:
      logged = [json.loads(line) for line in f]
    own_ms = 1e3 / statistics.median(
        r["steps_per_sec"] for r in logged
        if r["step"] > 300 and "steps_per_sec" in r)
    fixed_own = wall - steps * own_ms / 1e3
    out[label] = {"wall_s": wall, "steps": steps, "fixed_s": fixed,
                  "own_step_ms": own_ms, "fixed_s_own_step": fixed_own}
    print(f"sweep point ({label} cache): {wall:.1f} s for {steps:.0f} steps, "
          f"fixed cost {fixed:.1f} s ({fixed_own:.1f} s at its own "
          f"{own_ms:.2f} ms/step)")
  return out


def main(argv):
  del argv
  tmp = tempfile.mkdtemp(prefix="jaxgen_overhead_")
  results = {}
  if os.path.exists(FLAGS.out):
    with open(FLAGS.out) as f:
      results = json.load(f)
  try:
    if "startup" in FLAGS.parts:
      results["startup"] = startup(tmp)
    if "rung" in FLAGS.parts:
      results["rung"] = rung(tmp)
    if "point" in FLAGS.parts:
      results["point"] = point(tmp, results["rung"]["loop_step_ms_memory"])
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  with open(FLAGS.out, "w") as f:
    json.dump(results, f, indent=1)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
