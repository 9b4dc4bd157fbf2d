"""Tests for dccaflax.objectives: the CCA-projected similarities, the ranking
loss and InfoNCE against float64 NumPy references, gradients by finite
differences, degenerate batches, the registry and the settings."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dccaflax import cca
from dccaflax import config as config_lib
from dccaflax import objectives
from tests.test_cca import REG
from tests.test_cca import assert_matmuls_at_highest
from tests.test_cca import correlated_views
from tests.test_cca import degenerate
from tests.test_cca import directional_fd_check
from tests.test_cca import reference_whitening
from tests.test_cca import x64

_REPO = pathlib.Path(__file__).resolve().parents[1]
_NEW = (objectives.CCA_RANKING, objectives.INFONCE)
# Jitted once for the module (settings traced): eager op-by-op calls and a
# fresh jit per call would compile again and again.
_ranking = jax.jit(objectives.cca_ranking_loss)
_infonce = jax.jit(objectives.infonce_loss)
_loss = jax.jit(lambda a, b, name: objectives.Objective(name).loss(a, b, REG),
                static_argnames='name')
_grad = jax.jit(jax.grad(
    lambda a, b, name: objectives.Objective(name).loss(a, b, REG),
    argnums=(0, 1)), static_argnames='name')


# --------------------------------------------------------------------------
# float64 NumPy references (the public CCA layer's formulation)
# --------------------------------------------------------------------------


def reference_similarities(fx, gy, reg=REG):
  """float64 NumPy: eigh-based S^{-1/2} whitening, the singular vectors of
  T as the projections (CPJKU/cca_layer's CCALayer), unit rows, cosines."""
  fc, gc, wx, wy, t = reference_whitening(fx, gy, reg)
  e, _, ft = np.linalg.svd(t)
  px = fc @ wx @ e
  py = gc @ wy @ ft.T
  px /= np.linalg.norm(px, axis=1, keepdims=True)
  py /= np.linalg.norm(py, axis=1, keepdims=True)
  return px @ py.T


def reference_ranking(sim, margin):
  """The hinge, one rival at a time, both directions (float64 loops)."""
  n = sim.shape[0]
  rows = [max(0.0, margin - sim[i, i] + sim[i, j])
          for i in range(n) for j in range(n) if j != i]
  cols = [max(0.0, margin - sim[i, i] + sim[j, i])
          for i in range(n) for j in range(n) if j != i]
  return np.mean(rows) + np.mean(cols)


def reference_infonce(sim, temperature):
  """Symmetric cross-entropy with softmax over each row / column (float64)."""
  logits = np.asarray(sim, np.float64) / temperature

  def xent(m):   # rows of m against the diagonal
    m = m - m.max(axis=1, keepdims=True)
    logp = m - np.log(np.exp(m).sum(axis=1, keepdims=True))
    return -np.mean(np.diag(logp))

  return 0.5 * (xent(logits) + xent(logits.T))


# --------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------


def test_similarities_equal_the_explicit_cca_projection():
  fx, gy = correlated_views(60, 6, seed=11)
  ref = reference_similarities(fx, gy)
  # Pairs are more alike than non-pairs: the matrix is no trivial one.
  off = ~np.eye(len(ref), dtype=bool)
  assert np.mean(np.diag(ref)) > np.mean(ref[off]) + 0.3
  got = objectives.cca_cosine_similarities(fx.astype(np.float32),
                                           gy.astype(np.float32))
  assert got.shape == (60, 60) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4)
  with x64():
    got64 = objectives.cca_cosine_similarities(jnp.asarray(fx),
                                               jnp.asarray(gy))
    assert got64.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got64), ref, atol=1e-10)
  # The same through the project's own linear CCA (singular vectors).
  p = cca.fit_stats(cca.stats(fx, gy), REG)
  px, py = (np.asarray(a, np.float64) for a in cca.project(p, fx, gy))
  px /= np.linalg.norm(px, axis=1, keepdims=True)
  py /= np.linalg.norm(py, axis=1, keepdims=True)
  np.testing.assert_allclose(px @ py.T, ref, atol=1e-4)


