"""The SGD step: train state, optimizer, DCCA loss, one step or K fused.

The recipe (Dorfer, Arzt, Widmer 2016, Sec. 3.1): SGD with momentum 0.9,
batch 100, learning rate 0.1 halved every 25 epochs, loss = minus the total
canonical correlation of the two towers' outputs on the batch
(``cca.dcca_loss``).

Data stay on the device: a ``pieceset.PieceSet`` is put there once and
every step cuts its batch's windows (``input_pipeline.batch_windows``) from
pair indices, with augmentation drawn on the device (sheet shifts, onset
jitter, a uniform choice among the prepared audio renderings loaded with
``TrainConfig.renderings``, a random gain and gain curve per excerpt,
``dccaflax.level``, and what a recording does to a spectrogram,
``dccaflax.audio_augment``: time stretch, tuning, EQ, a noise floor and
masks, and a horizontal sheet scale, ``dccaflax.sheet_augment``).  ``train_step`` takes one step per jitted call;
``train_chunk`` runs up to ``steps_per_dispatch`` of them in one call,
slicing its batches from the epoch's order on the device.  Both trace the
same pure ``_step``.  A step whose loss or gradient is not finite changes
nothing but the skip counters.

Augmentation keys are folded from the run's seed and the step number, so a
resumed run replays exactly the augmentation of an uninterrupted one.  On
several devices the batch is split over a data mesh
(``dccaflax.sharding``); BatchNorm statistics and DCCA covariances stay
global.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from dccaflax import audio_augment
from dccaflax import cca
from dccaflax import config as config_lib
from dccaflax import input_pipeline
from dccaflax import level
from dccaflax import models
from dccaflax import pieceset
from dccaflax import sheet_augment
from dccaflax import snippets


class Augment(NamedTuple):
  """Static augmentation maxima of a step (hashable; a plain tuple of the
  first three works too)."""
  dx: int = 0             # sheet shift, px
  dy: int = 0             # vertical sheet shift, px
  dframe: int = 0         # onset jitter, frames
  gain_db: float = 0.0    # global gain per excerpt, +-dB
  curve_db: float = 0.0   # slow gain curve within an excerpt, dB
  eq_db: float = 0.0      # spectral tilt / random EQ scale, dB
  noise_db: float = 0.0   # loudest noise floor, dB below the peak (0 = off)
  tune_bins: float = 0.0  # tuning deviation, +-bins
  stretch: float = 0.0    # time stretch factor 1 +- this
  time_mask: int = 0      # widest silenced band of frames
  freq_mask: int = 0      # widest silenced band of bins
  sheet_scale: float = 0.0  # sheet scale factor up to 1 + this (and 1/it)
  sheet_rotate: float = 0.0    # sheet rotation, +-degrees
  sheet_zoom: float = 0.0      # isotropic sheet zoom up to 1 + this
  sheet_stroke: float = 0.0    # stroke thickening / thinning strength
  sheet_blur: float = 0.0      # Gaussian blur sigma up to this, px
  sheet_contrast: float = 0.0  # faint ink, grey paper, threshold
  sheet_noise: float = 0.0     # grain and speckles

  @property
  def sheet_scan(self) -> tuple[float, ...]:
    """The ``sheet_augment.scan`` settings, in its argument order."""
    return (self.sheet_rotate, self.sheet_zoom, self.sheet_stroke,
            self.sheet_blur, self.sheet_contrast, self.sheet_noise)


def augment_of(config: config_lib.TrainConfig) -> Augment:
  """The config's augmentation, checked.

  Raises:
    ValueError: an offset beyond the strip margin or the silence pad, a
      negative range, or one beyond its limit, naming the setting.
  """
  aug = Augment(config.aug_dx, config.aug_dy, config.aug_dframe,
                float(config.aug_gain_db), float(config.aug_gain_curve_db),
                float(config.aug_eq_db), float(config.aug_noise_db),
                float(config.aug_tune_bins), float(config.aug_stretch),
                int(config.aug_time_mask), int(config.aug_freq_mask),
                float(config.aug_sheet_scale),
                *(float(getattr(config, f'aug_sheet_{name}'))
                  for name in sheet_augment.SCAN_LIMITS))
  pieceset.check_augmentation(aug.dx, aug.dy, aug.dframe)
  limits = {'aug_gain_db': (aug.gain_db, float('inf')),
            'aug_gain_curve_db': (aug.curve_db, float('inf')),
            'aug_eq_db': (aug.eq_db, float('inf')),
            'aug_noise_db': (aug.noise_db, float('inf')),
            'aug_tune_bins': (aug.tune_bins, audio_augment.MAX_TUNE_BINS),
            'aug_stretch': (aug.stretch, audio_augment.MAX_STRETCH),
            'aug_time_mask': (aug.time_mask, snippets.SPEC_FRAMES),
            'aug_freq_mask': (aug.freq_mask, snippets.SPEC_BINS),
            'aug_sheet_scale': (aug.sheet_scale, sheet_augment.MAX_SCALE),
            **{f'aug_sheet_{name}': (value, sheet_augment.SCAN_LIMITS[name])
               for name, value in zip(sheet_augment.SCAN_LIMITS,
                                      aug.sheet_scan)}}
  for name, (value, most) in limits.items():
    if not 0 <= value <= most:   # also refuses nan
      raise ValueError(f'{name} must be in [0, {most}], got {value}')
  return aug


# --------------------------------------------------------------------------
# Train state and optimizer
# --------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
  """Everything a step changes (a pytree; checkpointed as is).

  Attributes:
    step: () int32, steps taken (batches consumed, skipped ones included).
    params: model parameters.
    batch_stats: BatchNorm running averages.
    opt_state: optax state (its count advances only on applied updates).
    skipped: () int32, steps skipped for a non-finite loss or gradient.
    skip_run: () int32, consecutive skipped steps up to now.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  skipped: jax.Array
  skip_run: jax.Array

  @property
  def variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}


