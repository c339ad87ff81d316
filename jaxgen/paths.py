"""Where jaxgen keeps files of its own between runs (the user cache)."""

import os


def user_cache_dir(*parts: str) -> str:
  """`$XDG_CACHE_HOME/jaxgen/<parts>`, by default `~/.cache/jaxgen/<parts>`.

  Args:
    *parts: path components below the jaxgen cache directory.

  Returns:
    The path (not created).
  """
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jaxgen", *parts)
