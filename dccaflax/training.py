"""The training loop: train, evaluate, checkpoint; resume from the workdir.

``train_and_evaluate`` reads like the Flax examples' loop: load the pieces,
place them on the device(s) (``sharding``), build the model and optimizer
(``steps``), resume from the last checkpoint if there is one, then per epoch
run the SGD steps and, every ``eval_every`` epochs, fit the CCA and validate
(``validation.validate``), checkpoint the last and the best state
(``checkpoints``) and log the metrics (``history.jsonl``, TensorBoard, a
progress line, ``training_curve.png`` at the end).  The workdir layout is in
``dccaflax.checkpoints``.

``train_side_by_side`` trains K models of one config that differ in their
seed (initialisation, data order, augmentation) at once: one vmapped step
(``steps.train_step_models``) on one device, each model with a workdir of
its own, as its single run would have written it.  ``train_and_evaluate`` is
the case K = 1, with the plain step (and a data mesh over several devices).

Dispatch: with ``steps_per_dispatch=1`` each step is one jitted call on the
host's batch indices; with more, the epoch's batch order goes to the device
once and each call runs up to that many steps there.  Metrics are read one
dispatch late, so the host queues the next call while the device works.

Time budget (``deadline``): the first epoch measures the speed; before each
further epoch the loop checks that it and its evaluation fit, and otherwise
stops, evaluating and checkpointing the last epoch if it was not, so a run
always ends with saved, evaluated models (its log says how many epochs it
reached).

Resuming: the same command restarts from ``checkpoints/`` and replays the
same data order (``input_pipeline.epoch_batches(seed, epoch)``) and
augmentation (keys folded from ``seed`` and the step), so a run killed and
started again ends with the parameters of an uninterrupted one
(bit-identical on CPU; on GPU up to non-deterministic kernels).  Several
hosts: every process trains, process 0 alone writes the JSON, TensorBoard and
plot files (orbax coordinates the checkpoints).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from dccaflax import checkpoints
from dccaflax import config as config_lib
from dccaflax import validation
from dccaflax import input_pipeline
from dccaflax import models
from dccaflax import objectives
from dccaflax import pieceset
from dccaflax import presentation
from dccaflax import sharding
from dccaflax import steps as steps_lib


class NonFiniteError(FloatingPointError):
  """Too many consecutive steps with a non-finite loss or gradient."""


def train_and_evaluate(config: config_lib.TrainConfig, workdir: str,
                       train_set: Optional[pieceset.PieceSet] = None,
                       val_set: Optional[pieceset.PieceSet] = None,
                       deadline: Optional[float] = None
                       ) -> steps_lib.TrainState:
  """Trains, evaluates and checkpoints; resumes from ``workdir`` if possible.

  Args:
    config: the run's settings.
    workdir: output folder (layout: ``dccaflax.checkpoints``).
    train_set, val_set: already loaded pieces (default: read from
      ``config.data_dir``, splits 'train' and 'valid').
    deadline: ``time.time()`` by which training must have ended, evaluated
      and saved (None: run all ``config.epochs``).

  Returns:
    The final ``TrainState``.

  Raises:
    NonFiniteError: ``max_consecutive_skips`` non-finite steps in a row.
    ValueError: a bad setting, or fewer training pairs than one batch.
  """
  return train_side_by_side(config, [workdir], [config.seed], train_set,
                            val_set, deadline)[0]


def train_side_by_side(config: config_lib.TrainConfig,
                       workdirs: Sequence[str], seeds: Sequence[int],
                       train_set: Optional[pieceset.PieceSet] = None,
                       val_set: Optional[pieceset.PieceSet] = None,
                       deadline: Optional[float] = None
                       ) -> list[steps_lib.TrainState]:
  """``train_and_evaluate`` for K models that differ in their seed.

  Args:
    config: the settings every model shares (its ``seed`` is replaced).
    workdirs: one folder per model; model ``k`` writes ``workdirs[k]`` as a
      single run of ``config`` with seed ``seeds[k]`` would.
    seeds: one per model.
    train_set, val_set, deadline: as ``train_and_evaluate``.

  Returns:
    The final ``TrainState`` of each model.

  Raises:
    NonFiniteError, ValueError: as ``train_and_evaluate``; ValueError also
      when the workdirs hold checkpoints of different epochs.
  """
  if len(workdirs) != len(seeds) or not seeds:
    raise ValueError(f'one workdir per seed, got {len(workdirs)} workdirs '
                     f'for seeds {list(seeds)}')
  train_set, val_set = _load_data(config, train_set, val_set)
  augment, steps_per_epoch = _checked(config, len(train_set))
  place = (sharding.placement(config.batch_size) if len(seeds) == 1
           else sharding.Placement(None, None, None))
  train_arrays = place.replicated(train_set.arrays)
  val_arrays = place.replicated(val_set.arrays)
  model = models.from_config(config)
  optimizer = steps_lib.make_optimizer(config.learning_rate, config.momentum,
                                       config.lr_halve_every, steps_per_epoch)
  runs = [_Run(dataclasses.replace(config, seed=s), w, model, optimizer,
               steps_per_epoch, len(train_set))
          for s, w in zip(seeds, workdirs)]
  start_epoch = runs[0].epoch
  if any(r.epoch != start_epoch for r in runs):
    raise ValueError('cannot resume models side by side from different '
                     f'epochs: {[(r.workdir, r.epoch) for r in runs]}')
  stepper = Stepper(config, model, optimizer, augment, place, seeds)
  state = stepper.join([r.state for r in runs])
  validate = functools.partial(
      validation.validate, model, train_arrays=train_arrays,
      val_arrays=val_arrays,
      val_idx=validation.validation_subset(len(val_set), config.val_subset),
      reg=config.reg, batch_size=config.eval_batch_size)
  clock = _Clock(deadline)
  try:
    for epoch in range(start_epoch + 1, config.epochs + 1):
      if not clock.fits():
        logging.warning('time budget: stopped after epoch %d of %d',
                        epoch - 1, config.epochs)
        break
      t0 = time.time()
      state, losses = stepper.epoch(state, train_arrays, len(train_set),
                                    epoch - 1)
      train_s, t_eval = time.time() - t0, time.time()
      last = epoch == config.epochs or not clock.fits(after_train=train_s)
      if epoch % config.eval_every == 0 or last:
        for k, run in enumerate(runs):
          run.evaluate(epoch, stepper.model(state, k), losses[k], train_s,
                       validate)
      clock.measured(train_s, time.time() - t_eval)
  finally:
    for run in runs:
      run.close(len(train_set.names))
  return [stepper.model(state, k) for k in range(len(runs))]


def _load_data(config, train_set, val_set):
  """The training and validation ``PieceSet`` (read unless given)."""
  t0 = time.time()
  if train_set is None:
    train_set = input_pipeline.load_pieces(
        config.data_dir, 'train', config.max_train_pieces,
        config_lib.renderings_arg(config.renderings),
        config.collections.split(','))
  if val_set is None:
    val_set = input_pipeline.load_pieces(config.data_dir, 'valid',
                                         config.max_val_pieces,
                                         collections=config.collections
                                         .split(','))
  logging.info('data: train %d pairs / %d pieces x %d renderings %s '
               '(%.1f MB on the device), valid %d pairs / %d pieces (%.1f MB),'
               ' loaded in %.1f s', len(train_set), len(train_set.names),
               len(train_set.renderings), ','.join(train_set.renderings),
               train_set.nbytes / 1e6, len(val_set), len(val_set.names),
               val_set.nbytes / 1e6, time.time() - t0)
  return train_set, val_set


def _checked(config: config_lib.TrainConfig, n_train: int):
  """``(augment, steps_per_epoch)`` of a run, its settings checked (the
  augmentation's when the config was built)."""
  augment = config.augment
  if config.steps_per_dispatch < 1:
    raise ValueError('steps_per_dispatch must be >= 1, got '
                     f'{config.steps_per_dispatch}')
  steps_per_epoch = input_pipeline.steps_per_epoch(n_train, config.batch_size)
  if steps_per_epoch == 0:
    raise ValueError(f'{n_train} training pairs < batch {config.batch_size}')
  return augment, epoch_steps(config, n_train)


def epoch_steps(config: config_lib.TrainConfig, n_train: int) -> int:
  """SGD steps of one epoch: a pass over ``n_train`` pairs, or
  ``config.epoch_pairs // batch_size`` (at least one)."""
  if config.epoch_pairs < 0:
    raise ValueError(f'epoch_pairs must be >= 0, got {config.epoch_pairs}')
  if config.epoch_pairs:
    return max(1, config.epoch_pairs // config.batch_size)
  return input_pipeline.steps_per_epoch(n_train, config.batch_size)


class _Clock:
  """The time budget: does one more epoch (and its evaluation) fit?"""

  def __init__(self, deadline: Optional[float]):
    self.deadline, self.epoch_s, self.eval_s = deadline, None, 0.0

  def fits(self, after_train: float = 0.0) -> bool:
    """Whether another epoch and its evaluation fit before the deadline.

    Args:
      after_train: seconds of the epoch just trained, whose evaluation is
        still to come (then the next epoch must fit with both evaluations).
    """
    if self.deadline is None or (self.epoch_s is None and not after_train):
      return True   # the first epoch measures the speed
    epoch_s = max(self.epoch_s or 0.0, after_train)
    evals = 2 if after_train else 1
    return time.time() + epoch_s + evals * self.eval_s <= self.deadline

  def measured(self, train_s: float, eval_s: float) -> None:
    if self.epoch_s is None and self.deadline is not None:
      left = self.deadline - time.time()
      logging.info('time budget: an epoch takes %.1f s (+ %.1f s evaluation)'
                   ', %.0f s left: about %d more epochs fit', train_s, eval_s,
                   left, left // max(train_s + eval_s, 1e-9))
    self.epoch_s = train_s if self.epoch_s is None else max(self.epoch_s,
                                                             train_s)
    self.eval_s = max(self.eval_s, eval_s)


class Stepper:
  """Runs the SGD steps of an epoch for one model (the plain, possibly
  data-parallel step) or K models side by side (the vmapped step): the
  training loop's code path, which ``experiments.benchmark`` times."""

  def __init__(self, config, model, optimizer, augment, place, seeds):
    self.config, self.place, self.seeds = config, place, list(seeds)
    kw = dict(model=model, optimizer=optimizer, reg=config.reg,
              augment=augment, objective=objectives.from_config(config))
    spd = config.steps_per_dispatch
    if len(seeds) == 1:
      kw.update(seed=seeds[0], batch_sharding=place.batch)
      self.step = functools.partial(steps_lib.train_step, **kw)
      self.chunk = functools.partial(steps_lib.train_chunk, max_steps=spd,
                                     **kw)
    else:
      seed_array = jnp.asarray(seeds, jnp.int32)
      self.step = lambda s, a, i: steps_lib.train_step_models(
          s, a, i, seed_array, **kw)
      self.chunk = lambda s, a, o, start, count: (
          steps_lib.train_chunk_models(s, a, o, start, count, seed_array,
                                       max_steps=spd, **kw))

  def join(self, states):
    """The state the steps take: the one model's (on the mesh), or K
    stacked."""
    if len(states) == 1:
      return sharding.replicate(states[0], self.place.mesh)
    return steps_lib.stack(states)

  def model(self, state, k: int):
    """Model ``k``'s ``TrainState``."""
    return state if len(self.seeds) == 1 else steps_lib.unstack(state, k)

  def epoch(self, state, arrays, n_train: int, epoch: int):
    """One epoch of SGD steps: ``(state, finite losses of each model)``."""
    config, single = self.config, len(self.seeds) == 1
    batches = np.stack([input_pipeline.epoch_batches(
        seed, epoch, n_train, config.batch_size,
        epoch_steps(config, n_train)) for seed in self.seeds])
    steps = batches.shape[1]
    batches = batches[0] if single else batches        # ([K,] S, B)
    fused = config.steps_per_dispatch > 1
    if fused:   # the epoch's order goes to the device once
      order = self.place.batches(batches, self.place.order)
    t0, pending, done = time.time(), None, 0
    losses = [[] for _ in self.seeds]
    while done < steps:
      # A chunk never crosses the epoch's end: the last one is shorter.
      count = min(config.steps_per_dispatch, steps - done)
      if fused:
        state, metrics = self.chunk(state, arrays, order, np.int32(done),
                                    np.int32(count))
      else:
        idx = batches[done] if single else batches[:, done]
        state, metrics = self.step(state, arrays,
                                   self.place.batches(idx, self.place.batch))
      self._consume(pending, losses)   # the previous dispatch: one of lag
      pending, previous, done = metrics, done, done + count
      if done // config.log_every > previous // config.log_every:
        dt = time.time() - t0
        logging.info('epoch %d step %d/%d: loss %.4f, %.2f steps/s '
                     '(%.0f pairs/s%s)', epoch + 1, done, steps,
                     np.mean([np.mean(l[-config.log_every:] or [np.nan])
                              for l in losses]), done / dt,
                     done * config.batch_size * len(self.seeds) / dt,
                     f', {len(self.seeds)} models' if not single else '')
    self._consume(pending, losses)
    return state, losses

  def _consume(self, metrics: Optional[dict], losses: list) -> None:
    """Reads one dispatch's metrics, model by model."""
    if metrics is None:
      return
    metrics = jax.device_get(metrics)
    for k, model_losses in enumerate(losses):
      _consume(metrics if len(losses) == 1 else
               {key: value[k] for key, value in metrics.items()},
               model_losses, self.config)


def _consume(metrics: dict, losses: list,
             config: config_lib.TrainConfig) -> None:
  """Reads one model's metrics of a dispatch (scalars of ``train_step`` or
  (max_steps,) arrays of ``train_chunk``, step by step); raises at the first
  step that makes ``max_consecutive_skips`` non-finite steps in a row."""
  for loss, finite, skip_run in zip(np.atleast_1d(metrics['loss']),
                                    np.atleast_1d(metrics['finite']),
                                    np.atleast_1d(metrics['skip_run'])):
    if skip_run < 0:   # a step a shorter chunk did not take
      break
    if finite:
      losses.append(float(loss))
    elif int(skip_run) >= config.max_consecutive_skips:
      raise NonFiniteError(
          f'{int(skip_run)} consecutive steps with a non-finite loss or '
          f'gradient (last loss {float(loss)}); parameters were left '
          'unchanged by them. Lower --learning_rate or raise --reg.')


class _Run:
  """One model's workdir: its config, resumed state, history, checkpoints,
  TensorBoard events (process 0 only) and progress lines."""

  def __init__(self, config, workdir: str, model, optimizer,
               steps_per_epoch: int, n_train: int):
    self.config, self.workdir = config, workdir
    self.steps_per_epoch = steps_per_epoch
    # The pairs of its CCA fit, a function of its seed (as a single run's).
    self.fit_idx = validation.fit_indices(n_train, config.fit_pairs,
                                          config.seed)
    self.chief = jax.process_index() == 0
    state = steps_lib.create_train_state(jax.random.key(config.seed), model,
                                         optimizer)
    last_dir = os.path.join(workdir, checkpoints.LAST_DIR)
    resuming = checkpoints.latest_epoch(last_dir) is not None
    if not resuming:   # (a bad --init_from fails before anything is written)
      state = checkpoints.warm_start(state, config)
    os.makedirs(workdir, exist_ok=True)
    if self.chief:
      checkpoints.write_config(workdir, config)
    logging.info('model: width %g (%s feature maps), out_dim %d, %s, %d '
                 'params, seed %d', config.width, model.widths,
                 config.out_dim, config.dtype,
                 sum(x.size for x in jax.tree.leaves(state.params)),
                 config.seed)
    self.state, self.epoch, self.best = state, 0, -np.inf
    if resuming:
      restored = checkpoints.restore_checkpoint(last_dir, state, None)
      self.state, meta = restored['state'], restored['meta']
      self.epoch, self.best = int(meta['epoch']), self._best_so_far(meta)
      logging.info('resumed from %s: epoch %d, step %d', last_dir,
                   self.epoch, int(self.state.step))
    self.history = (checkpoints.read_history(workdir, self.epoch)
                    if self.chief else [])
    self.schedule = steps_lib.lr_schedule(
        config.learning_rate, config.lr_halve_every, steps_per_epoch)
    self.writer = _summary_writer(workdir, self.epoch) if self.chief else None

  def _best_so_far(self, meta: dict) -> float:
    """The ``validation.BEST_METRIC`` to beat on resume: the stored one, or,
    where the best checkpoint was chosen by another metric (an older
    workdir), that checkpoint's value of this one, so ``best/`` is only
    replaced by an epoch that beats it."""
    if meta.get('best_metric') == validation.BEST_METRIC:
      return float(meta['best'])
    best_dir = os.path.join(self.workdir, checkpoints.BEST_DIR)
    if checkpoints.latest_epoch(best_dir) is None:
      return -np.inf
    row = checkpoints.restore_checkpoint(best_dir, None, None)['meta']
    value = validation.best_metric(row['metrics'])
    logging.info('best checkpoint (epoch %d) chosen by %s; by %s it is %.4f',
                 int(row['epoch']), meta.get('best_metric', 'val/R@10'),
                 validation.BEST_METRIC, value)
    return value

  def evaluate(self, epoch: int, state, losses: list, train_s: float,
               validate) -> None:
    """Validation, checkpoints (last; best if improved) and logs of an
    evaluated epoch."""
    t_eval = time.time()
    projection, metrics = validate(state.variables, fit_idx=self.fit_idx)
    pairs = self.steps_per_epoch * self.config.batch_size
    row = {'epoch': epoch, 'step': int(state.step),
           'train/loss': float(np.mean(losses)) if losses else float('nan'),
           'train/lr': float(self.schedule(int(state.step) - 1)),
           'train/skipped': int(state.skipped),
           'train/steps_per_s': self.steps_per_epoch / train_s,
           'train/pairs_per_s': pairs / train_s,
           'eval_s': time.time() - t_eval, **metrics}
    improved = row[validation.BEST_METRIC] > self.best
    self.best = max(self.best, row[validation.BEST_METRIC])
    meta = {'epoch': epoch, 'step': int(state.step), 'best': self.best,
            'best_metric': validation.BEST_METRIC, 'metrics': row}
    if improved:
      checkpoints.save_checkpoint(
          os.path.join(self.workdir, checkpoints.BEST_DIR), epoch, state,
          projection, meta)
    checkpoints.save_checkpoint(
        os.path.join(self.workdir, checkpoints.LAST_DIR), epoch, state,
        projection, meta)
    self.epoch = epoch
    self.history.append(row)
    if self.chief:
      checkpoints.append_history(self.workdir, row)
      if self.writer is not None:
        for key, value in row.items():
          if key != 'epoch':   # TB tags: 'val/a2s_R@10' -> 'val/a2s_R10'
            self.writer.add_scalar(key.replace('@', ''), value, epoch)
        self.writer.flush()
    logging.info(
        'epoch %d/%d: loss %.4f | valid corr %.2f (refit %.2f, train %.2f) '
        '| A->S R@1 %.1f R@10 %.1f MR %g | S->A R@1 %.1f R@10 %.1f MR %g | '
        '%.2f steps/s, lr %.4g, skipped %d%s%s', epoch, self.config.epochs,
        row['train/loss'], row['val/corr'], row['val/corr_refit'],
        row['train/corr'], row['val/a2s_R@1'], row['val/a2s_R@10'],
        row['val/a2s_MR'], row['val/s2a_R@1'], row['val/s2a_R@10'],
        row['val/s2a_MR'], row['train/steps_per_s'], row['train/lr'],
        row['train/skipped'], f', seed {self.config.seed}',
        ' (best)' if improved else '')

  def close(self, n_pieces: int) -> None:
    """Closes the event file and draws the training curve."""
    if self.writer is not None:
      self.writer.close()
    if self.history and self.chief:
      presentation.plot_history(
          self.history, os.path.join(self.workdir, checkpoints.CURVE_FILE),
          f'width {self.config.width:g}, {n_pieces} train pieces, seed '
          f'{self.config.seed}')


def _summary_writer(workdir: str, start_epoch: int):
  """A tensorboardX writer for ``workdir/tb``, or None (with a warning) where
  tensorboardX is not installed: ``history.jsonl`` holds the same numbers."""
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.warning('tensorboardX is not installed: no TensorBoard events in '
                    '%s (history.jsonl holds the same metrics)', workdir)
    return None
  # purge_step drops events a killed run wrote after its last checkpoint.
  return SummaryWriter(os.path.join(workdir, checkpoints.TB_DIR),
                       purge_step=start_epoch + 1 if start_epoch else None)