def lr_schedule(learning_rate: float, halve_every_epochs: int,
                steps_per_epoch: int) -> optax.Schedule:
  """``learning_rate * 0.5 ** floor(step / (halve_every * steps_per_epoch))``."""
  return optax.exponential_decay(
      init_value=learning_rate,
      transition_steps=max(1, halve_every_epochs * steps_per_epoch),
      decay_rate=0.5, staircase=True)


@functools.lru_cache(maxsize=16)
def make_optimizer(lr: float = 0.1, momentum: float = 0.9,
                   halve_every_epochs: int = 25,
                   steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """SGD with heavy-ball momentum and a learning rate halved every N epochs.

  optax's momentum accumulates gradients (``m = g + mu m``, update
  ``-lr m``), which equals Lasagne's ``momentum`` update (the paper's) while
  the learning rate is constant.  Cached: equal arguments return the same
  object, so repeated runs in one process reuse the compiled ``train_step``
  (the optimizer is one of its static arguments).
  """
  return optax.sgd(lr_schedule(lr, halve_every_epochs, steps_per_epoch),
                   momentum=momentum)


def create_train_state(rng: jax.Array, model: models.DCCAModel,
                       optimizer: optax.GradientTransformation) -> TrainState:
  """Initial parameters, BatchNorm statistics and optimizer state."""
  variables = models.init_variables(rng, model)
  params = variables['params']
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, params=params,
                    batch_stats=variables['batch_stats'],
                    opt_state=optimizer.init(params), skipped=zero,
                    skip_run=zero)


# --------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves))


def loss_and_grads(params, batch_stats, sheets: jax.Array, specs: jax.Array,
                   *, model: models.DCCAModel, reg: float):
  """DCCA loss of one batch, its gradient and the new BatchNorm statistics.

  Under ``jit`` with the batch sharded over a device mesh (see
  ``sharding.data_mesh``), BatchNorm means/variances and the DCCA
  covariances are reductions over the batch axis of the *global* arrays, so
  XLA inserts the cross-device all-reduces and the result equals the
  one-device one.

  Args:
    params, batch_stats: the towers' variables.
    sheets: (B, 40, 100) uint8 windows; specs: (B, 136, 100) float32.
    model: the towers (any compute dtype; outputs are float32).
    reg: DCCA covariance ridge.

  Returns:
    ``((loss, new_batch_stats), grads)``: loss () float32 = -total
    correlation; grads like ``params`` (float32).
  """
  def loss_fn(p):
    (fx, gy), updates = model.apply(
        {'params': p, 'batch_stats': batch_stats}, sheets, specs,
        train=True, mutable=['batch_stats'])
    return cca.dcca_loss(fx, gy, reg), updates['batch_stats']
  return jax.value_and_grad(loss_fn, has_aux=True)(params)


