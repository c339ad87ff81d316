"""The persistent compilation cache: a warm cache compiles nothing new."""

import os
import re
import subprocess
import sys

from jaxgen.train import compile_cache
from tests.train import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
LINE = re.compile(r"Compilation cache (\S+): (\d+) of (\d+) programs read, "
                  r"(\d+) compiled\.")


# jaxgen.main, reporting at exit whether TensorFlow was imported.
_MAIN = """
import runpy, sys
sys.argv = ["jaxgen.main"] + sys.argv[1:]
try:
  runpy.run_module("jaxgen.main", run_name="__main__")
finally:
  print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def _run(workdir, cache, expect_line=True, **overrides):
  env = dict(os.environ, PYTHONPATH=ROOT)
  flags = common.cli_flags(eval_batches=1, **overrides)
  out = subprocess.run(
      [sys.executable, "-c", _MAIN, f"--workdir={workdir}",
       f"--compilation_cache={cache}"] + flags, cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  # TensorBoard events are written without TensorFlow.
  assert "tensorflow imported: False" in out.stdout
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(workdir))
  match = LINE.search(out.stderr)
  if not expect_line:
    assert match is None, out.stderr[-2000:]
    return None
  assert match, out.stderr[-2000:]
  assert match.group(1) == str(cache)
  return {"hits": int(match.group(2)), "requests": int(match.group(3)),
          "misses": int(match.group(4))}


def test_second_run_of_another_length_compiles_nothing(tmp_path):
  cache = tmp_path / "cache"
  first = _run(tmp_path / "a", cache, total_steps=3)
  assert first["misses"] > 0 and os.listdir(cache)
  # Another run length (as a sweep's next budget): the run length is an
  # argument of the train step, so every program comes from the cache.
  second = _run(tmp_path / "b", cache, total_steps=5)
  assert second["misses"] == 0
  assert second["hits"] == second["requests"] >= first["requests"] - 1
  # Rerunning a finished run compiles nothing and says nothing about it.
  _run(tmp_path / "b", cache, expect_line=False, total_steps=5)


def test_unwritable_directory_is_one_warning_and_no_cache(tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("")
  assert compile_cache.enable(str(blocker / "cache")) is None
  err = capsys.readouterr().err.strip()
  assert err.startswith("warning: compilation cache off: ")
  assert "--compilation_cache=DIR" in err and "\n" not in err


def test_off_and_default_directories(monkeypatch, tmp_path):
  assert compile_cache.enable("none") is None
  monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "x"))
  assert compile_cache.default_dir() == str(tmp_path / "x")
  monkeypatch.delenv(compile_cache.ENV_VAR)
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
  assert compile_cache.default_dir() == str(tmp_path / "c" / "jaxgen" / "xla")


def test_counts_of_this_thread_leave_out_other_threads():
  import threading  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  # conftest turned the cache on; a fresh constant makes a fresh program.
  scale = float(int.from_bytes(os.urandom(3), "little") + 1)
  mine_before = compile_cache.counts(this_thread=True)
  total_before = compile_cache.counts()
  seen = {}

  def compile_elsewhere():
    before = compile_cache.counts(this_thread=True)
    jax.jit(lambda x: x * scale).lower(jnp.ones(3)).compile()
    seen["delta"] = compile_cache.counts(this_thread=True)["requests"] - (
        before["requests"])

  thread = threading.Thread(target=compile_elsewhere)
  thread.start()
  thread.join()
  assert seen["delta"] >= 1
  assert compile_cache.counts()["requests"] - total_before["requests"] >= 1
  assert compile_cache.counts(this_thread=True) == mine_before
