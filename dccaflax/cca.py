"""CCA maths: covariances, Cholesky whitening, the DCCA objective, linear CCA.

Pure functions on arrays, no Flax, no state; everything here can be traced by
``jax.jit`` (``fit`` takes ``batch_size`` as a static Python int).

Notation (Dorfer, Arzt, Widmer 2016, Eq. 1-3; Andrew et al. 2013)
------------------------------------------------------------------
* ``fx``: ``(N, hx)`` float, sheet-tower output f(X); ``gy``: ``(N, hy)``
  float, audio-tower output g(Y); row ``i`` of both is one pair.  The paper
  uses ``hx == hy == h == 32``; nothing here needs equal widths.
* Centred covariances with ``1 / (N - 1)``; a ridge ``reg`` (absolute, in the
  units of the features squared) is added to both diagonals::

    Sxx = fx_c^T fx_c / (N-1) + reg I,  Syy = gy_c^T gy_c / (N-1) + reg I,
    Sxy = fx_c^T gy_c / (N-1).

* Whitening by Cholesky factors ``Sxx = Lx Lx^T``, ``Syy = Ly Ly^T`` with
  triangular solves::

    T = Lx^{-1} Sxy Ly^{-T}.

  ``T`` differs from the paper's ``Sxx^{-1/2} Sxy Syy^{-1/2}`` only by
  orthogonal factors on both sides (``Lx^{-1} = Qx Sxx^{-1/2}`` with ``Qx``
  orthogonal), so it has the same singular values, i.e. the same canonical
  correlations.  Unlike an ``eigh``-based inverse square root, its gradient
  stays finite when eigenvalues repeat (dead units, an all-zero batch).
* Total correlation = trace norm of ``T`` = sum of its singular values
  (Eq. 3).  The DCCA loss is its negative (``dcca_loss``).

Gradient of the trace norm
--------------------------
The derivatives of the singular *vectors* contain ``1 / (s_i^2 - s_j^2)``
factors that blow up when singular values repeat (e.g. identical views: all
correlations ~1; an all-zero batch: all 0).  ``trace_norm`` therefore has a
``custom_jvp`` with the closed form ``d||T||_* = <U V^T, dT>``, which touches
no singular-vector derivative: the polar factor ``U V^T`` is unique whenever
``T`` has full rank, whatever the multiplicities, and has spectral norm <= 1
otherwise (then it is one valid subgradient).  (JAX's own rule for
``svd(compute_uv=False)`` reduces to the same expression today; the custom
rule pins it.)  Only first-order derivatives are supported through it.

Precision
---------
Every matmul/einsum here passes ``precision=HIGHEST``: on GPUs JAX runs
float32 matmuls at TF32 by default, which gave 1-80 % gradient errors inside
the DCCA objective.  JAX's own Cholesky / triangular-solve derivative rules
already use ``HIGHEST``.  Inputs are computed in
``promote_types(dtype, float32)``: bfloat16/float16 are upcast to float32,
float32 stays float32, float64 stays float64 (with x64 enabled).

Sufficient statistics
---------------------
``Stats`` holds the count, the sums and the *centred* co-moments
(``sum_i (x_i - mean_x)(x_i - mean_x)^T`` etc.), so batches are combined with
Chan et al.'s pairwise update (``merge``) or, across devices, with
``psum_stats`` -- never via raw uncentred second moments in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

HIGHEST = jax.lax.Precision.HIGHEST
DEFAULT_REG = 1e-3
PAPER_DIM = 32    # h, the paper's correlation-space dimensionality


def _compute_dtype(*arrays) -> jnp.dtype:
  """Common float dtype of ``arrays``, at least float32."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a @ b`` at full float32 precision (no TF32 / bf16 passes)."""
  return jnp.matmul(a, b, precision=HIGHEST)


# --------------------------------------------------------------------------
# Sufficient statistics
# --------------------------------------------------------------------------


class Stats(NamedTuple):
  """Sufficient statistics of paired features (a pytree).

  Attributes:
    count: () float, number of pairs ``N`` (a float so it can be summed and
      mixed with the moments; exact up to 2**24 pairs in float32).
    sum_x: (hx,) float, ``sum_i fx_i``.
    sum_y: (hy,) float, ``sum_i gy_i``.
    sxx: (hx, hx) float, centred co-moment ``sum_i (fx_i - m_x)(fx_i - m_x)^T``.
    syy: (hy, hy) float, centred co-moment of ``gy``.
    sxy: (hx, hy) float, centred cross co-moment
      ``sum_i (fx_i - m_x)(gy_i - m_y)^T``.
  """
  count: jax.Array
  sum_x: jax.Array
  sum_y: jax.Array
  sxx: jax.Array
  syy: jax.Array
  sxy: jax.Array


