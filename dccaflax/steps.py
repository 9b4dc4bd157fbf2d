"""The SGD step: train state, optimizer, the objective, one step or K fused.

The recipe (Dorfer, Arzt, Widmer 2016, Sec. 3.1): SGD with momentum 0.9,
batch 100, learning rate 0.1 halved every 25 epochs, loss = minus the total
canonical correlation of the two towers' outputs on the batch
(``cca.dcca_loss``).  The loss is the static ``objective`` argument of every
step (``objectives.Objective``, from ``TrainConfig.objective``; default the
paper's), called through ``dccaflax.objectives.REGISTRY``.

Data stay on the device: a ``pieceset.PieceSet`` is put there once and
every step cuts its batch's windows (``input_pipeline.batch_windows``) from
pair indices, with a uniform choice among the prepared audio renderings
loaded with ``TrainConfig.renderings`` and the augmentations of
``dccaflax.augment`` (``TrainConfig.augment``) drawn on the device: window
offsets, what a recording does to a spectrogram and what engraving and
scanning do to a score.  ``train_step`` takes one step per jitted call;
``train_chunk`` runs up to ``steps_per_dispatch`` of them in one call,
slicing its batches from the epoch's order on the device.  Both trace the
same pure ``_step``.  A step whose loss or gradient is not finite changes
nothing but the skip counters.

Augmentation keys are folded from the run's seed and the step number, so a
resumed run replays exactly the augmentation of an uninterrupted one.  On
several devices the batch is split over a data mesh
(``dccaflax.sharding``); BatchNorm statistics and the objective's batch
statistics (covariances, similarities) stay global.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from dccaflax import augment as augment_lib
from dccaflax import input_pipeline
from dccaflax import models
from dccaflax import objectives as objectives_lib
from dccaflax import pieceset

_OFF = augment_lib.AugmentConfig()   # no augmentation
_PAPER = objectives_lib.Objective()  # the paper's DCCA loss


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
                   *, model: models.DCCAModel, reg: float,
                   objective: objectives_lib.Objective = _PAPER):
  """The objective's loss of one batch, its gradient and the new BatchNorm
  statistics.

  Under ``jit`` with the batch sharded over a device mesh (see
  ``sharding.data_mesh``), BatchNorm means/variances and the objective's
  covariances and similarities are reductions over the batch axis of the
  *global* arrays, so XLA inserts the cross-device all-reduces and the
  result equals the one-device one.

  Args:
    params, batch_stats: the towers' variables.
    sheets: (B, 40, 100) uint8 windows; specs: (B, 136, 100) float32.
    model: the towers (any compute dtype; outputs are float32).
    reg: covariance ridge of the objective.
    objective: the loss (default the paper's, ``-cca.total_correlation``).

  Returns:
    ``((loss, new_batch_stats), grads)``: loss () float32; grads like
    ``params`` (float32).
  """
  def loss_fn(p):
    (fx, gy), updates = model.apply(
        {'params': p, 'batch_stats': batch_stats}, sheets, specs,
        train=True, mutable=['batch_stats'])
    return objective.loss(fx, gy, reg), updates['batch_stats']
  return jax.value_and_grad(loss_fn, has_aux=True)(params)


def _constrain(x, sharding):
  return x if sharding is None else jax.lax.with_sharding_constraint(
      x, sharding)


def augmented_batch(arrays: pieceset.Arrays, idx: jax.Array, rng: jax.Array,
                    augment: augment_lib.AugmentConfig
                    ) -> tuple[jax.Array, jax.Array]:
  """The windows of the pairs ``idx`` as a step draws them from its key
  ``rng`` (traced; ``augment`` static).

  Each pair's rendering (uniform, where ``arrays`` hold several), then the
  augmentations of ``augment`` (``dccaflax.augment``): the window offsets,
  the audio, the sheets.

  Returns:
    ``(sheets, specs)``: (B, 40, 100) uint8 and (B, 136, 100) float32.
  """
  offsets = augment_lib.offsets(rng, idx.shape[0], augment)
  rendering = 0
  n_renderings = arrays.frame.shape[0]   # static
  if n_renderings > 1:
    rendering = input_pipeline.random_renderings(
        jax.random.fold_in(rng, 1), idx.shape[0], n_renderings)
  sheets, specs = input_pipeline.batch_windows(
      arrays, idx, rendering, **offsets,
      margin=augment_lib.margin(augment, augment_lib.AUDIO),
      sheet_margin=augment_lib.margin(augment, augment_lib.SHEET))
  specs = augment_lib.apply(augment_lib.AUDIO, jax.random.fold_in(rng, 2),
                            specs, augment)
  sheets = augment_lib.apply(augment_lib.SHEET, jax.random.fold_in(rng, 3),
                             sheets, augment)
  return sheets, specs


def _step(state: TrainState, arrays: pieceset.Arrays, idx: jax.Array,
          model: models.DCCAModel, optimizer: optax.GradientTransformation,
          reg: float, augment: augment_lib.AugmentConfig, seed: int,
          batch_sharding, objective: objectives_lib.Objective
          ) -> tuple[TrainState, dict]:
  """The body of ``train_step`` and of ``train_chunk`` (traced, not jitted)."""
  idx = _constrain(idx, batch_sharding)
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  sheets, specs = augmented_batch(arrays, idx, rng, augment)
  sheets = _constrain(sheets, batch_sharding)
  specs = _constrain(specs, batch_sharding)
  (loss, batch_stats), grads = loss_and_grads(
      state.params, state.batch_stats, sheets, specs, model=model, reg=reg,
      objective=objective)
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
           augment: augment_lib.AugmentConfig, seed, max_steps: int,
           batch_sharding, objective: objectives_lib.Objective
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
                     batch_sharding, objective)
    metrics = {k: metrics[k].at[i].set(m[k].astype(metrics[k].dtype))
               for k in metrics}
    return state, metrics

  return jax.lax.fori_loop(0, count, body, (state, metrics))


@functools.partial(jax.jit, static_argnames=(
    'model', 'optimizer', 'reg', 'augment', 'max_steps', 'batch_sharding',
    'objective'))
def train_chunk(state: TrainState, arrays: pieceset.Arrays,
                order: jax.Array, start: jax.Array, count: jax.Array, *,
                model: models.DCCAModel,
                optimizer: optax.GradientTransformation, reg: float,
                augment: augment_lib.AugmentConfig = _OFF, seed: int,
                max_steps: int = 1, batch_sharding=None,
                objective: objectives_lib.Objective = _PAPER
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
    state, arrays, model, optimizer, reg, augment, seed, batch_sharding,
      objective: as ``train_step``.
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
                augment, seed, max_steps, batch_sharding, objective)


@functools.partial(jax.jit, static_argnames=('model', 'optimizer', 'reg',
                                             'augment', 'batch_sharding',
                                             'objective'))
def train_step(state: TrainState, arrays: pieceset.Arrays,
               idx: jax.Array, *, model: models.DCCAModel,
               optimizer: optax.GradientTransformation, reg: float,
               augment: augment_lib.AugmentConfig = _OFF, seed: int,
               batch_sharding=None,
               objective: objectives_lib.Objective = _PAPER
               ) -> tuple[TrainState, dict]:
  """One SGD step on the pairs ``idx`` of ``arrays``; skips non-finite ones.

  The default loop (``steps_per_dispatch=1``); ``train_chunk`` fuses several.

  Args:
    state: current ``TrainState``.
    arrays: device ``pieceset.Arrays`` of the training pieces.
    idx: (B,) int32 pair indices.
    model, optimizer, reg: static; ``reg`` is the objective's covariance
      ridge.
    augment: static ``augment.AugmentConfig``; its augmentations (and, when
      ``arrays`` hold R > 1 renderings, each pair's rendering, uniform) are
      drawn from ``fold_in(key(seed), state.step)``, so a replay draws the
      same ones.
    seed: base seed of the augmentation keys, () int, required (traced:
      one compiled step serves every seed, as in ``train_step_models``; a
      Python default would be a constant, another program).
    batch_sharding: ``NamedSharding`` of a batch over a device mesh
      (``sharding.placement``, ``PartitionSpec('data')``), or None (one
      device): the indices, windows and hence the towers' activations are
      split along the batch axis (static in ``train_chunk``).
    objective: static ``objectives.Objective``, the loss (default the
      paper's DCCA).

  Returns:
    ``(new_state, metrics)``: metrics 'loss' () float32 (the objective's;
    NaN/inf when skipped), 'finite' () bool, 'skip_run' ()
    int32.  When the loss or any gradient is non-finite, params,
    batch_stats and opt_state are returned unchanged, ``skipped`` and
    ``skip_run`` grow by one; otherwise ``skip_run`` resets to 0.
  """
  return _step(state, arrays, idx, model, optimizer, reg, augment, seed,
               batch_sharding, objective)


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
                                             'augment', 'objective'))
def train_step_models(states: TrainState, arrays: pieceset.Arrays,
                      idx: jax.Array, seeds: jax.Array, *,
                      model: models.DCCAModel,
                      optimizer: optax.GradientTransformation, reg: float,
                      augment: augment_lib.AugmentConfig = _OFF,
                      objective: objectives_lib.Objective = _PAPER
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
    model, optimizer, reg, augment, objective: static, as ``train_step``.

  Returns:
    ``(new_states, metrics)``, metrics as ``train_step``'s with a leading
    axis of K.
  """
  step = lambda state, i, seed: _step(state, arrays, i, model, optimizer,
                                      reg, augment, seed, None, objective)
  return jax.vmap(step)(states, idx, seeds)


@functools.partial(jax.jit, static_argnames=('model', 'optimizer', 'reg',
                                             'augment', 'max_steps',
                                             'objective'))
def train_chunk_models(states: TrainState, arrays: pieceset.Arrays,
                       orders: jax.Array, start: jax.Array,
                       count: jax.Array, seeds: jax.Array, *,
                       model: models.DCCAModel,
                       optimizer: optax.GradientTransformation, reg: float,
                       augment: augment_lib.AugmentConfig = _OFF,
                       max_steps: int = 1,
                       objective: objectives_lib.Objective = _PAPER
                       ) -> tuple[TrainState, dict]:
  """``train_chunk`` for K models side by side (``jax.vmap`` of the chunk).

  Args:
    states, arrays, seeds, model, optimizer, reg, augment, objective: as
      ``train_step_models``.
    orders: (K, S, B) int32, each model's epoch order on the device.
    start, count, max_steps: as ``train_chunk`` (the same for all models).

  Returns:
    ``(new_states, metrics)``, metrics as ``train_chunk``'s with a leading
    axis of K.
  """
  chunk = lambda state, order, seed: _chunk(
      state, arrays, order, start, count, model, optimizer, reg, augment,
      seed, max_steps, None, objective)
  return jax.vmap(chunk)(states, orders, seeds)
