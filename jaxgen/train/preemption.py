"""SIGTERM / SIGINT become "save at the next step boundary, then stop".

TPU maintenance, SLURM and Kubernetes send SIGTERM some seconds before they
kill a job. The trainer asks `Watcher.should_stop(step)` after every step;
once it says yes, the trainer saves that step, flushes its metrics and raises
`Preempted`, which `jaxgen.main` turns into one line and exit status 0.

One process: Python handlers set a flag. Several processes: the hosts must
agree on the step, so the decision is orbax's `reached_preemption(step)`
(JAX's preemption sync service, which catches SIGTERM itself and picks the
same step everywhere); a SIGINT is re-sent to this process as SIGTERM so that
it takes the same path. A second SIGINT raises KeyboardInterrupt at once,
or, when it lands where Python drops exceptions (a GC callback), at the
end of the step, before its save.
"""

import gc
import os
import signal
import threading
from typing import Callable, Optional

from absl import logging
import jax
from orbax.checkpoint import multihost as ocp_multihost


class Preempted(Exception):
  """The run stopped early on a signal after saving its checkpoint."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


def _ignores_exceptions(frame) -> bool:
  """Whether an exception raised in `frame` would be printed and dropped:
  inside a garbage-collector callback (JAX registers one) or a __del__."""
  gc_codes = {getattr(cb, "__code__", None) for cb in gc.callbacks}
  while frame is not None:
    if frame.f_code in gc_codes or frame.f_code.co_name == "__del__":
      return True
    frame = frame.f_back
  return False


class Watcher:
  """Installs the handlers on entry (main thread only) and restores them on
  exit."""

  def __init__(self, reached_preemption: Optional[Callable[[int], bool]] = None):
    """Args:
      reached_preemption: the multi-host agreement, `step -> bool`; default
        orbax's `multihost.reached_preemption` when process_count > 1.
    """
    self._multi = jax.process_count() > 1
    self._reached = reached_preemption or ocp_multihost.reached_preemption
    self.signal_name: Optional[str] = None
    # Set by a second SIGINT. Its KeyboardInterrupt can be raised where
    # Python ignores exceptions (a GC callback, a __del__); should_stop
    # raises it again from the loop then.
    self.aborted: Optional[str] = None
    self._previous = {}

  def __enter__(self) -> "Watcher":
    if threading.current_thread() is not threading.main_thread():
      return self  # Signals are only delivered to the main thread.
    self._previous[signal.SIGINT] = signal.signal(signal.SIGINT,
                                                  self._on_signal)
    if not self._multi:
      # With jax.distributed, SIGTERM belongs to JAX's preemption notifier.
      self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM,
                                                     self._on_signal)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    self._previous = {}

  def _on_signal(self, signum, frame) -> None:
    name = signal.Signals(signum).name
    if self.signal_name is not None and signum == signal.SIGINT:
      self.aborted = f"second {name}: stopping without saving"
      if not _ignores_exceptions(frame):
        raise KeyboardInterrupt(self.aborted)
      return  # should_stop raises it at the end of this step.
    self.signal_name = self.signal_name or name
    logging.warning("%s received: saving at the end of this step, then "
                    "stopping (send SIGINT again to stop at once).", name)
    if self._multi and signum == signal.SIGINT:
      os.kill(os.getpid(), signal.SIGTERM)

  def should_stop(self, step: int) -> bool:
    """Whether to save `step` and stop (the same answer on every host).

    Raises:
      KeyboardInterrupt: a second SIGINT came (its own raise may have been
        swallowed): stop without saving.
    """
    if self.aborted:
      raise KeyboardInterrupt(self.aborted)
    if self._multi:
      if self._reached(step):
        self.signal_name = self.signal_name or "SIGTERM"
        return True
      return False
    return self.signal_name is not None
