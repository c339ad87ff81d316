"""jaxgen.jsonl: one reader and appender for local and object-store files."""

import os
import stat

import pytest

from jaxgen import jsonl
from jaxgen.train import workdir as workdir_lib


@pytest.mark.parametrize("remote", [False, True])
def test_append_then_read_round_trips(tmp_path, monkeypatch, remote):
  if remote:  # The object-store branch (whole-object rewrite) on a local dir.
    monkeypatch.setattr(workdir_lib, "is_local", lambda p: False)
  path = tmp_path / "sub" / "rows.jsonl"
  jsonl.append(str(path), [{"a": 1}])
  jsonl.append(str(path), [])
  jsonl.append(str(path), [{"b": [2, 3]}, {"c": "x"}])
  assert jsonl.read(str(path)) == [{"a": 1}, {"b": [2, 3]}, {"c": "x"}]
  assert path.read_text().count("\n") == 3


def test_read_names_the_bad_line_or_skips_it(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": ')
  with pytest.raises(ValueError, match=r"r.jsonl:4: not JSON"):
    jsonl.read(str(path))
  assert jsonl.read(str(path), skip_bad=True) == [{"a": 1}, {"a": 2}]
  with pytest.raises(FileNotFoundError):
    jsonl.read(str(tmp_path / "missing.jsonl"))
  assert jsonl.read(str(tmp_path / "missing.jsonl"), missing_ok=True) == []


def test_append_after_a_torn_remote_tail_starts_a_new_line(tmp_path,
                                                           monkeypatch):
  monkeypatch.setattr(workdir_lib, "is_local", lambda p: False)
  path = tmp_path / "r.jsonl"
  path.write_text('{"a": 1}')
  jsonl.append(str(path), [{"a": 2}])
  assert jsonl.read(str(path)) == [{"a": 1}, {"a": 2}]


def test_write_atomic_leaves_no_temporary_file(tmp_path):
  path = tmp_path / "d" / "result.json"
  jsonl.write_atomic(str(path), "one")
  jsonl.write_atomic(str(path), "two")
  assert path.read_text() == "two"
  assert [p.name for p in path.parent.iterdir()] == ["result.json"]
  jsonl.write_atomic(str(path), b"\x00bytes")
  assert path.read_bytes() == b"\x00bytes"
  assert [p.name for p in path.parent.iterdir()] == ["result.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_write_atomic_gives_the_mode_open_would(tmp_path, umask):
  old = os.umask(umask)
  try:
    jsonl.write_atomic(str(tmp_path / "atomic.json"), "{}")
    with open(tmp_path / "plain.json", "w") as f:
      f.write("{}")
  finally:
    os.umask(old)
  mode = stat.S_IMODE((tmp_path / "atomic.json").stat().st_mode)
  assert mode == 0o666 & ~umask
  assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)
