"""Evaluation: tower outputs, the CCA fit, validation and the paper's protocol.

During training (``validate``, every ``eval_every`` epochs) a linear CCA is
fitted on the towers' outputs of training pairs (``fit_projection``; the
paper fits on the training set, ``fit_indices`` picks up to 25,000 of them)
and validation pairs are ranked in both directions after projection and L2
normalisation, with cosine similarity and ties counted against the query
(``retrieval``).

After training, ``paper_protocol`` runs the paper's Table 2 protocol on
loaded models (``dccaflax.load``; several, e.g. seeds, read each split
once): for each split, the first 16,000 pairs in stored order (piece name,
onset) of the TFDS ``pairs`` config, all of them candidates; and,
optionally, every pair of the split, windows cut from the ``pieces`` config
(the same windows: ``input_pipeline``).  ``mean_sd`` summarises several
models' rows, ``markdown_table`` lays them out like Table 2.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from dccaflax import api
from dccaflax import batching
from dccaflax import cca
from dccaflax import checkpoints
from dccaflax import input_pipeline
from dccaflax import models
from dccaflax import pieceset
from dccaflax import retrieval
from dccaflax import snippets

BEST_METRIC = 'val/R@10'   # mean of audio->sheet and sheet->audio R@10
PAPER_LIMIT = 16000        # pairs of the paper's protocol, per split
# Dorfer, Arzt, Widmer (2016), Table 2: (R@1, R@5, R@10, MR) per direction.
PAPER = {
    'train': {'a2s': (82.7, 97.5, 98.6, 1), 's2a': (81.0, 97.2, 98.7, 1)},
    'valid': {'a2s': (42.0, 86.6, 93.1, 2), 's2a': (44.2, 85.2, 92.5, 2)},
    'test': {'a2s': (43.1, 89.1, 94.2, 2), 's2a': (45.5, 87.8, 93.7, 2)},
}
_CUT_BATCH = 2000   # windows cut per call in ``embed_piece_set``


# --------------------------------------------------------------------------
# Tower outputs (before the CCA projection)
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# CCA fit and validation
# --------------------------------------------------------------------------


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
  candidates; ``BEST_METRIC`` is the mean R@10 of the two directions.

  Returns:
    ``(projection, metrics)``, metrics a flat dict of floats.
  """
  projection = fit_projection(model, variables, train_arrays, fit_idx, reg,
                              batch_size)
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
  metrics[BEST_METRIC] = 0.5 * (metrics['val/a2s_R@10']
                                + metrics['val/s2a_R@10'])
  return projection, metrics


# --------------------------------------------------------------------------
# The paper's protocol (Table 2) for a trained model
# --------------------------------------------------------------------------


