"""Training library: learning, exact resume, skipped non-finite steps."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dccaflax import cca
from dccaflax import input_pipeline as ip
from dccaflax import train_lib
from tests.conftest import tiny_train_config


def _restore_params(workdir):
  config = train_lib.read_config(str(workdir))
  model = train_lib.model_from_config(config)
  state = train_lib.create_train_state(
      jax.random.key(0), model, train_lib.make_optimizer())
  restored = train_lib.restore_checkpoint(
      os.path.join(workdir, train_lib.LAST_DIR), state, None)
  return restored['state'], restored['meta']


def test_optimizer_halves_the_learning_rate():
  schedule = train_lib.lr_schedule(0.1, halve_every_epochs=25,
                                   steps_per_epoch=10)
  assert float(schedule(0)) == pytest.approx(0.1)
  assert float(schedule(249)) == pytest.approx(0.1)
  assert float(schedule(250)) == pytest.approx(0.05)
  assert float(schedule(750)) == pytest.approx(0.0125)


def test_training_learns_and_writes_the_workdir(trained_workdir,
                                                synthetic_data):
  workdir = str(trained_workdir)
  with open(os.path.join(workdir, train_lib.HISTORY_FILE)) as f:
    history = [json.loads(line) for line in f]
  assert [r['epoch'] for r in history] == [2, 4]
  # The same metrics at initialisation, for comparison.
  config = tiny_train_config(synthetic_data)
  model = train_lib.model_from_config(config)
  state0 = train_lib.create_train_state(jax.random.key(config.seed), model,
                                        train_lib.make_optimizer())
  train = ip.load_pieces(synthetic_data, 'train')
  val = ip.load_pieces(synthetic_data, 'valid')
  val_idx = train_lib.validation_subset(len(val), config.val_subset)
  _, before = train_lib.evaluate(
      model, state0.variables, jax.device_put(train.arrays),
      np.arange(len(train)), jax.device_put(val.arrays), val_idx,
      config.reg, config.eval_batch_size)
  after = history[-1]
  chance_r10 = 100 * 10 / len(val_idx)
  assert after['val/corr'] > before['val/corr'] + 1.0, (before, after)
  assert after['train/loss'] < history[0]['train/loss']
  for d in ('a2s', 's2a'):
    assert after[f'val/{d}_R@10'] > 4 * chance_r10, (after, chance_r10)
    assert after[f'val/{d}_R@10'] > before[f'val/{d}_R@10'] + 10
    assert after[f'val/{d}_MR'] < len(val_idx) / 4
  assert after['train/skipped'] == 0
  for name in (train_lib.CONFIG_FILE, train_lib.CURVE_FILE):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert any(f.startswith('events') for f in os.listdir(
      os.path.join(workdir, 'tb')))
  assert train_lib.latest_epoch(os.path.join(workdir, train_lib.LAST_DIR)) == 4
  assert train_lib.latest_epoch(os.path.join(workdir, train_lib.BEST_DIR))


def test_resume_gives_the_parameters_of_an_uninterrupted_run(
    trained_workdir, synthetic_data, tmp_path):
  config = tiny_train_config(synthetic_data)
  # "Killed" after the epoch-2 checkpoint: the same command with epochs=2,
  # then the original command again, which resumes from that checkpoint.
  train_lib.train_and_evaluate(
      tiny_train_config(synthetic_data, epochs=2), str(tmp_path))
  assert train_lib.latest_epoch(str(tmp_path / train_lib.LAST_DIR)) == 2
  train_lib.train_and_evaluate(config, str(tmp_path))
  resumed, meta = _restore_params(tmp_path)
  straight, meta0 = _restore_params(trained_workdir)
  assert meta['epoch'] == meta0['epoch'] == 4
  assert int(resumed.step) == int(straight.step)
  jax.tree.map(np.testing.assert_array_equal,
               (resumed.params, resumed.batch_stats, resumed.opt_state),
               (straight.params, straight.batch_stats, straight.opt_state))
  with open(tmp_path / train_lib.HISTORY_FILE) as f:
    assert [json.loads(line)['epoch'] for line in f] == [2, 4]


def test_non_finite_step_is_skipped_and_counted(synthetic_data):
  config = tiny_train_config(synthetic_data)
  train = ip.load_pieces(synthetic_data, 'train')
  arrays = jax.device_put(train.arrays)
  model = train_lib.model_from_config(config)
  optimizer = train_lib.make_optimizer(   # the one the runs use: no compile
      config.learning_rate, config.momentum, config.lr_halve_every,
      ip.steps_per_epoch(len(train), config.batch_size))
  state = train_lib.create_train_state(jax.random.key(0), model, optimizer)
  step = lambda s, a, idx: train_lib.train_step(
      s, a, idx, model=model, optimizer=optimizer, reg=config.reg,
      augment=(0, 0, 0), seed=config.seed)   # as train_and_evaluate calls it
  idx = np.arange(32, dtype=np.int32)
  bad = arrays._replace(specs=arrays.specs.at[:, :].set(jnp.nan))
  new, metrics = step(state, bad, idx)
  assert not bool(metrics['finite']) and not np.isfinite(metrics['loss'])
  assert int(new.skipped) == 1 and int(new.skip_run) == 1
  assert int(new.step) == 1
  jax.tree.map(np.testing.assert_array_equal,
               (new.params, new.batch_stats, new.opt_state),
               (state.params, state.batch_stats, state.opt_state))
  new, metrics = step(new, bad, idx)
  assert int(new.skip_run) == 2
  new, metrics = step(new, arrays, idx)
  assert bool(metrics['finite']) and int(new.skip_run) == 0
  assert int(new.skipped) == 2
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), new.params,
                         state.params)
  assert all(jax.tree.leaves(changed))


def test_too_many_non_finite_steps_stop_with_a_clear_error(synthetic_data,
                                                           tmp_path):
  train = ip.load_pieces(synthetic_data, 'train')
  val = ip.load_pieces(synthetic_data, 'valid')
  specs = np.full_like(train.arrays.specs, np.nan)
  broken = ip.PieceSet(**{**train.__dict__,
                          'arrays': train.arrays._replace(specs=specs)})
  config = tiny_train_config(synthetic_data, max_consecutive_skips=3)
  with pytest.raises(train_lib.NonFiniteError, match='3 consecutive'):
    train_lib.train_and_evaluate(config, str(tmp_path), broken, val)


def test_heldout_correlation_and_projection():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(2000, 4))
  fx = np.concatenate([z, rng.normal(size=(2000, 4))], 1)
  gy = np.concatenate([z @ rng.normal(size=(4, 4)) + 0.1 * rng.normal(
      size=(2000, 4)), rng.normal(size=(2000, 4))], 1)
  p = cca.fit(fx[:1000], gy[:1000])
  px = np.asarray(cca.project_x(p, fx[1000:]))
  py = np.asarray(cca.project_y(p, gy[1000:]))
  corr = train_lib.heldout_correlation(px, py)
  assert 3 < corr < 4.2 and abs(corr - float(np.sum(p.corr))) < 0.3
  metrics = train_lib.retrieval_metrics(px[:, :4], py[:, :4])
  for d in ('a2s', 's2a'):   # chance: R@1 0.1 %, MR 500
    assert metrics[d]['R@1'] > 10 and metrics[d]['MR'] < 10, metrics
