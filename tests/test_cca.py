"""Tests for dccaflax.cca: values, gradients, degenerate batches, linear CCA."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dccaflax import cca

REG = 1e-3


@contextlib.contextmanager
def x64():
  """Enable float64 inside the block and restore the previous setting."""
  if hasattr(jax, "enable_x64"):
    with jax.enable_x64(True):
      yield
    return
  old = jax.config.read("jax_enable_x64")
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", old)


def correlated_views(n, h, seed=0, offset=0.0):
  """Two (n, h) float64 views sharing an h-dim latent, with noise."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, h))
  fx = z @ rng.normal(size=(h, h)) + 0.7 * rng.normal(size=(n, h)) + offset
  gy = z @ rng.normal(size=(h, h)) + 0.7 * rng.normal(size=(n, h)) - offset
  return fx, gy


def reference_whitening(fx, gy, reg=REG):
  """float64 NumPy, the paper's formulation: centred views ``fc``, ``gc``,
  eigh-based ``Sxx^{-1/2}``, ``Syy^{-1/2}`` and ``T`` between them."""
  fx = np.asarray(fx, np.float64)
  gy = np.asarray(gy, np.float64)
  n = fx.shape[0]
  fc, gc = fx - fx.mean(0), gy - gy.mean(0)
  sxx = fc.T @ fc / (n - 1) + reg * np.eye(fx.shape[1])
  syy = gc.T @ gc / (n - 1) + reg * np.eye(gy.shape[1])
  sxy = fc.T @ gc / (n - 1)

  def inv_sqrt(s):
    w, q = np.linalg.eigh(s)
    return (q / np.sqrt(w)) @ q.T

  wx, wy = inv_sqrt(sxx), inv_sqrt(syy)
  return fc, gc, wx, wy, wx @ sxy @ wy


def reference_total_correlation(fx, gy, reg=REG):
  """float64 NumPy: eigh-based inverse square roots, then SVD (paper's T)."""
  return np.linalg.svd(reference_whitening(fx, gy, reg)[-1],
                       compute_uv=False)


def degenerate(kind, n=64, h=6):
  """(fx, gy) float32 batches with a degenerate spectrum."""
  fx, gy = correlated_views(n, h, seed=3)
  fx, gy = fx.astype(np.float32), gy.astype(np.float32)
  if kind == "dead_unit":
    fx[:, 2] = 0.5          # constant column: zero variance
    gy[:, 0] = 0.0
  elif kind == "identical":
    gy = fx.copy()          # all correlations ~1, repeated singular values
  elif kind == "all_zero":
    fx, gy = np.zeros_like(fx), np.zeros_like(gy)
  return fx, gy


# --------------------------------------------------------------------------
# Value and gradient
# --------------------------------------------------------------------------


def test_total_correlation_matches_float64_reference():
  fx, gy = correlated_views(300, 8, seed=1)
  ref = reference_total_correlation(fx, gy)
  got = cca.total_correlation(fx.astype(np.float32), gy.astype(np.float32))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), ref.sum(), rtol=1e-5)
  corr = cca.canonical_correlations(fx.astype(np.float32),
                                    gy.astype(np.float32))
  np.testing.assert_allclose(np.asarray(corr), ref, atol=1e-5)
  assert np.all(np.diff(np.asarray(corr)) <= 0)
  np.testing.assert_allclose(float(cca.dcca_loss(fx, gy)), -ref.sum(),
                             rtol=1e-5)


def test_total_correlation_float64_and_low_precision_inputs():
  fx, gy = correlated_views(200, 5, seed=2)
  ref = reference_total_correlation(fx, gy).sum()
  with x64():
    got = cca.total_correlation(jnp.asarray(fx), jnp.asarray(gy))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(float(got), ref, rtol=1e-12)
  got = cca.total_correlation(jnp.asarray(fx, jnp.bfloat16),
                              jnp.asarray(gy, jnp.bfloat16))
  assert got.dtype == jnp.float32   # computed in float32, not bfloat16
  np.testing.assert_allclose(float(got), ref, rtol=2e-2)


def directional_fd_check(loss, fx, gy, seed=0, eps=1e-6, n_dirs=4):
  """float64 autodiff of ``loss(fx, gy)`` vs central differences along
  random directions."""
  f = jax.jit(loss)
  gx, gg = jax.jit(jax.grad(loss, argnums=(0, 1)))(fx, gy)
  assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gg))
  rng = np.random.default_rng(seed)
  for _ in range(n_dirs):
    dx, dy = rng.normal(size=fx.shape), rng.normal(size=gy.shape)
    fd = (f(fx + eps * dx, gy + eps * dy)
          - f(fx - eps * dx, gy - eps * dy)) / (2 * eps)
    ad = np.sum(gx * dx) + np.sum(gg * dy)
    np.testing.assert_allclose(ad, fd, rtol=1e-6, atol=1e-8)
  return gx, gg