def _constrain(x, sharding):
  return x if sharding is None else jax.lax.with_sharding_constraint(
      x, sharding)


def augment_audio(key: jax.Array, specs: jax.Array,
                  augment: Augment) -> jax.Array:
  """The audio augmentations of a step, in a recording's order (traced).

  Args:
    key: PRNG key of the step.
    specs: ``(B, 136, 100)`` excerpts, or ``(B, 136, 100 + 2 *
      audio_augment.MARGIN)`` where ``augment.stretch`` (cut wider).
    augment: the static ``Augment``; the audio settings that are 0 are
      skipped (no op traced).

  Returns:
    ``(B, 136, 100)`` float32: stretched, retuned, equalised, re-levelled
    (gain and gain curve), with a noise floor, masked.
  """
  augment = Augment(*augment)
  keys = jax.random.split(key, 6)
  if augment.stretch:
    specs = audio_augment.stretch_time(keys[0], specs, augment.stretch)
  if augment.tune_bins:
    specs = audio_augment.shift_bins(keys[1], specs, augment.tune_bins)
  if augment.eq_db:
    specs = audio_augment.random_eq(keys[2], specs, augment.eq_db)
  if augment.gain_db or augment.curve_db:
    # The key of the step's gains since they were the only audio
    # augmentation: runs that use them alone replay as before.
    specs = level.relevel(specs, level.random_gains(
        key, specs.shape[0], specs.shape[-1], augment.gain_db,
        augment.curve_db, snippets.FPS))
  if augment.noise_db:
    specs = audio_augment.add_noise_floor(keys[4], specs, augment.noise_db)
  if augment.time_mask or augment.freq_mask:
    specs = audio_augment.mask(keys[5], specs, augment.time_mask,
                               augment.freq_mask)
  return specs


def augment_sheets(key: jax.Array, sheets: jax.Array,
                   augment: Augment) -> jax.Array:
  """The sheet augmentations of a step (traced).

  Args:
    key: PRNG key of the step's sheets.
    sheets: ``(B, 40, 100)`` snippets, or ``(B, 40, 100 + 2 *
      sheet_augment.MARGIN)`` where ``augment.sheet_scale`` (cut wider).
    augment: the static ``Augment``; settings that are 0 are skipped.

  Returns:
    ``(B, 40, 100)`` uint8: rescaled horizontally, then as scanned
    (``sheet_augment.scan``).
  """
  augment = Augment(*augment)
  if augment.sheet_scale:
    sheets = sheet_augment.scale_width(key, sheets, augment.sheet_scale)
  if any(augment.sheet_scan):
    sheets = sheet_augment.scan(jax.random.fold_in(key, 1), sheets,
                                *augment.sheet_scan)
  return sheets


def _step(state: TrainState, arrays: pieceset.Arrays, idx: jax.Array,
          model: models.DCCAModel, optimizer: optax.GradientTransformation,
          reg: float, augment: Augment, seed: int,
          batch_sharding) -> tuple[TrainState, dict]:
  """The body of ``train_step`` and of ``train_chunk`` (traced, not jitted)."""
  augment = Augment(*augment)
  idx = _constrain(idx, batch_sharding)
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  offsets = (0, 0, 0)
  if any(augment[:3]):
    offsets = input_pipeline.random_offsets(rng, idx.shape[0], *augment[:3])
  rendering = 0
  n_renderings = arrays.frame.shape[0]   # static
  if n_renderings > 1:
    rendering = input_pipeline.random_renderings(
        jax.random.fold_in(rng, 1), idx.shape[0], n_renderings)
  margin = audio_augment.MARGIN if augment.stretch else 0
  sheet_margin = sheet_augment.MARGIN if augment.sheet_scale else 0
  sheets, specs = input_pipeline.batch_windows(arrays, idx, rendering,
                                               *offsets, margin, sheet_margin)
  specs = augment_audio(jax.random.fold_in(rng, 2), specs, augment)
  sheets = augment_sheets(jax.random.fold_in(rng, 3), sheets, augment)
  sheets = _constrain(sheets, batch_sharding)
  specs = _constrain(specs, batch_sharding)
  (loss, batch_stats), grads = loss_and_grads(
      state.params, state.batch_stats, sheets, specs, model=model, reg=reg)
  finite = jnp.isfinite(loss) & _all_finite(grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jax.tree.map(
      lambda a, b: jnp.where(finite, a, b), new, old)
  skip = (~finite).astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1,
      params=keep(params, state.params),
      batch_stats=keep(batch_stats, state.batch_stats),
      opt_state=keep(opt_state, state.opt_state),
      skipped=state.skipped + skip,
      skip_run=(state.skip_run + 1) * skip)
  return new_state, {'loss': loss, 'finite': finite,
                     'skip_run': new_state.skip_run}


