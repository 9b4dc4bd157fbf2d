"""The compiled SGD steps: fused steps equal step by step, bfloat16
convolutions learn, models side by side equal single runs (data parallelism
over several devices: test_sharding.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dccaflax import augment
from dccaflax import cca
from dccaflax import input_pipeline as ip
from dccaflax import models
from dccaflax import objectives
from dccaflax import pieceset
from dccaflax import steps
from dccaflax import training
from dccaflax import validation
from tests.conftest import restore_last_state
from tests.conftest import tiny_train_config


def _tiny_setup(synthetic_data, **overrides):
  """What ``train_and_evaluate`` builds for ``tiny_train_config``: with the
  same model and optimizer objects, the compiled steps are shared."""
  config = tiny_train_config(synthetic_data, **overrides)
  train = ip.load_pieces(synthetic_data, 'train')
  arrays = jax.device_put(train.arrays)
  model = models.from_config(config)
  optimizer = steps.make_optimizer(
      config.learning_rate, config.momentum, config.lr_halve_every,
      ip.steps_per_epoch(len(train), config.batch_size))
  state = steps.create_train_state(jax.random.key(config.seed), model,
                                   optimizer)
  return config, train, arrays, model, optimizer, state


def test_fused_steps_equal_step_by_step(synthetic_data):
  # XLA fuses a loop body differently from a plain step, so float rounding
  # differs (~1e-5 of an update after one step), and this tiny batch's DCCA
  # dynamics amplify it from step to step (the 7th loss of a step-by-step
  # and a fused run differed by 0.2 % with one initialisation, 1.5 % with
  # another).  So each chunk is checked from where it starts: its first loss
  # against a plain step from the same state on the same batch (state,
  # optimizer and batch order carried across chunks), one step's update to
  # 1e-5; different chunkings of the loop are bit-identical (the next test).
  config, train, arrays, model, optimizer, state0 = _tiny_setup(
      synthetic_data, learning_rate=0.001)
  kw = dict(model=model, optimizer=optimizer, reg=config.reg,
            augment=augment.AugmentConfig(), seed=config.seed)
  batches = ip.epoch_batches(0, 0, len(train), config.batch_size)[:7]
  # Chunks of at most 3: 3 + 3 + 1 steps, one compiled function.
  fused, fused_losses = state0, []
  order = jnp.asarray(batches)
  for start, count in ((0, 3), (3, 3), (6, 1)):
    _, plain = steps.train_step(fused, arrays, batches[start], **kw)
    fused, m = steps.train_chunk(fused, arrays, order, np.int32(start),
                                 np.int32(count), max_steps=3, **kw)
    assert m['loss'].shape == (3,)
    np.testing.assert_allclose(m['loss'][0], plain['loss'], rtol=1e-5)
    if start == 0:   # from the same initial state: the same loss, exactly
      assert m['loss'][0] == plain['loss']
    fused_losses += list(np.asarray(m['loss'])[:count])
    assert np.all(np.asarray(m['skip_run'])[count:] == -1)
  assert int(fused.step) == 7 and int(fused.skipped) == 0
  assert np.all(np.isfinite(fused_losses))
  # The state a chunk carries from step to step: three plain steps from the
  # start against the first chunk of three, relative to the update both
  # made.  Measured at SSE4.2 and AVX2 alike: 1.7e-4 after one step, 5e-3
  # after two, 1.3e-2 after three (the rounding, amplified); a chunk that
  # stopped a step early was 0.68 off, one that took a batch twice 0.71.
  plain3 = state0
  for idx in batches[:3]:
    plain3, _ = steps.train_step(plain3, arrays, idx, **kw)
  fused3, _ = steps.train_chunk(state0, arrays, order, np.int32(0),
                                np.int32(3), max_steps=3, **kw)
  err = _update_err(fused3.params, plain3.params, state0.params)
  assert err < 0.1, err
  one, _ = steps.train_step(state0, arrays, batches[0], **kw)
  one_fused, _ = steps.train_chunk(state0, arrays, order, np.int32(0),
                                   np.int32(1), max_steps=3, **kw)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0,
                                                       atol=1e-5),
               (one_fused.params, one_fused.batch_stats),
               (one.params, one.batch_stats))
  # Non-finite steps inside a chunk are skipped and counted as before.
  bad = arrays._replace(step=arrays.step.at[:].set(jnp.nan))
  new, m = steps.train_chunk(state0, bad, order, np.int32(0),
                             np.int32(3), max_steps=3, **kw)
  assert not np.any(m['finite'])
  np.testing.assert_array_equal(m['skip_run'], [1, 2, 3])
  assert int(new.step) == 3 and int(new.skipped) == 3
  jax.tree.map(np.testing.assert_array_equal,
               (new.params, new.batch_stats, new.opt_state),
               (state0.params, state0.batch_stats, state0.opt_state))
  new, m = steps.train_chunk(new, arrays, order, np.int32(0),
                             np.int32(2), max_steps=3, **kw)
  np.testing.assert_array_equal(m['skip_run'], [0, 0, -1])
  assert int(new.skip_run) == 0 and int(new.skipped) == 3


def test_fused_training_run_matches_and_stops_on_non_finite(
    synthetic_data, tmp_path):
  # One epoch of 8 steps in chunks of 3 (3 + 3 + 2) through the loop: the
  # parameters of 8 one-step chunks (the same compiled body: bit-identical).
  config, train, arrays, model, optimizer, state = _tiny_setup(
      synthetic_data)
  order = jnp.asarray(ip.epoch_batches(config.seed, 0, len(train),
                                       config.batch_size))
  for i in range(order.shape[0]):
    state, _ = steps.train_chunk(state, arrays, order, np.int32(i),
                                 np.int32(1), model=model,
                                 optimizer=optimizer, reg=config.reg,
                                 seed=config.seed, max_steps=3)
  training.train_and_evaluate(
      tiny_train_config(synthetic_data, steps_per_dispatch=3, epochs=1,
                              eval_every=1), str(tmp_path / 'fused'))
  fused, meta = restore_last_state(tmp_path / 'fused')
  assert meta['epoch'] == 1 and int(fused.step) == int(state.step) == 8
  jax.tree.map(np.testing.assert_array_equal,
               (fused.params, fused.batch_stats, fused.opt_state),
               (state.params, state.batch_stats, state.opt_state))
  # The caller still stops at the step that makes 3 skips in a row.
  val = ip.load_pieces(synthetic_data, 'valid')
  step = np.full_like(train.arrays.step, np.nan)   # NaN spectrograms
  broken = pieceset.PieceSet(**{**train.__dict__,
                             'arrays': train.arrays._replace(step=step)})
  config = tiny_train_config(synthetic_data, max_consecutive_skips=3,
                             steps_per_dispatch=3)
  with pytest.raises(training.NonFiniteError, match='3 consecutive'):
    training.train_and_evaluate(config, str(tmp_path / 'nan'), broken, val)


def test_bfloat16_steps_are_finite_and_learn(synthetic_data):
  config, train, arrays, model, optimizer, state0 = _tiny_setup(
      synthetic_data, width=0.125, dtype='bfloat16')
  assert model.dtype == jnp.bfloat16
  kw = dict(model=model, optimizer=optimizer, reg=config.reg, seed=0)
  order = jnp.asarray(ip.epoch_batches(0, 0, len(train), 32)[:8])
  probe = np.arange(0, len(train), 2)[:128]

  def probe_corr(state):
    fx, gy = validation.tower_outputs(model, state.variables, arrays, probe,
                                      batch_size=128)
    assert fx.dtype == gy.dtype == np.float32
    return float(cca.total_correlation(fx, gy, config.reg))

  state, m = steps.train_chunk(state0, arrays, order, np.int32(0),
                               np.int32(8), max_steps=8, **kw)
  for _ in range(2):   # 3 passes over the same 8 batches
    state, m2 = steps.train_chunk(state, arrays, order, np.int32(0),
                                  np.int32(8), max_steps=8, **kw)
  assert np.all(m['finite']) and np.all(m2['finite'])
  assert int(state.skipped) == 0
  # float32 parameters, statistics and optimizer state; bf16 convolutions.
  for leaf in jax.tree.leaves((state.params, state.batch_stats,
                               state.opt_state)):
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
  assert np.mean(m2['loss']) < np.mean(m['loss'][:3]) - 0.1, (m, m2)
  assert probe_corr(state) > probe_corr(state0) + 0.3


def test_the_step_computes_the_chosen_objective(synthetic_data):
  """``loss_and_grads`` with ``objective`` returns that objective's loss of
  the towers' (training-mode) outputs, which the three objectives tell
  apart; its gradient is finite and not zero."""
  config, _, arrays, model, _, state = _tiny_setup(
      synthetic_data, objective='infonce', infonce_temperature=0.2)
  sheets, specs = jax.jit(ip.batch_windows)(
      arrays, jnp.arange(config.batch_size, dtype=jnp.int32))
  chosen = objectives.from_config(config)

  @jax.jit   # one program (op by op, the towers and losses compile slowly)
  def reference(variables):
    (fx, gy), _ = model.apply(variables, sheets, specs, train=True,
                              mutable=['batch_stats'])
    values = {name: objectives.Objective(name).loss(fx, gy, config.reg)
              for name in objectives.NAMES}
    return {**values, 'chosen': chosen.loss(fx, gy, config.reg)}

  (loss, _), grads = jax.jit(functools.partial(
      steps.loss_and_grads, model=model, reg=config.reg, objective=chosen))(
          state.params, state.batch_stats, sheets, specs)
  values = {k: float(v) for k, v in reference(state.variables).items()}
  np.testing.assert_allclose(float(loss), values['chosen'], rtol=1e-5)
  assert len({round(v, 4) for v in values.values()}) == 4, values
  norm = np.sqrt(sum(float(jnp.sum(g * g)) for g in jax.tree.leaves(grads)))
  assert np.isfinite(norm) and norm > 0


def _update_err(new, ref, start) -> float:
  """||new - ref|| / ||ref - start|| over all leaves: the difference of two
  runs relative to the update they both made from ``start``."""
  diff = lambda a, b: sum(np.sum((np.asarray(x, np.float64)
                                  - np.asarray(y, np.float64)) ** 2)
                          for x, y in zip(jax.tree.leaves(a),
                                          jax.tree.leaves(b)))
  return float(np.sqrt(diff(new, ref) / diff(ref, start)))


def test_models_side_by_side_equal_single_runs(synthetic_data):
  """K = 2 models in one vmapped step: each is the model its own
  single-model run (its seed, its batches, its augmentation) gives.

  Up to float rounding, which is not tiny here: vmapped convolutions round
  differently, and on blank paper a different rounding can move a max-pool
  tie, so the gradient flows through another pixel.  Measured after 2 steps
  (AVX-512), against a bound of 0.05: 8e-6 and 1e-4 of the update with this
  augmentation.
  """
  config, train, arrays, model, optimizer, _ = _tiny_setup(
      synthetic_data, learning_rate=0.001)
  seeds, n = (0, 1), 2
  for aug in (augment.AugmentConfig(dx=2, dy=1, dframe=1, gain_db=3.0,
                                    gain_curve_db=2.0),):   # every draw
    kw = dict(model=model, optimizer=optimizer, reg=config.reg, augment=aug)
    states0 = [steps.create_train_state(jax.random.key(s), model, optimizer)
               for s in seeds]
    orders = np.stack([ip.epoch_batches(s, 0, len(train),
                                        config.batch_size)[:n]
                       for s in seeds])                        # (K, n, B)
    singles, single_losses = [], []
    for k, seed in enumerate(seeds):
      state, losses = states0[k], []
      for idx in orders[k]:
        state, m = steps.train_step(state, arrays, idx, seed=seed, **kw)
        losses.append(float(m['loss']))
      singles.append(state)
      single_losses.append(losses)
    both, losses = steps.stack(states0), []
    seed_array = jnp.asarray(seeds, jnp.int32)
    for i in range(n):
      both, m = steps.train_step_models(both, arrays, orders[:, i],
                                        seed_array, **kw)
      assert m['loss'].shape == (2,)
      losses.append(np.asarray(m['loss']))
    chunked, mc = steps.train_chunk_models(
        steps.stack(states0), arrays, jnp.asarray(orders), np.int32(0),
        np.int32(n), seed_array, max_steps=n, **kw)
    assert mc['loss'].shape == (2, n) and np.all(mc['finite'])
    for k in range(2):
      mine, chunk_k = steps.unstack(both, k), steps.unstack(chunked, k)
      assert int(mine.step) == n and int(mine.skipped) == 0
      np.testing.assert_allclose(np.array(losses)[:, k], single_losses[k],
                                 rtol=1e-3)
      for run in (mine, chunk_k):
        err = _update_err(run.params, singles[k].params, states0[k].params)
        assert err < 0.05, (aug, k, err)
    # The two models really are two.
    assert _update_err(steps.unstack(both, 1).params, singles[0].params,
                       states0[0].params) > 0.5