@pytest.mark.parametrize("kind", ["random", "identical", "dead_unit"])
def test_gradient_matches_finite_differences_float64(kind):
  with x64():
    if kind == "random":
      fx, gy = correlated_views(40, 4, seed=4)
    else:
      fx, gy = (a.astype(np.float64) for a in degenerate(kind, n=40, h=4))
    fx, gy = jnp.asarray(fx), jnp.asarray(gy)
    assert fx.dtype == jnp.float64
    directional_fd_check(lambda a, b: cca.total_correlation(a, b, REG),
                         fx, gy)


def test_float32_gradient_close_to_float64():
  """Guards the precision of the float32 path (TF32 errors show up here)."""
  fx, gy = correlated_views(100, 8, seed=5)
  grad = jax.grad(cca.total_correlation, argnums=(0, 1))
  g32 = jax.jit(grad)(fx.astype(np.float32), gy.astype(np.float32))
  with x64():
    g64 = jax.jit(grad)(jnp.asarray(fx), jnp.asarray(gy))
  for a, b in zip(g32, g64):
    b = np.asarray(b)
    err = np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)
    assert err < 1e-4, err


def test_custom_gradient_equals_svd_autodiff_when_spectrum_is_simple():
  rng = np.random.default_rng(6)
  t = jnp.asarray(rng.normal(size=(5, 5)), jnp.float32)
  ours = jax.grad(cca.trace_norm)(t)
  auto = jax.grad(lambda m: jnp.linalg.svd(m, compute_uv=False).sum())(t)
  np.testing.assert_allclose(ours, auto, atol=1e-5)


@pytest.mark.parametrize("kind", ["dead_unit", "identical", "all_zero"])
def test_degenerate_batches_have_finite_loss_and_gradient(kind):
  fx, gy = degenerate(kind)
  loss = jax.jit(cca.dcca_loss)(fx, gy)
  gx, gg = jax.jit(jax.grad(cca.dcca_loss, argnums=(0, 1)))(fx, gy)
  assert np.isfinite(loss)
  assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gg))
  h = fx.shape[1]
  if kind == "identical":
    # T = Lx^{-1} C Lx^{-T} with C = S - reg I: all correlations just below 1.
    assert h - 0.01 < -float(loss) <= h
  if kind == "all_zero":
    assert float(loss) == 0.0
  if kind == "dead_unit":
    assert 0.0 < -float(loss) < h - 1


def assert_matmuls_at_highest(fn, *args):
  """Every dot_general in the graph of ``fn(*args)`` asks for HIGHEST."""
  jaxpr = jax.make_jaxpr(fn)(*args)
  precisions = []
  try:
    from jax.extend.core import jaxprs_in_params
  except ImportError:  # older jax
    jaxprs_in_params = jax.core.jaxprs_in_params

  def walk(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name == "dot_general":
        precisions.append(eqn.params["precision"])
      for sub in jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jaxpr.jaxpr)
  assert precisions
  highest = jax.lax.Precision.HIGHEST
  for p in precisions:
    assert p is not None
    ps = p if isinstance(p, tuple) else (p,)
    assert all(q == highest for q in ps), p


def test_all_linalg_matmuls_run_at_highest_precision():
  """Every dot_general in the value-and-grad graph asks for HIGHEST."""
  fx, gy = correlated_views(16, 3, seed=7)
  assert_matmuls_at_highest(
      jax.value_and_grad(cca.total_correlation, argnums=(0, 1)),
      fx.astype(np.float32), gy.astype(np.float32))


# --------------------------------------------------------------------------
# Statistics and linear CCA
# --------------------------------------------------------------------------


def known_correlation_views(n, rhos, h, seed=8):
  """Views whose canonical correlations are ``rhos`` (padded with zeros).

  Latents z_x, z_y (n, h) are unit-variance with corr(z_x[:, k], z_y[:, k]) =
  rhos[k] and independent otherwise; the views are random invertible mixings.
  """
  rng = np.random.default_rng(seed)
  rho = np.zeros(h)
  rho[:len(rhos)] = rhos
  zx = rng.normal(size=(n, h))
  zy = rho * zx + np.sqrt(1 - rho ** 2) * rng.normal(size=(n, h))
  a = rng.normal(size=(h, h)) + 2 * np.eye(h)
  b = rng.normal(size=(h, h)) + 2 * np.eye(h)
  return (zx @ a + 1.0).astype(np.float32), (zy @ b - 2.0).astype(np.float32), zx


