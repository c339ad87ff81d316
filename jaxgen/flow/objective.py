"""Flow-matching objectives: Pyramidal Flow Matching and its full-resolution baseline.

Family "pyramidal_flow" (Jin et al. 2024): every train batch is split into
groups of `sum(stage_ratios)` examples, one packed row each; segment j of a
row trains stage `stages[j]` (official ratios [1, 2, 1]: one lowest, two
mid, one full resolution). A segment's sample is the stage's straight path
between coupled start and end points (`pyramid.stage_endpoints`) at a local
time t'; the DiT regresses the velocity end - start. Video runs either with
the temporal pyramid (one generated frame per segment at a random position,
its history compressed and lightly corrupted, loss on the generated frame
only) or as full-sequence clips (`pyramid.temporal=False`).

Family "flow_matching": the same machinery with one stage, the window (0, 1)
and one segment per row: plain rectified flow at full resolution (and
full-sequence, bidirectional video), the baseline every pyramid result is
compared with.
"""

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp

from jaxgen import config_lib
from jaxgen import registry
from jaxgen.autoencoders import latent_decode
from jaxgen.flow import dit
from jaxgen.flow import layout as layout_lib
from jaxgen.flow import paths
from jaxgen.flow import pyramid
from jaxgen.flow import samplers
from jaxgen.train import objective as objective_lib

# config.model fields that are not DiT attributes.
_NOT_DIT = ("patch_size",)


def _check_fields(config, single_stage: bool) -> None:
  """One-line ValueErrors for numbers that cannot work (or train nonsense).

  Args:
    config: the run config.
    single_stage: the flow_matching baseline, which ignores config.pyramid.
  """
  check = config_lib.check_range
  check("config.model.patch_size", config.model.patch_size, low=1,
        integer=True)
  check("config.flow.label_dropout", config.flow.label_dropout, low=0,
        high=1, high_open=True)
  if single_stage:
    return
  p = config.pyramid
  check("config.pyramid.num_stages", p.num_stages, low=1, integer=True)
  t = p.num_train_timesteps
  if t:
    # Fewer grid points than stages would give stages empty windows.
    try:
      check("config.pyramid.num_train_timesteps", t, low=p.num_stages,
            integer=True)
    except ValueError as e:
      raise ValueError(f"{str(e)[:-1]}, or 0 (continuous time).") from None
  check("config.pyramid.history_frames", p.get("history_frames", -1),
        low=-1, integer=True)
  check("config.pyramid.history_corruption", p.history_corruption, low=0,
        high=1)
  frames = int(config.dataset.get("num_frames", 0) or 0)
  if p.get("history_frames", -1) != -1 and not (frames and p.temporal):
    raise ValueError(
        f"config.pyramid.history_frames={p.history_frames} applies to the "
        "temporal pyramid of video runs (dataset.num_frames > 0, "
        "pyramid.temporal=true); leave it at -1.")


def _frame_at(clips: jax.Array, index: jax.Array) -> jax.Array:
  """Frame `index[b]` of every clip b: f[B, T, H, W, C] -> f[B, H, W, C]."""
  return jnp.take_along_axis(clips, index[:, None, None, None, None],
                             axis=1)[:, 0]