def stats(fx: jax.Array, gy: jax.Array) -> Stats:
  """Sufficient statistics of one batch (two-pass: mean, then co-moments).

  Args:
    fx: (N, hx) float, view-1 features.
    gy: (N, hy) float, view-2 features, row-aligned with ``fx``.

  Returns:
    ``Stats`` in ``promote_types(dtype, float32)``.
  """
  dtype = _compute_dtype(fx, gy)
  fx = jnp.asarray(fx, dtype)
  gy = jnp.asarray(gy, dtype)
  n = fx.shape[0]
  sum_x = jnp.sum(fx, axis=0)
  sum_y = jnp.sum(gy, axis=0)
  fc = fx - sum_x / max(n, 1)
  gc = gy - sum_y / max(n, 1)
  return Stats(
      count=jnp.asarray(n, dtype),
      sum_x=sum_x,
      sum_y=sum_y,
      sxx=_mm(fc.T, fc),
      syy=_mm(gc.T, gc),
      sxy=_mm(fc.T, gc))


def empty_stats(hx: int, hy: int, dtype=jnp.float32) -> Stats:
  """Statistics of zero pairs: the identity element of ``merge``."""
  return Stats(
      count=jnp.zeros((), dtype),
      sum_x=jnp.zeros((hx,), dtype),
      sum_y=jnp.zeros((hy,), dtype),
      sxx=jnp.zeros((hx, hx), dtype),
      syy=jnp.zeros((hy, hy), dtype),
      sxy=jnp.zeros((hx, hy), dtype))


def _safe_mean(total: jax.Array, count: jax.Array) -> jax.Array:
  """``total / count``, 0 where ``count == 0``."""
  return total / jnp.maximum(count, 1)


def merge(a: Stats, b: Stats) -> Stats:
  """Statistics of the union of two disjoint sets of pairs.

  Chan, Golub, LeVeque's pairwise update of centred co-moments:
  ``M_ab = M_a + M_b + (n_a n_b / n) d_x d_y^T`` with ``d = mean_b - mean_a``.
  Either side may be empty (``count == 0``).

  Args:
    a, b: ``Stats`` with equal widths.

  Returns:
    Merged ``Stats``.
  """
  n = a.count + b.count
  dx = _safe_mean(b.sum_x, b.count) - _safe_mean(a.sum_x, a.count)
  dy = _safe_mean(b.sum_y, b.count) - _safe_mean(a.sum_y, a.count)
  w = a.count * b.count / jnp.maximum(n, 1)
  return Stats(
      count=n,
      sum_x=a.sum_x + b.sum_x,
      sum_y=a.sum_y + b.sum_y,
      sxx=a.sxx + b.sxx + w * jnp.outer(dx, dx),
      syy=a.syy + b.syy + w * jnp.outer(dy, dy),
      sxy=a.sxy + b.sxy + w * jnp.outer(dx, dy))


def psum_stats(s: Stats, axis_name) -> Stats:
  """All-reduce ``Stats`` over a named mapped axis (pmap/shard_map/vmap).

  Uses the exact k-group form of Chan's update,
  ``M = sum_k [M_k + n_k (m_k - m)(m_k - m)^T]`` with the global mean ``m``,
  so no uncentred second moments are formed.

  Args:
    s: per-device ``Stats``.
    axis_name: the mapped axis to reduce over.

  Returns:
    The global ``Stats``, identical on every member of the axis.
  """
  count = jax.lax.psum(s.count, axis_name)
  sum_x = jax.lax.psum(s.sum_x, axis_name)
  sum_y = jax.lax.psum(s.sum_y, axis_name)
  ex = _safe_mean(s.sum_x, s.count) - _safe_mean(sum_x, count)
  ey = _safe_mean(s.sum_y, s.count) - _safe_mean(sum_y, count)
  sxx, syy, sxy = jax.lax.psum(
      (s.sxx + s.count * jnp.outer(ex, ex),
       s.syy + s.count * jnp.outer(ey, ey),
       s.sxy + s.count * jnp.outer(ex, ey)), axis_name)
  return Stats(count, sum_x, sum_y, sxx, syy, sxy)