def test_ranking_loss_and_infonce_match_float64_references():
  fx, gy = correlated_views(48, 8, seed=12)
  sim = reference_similarities(fx, gy)
  f32 = fx.astype(np.float32), gy.astype(np.float32)
  for margin in (0.1, 0.5, 1.0):
    ref = reference_ranking(sim, margin)
    assert 0 < ref < 2 * (margin + 2)
    got = _ranking(*f32, REG, margin)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), ref, rtol=1e-4)
  for tau in (0.05, 0.1, 1.0):
    ref = reference_infonce(sim, tau)
    got = _infonce(*f32, REG, tau)
    np.testing.assert_allclose(float(got), ref, rtol=1e-4)
    with x64():
      got = _infonce(jnp.asarray(fx), jnp.asarray(gy), REG, tau)
      np.testing.assert_allclose(float(got), ref, rtol=1e-10)
  # The losses of a similarity matrix alone, on a non-symmetric one.
  rng = np.random.default_rng(0)
  s = np.tanh(rng.normal(size=(7, 7)))
  np.testing.assert_allclose(float(objectives.ranking_hinge(s, 0.3)),
                             reference_ranking(s, 0.3), rtol=1e-6)
  np.testing.assert_allclose(float(objectives.symmetric_infonce(s, 0.2)),
                             reference_infonce(s, 0.2), rtol=1e-6)
  # Equal similarities: InfoNCE is log N, the hinge 2 m.
  np.testing.assert_allclose(
      float(objectives.symmetric_infonce(np.zeros((7, 7)), 0.2)), np.log(7),
      rtol=1e-6)
  np.testing.assert_allclose(
      float(objectives.ranking_hinge(np.zeros((7, 7)), 0.3)), 0.6, rtol=1e-6)


# --------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------


@pytest.mark.parametrize('name', _NEW)
@pytest.mark.parametrize('kind', ['random', 'identical'])
def test_gradient_matches_finite_differences_float64(name, kind):
  with x64():
    if kind == 'random':
      fx, gy = correlated_views(24, 5, seed=13)
    else:   # all correlations ~1: repeated singular values
      fx, gy = (a.astype(np.float64) for a in degenerate(kind, n=24, h=5))
    fx, gy = jnp.asarray(fx), jnp.asarray(gy)
    if name == objectives.CCA_RANKING:
      sim = np.asarray(objectives.cca_cosine_similarities(fx, gy))
      hinge = 0.5 - np.diag(sim)[:, None] + sim
      off = ~np.eye(len(sim), dtype=bool)
      # Many terms on each side of the kink, none within the FD step of it.
      assert 0.1 < np.mean(hinge[off] > 0) < 0.9, np.mean(hinge[off] > 0)
      assert np.min(np.abs(hinge[off])) > 1e-4
      loss = lambda a, b: objectives.cca_ranking_loss(a, b, REG, margin=0.5)
    else:
      loss = lambda a, b: objectives.infonce_loss(a, b, REG, temperature=0.1)
    gx, gg = directional_fd_check(loss, fx, gy)
    assert np.linalg.norm(gx) + np.linalg.norm(gg) > 1e-3


def test_polar_factor_jvp_equals_svd_autodiff_when_spectrum_is_simple():
  rng = np.random.default_rng(14)
  with x64():
    t = jnp.asarray(rng.normal(size=(5, 5)))
    dt = jnp.asarray(rng.normal(size=(5, 5)))

    def by_vectors(m):   # JAX's SVD derivative (1 / (s_i^2 - s_j^2) terms)
      p, _, qt = jnp.linalg.svd(m)
      return p @ qt

    _, ours = jax.jvp(objectives.polar_factor, (t,), (dt,))
    _, auto = jax.jvp(by_vectors, (t,), (dt,))
    np.testing.assert_allclose(ours, auto, atol=1e-10)
    w = objectives.polar_factor(t)
    np.testing.assert_allclose(w @ w.T, np.eye(5), atol=1e-12)


def test_float32_gradient_close_to_float64():
  fx, gy = correlated_views(100, 8, seed=15)
  for name in _NEW:
    g32 = _grad(fx.astype(np.float32), gy.astype(np.float32), name=name)
    with x64():
      g64 = _grad(jnp.asarray(fx), jnp.asarray(gy), name=name)
    for a, b in zip(g32, g64):
      b = np.asarray(b)
      err = np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)
      assert err < 1e-3, (name, err)
    assert_matmuls_at_highest(jax.value_and_grad(
        lambda a, b: objectives.Objective(name).loss(a, b, REG),
        argnums=(0, 1)),
        fx.astype(np.float32), gy.astype(np.float32))


