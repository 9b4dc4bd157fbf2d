"""Training: learning, exact resume, renderings, skipped non-finite steps,
evaluation, checkpoints and time budgets (training, evaluation, checkpoints).
The compiled steps themselves (fused, bfloat16, several models, several
devices) are tested in test_steps.py and test_sharding.py."""

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dccaflax import augment
from dccaflax import cca
from dccaflax import checkpoints
from dccaflax import config as config_lib
from dccaflax import validation
from dccaflax import input_pipeline as ip
from dccaflax import models
from dccaflax import objectives
from dccaflax import pieceset
from dccaflax import retrieval
from dccaflax import steps
from dccaflax import training
from tests.conftest import restore_last_state
from tests.conftest import synthetic_split
from tests.conftest import tiny_train_config
from tests.conftest import with_synthetic_renderings


def test_optimizer_halves_the_learning_rate():
  schedule = steps.lr_schedule(0.1, halve_every_epochs=25,
                               steps_per_epoch=10)
  assert float(schedule(0)) == pytest.approx(0.1)
  assert float(schedule(249)) == pytest.approx(0.1)
  assert float(schedule(250)) == pytest.approx(0.05)
  assert float(schedule(750)) == pytest.approx(0.0125)


def test_training_learns_and_writes_the_workdir(trained_workdir,
                                                synthetic_data):
  workdir = str(trained_workdir)
  with open(os.path.join(workdir, checkpoints.HISTORY_FILE)) as f:
    history = [json.loads(line) for line in f]
  assert [r['epoch'] for r in history] == [2, 4]
  # The same metrics at initialisation, for comparison.
  config = tiny_train_config(synthetic_data)
  model = models.from_config(config)
  state0 = steps.create_train_state(jax.random.key(config.seed), model,
                                    steps.make_optimizer())
  train = ip.load_pieces(synthetic_data, 'train')
  val = ip.load_pieces(synthetic_data, 'valid')
  val_idx = validation.validation_subset(len(val), config.val_subset)
  _, before = validation.validate(
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
  for name in (checkpoints.CONFIG_FILE, checkpoints.CURVE_FILE):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert any(f.startswith('events') for f in os.listdir(
      os.path.join(workdir, 'tb')))
  assert checkpoints.latest_epoch(os.path.join(workdir, checkpoints.LAST_DIR)) == 4
  assert checkpoints.latest_epoch(os.path.join(workdir, checkpoints.BEST_DIR))


def test_resume_gives_the_parameters_of_an_uninterrupted_run(
    trained_workdir, synthetic_data, tmp_path):
  config = tiny_train_config(synthetic_data)
  # "Killed" after the epoch-2 checkpoint: the same command with epochs=2,
  # then the original command again, which resumes from that checkpoint.
  training.train_and_evaluate(
      tiny_train_config(synthetic_data, epochs=2), str(tmp_path))
  assert checkpoints.latest_epoch(str(tmp_path / checkpoints.LAST_DIR)) == 2
  training.train_and_evaluate(config, str(tmp_path))
  resumed, meta = restore_last_state(tmp_path)
  straight, meta0 = restore_last_state(trained_workdir)
  assert meta['epoch'] == meta0['epoch'] == 4
  assert int(resumed.step) == int(straight.step)
  jax.tree.map(np.testing.assert_array_equal,
               (resumed.params, resumed.batch_stats, resumed.opt_state),
               (straight.params, straight.batch_stats, straight.opt_state))
  with open(tmp_path / checkpoints.HISTORY_FILE) as f:
    assert [json.loads(line)['epoch'] for line in f] == [2, 4]


@pytest.mark.parametrize('name', objectives.NAMES)
def test_every_objective_trains_end_to_end(name, synthetic_data, tmp_path):
  """One epoch (8 steps) and its evaluation with each objective: the step
  computes that objective's loss (its range tells them apart) and the
  validation, the same CCA fit and cosine ranking for all, works.  The
  compiled step of 'dcca' is the other tiny runs' (same model, optimizer
  and objective); each other objective compiles its own."""
  config = tiny_train_config(synthetic_data, objective=name, epochs=1,
                             eval_every=1)
  state = training.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 8 and int(state.skipped) == 0
  assert checkpoints.read_config(str(tmp_path)).objective == name
  with open(tmp_path / checkpoints.HISTORY_FILE) as f:
    (row,) = [json.loads(line) for line in f]
  assert all(np.isfinite(v) for v in row.values()), row
  loss, h, n = row['train/loss'], config.out_dim, config.batch_size
  if name == objectives.DCCA:         # minus a sum of h correlations
    assert -h < loss < 0, row
  elif name == objectives.CCA_RANKING:  # two mean hinges
    assert 0 < loss < 2 * (config.rank_margin + 2), row
  else:                               # two cross-entropies over n
    assert 0 < loss < np.log(n) + 2 / config.infonce_temperature, row
  assert 0 < row['train/corr'] <= h
  assert 0 <= row['val/a2s_R@10'] <= 100


def test_renderings_arg():
  assert config_lib.renderings_arg('primary') is None
  assert config_lib.renderings_arg('') is None
  assert config_lib.renderings_arg('all') == 'all'
  assert config_lib.renderings_arg('a_t1.00, b_t0.90') == ['a_t1.00',
                                                          'b_t0.90']


def test_steps_draw_a_rendering_per_pair():
  """With R renderings each step trains on a random one per pair: the
  windows a step cuts (``steps.augmented_batch``, what ``train_step`` feeds
  the towers) from arrays whose extra rows repeat row 0 equal the
  one-rendering windows exactly; with real extra renderings a part of the
  pairs, about 2/3, come from another rendering."""
  pieces = [with_synthetic_renderings(p) for p in synthetic_split(1, 4)]
  three = pieceset.concat_pieces(pieces, 'all').arrays
  one = pieceset.concat_pieces(pieces).arrays
  same = three._replace(frame=np.repeat(three.frame[:1], 3, 0),
                        step=np.repeat(three.step[:1], 3, 0))
  idx = np.arange(64, dtype=np.int32)
  rng = jax.random.fold_in(jax.random.key(5), 0)   # seed 5, step 0
  cut = jax.jit(steps.augmented_batch, static_argnames='augment')
  windows = lambda a: np.asarray(cut(jax.device_put(a), idx, rng,
                                     augment=augment.AugmentConfig())[1])
  np.testing.assert_array_equal(windows(same), windows(one))
  moved = np.any(windows(three) != windows(one), axis=(1, 2))
  assert 0.4 < moved.mean() < 0.9, moved.mean()


def test_training_on_prepared_renderings(prepared_renderings, tmp_path):
  """Real renderings (FluidR3 at tempo 1 and 0.9, TimGM6mb at 1) from the
  TFDS data, trained with --renderings all; validation on the primary."""
  data_dir, _ = prepared_renderings
  train = ip.load_pieces(data_dir, 'test', renderings='all')
  assert len(train.renderings) == 3
  val = ip.load_pieces(data_dir, 'test')
  config = tiny_train_config(data_dir, epochs=1, eval_every=1,
                             renderings='all')
  state = training.train_and_evaluate(config, str(tmp_path), train, val)
  assert int(state.step) == len(train) // config.batch_size
  assert int(state.skipped) == 0


def test_non_finite_step_is_skipped_and_counted(synthetic_data):
  config = tiny_train_config(synthetic_data)
  train = ip.load_pieces(synthetic_data, 'train')
  arrays = jax.device_put(train.arrays)
  model = models.from_config(config)
  optimizer = steps.make_optimizer(   # the one the runs use: no compile
      config.learning_rate, config.momentum, config.lr_halve_every,
      ip.steps_per_epoch(len(train), config.batch_size))
  state = steps.create_train_state(jax.random.key(0), model, optimizer)
  step = lambda s, a, idx: steps.train_step(
      s, a, idx, model=model, optimizer=optimizer, reg=config.reg,
      augment=config.augment, seed=config.seed)   # as train_and_evaluate
  idx = np.arange(32, dtype=np.int32)
  bad = arrays._replace(step=arrays.step.at[:].set(jnp.nan))
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
  step = np.full_like(train.arrays.step, np.nan)   # NaN spectrograms
  broken = pieceset.PieceSet(**{**train.__dict__,
                             'arrays': train.arrays._replace(step=step)})
  config = tiny_train_config(synthetic_data, max_consecutive_skips=3)
  with pytest.raises(training.NonFiniteError, match='3 consecutive'):
    training.train_and_evaluate(config, str(tmp_path), broken, val)


def test_heldout_correlation_and_projection():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(2000, 4))
  fx = np.concatenate([z, rng.normal(size=(2000, 4))], 1)
  gy = np.concatenate([z @ rng.normal(size=(4, 4)) + 0.1 * rng.normal(
      size=(2000, 4)), rng.normal(size=(2000, 4))], 1)
  p = cca.fit(fx[:1000], gy[:1000])
  px = np.asarray(cca.project_x(p, fx[1000:]))
  py = np.asarray(cca.project_y(p, gy[1000:]))
  corr = validation.heldout_correlation(px, py)
  assert 3 < corr < 4.2 and abs(corr - float(np.sum(p.corr))) < 0.3
  metrics = retrieval.both_directions(px[:, :4], py[:, :4])
  for d in ('a2s', 's2a'):   # chance: R@1 0.1 %, MR 500
    assert metrics[d]['R@1'] > 10 and metrics[d]['MR'] < 10, metrics


