"""Name -> object registries, so configs pick families by string without if/elif.

Families register their objective class under the name a config gives in
`config.family`; datasets register source builders under a URI scheme. Lookup of
an unknown name raises a one-line error listing what is registered.
"""

from typing import Any, Callable, Dict


class Registry:
  """A small string-keyed registry with a clear error on unknown names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, Any] = {}

  def register(self, name: str) -> Callable[[Any], Any]:
    """Decorator registering `obj` under `name`.

    Args:
      name: the key configs use.

    Returns:
      A decorator that stores its argument and returns it unchanged.
    """
    def decorator(obj):
      if name in self._entries and self._entries[name] is not obj:
        raise ValueError(f"{self.kind} {name!r} is registered twice.")
      self._entries[name] = obj
      return obj
    return decorator

  def get(self, name: str) -> Any:
    """Returns the entry for `name`, or raises a ValueError naming the choices."""
    if name not in self._entries:
      known = ", ".join(sorted(self._entries)) or "none"
      raise ValueError(
          f"unknown {self.kind} {name!r}; choose one of: {known}.")
    return self._entries[name]

  def names(self):
    """Returns the registered names, sorted."""
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries


# Objective classes by family name (config.family).
OBJECTIVES = Registry("family")