def test_fit_recovers_known_canonical_correlations():
  rhos = [0.9, 0.5, 0.1]
  fx, gy, zx = known_correlation_views(50_000, rhos, h=5)
  proj = cca.fit(fx, gy, reg=1e-4, batch_size=10_000)
  corr = np.asarray(proj.corr)
  np.testing.assert_allclose(corr[:3], rhos, atol=0.015)
  assert np.all(corr[3:] < 0.03)
  assert np.all(np.diff(corr) <= 0)
  px, py = cca.project(proj, fx, gy)
  assert px.shape == py.shape == (50_000, 5)
  cov = np.cov(np.asarray(px, np.float64).T, np.asarray(py, np.float64).T)
  np.testing.assert_allclose(cov[:5, :5], np.eye(5), atol=2e-3)
  np.testing.assert_allclose(cov[5:, 5:], np.eye(5), atol=2e-3)
  np.testing.assert_allclose(cov[:5, 5:], np.diag(corr), atol=2e-3)
  np.testing.assert_allclose(np.asarray(px).mean(0), 0, atol=1e-3)
  # the first direction is the first latent (up to sign)
  c0 = np.corrcoef(np.asarray(px[:, 0]), zx[:, 0])[0, 1]
  assert abs(c0) > 0.99


def test_stats_merge_matches_one_pass_and_float64():
  fx, gy = correlated_views(20_000, 6, seed=9, offset=30.0)
  f32, g32 = fx.astype(np.float32), gy.astype(np.float32)
  one = cca.stats(f32, g32)
  merged = cca.empty_stats(6, 6)
  for i in range(0, 20_000, 3_000):    # uneven last batch
    merged = cca.merge(merged, cca.stats(f32[i:i + 3_000], g32[i:i + 3_000]))
  assert float(merged.count) == 20_000
  fc, gc = fx - fx.mean(0), gy - gy.mean(0)
  for s in (one, merged):
    sxx, syy, sxy = cca.covariances(s, reg=0.0)
    np.testing.assert_allclose(sxx, fc.T @ fc / 19_999, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(syy, gc.T @ gc / 19_999, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sxy, fc.T @ gc / 19_999, rtol=1e-4, atol=1e-4)

  p_one = cca.fit(f32, g32, batch_size=20_000)
  p_bat = cca.fit(f32, g32, batch_size=3_000)
  np.testing.assert_allclose(p_bat.corr, p_one.corr, atol=1e-5)
  np.testing.assert_allclose(p_bat.mean_x, p_one.mean_x, rtol=1e-5)
  np.testing.assert_allclose(p_bat.U, p_one.U, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(p_bat.V, p_one.V, rtol=1e-3, atol=1e-5)
  ref = reference_total_correlation(fx, gy)
  np.testing.assert_allclose(p_bat.corr, ref, atol=1e-5)


def test_psum_stats_equals_merge():
  fx, gy = correlated_views(4 * 500, 4, seed=10, offset=5.0)
  fx, gy = fx.astype(np.float32), gy.astype(np.float32)
  shards = (fx.reshape(4, 500, 4), gy.reshape(4, 500, 4))
  reduced = jax.vmap(lambda a, b: cca.psum_stats(cca.stats(a, b), "dev"),
                     axis_name="dev")(*shards)
  want = cca.stats(fx, gy)
  for got_leaf, want_leaf in zip(reduced, want):
    for k in range(4):   # identical on every device
      np.testing.assert_allclose(got_leaf[k], want_leaf, rtol=1e-5, atol=1e-3)


def test_jit_total_correlation_fit_stats_and_fit():
  fx, gy = correlated_views(1_000, 4, seed=11)
  fx, gy = fx.astype(np.float32), gy.astype(np.float32)
  np.testing.assert_allclose(jax.jit(cca.total_correlation)(fx, gy),
                             cca.total_correlation(fx, gy), rtol=1e-6)
  s = cca.stats(fx, gy)
  p_jit = jax.jit(cca.fit_stats)(s, REG)
  p_eager = cca.fit_stats(s, REG)
  for a, b in zip(p_jit, p_eager):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  p_fit = jax.jit(cca.fit, static_argnames="batch_size")(
      jnp.asarray(fx), jnp.asarray(gy), REG, batch_size=300)
  np.testing.assert_allclose(p_fit.corr, p_eager.corr, atol=1e-5)
  zx = jax.jit(cca.project_x)(p_fit, fx)
  zy = jax.jit(cca.project_y)(p_fit, gy)
  np.testing.assert_allclose(
      np.corrcoef(zx[:, 0], zy[:, 0])[0, 1], p_fit.corr[0], atol=1e-3)