def _chunk(state: TrainState, arrays: pieceset.Arrays, order: jax.Array,
           start: jax.Array, count: jax.Array, model, optimizer, reg: float,
           augment: Augment, seed, max_steps: int, batch_sharding
           ) -> tuple[TrainState, dict]:
  """The body of ``train_chunk`` (traced, not jitted): a ``fori_loop`` of
  ``_step`` over rows ``start ... start + count - 1`` of ``order``."""
  metrics = {'loss': jnp.full((max_steps,), jnp.nan, jnp.float32),
             'finite': jnp.zeros((max_steps,), bool),
             'skip_run': jnp.full((max_steps,), -1, jnp.int32)}

  def body(i, carry):
    state, metrics = carry
    idx = jax.lax.dynamic_index_in_dim(order, start + i, keepdims=False)
    state, m = _step(state, arrays, idx, model, optimizer, reg, augment, seed,
                     batch_sharding)
    metrics = {k: metrics[k].at[i].set(m[k].astype(metrics[k].dtype))
               for k in metrics}
    return state, metrics

  return jax.lax.fori_loop(0, count, body, (state, metrics))


@functools.partial(jax.jit, static_argnames=(
    'model', 'optimizer', 'reg', 'augment', 'seed', 'max_steps',
    'batch_sharding'))
def train_chunk(state: TrainState, arrays: pieceset.Arrays,
                order: jax.Array, start: jax.Array, count: jax.Array, *,
                model: models.DCCAModel,
                optimizer: optax.GradientTransformation, reg: float,
                augment: Augment = Augment(), seed: int = 0,
                max_steps: int = 1, batch_sharding=None
                ) -> tuple[TrainState, dict]:
  """``count`` fused SGD steps in one dispatch: batches ``order[start:start +
  count]`` one after the other, exactly as ``count`` calls of ``train_step``.

  A ``lax.fori_loop`` on the device over rows of the epoch's batch order (the
  indices never go back to the host); the trip count is dynamic, so one
  compiled function serves full chunks and an epoch's shorter last chunk.
  The loop body is compiled on its own, so the parameters after N steps are
  bit-identical whatever the chunk sizes; against ``train_step`` (XLA fuses a
  plain step differently) they agree up to float rounding -- which the DCCA
  gradient of a small batch can amplify, e.g. where rounding flips a
  max-pool tie on blank paper.  On CPU (XLA:CPU, jax 0.10) a step inside the
  loop ran ~2.7x slower than ``train_step`` (0.40 vs 1.1 s, width 0.25,
  batch 32): use ``steps_per_dispatch=1`` there.

  Args:
    state, arrays, model, optimizer, reg, augment, seed, batch_sharding: as
      ``train_step``.
    order: (S, B) int32, the epoch's batches (``input_pipeline.epoch_batches``)
      on the device (rows sharded like ``batch_sharding`` on several devices).
    start: () int32, first row of this chunk.
    count: () int32, steps to take, ``1 <= count <= max_steps`` and
      ``start + count <= S``.
    max_steps: static, the size of the metrics buffers (the chunk size).

  Returns:
    ``(new_state, metrics)``: metrics 'loss' (max_steps,) float32,
    'finite' (max_steps,) bool, 'skip_run' (max_steps,) int32 per step;
    entries from ``count`` on are NaN / False / -1 (not taken).
  """
  return _chunk(state, arrays, order, start, count, model, optimizer, reg,
                augment, seed, max_steps, batch_sharding)


@functools.partial(jax.jit, static_argnames=('model', 'optimizer', 'reg',
                                             'augment', 'seed',
                                             'batch_sharding'))
