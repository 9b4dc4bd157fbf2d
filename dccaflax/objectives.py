"""Training objectives: one registry, name -> loss of a batch of tower outputs.

Every objective maps one batch of the two towers' outputs, ``fx`` (N, h)
sheet and ``gy`` (N, h) audio (row ``i`` of both is one pair), to a scalar
loss to minimise.  ``REGISTRY`` holds them by name with the ``TrainConfig``
settings each reads; ``Objective`` (hashable: a static argument of the
jitted steps) is one of them with its settings, made from a config by
``from_config``.  The retrieval is the same for all: validation and the
shipped model fit a linear CCA on training pairs and rank by cosine
similarity (``dccaflax.validation``).

``dcca`` (the paper's; the default)
  ``cca.dcca_loss``: minus the trace norm of the batch's whitened
  cross-covariance (Dorfer, Arzt, Widmer 2016, Eq. 3).

``cca_ranking``: the CCA layer with a pairwise ranking loss
  Dorfer, Schlueter, Vall, Korzeniowski, Widmer, "End-to-end cross-modality
  retrieval with CCA projections and pairwise ranking loss", IJMIR 2018
  (public code ``CPJKU/cca_layer``: ``CCALayer`` with ``alpha=1``, i.e. the
  statistics of the batch alone, then ``LengthNormLayer`` and
  ``get_contrastive_cos_loss``).  Both views are projected with the CCA
  transform of the batch (centred by the batch means, whitened by the
  regularised batch covariances, rotated by the singular vectors of the
  whitened cross-covariance ``T``), scaled to unit length, and compared by
  cosine similarity ``S_ij = cos(x_i, y_j)``.  The loss is the hinge with
  margin ``m`` (``rank_margin``; the public code's audio--score models use
  0.5) over the other items of the batch as contrastive examples, in both
  directions, each averaged over the ``N (N - 1)`` ordered pairs ``i != j``::

    L = mean_{i!=j} max(0, m - S_ii + S_ij) + mean_{i!=j} max(0, m - S_ii + S_ji)

  (the public code's ``symmetric=True``: the sum of the two means; its
  audio--score models use the first term alone).

``infonce``: symmetric InfoNCE (NT-Xent) on the same projections
  The cross-modal form of van den Oord et al. 2018 / Chen et al. 2020
  (SimCLR's NT-Xent) as used by Radford et al. 2021 (CLIP): logits
  ``S / tau`` (``infonce_temperature``; SimCLR's best with cosine
  similarity, 0.1), cross-entropy of each item against its own pair among
  the other view's N items, averaged over the batch and over the two
  directions::

    L = 1/2 mean_i [lse_j(S_ij / tau) - S_ii / tau]
      + 1/2 mean_j [lse_i(S_ij / tau) - S_jj / tau].

The batch CCA projection without singular vectors
-------------------------------------------------
With ``T = Lx^{-1} Sxy Ly^{-T} = P diag(c) Q^T`` (``cca.whitened_cross_
covariance``: Cholesky whitening; it differs from the paper's
``S^{-1/2}`` by orthogonal factors, which the SVD absorbs, so the
projected spaces are the same) and whitened rows ``a_i = Lx^{-1}(fx_i -
m_x)``, ``b_j = Ly^{-1}(gy_j - m_y)``, the projections are ``P^T a_i`` and
``Q^T b_j``.  For ``hx == hy`` (the towers' common ``out_dim``) ``P`` and
``Q`` are square orthogonal, so lengths are kept and::

  cos(P^T a_i, Q^T b_j) = a_i^T W b_j / (|a_i| |b_j|),   W = P Q^T,

the polar factor of ``T``: unique where ``T`` has full rank, and free of the
signs and rotations the singular vectors leave open.  Its derivative
``dW = P [(X - X^T) / (c_i + c_j)] Q^T`` with ``X = P^T dT Q`` (the polar
factor's closed form, ``polar_factor``'s custom JVP) has no
``1 / (c_i^2 - c_j^2)`` terms, which differentiating the singular vectors
themselves would give (they blow up when correlations repeat, e.g. all near
1).  Where two correlations are both 0 (two dead units of one view, an
all-zero batch) ``W`` is not unique there and the loss not differentiable;
those terms are set to 0, the derivative with that block of ``W`` held
fixed (exact along every direction that keeps the dead units dead).

Precision as in ``cca``: statistics and every matmul at ``HIGHEST``, inputs
promoted to at least float32.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from dccaflax import cca

DCCA = 'dcca'
CCA_RANKING = 'cca_ranking'
INFONCE = 'infonce'
DEFAULT = DCCA
DEFAULT_MARGIN = 0.5        # CPJKU/cca_layer, audio_score_ccal_cont: GAMMA
DEFAULT_TEMPERATURE = 0.1   # SimCLR (Chen et al. 2020), Table 5
_mm = cca._mm   # pylint: disable=protected-access  # matmul at HIGHEST


# --------------------------------------------------------------------------
# The batch CCA projection and its cosine similarities
# --------------------------------------------------------------------------


@jax.custom_jvp
def polar_factor(t: jax.Array) -> jax.Array:
  """Orthogonal polar factor ``W = P Q^T`` of a square ``T = P diag(c) Q^T``.

  Args:
    t: (k, k) float.

  Returns:
    (k, k) orthogonal, same dtype.  Its JVP (module doc) is finite; where
    two singular values are both 0 (below ``4 k eps c_max``, the SVD's
    precision) W is not unique and those terms are 0 (that block held
    fixed).
  """
  p, _, qt = jnp.linalg.svd(t, full_matrices=False)
  return _mm(p, qt)


@polar_factor.defjvp
def _polar_factor_jvp(primals, tangents):
  (t,), (dt,) = primals, tangents
  p, c, qt = jnp.linalg.svd(t, full_matrices=False)
  x = _mm(_mm(p.T, dt), qt.T)                     # P^T dT Q
  den = c[:, None] + c[None, :]
  # Two singular values both zero at the SVD's precision: W is not unique
  # there (e.g. two dead units of one view); that block is held fixed.  The
  # denominator is 1 there, not 0, so that no 0/0 reaches the transpose
  # (the gradient) either; c_max = 0 (T = 0) holds every block fixed.
  floor = 4 * t.shape[0] * jnp.finfo(t.dtype).eps * c[0]
  keep = den > floor
  omega = jnp.where(keep, (x - x.T) / jnp.where(keep, den, 1.0), 0.0)
  return _mm(p, qt), _mm(_mm(p, omega), qt)


def _unit_rows(a: jax.Array) -> jax.Array:
  """Rows scaled to unit length: (N, k) -> (N, k).

  The rows are whitened features (unit covariance: squared length ~k on
  average); a row shorter than 1e-6 (a pair at the batch mean) is scaled by
  1e6 instead, so a zero row stays 0 with a bounded gradient.
  """
  sq = jnp.sum(a * a, axis=1, keepdims=True)
  return a * jax.lax.rsqrt(jnp.maximum(sq, 1e-12))


def cca_cosine_similarities(fx: jax.Array, gy: jax.Array,
                            reg: float = cca.DEFAULT_REG) -> jax.Array:
  """Cosine similarities of the two views in the batch's own CCA space.

  Args:
    fx: (N, h) float, view-1 (sheet) features, N >= 2.
    gy: (N, h) float, view-2 (audio) features, row-aligned; the same width
      ``h`` (the towers' ``out_dim``), so that all ``h`` canonical
      directions are kept.
    reg: ridge added to both covariance diagonals (as ``cca.dcca_loss``).

  Returns:
    (N, N) float in ``promote_types(dtype, float32)``, entries in [-1, 1]:
    ``[i, j]`` = cosine of sheet ``i`` and audio ``j`` after the batch's CCA
    projection (module doc).

  Raises:
    ValueError: the widths differ.
  """
  if fx.shape[1] != gy.shape[1]:
    raise ValueError('the CCA-projected objectives keep every canonical '
                     'direction and need equal tower widths, got '
                     f'{fx.shape} and {gy.shape}')
  s = cca.stats(fx, gy)
  t, lx, ly = cca.whitened_cross_covariance(*cca.covariances(s, reg))
  dtype = t.dtype
  a = solve_triangular(lx, (jnp.asarray(fx, dtype) - s.sum_x / s.count).T,
                       lower=True).T                       # rows Lx^{-1} x_c
  b = solve_triangular(ly, (jnp.asarray(gy, dtype) - s.sum_y / s.count).T,
                       lower=True).T                       # rows Ly^{-1} y_c
  return _mm(_unit_rows(_mm(a, polar_factor(t))), _unit_rows(b).T)


# --------------------------------------------------------------------------
# Losses on the similarity matrix, and the objectives
# --------------------------------------------------------------------------


def ranking_hinge(sim: jax.Array, margin: float) -> jax.Array:
  """Pairwise ranking loss of a similarity matrix, both directions.

  Args:
    sim: (N, N) float, ``sim[i, j]`` = similarity of view-1 item ``i`` and
      view-2 item ``j``; matching pairs on the diagonal.  N >= 2.
    margin: the hinge's margin ``m`` (similarity units, >= 0).

  Returns:
    () float: ``mean_{i!=j} max(0, m - S_ii + S_ij) + mean_{i!=j} max(0,
    m - S_ii + S_ji)`` (module doc), in ``[0, 2 (m + 2)]``.
  """
  n = sim.shape[0]
  diag = jnp.diagonal(sim)
  off = ~jnp.eye(n, dtype=bool)
  rows = jnp.where(off, jnp.maximum(0.0, margin - diag[:, None] + sim), 0.0)
  cols = jnp.where(off, jnp.maximum(0.0, margin - diag[None, :] + sim), 0.0)
  return (jnp.sum(rows) + jnp.sum(cols)) / (n * (n - 1))


def symmetric_infonce(sim: jax.Array, temperature: float) -> jax.Array:
  """Symmetric InfoNCE (cross-modal NT-Xent) of a similarity matrix.

  Args:
    sim: (N, N) float, matching pairs on the diagonal (as ``ranking_hinge``).
    temperature: ``tau`` > 0; logits are ``sim / tau``.

  Returns:
    () float: the mean cross-entropy of each row's and each column's own
    pair, averaged over both directions; ``log N`` when all similarities
    are equal.
  """
  logits = sim / temperature
  diag = jnp.diagonal(logits)
  rows = jax.nn.logsumexp(logits, axis=1) - diag
  cols = jax.nn.logsumexp(logits, axis=0) - diag
  return 0.5 * (jnp.mean(rows) + jnp.mean(cols))


def cca_ranking_loss(fx: jax.Array, gy: jax.Array,
                     reg: float = cca.DEFAULT_REG,
                     margin: float = DEFAULT_MARGIN) -> jax.Array:
  """The CCA layer's pairwise ranking loss of a batch, () float (module doc).

  ``ranking_hinge(cca_cosine_similarities(fx, gy, reg), margin)``; shapes
  and dtype as ``cca_cosine_similarities``.
  """
  return ranking_hinge(cca_cosine_similarities(fx, gy, reg), margin)


def infonce_loss(fx: jax.Array, gy: jax.Array,
                 reg: float = cca.DEFAULT_REG,
                 temperature: float = DEFAULT_TEMPERATURE) -> jax.Array:
  """Symmetric InfoNCE on the batch's CCA projection, () float (module doc).

  ``symmetric_infonce(cca_cosine_similarities(fx, gy, reg), temperature)``;
  shapes and dtype as ``cca_cosine_similarities``.
  """
  return symmetric_infonce(cca_cosine_similarities(fx, gy, reg), temperature)


# --------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------


class Setting(NamedTuple):
  """A setting of an objective: its ``TrainConfig`` field, whose value must
  be above ``minimum`` (or equal to it, where ``strict`` is False)."""
  field: str
  minimum: float
  strict: bool


class Spec(NamedTuple):
  """One objective.

  Attributes:
    loss: ``(fx, gy, reg, **settings) -> ()`` float, pure and traceable.
    settings: the loss's keyword -> its ``Setting``.
    help: one line for the flag's help and the docs.
  """
  loss: Callable[..., jax.Array]
  settings: dict[str, Setting]
  help: str


REGISTRY: dict[str, Spec] = {
    DCCA: Spec(cca.dcca_loss, {}, "minus the batch's total canonical "
               "correlation (the paper's)"),
    CCA_RANKING: Spec(cca_ranking_loss,
                      {'margin': Setting('rank_margin', 0.0, False)},
                      "hinge ranking loss (margin rank_margin) on the "
                      "cosine similarities of the batch's CCA projections "
                      "(Dorfer et al. 2018)"),
    INFONCE: Spec(infonce_loss,
                  {'temperature': Setting('infonce_temperature', 0.0, True)},
                  'symmetric InfoNCE over the batch (temperature '
                  'infonce_temperature) on the same cosine similarities'),
}
NAMES = tuple(REGISTRY)


def check_name(name: str) -> str:
  """``name`` if it is an objective; ValueError listing the valid ones."""
  if name not in REGISTRY:
    raise ValueError(f'unknown objective {name!r}; the objectives are '
                     f'{", ".join(NAMES)}')
  return name


@dataclasses.dataclass(frozen=True)
class Objective:
  """An objective with its settings: hashable, a static argument of the
  jitted steps (equal ones share a compiled step).

  Attributes:
    name: a key of ``REGISTRY``.
    settings: ``((keyword, value), ...)`` of the loss's settings, sorted;
      one left out takes the loss's default.

  Raises:
    ValueError: an unknown name or setting, or a value out of range (naming
      the ``TrainConfig`` setting).
  """
  name: str = DEFAULT
  settings: tuple[tuple[str, float], ...] = ()

  def __post_init__(self):
    known = REGISTRY[check_name(self.name)].settings
    for key, value in self.settings:
      if key not in known:
        raise ValueError(f'objective {self.name!r} has no setting {key!r} '
                         f'(it has: {", ".join(known) or "none"})')
      field, minimum, strict = known[key]
      if not (value > minimum if strict else value >= minimum):
        raise ValueError(f'{field} must be {">" if strict else ">="} '
                         f'{minimum}, got {value}')
    object.__setattr__(self, 'settings', tuple(sorted(self.settings)))

  def loss(self, fx: jax.Array, gy: jax.Array, reg: float) -> jax.Array:
    """The loss of a batch: (N, h), (N, h) -> () float."""
    return REGISTRY[self.name].loss(fx, gy, reg, **dict(self.settings))


def _settings(config, name: str) -> tuple[tuple[str, float], ...]:
  return tuple((key, getattr(config, s.field))
               for key, s in REGISTRY[name].settings.items())


def from_config(config) -> Objective:
  """The ``Objective`` a ``TrainConfig`` names, with its settings."""
  return Objective(check_name(config.objective),
                   _settings(config, config.objective))


def check_config(config) -> None:
  """Raises ValueError for an unknown ``config.objective`` or any objective's
  setting out of range (the chosen one's or not: a config holds no invalid
  value)."""
  check_name(config.objective)
  for name in NAMES:
    Objective(name, _settings(config, name))