def test_time_budget_ends_with_an_evaluated_checkpoint(synthetic_data,
                                                       tmp_path):
  """A deadline already past: the first epoch runs (it measures the speed),
  is evaluated and saved although ``eval_every`` is 2, and training stops."""
  workdir = tmp_path / 'budget'
  training.train_and_evaluate(
      tiny_train_config(synthetic_data, epochs=4, eval_every=2),
      str(workdir), deadline=time.time())
  with open(workdir / checkpoints.HISTORY_FILE) as f:
    assert [json.loads(line)['epoch'] for line in f] == [1]
  state, meta = restore_last_state(workdir)
  assert meta['epoch'] == 1 and int(state.step) == 8


def _set_last_meta(workdir, **changes):
  """Edits the JSON meta of the workdir's last checkpoint."""
  last = workdir / checkpoints.LAST_DIR
  path = last / str(checkpoints.latest_epoch(str(last))) / 'meta' / 'metadata'
  meta = json.loads(path.read_text())
  meta.update(changes)
  meta = {k: v for k, v in meta.items() if v is not None}
  path.write_text(json.dumps(meta))


def test_resume_of_a_workdir_whose_best_was_chosen_by_another_metric(
    tmp_path):
  """A workdir whose best checkpoint was chosen by the mean R@10 (before
  ``validation.BEST_METRIC`` was MRR) resumes with that checkpoint's MRR
  as the value to beat, not the stored R@10 that no MRR could beat; one
  chosen by MRR resumes with its stored value."""
  workdir = tmp_path / 'nottingham_paper'
  shutil.copytree(checkpoints.resolve('nottingham_paper'), workdir,
                  ignore=shutil.ignore_patterns('tb'))
  config = checkpoints.read_config(str(workdir))
  best = checkpoints.restore_checkpoint(
      str(workdir / checkpoints.BEST_DIR), None, None)['meta']

  def resumed_best():
    return training._Run(config, str(workdir), models.from_config(config),
                         steps.make_optimizer(), 250, 125_053).best

  _set_last_meta(workdir, best=98.2, best_metric=None)
  assert resumed_best() == pytest.approx(
      validation.best_metric(best['metrics']))
  assert 0.5 < validation.best_metric(best['metrics']) < 1
  _set_last_meta(workdir, best=0.25, best_metric=validation.BEST_METRIC)
  assert resumed_best() == 0.25


