"""Run-length conversion, learning-rate schedules and frozen subsets."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen import config_lib
from jaxgen.train import durations
from jaxgen.train import logs
from jaxgen.train import state as state_lib


def _cfg(**kw):
  c = config_lib.base_config()
  c.batch_size = 32
  c.update(kw)
  return c


@pytest.mark.parametrize("kw,expected", [
    (dict(total_steps=7), 7),
    (dict(total_examples=320), 10),
    (dict(total_examples=321), 11),       # rounded up: never under-spend
    (dict(total_epochs=2.0), 2 * 1000 // 32 + 1),
    (dict(total_flops=64e6), 20),         # 1e5 FLOPs/example -> 640 examples
])
def test_total_steps_units(kw, expected):
  assert durations.total_steps(_cfg(**kw), num_examples=1000,
                               flops_per_example=1e5) == expected


def test_an_epoch_is_a_pass_over_the_data_when_a_step_reads_two_batches():
  # R3GAN's G phase reads its own batch: 2 x 32 images a step, so 2 epochs
  # of 1000 images last 1000 // 32 + 1 steps; examples count one batch a
  # step (D's images, the paper's kimg).
  assert durations.total_steps(_cfg(total_epochs=2.0), num_examples=1000,
                               flops_per_example=1e5,
                               batches_per_step=2) == 1000 // 32 + 1
  assert durations.total_steps(_cfg(total_examples=320), num_examples=1000,
                               flops_per_example=1e5,
                               batches_per_step=2) == 10


def test_total_steps_needs_exactly_one_unit():
  with pytest.raises(ValueError, match="set one of"):
    durations.total_steps(_cfg(), num_examples=1, flops_per_example=1)
  with pytest.raises(ValueError, match="exactly one"):
    durations.total_steps(_cfg(total_steps=3, total_examples=5),
                          num_examples=1, flops_per_example=1)
  with pytest.raises(ValueError, match="known size"):
    durations.total_steps(_cfg(total_epochs=1.0), num_examples=None,
                          flops_per_example=1)


def test_schedule_warmup_then_cosine_to_end_of_run():
  opt = config_lib.optimizer_config(learning_rate=1.0, warmup_fraction=0.1)
  sched = state_lib.learning_rate_schedule(opt, 100)
  np.testing.assert_allclose(sched(5), 0.5, rtol=1e-6)
  np.testing.assert_allclose(sched(10), 1.0, rtol=1e-6)
  # Cosine from step 10 to 100: halfway (step 55) is 0.5, the end is 0.
  np.testing.assert_allclose(sched(55), 0.5, atol=1e-6)
  np.testing.assert_allclose(sched(100), 0.0, atol=1e-6)


@pytest.mark.parametrize("warmup,total,alpha", [
    (dict(warmup_fraction=0.1), 100, 0.0), (dict(warmup_steps=7), 50, 0.1),
    (dict(warmup_steps=0), 20, 0.0), (dict(warmup_steps=30), 5, 0.0),
    (dict(warmup_fraction=0.05), 1245, 0.0)])
def test_schedule_matches_optax_and_takes_a_traced_run_length(
    warmup, total, alpha):
  opt = config_lib.optimizer_config(learning_rate=3e-4, end_lr_fraction=alpha,
                                    **warmup)
  # optax's composition, with the warmup resolved as the docs say.
  n = warmup.get("warmup_steps", round(warmup.get("warmup_fraction", 0)
                                         * total))
  n = min(n, max(total - 1, 0))
  decay = optax.cosine_decay_schedule(3e-4, max(total - n, 1), alpha=alpha)
  ref = (optax.join_schedules([optax.linear_schedule(0.0, 3e-4, n), decay],
                              [n]) if n else decay)
  steps = np.arange(0, total + 3)
  ours = state_lib.learning_rate_schedule(opt, total)
  np.testing.assert_allclose([ours(i) for i in steps],
                             [ref(i) for i in steps], rtol=2e-5, atol=1e-10)
  # The run length as a runtime argument: one compiled function, any length.
  traced = jax.jit(lambda i, t: state_lib.learning_rate_schedule(
      opt, lambda: t)(i))
  np.testing.assert_allclose(
      [traced(i, np.int32(total)) for i in steps[::7]],
      [ref(i) for i in steps[::7]], rtol=2e-5, atol=1e-10)
  assert traced._cache_size() == 1


@pytest.mark.parametrize("total,warmup,frac,alpha", [
    (100, 10, 0.2, 0.0), (57, 5, 0.3, 0.1), (40, 0, 1.0, 0.0),
    (30, 3, 0.0, 0.0)])
def test_wsd_schedule_is_warmup_constant_then_linear_cooldown(
    total, warmup, frac, alpha):
  opt = config_lib.optimizer_config(
      learning_rate=2.0, schedule="wsd", warmup_steps=warmup,
      decay_fraction=frac, end_lr_fraction=alpha)
  ours = state_lib.learning_rate_schedule(opt, total)
  # Hand-written reference, step by step.
  span = round(frac * total)
  start = total - span
  for i in range(total + 2):
    if i < warmup:
      want = 2.0 * i / warmup
    elif i <= start or span == 0:
      want = 2.0
    else:
      want = 2.0 * (1 - (1 - alpha) * min(i - start, span) / span)
    np.testing.assert_allclose(float(ours(i)), want, rtol=1e-6, atol=1e-7)
  # Up to its cooldown a wsd run is the constant-rate run of any length:
  # what the scaling sweeps' branches rely on.
  longer = state_lib.learning_rate_schedule(
      config_lib.optimizer_config(learning_rate=2.0, schedule="wsd",
                                  warmup_steps=warmup, decay_fraction=0.0),
      10 * total)
  for i in range(start + 1):
    assert float(ours(i)) == float(longer(i))
  with pytest.raises(ValueError, match="decay_fraction=1.5"):
    state_lib.learning_rate_schedule(
        config_lib.optimizer_config(schedule="wsd", decay_fraction=1.5), 10)


def test_trainable_subset_leaves_frozen_params_unchanged():
  opt = config_lib.optimizer_config(learning_rate=0.1, grad_clip=0.0)
  tx = state_lib.make_optimizer(opt, 10, trainable=[r"^decoder/"])
  params = {"encoder": {"w": jnp.ones(3)}, "decoder": {"w": jnp.ones(3)}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["encoder"]["w"], params["encoder"]["w"])
  assert np.all(np.asarray(new["decoder"]["w"]) < 1.0)


def test_ema_update_matches_formula():
  out = state_lib.ema_update({"a": jnp.array(1.0)}, {"a": jnp.array(3.0)}, 0.9)
  np.testing.assert_allclose(out["a"], 0.9 * 1 + 0.1 * 3)


def test_ema_of_bfloat16_parameters_moves_in_float32():
  # A bfloat16 EMA at decay 0.9999 never moved (each update is below
  # bfloat16's resolution): samples came from the initial weights.
  params = {"w": jnp.ones((4,), jnp.bfloat16)}
  ema = state_lib.ema_init(params)
  assert ema["w"].dtype == jnp.float32
  target = {"w": jnp.full((4,), 2.0, jnp.bfloat16)}
  update = jax.jit(state_lib.ema_update)
  for _ in range(1000):
    ema = update(ema, target, jnp.float32(0.9999))
  assert ema["w"].dtype == jnp.float32
  # 2 - 0.9999^1000, the closed form of 1000 updates from 1 towards 2.
  # (float32 rounding over 1000 updates: ~1.5e-5; a bfloat16 EMA is 0.095
  # off.)
  np.testing.assert_allclose(ema["w"], 2.0 - 0.9999 ** 1000, rtol=1e-4)
  # An average of another dtype keeps it (a traced float32 decay promoted
  # it, and the compiled step refused the state it returned).
  low = update({"w": jnp.ones((4,), jnp.bfloat16)}, target, jnp.float32(0.5))
  assert low["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(low["w"], 1.5)


def test_parse_arg_presets_and_options():
  a = config_lib.parse_arg("small,steps=5,runlocal", ["tiny", "small"],
                           steps=10, runlocal=False)
  assert (a.preset, a.steps, a.runlocal) == ("small", 5, True)
  assert config_lib.parse_arg(None, ["tiny"]).preset == "tiny"
  # Spaces after the commas (":tiny, sid2") were part of the names.
  a = config_lib.parse_arg(" small, steps = 5 , runlocal", ["tiny", "small"],
                           steps=10, runlocal=False)
  assert (a.preset, a.steps, a.runlocal) == ("small", 5, True)
  with pytest.raises(ValueError, match="unknown preset 'big'"):
    config_lib.parse_arg("big", ["tiny", "small"])
  with pytest.raises(ValueError, match="unknown config option 'lr'"):
    config_lib.parse_arg("tiny,lr=3", ["tiny"], steps=1)
  # A typo'd bare option lists the known ones; a second preset is named.
  with pytest.raises(ValueError, match="'runlocl'; known: runlocal, steps"):
    config_lib.parse_arg("tiny,runlocl", ["tiny"], steps=1, runlocal=False)
  with pytest.raises(ValueError, match="one preset per config: 'small'"):
    config_lib.parse_arg("tiny,small", ["tiny", "small"])
  # An option given twice (which one counts?) is refused.
  for arg, key in (("tiny,runlocal,runlocal", "runlocal"),
                   ("tiny,steps=2,steps=3", "steps"), ("tiny,tiny", "tiny")):
    with pytest.raises(ValueError, match=f"config option '{key}' is given "
                       "twice; give it once"):
      config_lib.parse_arg(arg, ["tiny", "small"], steps=1, runlocal=False)
  # Values are checked against the option's type, not silently coerced.
  assert not config_lib.parse_arg("tiny,runlocal=no", ["tiny"],
                                  runlocal=True).runlocal
  with pytest.raises(ValueError, match="runlocal='ture': use true or false"):
    config_lib.parse_arg("tiny,runlocal=ture", ["tiny"], runlocal=False)
  with pytest.raises(ValueError, match="steps='five': expected an integer"):
    config_lib.parse_arg("tiny,steps=five", ["tiny"], steps=1)


def test_the_eta_counts_the_evaluations_still_ahead(caplog):
  # Steps 5..20 of a run evaluating every 4 steps: 8, 12, 16, 20 (the last
  # is one of them); every 6: 6, 12, 18 and the last, 20.
  assert logs.evaluations_from(5, 20, 4) == 4
  assert logs.evaluations_from(5, 20, 6) == 4
  assert logs.evaluations_from(4, 20, 4) == 5
  assert logs.evaluations_from(5, 20, 0) == 1  # The last step only.
  assert logs.evaluations_from(21, 20, 4) == 0
  for step, every in ((1, 7), (3, 5), (9, 3), (20, 20)):
    by_hand = sum(1 for k in range(step, 21) if k % every == 0 or k == 20)
    assert logs.evaluations_from(step, 20, every) == by_hand
  times = logs.EvaluationTimes()
  assert times.ahead(5, 20, {"eval": 4}) == 0.0  # Nothing measured yet.
  times.add("eval", 2.0)
  times.add("eval", 4.0)
  times.add("score", 30.0)
  # 4 evaluations at 3 s, and the final FID at 30 s.
  assert times.ahead(5, 20, {"eval": 4, "score": 0}) == pytest.approx(42.0)
  with caplog.at_level("INFO"):
    logs.log_progress(5, 20, 1.0, 42.0)
  # 15 steps at 1 step/s plus 42 s of evaluations.
  assert "step 5/20 (25%), 1 steps/s, ETA 0m57s" in caplog.text


def test_a_warmup_as_long_as_the_run_is_warned_about(caplog):
  from jaxgen.train import checks  # pylint: disable=g-import-not-at-top
  from tests.train import common  # pylint: disable=g-import-not-at-top
  config = common.tiny_config()  # warmup_steps=20.
  with caplog.at_level("WARNING"):
    checks.warn_if_warmup_spans_run(config, 20)
  assert [r.getMessage() for r in caplog.records] == [
      "optimizer.warmup_steps=20 is not shorter than the run's 20 steps: the "
      "learning rate rises over the whole run, reaches "
      "optimizer.learning_rate only at its last step and never decays; "
      "lower it or set optimizer.warmup_fraction."]
  # The schedule itself: still rising at the last step, never past the peak.
  schedule = state_lib.learning_rate_schedule(config.optimizer, 20)
  rates = [float(schedule(k)) for k in range(20)]
  assert np.all(np.diff(rates) > 0)
  assert rates[-1] == pytest.approx(config.optimizer.learning_rate)
  caplog.clear()
  with caplog.at_level("WARNING"):
    checks.warn_if_warmup_spans_run(config, 21)
    config.optimizer.warmup_fraction = 0.5
    checks.warn_if_warmup_spans_run(config, 10)
  assert not caplog.records


def test_a_wsd_cooldown_inside_the_warmup_is_warned_about(caplog):
  from jaxgen.train import checks  # pylint: disable=g-import-not-at-top
  from tests.train import common  # pylint: disable=g-import-not-at-top
  config = common.tiny_config()
  config.optimizer.schedule = "wsd"
  config.optimizer.warmup_steps = 0
  config.optimizer.warmup_fraction = 0.3
  config.optimizer.decay_fraction = 0.8
  with caplog.at_level("WARNING"):
    checks.warn_if_warmup_spans_run(config, 100)
  assert [r.getMessage() for r in caplog.records] == [
      "optimizer.schedule='wsd': the cooldown starts at step 20 of 100, "
      "inside the 30-step warmup; the rate never holds its peak and drops "
      "when the warmup ends; lower the warmup or optimizer.decay_fraction."]
  # What it warns of: the ramp, then a drop to the decayed value.
  schedule = state_lib.learning_rate_schedule(config.optimizer, 100)
  peak = config.optimizer.learning_rate
  assert float(schedule(29)) == pytest.approx(peak * 29 / 30, rel=1e-6)
  assert float(schedule(30)) == pytest.approx(peak * (1 - 10 / 80), rel=1e-6)
  caplog.clear()
  # A cooldown over the whole run: any warmup is inside it.
  with caplog.at_level("WARNING"):
    config.optimizer.decay_fraction = 1.0
    checks.warn_if_warmup_spans_run(config, 100)
  assert "the cooldown starts at step 0 of 100" in caplog.text
  caplog.clear()
  # The cooldown from the warmup's end on, or after it: no warning.
  with caplog.at_level("WARNING"):
    config.optimizer.decay_fraction = 0.7
    checks.warn_if_warmup_spans_run(config, 100)
    config.optimizer.warmup_fraction = 0.0
    config.optimizer.warmup_steps = 10
    config.optimizer.decay_fraction = 0.2
    checks.warn_if_warmup_spans_run(config, 100)
  assert not caplog.records
