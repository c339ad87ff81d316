"""Shared set-up of the evaluation tests."""

import pytest

from jaxgen.eval import inception


@pytest.fixture(scope="module", autouse=True)
def small_inception_input(request):
  """In modules that set SMALL_INCEPTION_INPUT = True, Inception embeds at
  75 px (its smallest input): they check the commands' plumbing, not FID
  values; parity at 299 px is in test_inception.py."""
  if not getattr(request.module, "SMALL_INCEPTION_INPUT", False):
    yield
    return
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(inception, "INPUT_SIZE", 75)
    yield