def test_a_run_initialised_from_a_model_starts_from_its_towers(
    trained_workdir, synthetic_data, tmp_path):
  """--init_from: the model's best parameters and BatchNorm statistics, with
  a fresh step and optimizer state; another architecture is refused, naming
  the setting, before anything is written."""
  _, source, _, _ = checkpoints.restore_model(str(trained_workdir))
  config = tiny_train_config(synthetic_data, init_from=str(trained_workdir),
                             epochs=0)
  state = training.train_and_evaluate(config, str(tmp_path / 'warm'))
  fresh = steps.create_train_state(
      jax.random.key(config.seed), models.from_config(config),
      steps.make_optimizer())
  assert int(state.step) == 0
  jax.tree.map(np.testing.assert_array_equal,
               (state.params, state.batch_stats, state.opt_state),
               (source['params'], source['batch_stats'], fresh.opt_state))
  assert not np.array_equal(jax.tree.leaves(state.params)[0],
                            jax.tree.leaves(fresh.params)[0])
  stored = checkpoints.read_config(str(tmp_path / 'warm'))
  assert checkpoints.resolve(stored.init_from) == str(trained_workdir)
  with pytest.raises(checkpoints.ArchitectureChangedError,
                     match=r'out_dim=8.*out_dim=4'):
    training.train_and_evaluate(
        tiny_train_config(synthetic_data, init_from=str(trained_workdir),
                          out_dim=4, epochs=0), str(tmp_path / 'other'))
  assert not (tmp_path / 'other').exists()