@pytest.mark.parametrize('kind', ['dead_unit', 'identical', 'all_zero'])
def test_degenerate_batches_have_finite_loss_and_gradient(kind):
  fx, gy = degenerate(kind)
  for name in _NEW:
    value = _loss(fx, gy, name=name)
    gx, gg = _grad(fx, gy, name=name)
    assert np.isfinite(value), (name, kind)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gg)), (name, kind)
    if kind == 'all_zero':   # every similarity 0
      expect = (2 * objectives.DEFAULT_MARGIN if name == objectives.CCA_RANKING
                else np.log(len(fx)))
      np.testing.assert_allclose(float(value), expect, rtol=1e-6)
    if kind == 'identical':  # every pair its own best match
      sim = objectives.cca_cosine_similarities(fx, gy)
      np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-4)


def test_unequal_widths_are_refused():
  fx, gy = correlated_views(20, 4, seed=16)
  with pytest.raises(ValueError, match='equal tower widths'):
    objectives.cca_ranking_loss(fx, gy[:, :3])


# --------------------------------------------------------------------------
# The registry and the settings
# --------------------------------------------------------------------------


def test_registry_objectives_and_their_errors():
  assert objectives.NAMES == ('dcca', 'cca_ranking', 'infonce')
  fx, gy = correlated_views(30, 4, seed=17)
  fx, gy = fx.astype(np.float32), gy.astype(np.float32)
  dcca = objectives.Objective()
  assert dcca.name == 'dcca' and hash(dcca) == hash(objectives.Objective())
  assert float(dcca.loss(fx, gy, REG)) == float(cca.dcca_loss(fx, gy, REG))
  rank = objectives.Objective('cca_ranking', (('margin', 0.3),))
  assert float(rank.loss(fx, gy, REG)) == float(
      objectives.cca_ranking_loss(fx, gy, REG, margin=0.3))
  with pytest.raises(ValueError, match='dcca, cca_ranking, infonce'):
    objectives.Objective('triplet')
  with pytest.raises(ValueError, match="no setting 'temperature'"):
    objectives.Objective('cca_ranking', (('temperature', 0.1),))


def test_config_selects_the_objective_and_reads_old_configs():
  default = config_lib.TrainConfig(data_dir='d')
  assert default.objective == 'dcca'
  assert objectives.from_config(default) == objectives.Objective('dcca')
  config = config_lib.TrainConfig.from_flat(
      data_dir='d', objective='infonce', infonce_temperature=0.07)
  assert objectives.from_config(config) == objectives.Objective(
      'infonce', (('temperature', 0.07),))
  config = dataclasses.replace(config, objective='cca_ranking')
  assert objectives.from_config(config).settings == (
      ('margin', objectives.DEFAULT_MARGIN),)
  with pytest.raises(ValueError, match='dcca, cca_ranking, infonce'):
    config_lib.TrainConfig(data_dir='d', objective='trace')
  with pytest.raises(ValueError, match='infonce_temperature'):
    config_lib.TrainConfig(data_dir='d', infonce_temperature=0.0)
  with pytest.raises(ValueError, match='rank_margin'):
    config_lib.TrainConfig(data_dir='d', rank_margin=-0.1)
  # The shipped model's config.json, as written before the settings
  # existed, reads back as the paper's objective, every setting unchanged.
  new_keys = {'objective', 'rank_margin', 'infonce_temperature'}
  with open(_REPO / 'models' / 'nottingham_paper' / 'config.json') as f:
    stored = json.load(f)
  old = {k: v for k, v in stored.items() if k not in new_keys}
  config = config_lib.TrainConfig.from_json(old)
  assert config == config_lib.TrainConfig.from_json(stored)
  assert objectives.from_config(config) == objectives.Objective('dcca')
  flat = config.to_json()
  assert {k: flat[k] for k in old} == old
  assert set(flat) - set(old) >= new_keys
  assert (flat['rank_margin'], flat['infonce_temperature']) == (
      objectives.DEFAULT_MARGIN, objectives.DEFAULT_TEMPERATURE)


def test_flags_select_an_objective():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from experiments import config_flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  config_flags.define(flag_values=fv)
  fv(['train', '--data_dir=d', '--objective=cca_ranking',
      '--rank_margin=0.3'])
  assert objectives.from_config(config_flags.config(fv)) == (
      objectives.Objective('cca_ranking', (('margin', 0.3),)))
  fv = flags.FlagValues()
  config_flags.define(flag_values=fv)
  with pytest.raises(flags.IllegalFlagValueError, match='cca_ranking'):
    fv(['train', '--data_dir=d', '--objective=trace'])