def covariances(s: Stats, reg: float = DEFAULT_REG
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Regularised covariances from sufficient statistics.

  Args:
    s: ``Stats`` of ``N`` pairs.
    reg: ridge added to both diagonals (absolute, feature units squared).

  Returns:
    ``(sxx, syy, sxy)``: (hx, hx), (hy, hy), (hx, hy); co-moments divided by
    ``max(N - 1, 1)``, ``reg * I`` added to ``sxx`` and ``syy``.
  """
  denom = jnp.maximum(s.count - 1, 1)
  eye_x = jnp.eye(s.sxx.shape[0], dtype=s.sxx.dtype)
  eye_y = jnp.eye(s.syy.shape[0], dtype=s.syy.dtype)
  return (s.sxx / denom + reg * eye_x,
          s.syy / denom + reg * eye_y,
          s.sxy / denom)


# --------------------------------------------------------------------------
# Whitening and the trace norm
# --------------------------------------------------------------------------


def whitened_cross_covariance(sxx: jax.Array, syy: jax.Array, sxy: jax.Array
                              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``T = Lx^{-1} Sxy Ly^{-T}`` with Cholesky factors of the covariances.

  Args:
    sxx: (hx, hx) symmetric positive definite (regularised) covariance.
    syy: (hy, hy) symmetric positive definite (regularised) covariance.
    sxy: (hx, hy) cross-covariance.

  Returns:
    ``(t, lx, ly)``: ``t`` (hx, hy) whose singular values are the canonical
    correlations; ``lx`` (hx, hx) and ``ly`` (hy, hy) lower-triangular with
    ``sxx = lx lx^T``, ``syy = ly ly^T``.  NaN if a covariance is not positive
    definite (use ``reg > 0``).
  """
  lx = jnp.linalg.cholesky(sxx)
  ly = jnp.linalg.cholesky(syy)
  a = solve_triangular(lx, sxy, lower=True)            # Lx^{-1} Sxy
  t = solve_triangular(ly, a.T, lower=True).T           # (Ly^{-1} A^T)^T
  return t, lx, ly


@jax.custom_jvp
def trace_norm(t: jax.Array) -> jax.Array:
  """Trace (nuclear) norm ``tr((T^T T)^{1/2})`` = sum of singular values.

  Its derivative is the polar factor ``U V^T`` (custom JVP), finite for
  repeated or zero singular values.  First-order derivatives only.

  Args:
    t: (m, n) float matrix.

  Returns:
    () float, same dtype as ``t``.
  """
  return jnp.sum(jnp.linalg.svd(t, compute_uv=False))


@trace_norm.defjvp
def _trace_norm_jvp(primals, tangents):
  (t,), (dt,) = primals, tangents
  u, s, vt = jnp.linalg.svd(t, full_matrices=False)
  polar = _mm(u, vt)                                    # (m, n), ||.||_2 <= 1
  return jnp.sum(s), jnp.sum(polar * dt)


# --------------------------------------------------------------------------
# The DCCA objective
# --------------------------------------------------------------------------


def _whitened(fx: jax.Array, gy: jax.Array, reg: float) -> jax.Array:
  """``T`` of one batch, (hx, hy)."""
  return whitened_cross_covariance(*covariances(stats(fx, gy), reg))[0]


def total_correlation(fx: jax.Array, gy: jax.Array,
                      reg: float = DEFAULT_REG) -> jax.Array:
  """Sum of canonical correlations of a batch (paper Eq. 3), differentiable.

  Args:
    fx: (N, hx) float, view-1 features, N >= 2.
    gy: (N, hy) float, view-2 features, row-aligned with ``fx``.
    reg: ridge added to both covariance diagonals; must be > 0 for dead units
      or an all-zero batch.

  Returns:
    () float in ``promote_types(dtype, float32)``: trace norm of
    ``T = Lx^{-1} Sxy Ly^{-T}``, between 0 and ``min(hx, hy)``.  Gradients are
    finite for dead units, identical views and an all-zero batch.
  """
  return trace_norm(_whitened(fx, gy, reg))


def dcca_loss(fx: jax.Array, gy: jax.Array,
              reg: float = DEFAULT_REG) -> jax.Array:
  """DCCA training loss: ``-total_correlation(fx, gy, reg)``, () float."""
  return -total_correlation(fx, gy, reg)


def canonical_correlations(fx: jax.Array, gy: jax.Array,
                           reg: float = DEFAULT_REG) -> jax.Array:
  """Canonical correlations of a batch.

  Args:
    fx: (N, hx) float; gy: (N, hy) float; reg: ridge as in
      ``total_correlation``.

  Returns:
    (min(hx, hy),) float, descending, in [0, 1).
  """
  return jnp.linalg.svd(_whitened(fx, gy, reg), compute_uv=False)


# --------------------------------------------------------------------------
# Linear CCA on top of the towers
# --------------------------------------------------------------------------


class Projection(NamedTuple):
  """Fitted linear CCA (a pytree), k = min(hx, hy) components.

  ``project_x(p, fx) = (fx - mean_x) @ U`` and
  ``project_y(p, gy) = (gy - mean_y) @ V`` have (regularised) covariance
  ``I_k`` and cross-covariance ``diag(corr)``.

  Attributes:
    mean_x: (hx,) float, mean of the fitted ``fx``.
    mean_y: (hy,) float, mean of the fitted ``gy``.
    U: (hx, k) float, ``Lx^{-T} P`` (Cholesky whitening, then the left
      singular vectors ``P`` of ``T``).
    V: (hy, k) float, ``Ly^{-T} Q`` (right singular vectors ``Q``).
    corr: (k,) float, canonical correlations, descending.
  """
  mean_x: jax.Array
  mean_y: jax.Array
  U: jax.Array
  V: jax.Array
  corr: jax.Array


def fit_stats(s: Stats, reg: float = DEFAULT_REG) -> Projection:
  """Linear CCA from sufficient statistics.

  Whitening is ``L^{-T}`` (Cholesky), not the paper's ``S^{-1/2}``: the two
  differ by an orthogonal factor that the SVD of ``T`` absorbs, so ``corr``
  and the projected spaces are the same (each direction up to sign; a
  rotation within groups of equal correlations).  Signs are fixed so that the
  largest-magnitude entry of each column of ``U`` is positive; ``corr`` is
  then >= 0.

  Args:
    s: ``Stats`` of the fitting set.
    reg: ridge added to both covariance diagonals.

  Returns:
    ``Projection``.
  """
  t, lx, ly = whitened_cross_covariance(*covariances(s, reg))
  p, corr, qt = jnp.linalg.svd(t, full_matrices=False)
  u = solve_triangular(lx, p, lower=True, trans="T")    # Lx^{-T} P
  v = solve_triangular(ly, qt.T, lower=True, trans="T")  # Ly^{-T} Q
  idx = jnp.argmax(jnp.abs(u), axis=0)
  sign = jnp.where(u[idx, jnp.arange(u.shape[1])] < 0, -1, 1).astype(u.dtype)
  return Projection(
      mean_x=_safe_mean(s.sum_x, s.count),
      mean_y=_safe_mean(s.sum_y, s.count),
      U=u * sign,
      V=v * sign,
      corr=corr)


_stats_jit = jax.jit(stats)
_merge_jit = jax.jit(merge)
_fit_stats_jit = jax.jit(fit_stats)


def fit(fx: jax.Array, gy: jax.Array, reg: float = DEFAULT_REG,
        batch_size: int = 10_000) -> Projection:
  """Fit linear CCA on many pairs, ``batch_size`` pairs at a time.

  Per-batch statistics (``stats``) are combined with ``merge``, so the result
  equals a one-pass fit up to rounding while the co-moments stay centred.
  Works eagerly on host (NumPy) arrays larger than device memory allows in one
  piece, and under ``jax.jit`` with ``batch_size`` static.

  Args:
    fx: (N, hx) float, NumPy or JAX; sliced before moving to the device.
    gy: (N, hy) float, row-aligned with ``fx``.
    reg: ridge added to both covariance diagonals.
    batch_size: pairs per statistics batch (a Python int).

  Returns:
    ``Projection`` with k = min(hx, hy) components.
  """
  n = fx.shape[0]
  if n != gy.shape[0] or n == 0:
    raise ValueError(f"need equal, non-zero row counts: {fx.shape}, {gy.shape}")
  total = None
  for start in range(0, n, batch_size):
    s = _stats_jit(fx[start:start + batch_size], gy[start:start + batch_size])
    total = s if total is None else _merge_jit(total, s)
  return _fit_stats_jit(total, reg)


def project_x(p: Projection, fx: jax.Array) -> jax.Array:
  """View-1 features into the CCA space: (N, hx) -> (N, k)."""
  return _mm(fx - p.mean_x, p.U)


def project_y(p: Projection, gy: jax.Array) -> jax.Array:
  """View-2 features into the CCA space: (N, hy) -> (N, k)."""
  return _mm(gy - p.mean_y, p.V)


def project(p: Projection, fx: jax.Array, gy: jax.Array
            ) -> tuple[jax.Array, jax.Array]:
  """Both views into the CCA space: ``(project_x(p, fx), project_y(p, gy))``."""
  return project_x(p, fx), project_y(p, gy)