def embed_piece_set(model: api.Model, pieces: pieceset.PieceSet
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Unit-norm CCA-space (sheet, audio) embeddings (``api.embed_*``) of every
  pair of a ``PieceSet``, windows cut on the device: (N, k) each."""
  arrays = jax.device_put(pieces.arrays)
  cut = jax.jit(input_pipeline.batch_windows)
  sheets, audios = [], []
  for start in range(0, len(pieces), _CUT_BATCH):
    stop = min(start + _CUT_BATCH, len(pieces))
    s, a = cut(arrays, np.arange(start, stop))
    sheets.append(api.embed_sheet(model, np.asarray(s)))
    audios.append(api.embed_audio(model, np.asarray(a)))
  return np.concatenate(sheets), np.concatenate(audios)


def paper_protocol(models: Sequence[api.Model], data_dir: str,
                   splits: Sequence[str] = ('train', 'valid', 'test'),
                   limit: int = PAPER_LIMIT, full: bool = True,
                   log: Optional[Callable[[str], None]] = None
                   ) -> list[list[dict]]:
  """Both directions' R@1/5/10, MR, MRR per split (see the module doc).

  Args:
    models: loaded models (e.g. seeds); each split's data are read once.
    data_dir: the prepared (or packed) data.
    splits: which splits.
    limit: pairs of the protocol's first row (the first N of each split).
    full: also every pair of the split (skipped for a split of at most
      ``limit`` pairs, whose first row already holds all of them).
    log: called with a progress line per row.

  Returns:
    per model, rows: {'split', 'protocol' ('first' | 'all'), 'label',
    'a2s', 's2a', 'n'}, directions as ``retrieval.both_directions``.
  """
  out = [[] for _ in models]
  for split in splits:
    t0 = time.time()
    pairs = input_pipeline.load_pairs(data_dir, split, limit)
    n_first = len(pairs['sheet'])
    whole = n_first < limit   # the split has no more pairs
    label = f'{split} ({n_first}{" = all" if whole else ""})'
    for model, rows in zip(models, out):
      m = retrieval.both_directions(api.embed_sheet(model, pairs['sheet']),
                                    api.embed_audio(model, pairs['spec']))
      rows.append({'split': split, 'protocol': 'first', 'label': label, **m})
    del pairs
    if log:
      log(f'{split}: first {n_first} pairs in {time.time() - t0:.1f} s')
    if full and not whole:
      t0 = time.time()
      pieces = input_pipeline.load_pieces(data_dir, split)
      for model, rows in zip(models, out):
        m = retrieval.both_directions(*embed_piece_set(model, pieces))
        rows.append({'split': split, 'protocol': 'all',
                     'label': f'{split} (all {len(pieces)})', **m})
      if log:
        log(f'{split}: all {len(pieces)} pairs in {time.time() - t0:.1f} s')
  return out


def px_per_frame(piece: np.ndarray, notehead_x: np.ndarray,
                 onset_frame: np.ndarray) -> np.ndarray:
  """Each piece's engraving speed against its audio: px of strip per frame.

  Per piece, ``(x_last - x_first) / (frame_last - frame_first)`` over its
  pairs (the strip is unrolled, so x grows with time): how much sheet a
  100-frame audio window spans.  At 120 qpm, Nottingham's test pieces have
  a median of about 1.3.

  Args:
    piece: (P,) piece name of each pair (``load_pairs`` 'piece').
    notehead_x: (P,) px within the piece.
    onset_frame: (P,) frames within the piece.

  Returns:
    (n_pieces,) float64, pieces in order of first appearance; a piece with
    one onset frame only is left out.
  """
  _, first, which = np.unique(np.asarray(piece, object),
                              return_index=True, return_inverse=True)
  x, f = np.asarray(notehead_x), np.asarray(onset_frame)
  out = []
  for k in np.argsort(first):        # pieces in order of first appearance
    sel = which == k
    if f[sel].max() > f[sel].min():
      out.append((x[sel].max() - x[sel].min())
                 / float(f[sel].max() - f[sel].min()))
  return np.array(out, np.float64)


def geometry(ratios: np.ndarray) -> dict:
  """Median and 10th/90th percentiles of ``px_per_frame`` values."""
  if not len(ratios):
    return {'pieces': 0, 'median': float('nan'), 'p10': float('nan'),
            'p90': float('nan')}
  p10, med, p90 = np.percentile(ratios, [10, 50, 90])
  return {'pieces': int(len(ratios)), 'median': float(med),
          'p10': float(p10), 'p90': float(p90)}


def scaled_sheets(ps: pieceset.PieceSet, n: int,
                  scales: Sequence[float]) -> np.ndarray:
  """The sheet snippets of the first ``n`` pairs at several horizontal
  scales about the notehead (``sheet_augment.rescale``: > 1 shows more
  music), each cut from its own piece's strip with paper beyond its ends.

  Returns:
    ``(len(scales), n, 40, 100)`` uint8; scale 1 gives the ``pairs``
    config's snippets bit for bit.
  """
  from dccaflax import sheet_augment  # pylint: disable=g-import-not-at-top
  half = snippets.SHEET_WIDTH // 2
  margin = max(0, int(np.ceil(half * max(scales))) - half + 1)
  out = np.empty((len(scales), n, snippets.SHEET_HEIGHT,
                  snippets.SHEET_WIDTH), np.uint8)
  for start in range(0, n, _CUT_BATCH):
    idx = range(start, min(start + _CUT_BATCH, n))
    wide = np.stack([snippets.sheet_snippet(
        ps.piece_strip(ps.piece_id[i]), ps.notehead_x[i], margin=margin)
                     for i in idx])
    for k, s in enumerate(scales):
      out[k, idx.start:idx.stop] = np.asarray(sheet_augment.rescale(
          wide, np.full((len(idx), 1), s, np.float32)))
  return out


def collection_protocol(models: Sequence[api.Model], data_dir: str,
                        collections: Sequence[str], split: str = 'test',
                        limit: int = PAPER_LIMIT,
                        log: Optional[Callable[[str], None]] = None,
                        sheet_scales: Optional[Sequence[float]] = None
                        ) -> list[list[dict]]:
  """The paper's protocol on each collection's split, with its geometry.

  Args:
    models: loaded models (e.g. seeds); each collection is read once.
    data_dir: prepared data holding each collection's ``pairs`` config
      (``input_pipeline.config_name``; its ``pieces`` config with
      ``sheet_scales``).
    collections: which, in table order.
    split: whose pairs (each collection has its own).
    limit: the first this many pairs (all where fewer).
    log: called with a progress line per collection.
    sheet_scales: None: the paper's snippets.  Else a search over scales at
      query time: every sheet snippet is embedded at each of these
      horizontal scales (``scaled_sheets``) and a (sheet, audio) pair
      scores its best scale, as candidate (A->S) and as query (S->A).

  Returns:
    per model, one row per collection: {'collection', 'split', 'protocol'
    ('first'), 'label', 'a2s', 's2a', 'n', 'geometry'} (``geometry`` of the
    evaluated pairs' pieces), and 'sheet_scales' with a search.
  """
  out = [[] for _ in models]
  for collection in collections:
    t0 = time.time()
    if sheet_scales is None:
      pairs = input_pipeline.load_pairs(data_dir, split, limit, collection)
      sheets, specs = pairs['sheet'][None], pairs['spec']
      piece, x, frame = (pairs['piece'], pairs['notehead_x'],
                         pairs['onset_frame'])
    else:
      ps = input_pipeline.load_pieces(data_dir, split,
                                      collections=(collection,))
      n = min(int(limit), len(ps))
      sheets = scaled_sheets(ps, n, sheet_scales)
      _, specs = pieceset.cut(ps, np.arange(n))
      piece = np.asarray(ps.names, object)[ps.piece_id[:n]]
      x, frame = ps.notehead_x[:n], ps.onset_frame[:n]
    n = len(specs)
    geo = geometry(px_per_frame(piece, x, frame))
    label = f'{collection} {split} ({n}{" = all" if n < limit else ""})'
    for model, rows in zip(models, out):
      audio = api.embed_audio(model, specs)
      if sheet_scales is None:
        m = retrieval.both_directions(api.embed_sheet(model, sheets[0]),
                                      audio)
      else:
        m = retrieval.both_directions_views(
            np.stack([api.embed_sheet(model, v) for v in sheets]), audio)
        m['sheet_scales'] = [float(s) for s in sheet_scales]
      rows.append({'collection': collection, 'split': split,
                   'protocol': 'first', 'label': label, 'geometry': geo, **m})
    del sheets, specs
    if log:
      log(f'{collection}: {n} {split} pairs in {time.time() - t0:.1f} s')
  return out


def collections_table(rows: list[dict], title: str) -> str:
  """One line per collection: pairs, px per frame (median, p10-p90), A->S
  and S->A R@1, R@10, MR (``mean ± sd`` for ``mean_sd`` rows)."""
  head = ('| collection (pairs) | px/frame median (p10–p90) | A→S R@1 | '
          'R@10 | MR | S→A R@1 | R@10 | MR |')
  lines = [f'### {title}', '', head, '|' + '---|' * 8]
  for row in rows:
    g = row['geometry']
    cells = [row['label'], f'{g["median"]:.2f} ({g["p10"]:.2f}–'
                           f'{g["p90"]:.2f})']
    for d in ('a2s', 's2a'):
      cells += [_fmt(row[d][k], k) for k in ('R@1', 'R@10', 'MR')]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def mean_sd(rows_per_model: Sequence[list[dict]]) -> list[dict]:
  """``paper_protocol`` rows of several models (e.g. seeds; the same splits
  in the same order) -> one row per split with every metric as
  ``(mean, sd)`` over the models (sample sd; 0 for one model)."""
  out = []
  for rows in zip(*rows_per_model):
    row = dict(rows[0], models=len(rows))
    for d in ('a2s', 's2a'):
      values = {k: [r[d][k] for r in rows] for k in retrieval.METRIC_KEYS}
      row[d] = {k: (float(np.mean(v)),
                    float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
                for k, v in values.items()}
    out.append(row)
  return out


def _fmt(value, key: str) -> str:
  """A metric as the table shows it; ``(mean, sd)`` as 'mean ± sd'."""
  if isinstance(value, tuple):
    sd = f'{value[1]:.3f}' if key == 'MRR' else f'{value[1]:.1f}'
    return f'{_fmt(value[0], key)} ± {sd}'
  if key == 'MR':
    return f'{value:g}'
  if key == 'MRR':
    return f'{value:.3f}'
  return f'{value:.1f}'


def markdown_table(rows: list[dict], title: str) -> str:
  """Table 2 layout: set | A->S R@1 R@5 R@10 MR MRR | S->A ... ; each
  'first' row followed by the paper's row for that split.  Rows of
  ``mean_sd`` show 'mean ± sd'."""
  head = ('| set | A→S R@1 | R@5 | R@10 | MR | MRR | S→A R@1 | R@5 | R@10 | '
          'MR | MRR |')
  lines = [f'### {title}', '', head, '|' + '---|' * 11]
  for row in rows:
    cells = [row['label']]
    for d in ('a2s', 's2a'):
      cells += [_fmt(row[d][k], k) for k in retrieval.METRIC_KEYS]
    lines.append('| ' + ' | '.join(cells) + ' |')
    paper = PAPER.get(row['split'])
    if paper and row['protocol'] == 'first':
      cells = [f'paper: {row["split"]} ({PAPER_LIMIT})']
      for d in ('a2s', 's2a'):
        cells += [_fmt(v, k) for k, v in zip(retrieval.METRIC_KEYS,
                                             paper[d])] + ['–']
      lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def write_results(workdir: str, stem: str, table: str, model: api.Model,
                  which: str, data_dir: str, out_dir: Optional[str] = None,
                  **fields) -> tuple[str, str]:
  """An evaluation of a model into its workdir (or ``out_dir``):
  ``stem.md`` (the table) and ``stem.json`` (which model, which data, its
  config and ``fields``).

  Returns:
    the two paths.
  """
  workdir = checkpoints.resolve(workdir)     # a folder or a shipped name
  out_dir = out_dir or workdir
  os.makedirs(out_dir, exist_ok=True)
  md, js = (os.path.join(out_dir, f'{stem}.{ext}') for ext in ('md', 'json'))
  with open(md, 'w') as f:
    f.write(table)
  config = model.config.to_json()
  config['data_dir'] = checkpoints.portable_path(config['data_dir'])
  with open(js, 'w') as f:
    json.dump({'workdir': checkpoints.portable_path(workdir),
               'which': which, 'epoch': model.epoch,
               'data_dir': checkpoints.portable_path(data_dir),
               'config': config, **fields}, f, indent=2)
  return md, js