@registry.OBJECTIVES.register("pyramidal_flow")
class PyramidalFlow(objective_lib.SingleOptimizer, objective_lib.Objective):
  """Pyramidal Flow Matching over images, latents or video clips."""

  models_video = True  # With config.dataset.num_frames > 0.

  single_stage = False

  def __init__(self, config, total_steps=None):
    super().__init__(config, total_steps)
    # Before any of them is used (a zero patch size divides below).
    _check_fields(config, self.single_stage)
    ds, f, p = config.dataset, config.flow, config.pyramid
    self.size = int(ds.image_size)
    self.channels = int(ds.get("channels", 3))
    self.frames = int(ds.get("num_frames", 0) or 0)
    self.key = "video" if self.frames else "image"
    self.patch = int(config.model.patch_size)
    self.num_stages = 1 if self.single_stage else int(p.num_stages)
    if self.single_stage:
      self.windows = [(0.0, 1.0)]
      self.ratios = (1,)
    else:
      self.windows = pyramid.stage_windows(
          self.num_stages, int(p.num_train_timesteps) or None)
      self.ratios = pyramid.stage_ratios(p.stage_ratios, self.num_stages)
    self.ts_windows = (pyramid.timestep_windows(
        self.windows, num_train_timesteps=int(p.num_train_timesteps))
                       if not self.single_stage
                       and p.timestep_embedding == "official" else None)
    self.temporal = bool(self.frames and not self.single_stage
                         and p.temporal)
    hist = int(p.get("history_frames", -1))
    self.history = ((self.frames - 1 if hist < 0 else hist)
                    if self.temporal else 0)
    # Frames generated together per segment (full-sequence video), else 1.
    self.clip_frames = (self.frames if (self.frames and not self.temporal)
                        else 1)
    self.segment_stages = tuple(
        i for i, r in enumerate(self.ratios) for _ in range(r))
    self.num_classes = (int(ds.get("num_classes", 0))
                        if f.class_conditional else 0)
    self.kwargs = {k: (tuple(v) if isinstance(v, list) else v)
                   for k, v in config.model.items() if k not in _NOT_DIT}
    self.kwargs.update(
        token_dim=self.patch * self.patch * self.channels,
        num_classes=self.num_classes, remat=str(config.get("remat", "none")),
        max_positions=(max(self.history, self.clip_frames - 1) + 1,
                       self.size // self.patch, self.size // self.patch),
        dtype=config_lib.compute_dtype(config))
    self.model = dit.DiT(**self.kwargs)
    self._layouts = {}

  # -- layouts ----------------------------------------------------------------

  @property
  def train_layout(self) -> layout_lib.Layout:
    """The packed row of a train step: one segment per example of a group."""
    return self._layout(self.segment_stages)

  def stage_layout(self, stage: int) -> layout_lib.Layout:
    """One segment of one stage (sampling)."""
    return self._layout((stage,))

  def _layout(self, stages):
    if stages not in self._layouts:
      self._layouts[stages] = layout_lib.build(
          stages, num_stages=self.num_stages, height=self.size,
          width=self.size, patch=self.patch, history=self.history,
          frames=self.clip_frames, causal=self.temporal)
    return self._layouts[stages]

  # -- configuration checks ---------------------------------------------------

  def validate(self, num_devices_data_parallel: int) -> None:
    c = self.config
    group = len(self.segment_stages)
    k = int(c.get("grad_accum_steps", 1))
    if k < 1 or c.batch_size % (group * k * num_devices_data_parallel):
      raise ValueError(
          f"config.batch_size={c.batch_size} is not divisible by the "
          f"stage-ratio sum {group} (pyramid.stage_ratios={self.ratios}) x "
          f"grad_accum_steps={k} x {num_devices_data_parallel} data-parallel "
          "devices; change one of them.")
    factor = 2 ** (self.num_stages - 1) * self.patch
    if self.size % factor:
      what = (f"the latent size {self.size} (pixels / the autoencoder's "
              "factor)" if latent_decode.latent_dir(c.dataset)
              else f"config.dataset.image_size={self.size}")
      raise ValueError(
          f"{what} is not divisible by 2^(K-1) x patch = "
          f"{2 ** (self.num_stages - 1)} x {self.patch} = {factor}; change "
          "the size, model.patch_size or pyramid.num_stages.")
    if self.temporal and self.history > self.frames - 1:
      raise ValueError(
          f"pyramid.history_frames={self.history} but a clip has "
          f"{self.frames} frames (at most {self.frames - 1} of history); "
          "lower it or raise dataset.num_frames.")
    steps = c.flow.sample_steps
    steps = tuple(steps) if isinstance(steps, (tuple, list)) else (steps,)
    good = [isinstance(s, int) and not isinstance(s, bool) and s >= 1
            for s in steps]
    if len(steps) != self.num_stages or not all(good):
      # The example keeps the good counts (20 where there is none).
      fill = next((s for s, g in zip(steps, good) if g), 20)
      example = [s if g else fill for s, g in zip(steps, good)]
      if len(example) != self.num_stages:
        example = [fill] * self.num_stages
      what = (f"{self.num_stages} positive step counts, one per stage"
              if self.num_stages > 1 else "one positive step count")
      raise ValueError(f"config.flow.sample_steps={steps} must hold {what}; "
                       "e.g. --config.flow.sample_steps="
                       f"({','.join(map(str, example))}).")
    paths.check_time_sampling(c.flow.time_sampling)
    if c.flow.time_sampling == "logit_normal":
      # A NaN mean trained on times of ~1e37 with a finite loss.
      config_lib.check_range("config.flow.logit_mean", c.flow.logit_mean,
                             finite=True)
      config_lib.check_range("config.flow.logit_std", c.flow.logit_std,
                             low=0, low_open=True, finite=True)
    # NaN / inf made every sample black (to_uint8 casts NaN to 0).
    config_lib.check_range("config.flow.guidance_scale",
                           c.flow.guidance_scale, finite=True)
    if (not self.single_stage and c.pyramid.timestep_embedding
        not in ("global", "official")):
      raise ValueError(
          f"pyramid.timestep_embedding={c.pyramid.timestep_embedding!r}: "
          "use 'global' or 'official'.")
    self.model.validate()

  # -- state ------------------------------------------------------------------

  def init(self, rng, batch):
    lay = self.train_layout
    s = len(lay.stages)
    tokens = jnp.zeros((1, lay.length, self.kwargs["token_dim"]))
    labels = jnp.zeros((1, s), jnp.int32) if self.num_classes else None
    return self.new_state(self.model.init(
        {"params": rng}, tokens, lay, jnp.zeros((1, s)), labels)["params"])

  # -- training ---------------------------------------------------------------

  def _draws(self, batch, rng, train: bool):
    """All randomness of a step, per packed row, and the dropout key.

    Example r·S + j of the batch is segment j of row r, so a row's examples
    are adjacent and stay on the device that holds them.
    """
    f, p = self.config.flow, self.config.pyramid
    lay = self.train_layout
    s = len(lay.stages)
    x = batch[self.key]
    rows = x.shape[0] // s
    keys = jax.random.split(rng, 7)
    draws = {"x": x.reshape((rows, s) + x.shape[1:]),
             "t": paths.sample_time(keys[0], (rows, s), f.time_sampling,
                                    f.logit_mean, f.logit_std)}
    # Unit noise of each segment's generated frame(s), at full resolution;
    # the segment's level is taken from the nested pyramid in `_inputs`.
    frame_shape = x.shape[2:] if self.temporal else x.shape[1:]
    draws["noise"] = jax.random.normal(keys[1], (rows, s) + frame_shape)
    if self.num_classes:
      labels = batch["label"].astype(jnp.int32).reshape(rows, s)
      if train and f.label_dropout:
        drop = jax.random.uniform(keys[2], labels.shape) < f.label_dropout
        labels = jnp.where(drop, self.num_classes, labels)
      draws["labels"] = labels
    if self.temporal:
      draws["position"] = jax.random.randint(keys[3], (rows, s), 0,
                                             self.frames)
      draws["corrupt"] = jax.random.uniform(
          keys[4], (rows, s), maxval=float(p.history_corruption))
      hist = [c for c in lay.chunks if c.lag]
      eps = jax.random.normal(keys[5], (rows, max(len(hist), 1))
                              + frame_shape)
      draws["history_noise"] = eps
    return draws, keys[6]

  def _inputs(self, draws):
    """Packed tokens, velocity targets per target chunk, and validity."""
    lay = self.train_layout
    frames, targets = [], []
    hist_i = 0
    for j, stage in enumerate(lay.stages):
      level = self.num_stages - 1 - stage
      x1 = draws["x"][:, j]
      if self.temporal:
        pos = draws["position"][:, j]
        x1_frame = _frame_at(x1, pos)
      else:
        x1_frame = x1
      noise = pyramid.noise_at_level(draws["noise"][:, j], level)
      start, end = pyramid.stage_endpoints(x1_frame, noise, level,
                                           self.windows[stage])
      xt = paths.interpolate(start, end, draws["t"][:, j])
      v = paths.velocity(start, end)
      for chunk in [c for c in lay.chunks if c.segment == j]:
        if chunk.lag:
          h = pyramid.down(_frame_at(x1, jnp.maximum(pos - chunk.lag, 0)),
                           chunk.level)
          eps = pyramid.noise_at_level(draws["history_noise"][:, hist_i],
                                       chunk.level)
          hist_i += 1
          sc = draws["corrupt"][:, j, None, None, None]
          frames.append(sc * eps + (1.0 - sc) * h)
        elif self.frames and not self.temporal:
          frames.append(xt[:, chunk.slot])
          targets.append(v[:, chunk.slot])
        else:
          frames.append(xt)
          targets.append(v)
    valid = (layout_lib.validity(lay, draws["position"]) if self.temporal
             else None)
    return layout_lib.pack(frames, self.patch), targets, valid

  def _timestep(self, stage, t):
    """The scalar the DiT embeds for local time(s) t of a stage."""
    return pyramid.model_timestep(
        t, self.windows[stage],
        self.ts_windows[stage] if self.ts_windows else None)

  def _timesteps(self, t, stages):
    """f32[B, S] embedded scalars of segments at local times t[B, S]."""
    return jnp.stack([self._timestep(i, t[:, j])
                      for j, i in enumerate(stages)], axis=1)

  def _loss_at(self, params, draws, drop_rng, train: bool):
    """Mean velocity MSE (segments weighted equally) and per-stage MSEs."""
    del drop_rng, train  # the DiT has no dropout
    lay = self.train_layout
    tokens, targets, valid = self._inputs(draws)
    pred = self.model.apply({"params": params}, tokens, lay,
                            self._timesteps(draws["t"], lay.stages),
                            draws.get("labels"), valid)
    per_seg = [[] for _ in lay.stages]
    for chunk, target in zip(lay.targets(), targets):
      err = layout_lib.take(pred, chunk, self.patch) - target
      per_seg[chunk.segment].append(
          jnp.mean(jnp.square(err), axis=tuple(range(1, err.ndim))))
    seg_mse = jnp.stack([jnp.mean(jnp.stack(m), axis=0) for m in per_seg],
                        axis=1)  # [rows, S]
    metrics = {}
    for i in range(self.num_stages):
      cols = [j for j, st in enumerate(lay.stages) if st == i]
      metrics[f"mse_stage{i}"] = jnp.mean(seg_mse[:, cols])
    return jnp.mean(seg_mse), metrics

  def train_step(self, state, batch, rng) -> Tuple[Any, Dict[str, jax.Array]]:
    draws, drop_rng = self._draws(batch, rng, train=True)
    return self.model_step(
        state, lambda p, dr, r: self._loss_at(p, dr, r, train=True), draws,
        drop_rng)

  def eval_step(self, state, batch, rng) -> Dict[str, jax.Array]:
    draws, drop_rng = self._draws(batch, rng, train=False)
    loss, aux = self._loss_at(state.params["model"], draws, drop_rng,
                              train=False)
    return dict(aux, loss=loss)

  # -- sampling ---------------------------------------------------------------

  def stage_velocity(self, params, stage: int, x, t, labels, clip=None,
                     position=None):
    """Guided velocity of one stage at local time t for a batch of frames.

    Args:
      params: DiT parameters.
      stage: stage index (0 = lowest resolution).
      x: f[B, h, w, C] (or f[B, T, h, w, C] for full-sequence video) at the
        stage's resolution.
      t: scalar local time t'.
      labels: i32[B] or None.
      clip: temporal pyramid: f[B, T, H, W, C] frames generated so far.
      position: temporal pyramid: i32 scalar index of the frame being made.

    Returns:
      f32 like x.
    """
    lay = self.stage_layout(stage)
    num = x.shape[0]
    history = {}
    if self.temporal:
      for c in lay.chunks:
        if c.lag:
          frame = jax.lax.dynamic_index_in_dim(
              clip, jnp.maximum(position - c.lag, 0), axis=1, keepdims=False)
          history[c.slot] = pyramid.down(frame, c.level)
      pos = jnp.full((num, 1), position, jnp.int32)

    def v_fn(xb, ts, lab):
      reps = xb.shape[0] // num
      frames = []
      for c in lay.chunks:
        if c.lag:
          frames.append(jnp.concatenate([history[c.slot]] * reps))
        elif self.frames and not self.temporal:
          frames.append(xb[:, c.slot])
        else:
          frames.append(xb)
      valid = (layout_lib.validity(lay, jnp.concatenate([pos] * reps))
               if self.temporal else None)
      out = self.model.apply({"params": params},
                             layout_lib.pack(frames, self.patch), lay,
                             ts[:, None], None if lab is None else
                             lab[:, None], valid)
      got = [layout_lib.take(out, c, self.patch) for c in lay.targets()]
      return got[0] if len(got) == 1 else jnp.stack(got, axis=1)

    ts = jnp.broadcast_to(self._timestep(stage, t), (num,))
    return paths.guided_velocity(
        v_fn, x, ts, labels, self.num_classes if self.num_classes else None,
        float(self.config.flow.guidance_scale))

  def sample(self, state, rng, num: int, labels=None) -> jax.Array:
    """Draws `num` samples (EMA parameters if kept).

    Args:
      state: train state.
      rng: PRNG key.
      num: number of samples.
      labels: i32[num] classes (default: classes in turn).

    Returns:
      f32[num, H, W, C] images, or f32[num, T, H, W, C] clips; clipped to
      [-1, 1] unless the dataset is latents.
    """
    params = (state.ema_params or state.params)["model"]
    if self.num_classes and labels is None:
      labels = jnp.arange(num, dtype=jnp.int32) % self.num_classes
    if not self.num_classes:
      labels = None
    steps = tuple(self.config.flow.sample_steps)
    renoise = bool(self.config.pyramid.get("renoise", True))
    frame = (num, self.size, self.size, self.channels)

    if self.temporal:
      def frame_fn(key, clip, position):
        vel = lambda i, x, t: self.stage_velocity(  # pylint: disable=g-long-lambda
            params, i, x, t, labels, clip, position)
        return samplers.pyramid_sample(vel, key, frame, self.windows, steps,
                                       renoise)
      out = samplers.autoregressive_sample(
          frame_fn, rng, (num, self.frames) + frame[1:])
    else:
      shape = ((num, self.frames) + frame[1:]) if self.frames else frame
      vel = lambda i, x, t: self.stage_velocity(params, i, x, t, labels)
      if self.single_stage:
        out = samplers.flow_sample(lambda x, t: vel(0, x, t), rng, shape,
                                   steps[0])
      else:
        out = samplers.pyramid_sample(vel, rng, shape, self.windows, steps,
                                      renoise)
    if latent_decode.latent_dir(self.config.dataset) is None:
      out = jnp.clip(out, -1.0, 1.0)
    return out

  # -- accounting -------------------------------------------------------------

  def flops_per_example(self) -> float:
    """3 × the DiT forward FLOPs of a packed row / examples per row."""
    lay = self.train_layout
    return 3.0 * dit.forward_flops(self.kwargs, lay) / len(lay.stages)

  def sampling_flops_per_example(self) -> float:
    """DiT forward FLOPs to sample one image or clip (×2 with guidance)."""
    steps = tuple(self.config.flow.sample_steps)
    per = sum(n * dit.forward_flops(self.kwargs, self.stage_layout(i))
              for i, n in enumerate(steps))
    if self.num_classes and float(self.config.flow.guidance_scale) != 1.0:
      per *= 2
    return float(per * (self.frames if self.temporal else 1))

  def tokens_per_example(self) -> Dict[str, float]:
    """Tokens in a train row per example, and in each sampling stage."""
    out = {"train": self.train_layout.length / len(self.segment_stages)}
    for i in range(self.num_stages):
      out[f"stage{i}"] = float(self.stage_layout(i).length)
    return out


@registry.OBJECTIVES.register("flow_matching")
class FlowMatching(PyramidalFlow):
  """Rectified flow at full resolution: one stage, window (0, 1).

  Video clips are one full-sequence segment with bidirectional attention
  (the full-sequence baseline of the paper's Sec. 4.2); `config.pyramid` is
  ignored.
  """

  single_stage = True

