"""Validation during training: tower outputs, the CCA fit, retrieval metrics.

Every ``eval_every`` epochs (``training``) a linear CCA is fitted on the
towers' outputs of training pairs (``fit_projection``; the paper fits on the
training set, ``fit_indices`` picks up to 25,000 of them) and validation
pairs are ranked in both directions after projection and L2 normalisation,
with cosine similarity and ties counted against the query (``retrieval``).
The evaluations of a trained model are ``dccaflax.evaluators``.
"""

from __future__ import annotations

import functools

from absl import logging
import jax
import numpy as np

from dccaflax import batching
from dccaflax import cca
from dccaflax import input_pipeline
from dccaflax import models
from dccaflax import pieceset
from dccaflax import retrieval

# The metric that picks the best checkpoint: the mean MRR of audio->sheet
# and sheet->audio.  It was the mean R@10 (kept in the logs as 'val/R@10')
# until R@10 on the 2,000 validation candidates saturated at 98 while test
# R@10 at 16,000 candidates still rose from 86 to 89 (the paper model's
# campaign, epochs 6-10); MRR still moves there.
BEST_METRIC = 'val/MRR'


def best_metric(metrics: dict[str, float]) -> float:
  """``BEST_METRIC`` of one epoch's validation metrics (also of rows
  written before it was logged: it is computed from the two directions)."""
  return 0.5 * (metrics['val/a2s_MRR'] + metrics['val/s2a_MRR'])


@functools.partial(jax.jit, static_argnames=('model',))
def outputs_at(model: models.DCCAModel, variables: dict,
               arrays: pieceset.Arrays, idx: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
  """Tower outputs (eval mode) of one batch of pairs cut on the device.

  Args:
    model: the towers; variables: {'params', 'batch_stats'}.
    arrays: device ``pieceset.Arrays``; windows of rendering 0.
    idx: (B,) int32 pair indices.

  Returns:
    ``(fx, gy)``: (B, out_dim) float32 sheet and audio tower outputs.
  """
  sheets, specs = input_pipeline.batch_windows(arrays, idx)
  return model.apply(variables, sheets, specs, train=False)


@functools.partial(jax.jit, static_argnames=('model',))
def _outputs_of(model, variables, sheets, specs):
  return model.apply(variables, sheets, specs, train=False)


def tower_outputs(model: models.DCCAModel, variables: dict,
                  arrays: pieceset.Arrays, idx: np.ndarray,
                  batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
  """Tower outputs (eval mode) of pairs ``idx`` of device ``arrays``.

  Returns:
    ``(fx, gy)``: (N, out_dim) float32 NumPy arrays (batches of
    ``batch_size``, the last one padded: one compiled shape).
  """
  return batching.map_batches(
      lambda i: outputs_at(model, variables, arrays, i),
      [np.asarray(idx, np.int32)], batch_size)


def window_outputs(model: models.DCCAModel, variables: dict,
                   sheets: np.ndarray, specs: np.ndarray,
                   batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
  """Tower outputs (eval mode) of host windows: sheets (N, 40, 100) uint8
  (255 = paper), specs (N, 136, 100) float32 -> ``(fx, gy)`` (N, out_dim)."""
  return batching.map_batches(
      lambda s, a: _outputs_of(model, variables, s, a), [sheets, specs],
      batch_size)


def fit_indices(n: int, fit_pairs: int, seed: int) -> np.ndarray:
  """The training pairs of the CCA fit: all if ``n <= fit_pairs``, else a
  fixed random subset of ``fit_pairs`` (sorted), a function of ``seed``."""
  if n <= fit_pairs:
    return np.arange(n)
  rng = np.random.default_rng((int(seed), 0xCCA))
  return np.sort(rng.choice(n, fit_pairs, replace=False))


def validation_subset(n: int, size: int) -> np.ndarray:
  """``size`` evenly spaced pair indices of ``n`` (all if ``n <= size``)."""
  if n <= size:
    return np.arange(n)
  return np.linspace(0, n - 1, size).round().astype(np.int64)


def fit_projection(model: models.DCCAModel, variables: dict,
                   arrays: pieceset.Arrays, idx: np.ndarray,
                   reg: float = cca.DEFAULT_REG,
                   batch_size: int = 500) -> cca.Projection:
  """Linear CCA on the towers' outputs of training pairs ``idx``
  (statistics accumulated in batches, ``cca.fit``)."""
  fx, gy = tower_outputs(model, variables, arrays, idx, batch_size)
  return cca.fit(fx, gy, reg, batch_size=10_000)


def heldout_correlation(px: np.ndarray, py: np.ndarray) -> float:
  """Sum over CCA components of the Pearson correlation of held-out pairs.

  Args:
    px, py: (N, k) validation embeddings projected with a projection fitted
      on *training* pairs.

  Returns:
    Sum of the k per-component correlations (at most k; the training-set
    analogue is ``sum(projection.corr)``).
  """
  px = px - px.mean(0)
  py = py - py.mean(0)
  den = np.sqrt((px * px).sum(0) * (py * py).sum(0))
  return float(np.sum((px * py).sum(0) / np.maximum(den, 1e-12)))


def validate(model: models.DCCAModel, variables: dict,
             train_arrays: pieceset.Arrays, fit_idx: np.ndarray,
             val_arrays: pieceset.Arrays, val_idx: np.ndarray,
             reg: float, batch_size: int
             ) -> tuple[cca.Projection, dict[str, float]]:
  """CCA fit on training pairs, then validation metrics.

  Validation correlation ('val/corr') is ``heldout_correlation`` of the
  validation pairs under the *training* projection (an honest held-out
  number); 'val/corr_refit' is the total correlation of a CCA refitted on the
  validation embeddings themselves (optimistic); 'train/corr' the training
  fit's sum of canonical correlations.  R@k, MR and MRR
  ('val/a2s_R@10', ...) are on ``val_idx`` with all of ``val_idx`` as
  candidates; 'val/R@10' and ``BEST_METRIC`` ('val/MRR') are the means of
  the two directions.  A CCA fit that is not finite (a float32 covariance
  not positive definite: tower outputs far larger than ``reg``, e.g. a
  barely trained model in eval mode) is logged and its NaN embeddings rank
  every partner last (``retrieval``'s tie rule), so any epoch with a finite
  fit beats it to the best checkpoint.

  Returns:
    ``(projection, metrics)``, metrics a flat dict of floats.
  """
  projection = fit_projection(model, variables, train_arrays, fit_idx, reg,
                              batch_size)
  if not np.all(np.isfinite(np.asarray(projection.U))):
    logging.warning('the CCA fit on %d training pairs is not finite (a '
                    'covariance not positive definite in float32 with reg '
                    '%g): every validation partner ranks last', len(fit_idx),
                    reg)
  fx, gy = tower_outputs(model, variables, val_arrays, val_idx, batch_size)
  px = np.asarray(cca.project_x(projection, fx))
  py = np.asarray(cca.project_y(projection, gy))
  metrics = {
      'train/corr': float(np.sum(projection.corr)),
      'val/corr': heldout_correlation(px, py),
      'val/corr_refit': float(cca.total_correlation(fx, gy, reg)),
      'val/n_pairs': float(len(val_idx)),
  }
  both = retrieval.both_directions(px, py)
  for direction in ('a2s', 's2a'):
    for key in retrieval.METRIC_KEYS:
      metrics[f'val/{direction}_{key}'] = both[direction][key]
  metrics['val/R@10'] = 0.5 * (metrics['val/a2s_R@10']
                               + metrics['val/s2a_R@10'])
  metrics[BEST_METRIC] = best_metric(metrics)
  return projection, metrics