def train_step(state: TrainState, arrays: pieceset.Arrays,
               idx: jax.Array, *, model: models.DCCAModel,
               optimizer: optax.GradientTransformation, reg: float,
               augment: Augment = Augment(), seed: int = 0,
               batch_sharding=None) -> tuple[TrainState, dict]:
  """One SGD step on the pairs ``idx`` of ``arrays``; skips non-finite ones.

  The default loop (``steps_per_dispatch=1``); ``train_chunk`` fuses several.

  Args:
    state: current ``TrainState``.
    arrays: device ``pieceset.Arrays`` of the training pieces.
    idx: (B,) int32 pair indices.
    model, optimizer, reg: static; ``reg`` is the DCCA covariance ridge.
    augment: static ``Augment`` maxima (or ``(max_dx, max_dy,
      max_dframe)``); offsets, gains (and, when ``arrays`` hold R > 1
      renderings, each pair's rendering, uniform) are drawn from
      ``fold_in(key(seed), state.step)``, so a replay draws the same ones.
    seed: static base seed of the augmentation keys.
    batch_sharding: ``NamedSharding`` of a batch over a device mesh
      (``sharding.placement``, ``PartitionSpec('data')``), or None (one
      device): the indices, windows and hence the towers' activations are
      split along the batch axis (static in ``train_chunk``).

  Returns:
    ``(new_state, metrics)``: metrics 'loss' () float32 (= -total
    correlation, NaN/inf when skipped), 'finite' () bool, 'skip_run' ()
    int32.  When the loss or any gradient is non-finite, params,
    batch_stats and opt_state are returned unchanged, ``skipped`` and
    ``skip_run`` grow by one; otherwise ``skip_run`` resets to 0.
  """
  return _step(state, arrays, idx, model, optimizer, reg, augment, seed,
               batch_sharding)


# --------------------------------------------------------------------------
# Several models side by side
# --------------------------------------------------------------------------


def stack(states) -> TrainState:
  """K states -> one whose every leaf has a leading axis of K models."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def unstack(states: TrainState, k: int) -> TrainState:
  """Model ``k`` of ``stack``ed states."""
  return jax.tree.map(lambda leaf: leaf[k], states)


@functools.partial(jax.jit, static_argnames=('model', 'optimizer', 'reg',
                                             'augment'))
def train_step_models(states: TrainState, arrays: pieceset.Arrays,
                      idx: jax.Array, seeds: jax.Array, *,
                      model: models.DCCAModel,
                      optimizer: optax.GradientTransformation, reg: float,
                      augment: Augment = Augment()
                      ) -> tuple[TrainState, dict]:
  """One SGD step of each of K models in one call (``jax.vmap`` of the step).

  At batch 100 one model leaves an accelerator mostly idle (small
  convolutions, kernel launches); K models side by side cost little more
  than one.  Model ``k`` takes exactly the step ``train_step`` takes with
  its own state, batch and seed (up to float rounding: vmapped convolutions
  are batched differently): its augmentation keys come from its seed.

  Args:
    states: ``stack``ed ``TrainState`` of K models (one device).
    arrays: device ``Arrays`` shared by all models.
    idx: (K, B) int32, each model's batch.
    seeds: (K,) int32, each model's seed (traced: one compiled step for any).
    model, optimizer, reg, augment: static, as ``train_step``.

  Returns:
    ``(new_states, metrics)``, metrics as ``train_step``'s with a leading
    axis of K.
  """
  step = lambda state, i, seed: _step(state, arrays, i, model, optimizer,
                                      reg, augment, seed, None)
  return jax.vmap(step)(states, idx, seeds)


@functools.partial(jax.jit, static_argnames=('model', 'optimizer', 'reg',
                                             'augment', 'max_steps'))
def train_chunk_models(states: TrainState, arrays: pieceset.Arrays,
                       orders: jax.Array, start: jax.Array,
                       count: jax.Array, seeds: jax.Array, *,
                       model: models.DCCAModel,
                       optimizer: optax.GradientTransformation, reg: float,
                       augment: Augment = Augment(), max_steps: int = 1
                       ) -> tuple[TrainState, dict]:
  """``train_chunk`` for K models side by side (``jax.vmap`` of the chunk).

  Args:
    states, arrays, seeds, model, optimizer, reg, augment: as
      ``train_step_models``.
    orders: (K, S, B) int32, each model's epoch order on the device.
    start, count, max_steps: as ``train_chunk`` (the same for all models).

  Returns:
    ``(new_states, metrics)``, metrics as ``train_chunk``'s with a leading
    axis of K.
  """
  chunk = lambda state, order, seed: _chunk(
      state, arrays, order, start, count, model, optimizer, reg, augment,
      seed, max_steps, None)
  return jax.vmap(chunk)(states, orders, seeds)
