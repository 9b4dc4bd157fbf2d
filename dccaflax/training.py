"""The training loop: train, evaluate, checkpoint; resume from the workdir.

``train_and_evaluate`` reads like the Flax examples' loop: load the pieces,
place them on the device(s) (``sharding``), build the model and optimizer
(``steps``), resume from the last checkpoint if there is one, then per epoch
run the SGD steps and, every ``eval_every`` epochs, fit the CCA and validate
(``evaluation.validate``), checkpoint the last and the best state
(``checkpoints``) and log the metrics (``history.jsonl``, TensorBoard, a
progress line, ``training_curve.png`` at the end).  The workdir layout is in
``dccaflax.checkpoints``.

Dispatch: with ``steps_per_dispatch=1`` each step is one jitted call on the
host's batch indices; with K > 1 the epoch's batch order goes to the device
once and each call runs up to K steps there.  Metrics are read one dispatch
late, so the host queues the next call while the device works.

Resuming: the same command restarts from ``checkpoints/`` and replays the
same data order (``input_pipeline.epoch_batches(seed, epoch)``) and
augmentation (keys folded from ``seed`` and the step), so a run killed and
started again ends with the parameters of an uninterrupted one
(bit-identical on CPU; on GPU up to non-deterministic kernels).  Several
hosts: every process trains, process 0 alone writes the JSON, TensorBoard and
plot files (orbax coordinates the checkpoints).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Optional

from absl import logging
import jax
import numpy as np

from dccaflax import checkpoints
from dccaflax import config as config_lib
from dccaflax import evaluation
from dccaflax import input_pipeline
from dccaflax import pieceset
from dccaflax import presentation
from dccaflax import sharding
from dccaflax import steps as steps_lib


class NonFiniteError(FloatingPointError):
  """Too many consecutive steps with a non-finite loss or gradient."""


def train_and_evaluate(config: config_lib.TrainConfig, workdir: str,
                       train_set: Optional[pieceset.PieceSet] = None,
                       val_set: Optional[pieceset.PieceSet] = None,
                       ) -> steps_lib.TrainState:
  """Trains, evaluates and checkpoints; resumes from ``workdir`` if possible.

  Args:
    config: the run's settings.
    workdir: output folder (layout: ``dccaflax.checkpoints``).
    train_set, val_set: already loaded pieces (default: read from
      ``config.data_dir``, splits 'train' and 'valid').

  Returns:
    The final ``TrainState``.

  Raises:
    NonFiniteError: ``max_consecutive_skips`` non-finite steps in a row.
    ValueError: a bad setting, or fewer training pairs than one batch.
  """
  os.makedirs(workdir, exist_ok=True)
  chief = jax.process_index() == 0
  if chief:
    checkpoints.write_config(workdir, config)
  train_set, val_set = _load_data(config, train_set, val_set)
  augment, steps_per_epoch = _checked(config, len(train_set))
  place = sharding.placement(config.batch_size)
  train_arrays = place.replicated(train_set.arrays)
  val_arrays = place.replicated(val_set.arrays)
  model, optimizer, state = _init(config, steps_per_epoch)
  state, start_epoch, best = _resume(workdir, state)
  state = sharding.replicate(state, place.mesh)
  history = checkpoints.read_history(workdir, start_epoch) if chief else []
  step_kw = dict(model=model, optimizer=optimizer, reg=config.reg,
                 augment=augment, seed=config.seed, batch_sharding=place.batch)
  validate = functools.partial(
      evaluation.validate, model, train_arrays=train_arrays,
      fit_idx=evaluation.fit_indices(len(train_set), config.fit_pairs,
                                     config.seed),
      val_arrays=val_arrays,
      val_idx=evaluation.validation_subset(len(val_set), config.val_subset),
      reg=config.reg, batch_size=config.eval_batch_size)
  log = _Log(workdir, config, steps_per_epoch, start_epoch, chief)
  try:
    for epoch in range(start_epoch, config.epochs):
      t_epoch = time.time()
      state, losses = _train_epoch(state, train_arrays, len(train_set),
                                   epoch, config, place, step_kw)
      train_s, epoch_done = time.time() - t_epoch, epoch + 1
      if epoch_done % config.eval_every and epoch_done != config.epochs:
        continue
      t_eval = time.time()
      projection, metrics = validate(state.variables)
      row = log.row(epoch_done, state, losses, train_s, t_eval, metrics)
      improved = row[evaluation.BEST_METRIC] > best
      best = max(best, row[evaluation.BEST_METRIC])
      _save(workdir, epoch_done, state, projection, best, row, improved)
      history.append(row)
      log.write(row, improved)
  finally:
    log.close()
  if history and chief:
    presentation.plot_history(
        history, os.path.join(workdir, checkpoints.CURVE_FILE),
        f'width {config.width:g}, {len(train_set.names)} train pieces')
  return state


def _checked(config: config_lib.TrainConfig, n_train: int):
  """``(augment, steps_per_epoch)`` of a run, its settings checked."""
  augment = steps_lib.augment_of(config)
  if config.steps_per_dispatch < 1:
    raise ValueError('steps_per_dispatch must be >= 1, got '
                     f'{config.steps_per_dispatch}')
  steps_per_epoch = input_pipeline.steps_per_epoch(n_train, config.batch_size)
  if steps_per_epoch == 0:
    raise ValueError(f'{n_train} training pairs < batch {config.batch_size}')
  return augment, steps_per_epoch


def _init(config: config_lib.TrainConfig, steps_per_epoch: int):
  """``(model, optimizer, fresh state)`` of a run."""
  model = config_lib.model_from_config(config)
  optimizer = steps_lib.make_optimizer(config.learning_rate, config.momentum,
                                       config.lr_halve_every, steps_per_epoch)
  state = steps_lib.create_train_state(jax.random.key(config.seed), model,
                                       optimizer)
  logging.info('model: width %g (%s feature maps), out_dim %d, %s, %d params',
               config.width, model.widths, config.out_dim, config.dtype,
               sum(x.size for x in jax.tree.leaves(state.params)))
  return model, optimizer, state


def _load_data(config, train_set, val_set):
  """The training and validation ``PieceSet`` (read unless given)."""
  t0 = time.time()
  if train_set is None:
    train_set = input_pipeline.load_pieces(
        config.data_dir, 'train', config.max_train_pieces,
        config_lib.renderings_arg(config.renderings))
  if val_set is None:
    val_set = input_pipeline.load_pieces(config.data_dir, 'valid',
                                         config.max_val_pieces)
  logging.info('data: train %d pairs / %d pieces x %d renderings %s '
               '(%.1f MB on the device), valid %d pairs / %d pieces (%.1f MB),'
               ' loaded in %.1f s', len(train_set), len(train_set.names),
               len(train_set.renderings), ','.join(train_set.renderings),
               train_set.nbytes / 1e6, len(val_set), len(val_set.names),
               val_set.nbytes / 1e6, time.time() - t0)
  return train_set, val_set


def _resume(workdir: str, state: steps_lib.TrainState):
  """``(state, start_epoch, best)`` from the last checkpoint, if any."""
  last_dir = os.path.join(workdir, checkpoints.LAST_DIR)
  if checkpoints.latest_epoch(last_dir) is None:
    return state, 0, -np.inf
  restored = checkpoints.restore_checkpoint(last_dir, state, None)
  state, meta = restored['state'], restored['meta']
  logging.info('resumed from %s: epoch %d, step %d', last_dir,
               int(meta['epoch']), int(state.step))
  return state, int(meta['epoch']), float(meta['best'])


def _train_epoch(state, arrays, n_train: int, epoch: int, config,
                 place: sharding.Placement, step_kw: dict):
  """One epoch of SGD steps; returns ``(state, finite losses)``."""
  batches = input_pipeline.epoch_batches(config.seed, epoch, n_train,
                                         config.batch_size)
  steps_per_epoch = len(batches)
  fused = config.steps_per_dispatch > 1
  if fused:   # the epoch's order goes to the device once
    order = place.batches(batches, place.order)
    run = functools.partial(steps_lib.train_chunk,
                            max_steps=config.steps_per_dispatch, **step_kw)
  else:
    run = functools.partial(steps_lib.train_step, **step_kw)
  t0, losses, pending, done = time.time(), [], None, 0
  while done < steps_per_epoch:
    # A chunk never crosses the epoch's end: the last one is shorter.
    count = min(config.steps_per_dispatch, steps_per_epoch - done)
    if fused:
      state, metrics = run(state, arrays, order, np.int32(done),
                           np.int32(count))
    else:
      state, metrics = run(state, arrays,
                           place.batches(batches[done], place.batch))
    _consume(pending, losses, config)   # the previous dispatch: one of lag
    pending, previous, done = metrics, done, done + count
    if done // config.log_every > previous // config.log_every:
      dt = time.time() - t0
      logging.info('epoch %d step %d/%d: loss %.4f, %.2f steps/s '
                   '(%.0f pairs/s)', epoch + 1, done, steps_per_epoch,
                   np.mean(losses[-config.log_every:] or [np.nan]),
                   done / dt, done * config.batch_size / dt)
  _consume(pending, losses, config)
  return state, losses


def _consume(metrics: Optional[dict], losses: list,
             config: config_lib.TrainConfig) -> None:
  """Reads one dispatch's metrics (scalars of ``train_step`` or (K,) arrays of
  ``train_chunk``, step by step); raises at the first step that makes
  ``max_consecutive_skips`` non-finite steps in a row."""
  if metrics is None:
    return
  metrics = jax.device_get(metrics)
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


def _save(workdir: str, epoch: int, state, projection, best: float,
          row: dict, improved: bool) -> None:
  """The last checkpoint, and the best one when validation improved."""
  meta = {'epoch': epoch, 'step': int(state.step), 'best': best,
          'metrics': row}
  if improved:
    checkpoints.save_checkpoint(os.path.join(workdir, checkpoints.BEST_DIR),
                                epoch, state, projection, meta)
  checkpoints.save_checkpoint(os.path.join(workdir, checkpoints.LAST_DIR),
                              epoch, state, projection, meta)


class _Log:
  """An evaluated epoch's metrics: the history row, ``history.jsonl``,
  TensorBoard (process 0 only) and the progress line."""

  def __init__(self, workdir: str, config, steps_per_epoch: int,
               start_epoch: int, chief: bool):
    self.workdir, self.config, self.chief = workdir, config, chief
    self.steps_per_epoch = steps_per_epoch
    self.schedule = steps_lib.lr_schedule(
        config.learning_rate, config.lr_halve_every, steps_per_epoch)
    self.writer = None
    if chief:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      # purge_step drops events a killed run wrote after its last checkpoint.
      self.writer = SummaryWriter(
          os.path.join(workdir, checkpoints.TB_DIR),
          purge_step=start_epoch + 1 if start_epoch else None)

  def row(self, epoch: int, state, losses: list, train_s: float,
          t_eval: float, metrics: dict) -> dict:
    """The history row of an evaluated epoch."""
    pairs = self.steps_per_epoch * self.config.batch_size
    return {'epoch': epoch, 'step': int(state.step),
            'train/loss': float(np.mean(losses)) if losses else float('nan'),
            'train/lr': float(self.schedule(int(state.step) - 1)),
            'train/skipped': int(state.skipped),
            'train/steps_per_s': self.steps_per_epoch / train_s,
            'train/pairs_per_s': pairs / train_s,
            'eval_s': time.time() - t_eval, **metrics}

  def write(self, row: dict, improved: bool) -> None:
    if self.chief:
      checkpoints.append_history(self.workdir, row)
      for key, value in row.items():
        if key != 'epoch':   # TB tags: 'val/a2s_R@10' -> 'val/a2s_R10'
          self.writer.add_scalar(key.replace('@', ''), value, row['epoch'])
      self.writer.flush()
    logging.info(
        'epoch %d/%d: loss %.4f | valid corr %.2f (refit %.2f, train %.2f) '
        '| A->S R@1 %.1f R@10 %.1f MR %g | S->A R@1 %.1f R@10 %.1f MR %g | '
        '%.2f steps/s, lr %.4g, skipped %d%s', row['epoch'],
        self.config.epochs, row['train/loss'], row['val/corr'],
        row['val/corr_refit'], row['train/corr'], row['val/a2s_R@1'],
        row['val/a2s_R@10'], row['val/a2s_MR'], row['val/s2a_R@1'],
        row['val/s2a_R@10'], row['val/s2a_MR'], row['train/steps_per_s'],
        row['train/lr'], row['train/skipped'], ' (best)' if improved else '')

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
