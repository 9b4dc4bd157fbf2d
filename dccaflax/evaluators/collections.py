"""Retrieval across collections and engravings, with their geometry.

The paper's protocol (``paper``: the first ``limit`` pairs of a split, all
of them candidates, both directions) on each data source's split: a
collection (``nottingham``, ``airds``, ...) in an engraving
(``dccaflax.sources.source_name``: ``nottingham:verovio_leland``).  Beside
each row, the source's engraving speed against its audio, px of strip per
audio frame (``px_per_frame``: a 100-px sheet window holds less music where
it is larger).  Optionally a search over horizontal scales of the sheet
snippets at query time (``scaled_sheets``): an engraving with another px per
second than the training data's read at its own scale, without retraining.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np

from dccaflax import embedding
from dccaflax import input_pipeline
from dccaflax import pieceset
from dccaflax import retrieval
from dccaflax import sheet_augment
from dccaflax import snippets
from dccaflax.evaluators import results



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
  half = snippets.SHEET_WIDTH // 2
  margin = max(0, int(np.ceil(half * max(scales))) - half + 1)
  out = np.empty((len(scales), n, snippets.SHEET_HEIGHT,
                  snippets.SHEET_WIDTH), np.uint8)
  for start in range(0, n, results.CUT_BATCH):
    idx = range(start, min(start + results.CUT_BATCH, n))
    wide = np.stack([snippets.sheet_snippet(
        ps.piece_strip(ps.piece_id[i]), ps.notehead_x[i], margin=margin)
                     for i in idx])
    for k, s in enumerate(scales):
      out[k, idx.start:idx.stop] = np.asarray(sheet_augment.rescale(
          wide, np.full((len(idx), 1), s, np.float32)))
  return out


def run(models: Sequence[embedding.Model], data_dir: str,
                        collections: Sequence[str], split: str = 'test',
                        limit: int = results.PAPER_LIMIT,
                        log: Optional[Callable[[str], None]] = None,
                        sheet_scales: Optional[Sequence[float]] = None
                        ) -> list[list[dict]]:
  """The paper's protocol on each collection's split, with its geometry.

  Args:
    models: loaded models (e.g. seeds); each collection is read once.
    data_dir: prepared data holding each collection's ``pairs`` config
      (``dccaflax.sources.config_name``; its ``pieces`` config with
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
      audio = embedding.embed_audio(model, specs)
      if sheet_scales is None:
        m = retrieval.both_directions(embedding.embed_sheet(model, sheets[0]),
                                      audio)
      else:
        m = retrieval.both_directions_views(
            np.stack([embedding.embed_sheet(model, v) for v in sheets]), audio)
        m['sheet_scales'] = [float(s) for s in sheet_scales]
      rows.append({'collection': collection, 'split': split,
                   'protocol': 'first', 'label': label, 'geometry': geo, **m})
    del sheets, specs
    if log:
      log(f'{collection}: {n} {split} pairs in {time.time() - t0:.1f} s')
  return out


def markdown(rows: list[dict], title: str) -> str:
  """One line per collection: pairs, px per frame (median, p10-p90), A->S
  and S->A R@1, R@10, MR (``mean ± sd`` for ``results.mean_sd`` rows)."""
  head = ('| collection (pairs) | px/frame median (p10–p90) | A→S R@1 | '
          'R@10 | MR | S→A R@1 | R@10 | MR |')
  lines = [f'### {title}', '', head, '|' + '---|' * 8]
  for row in rows:
    g = row['geometry']
    cells = [row['label'], f'{g["median"]:.2f} ({g["p10"]:.2f}–'
                           f'{g["p90"]:.2f})']
    for d in ('a2s', 's2a'):
      cells += [results.fmt(row[d][k], k) for k in ('R@1', 'R@10', 'MR')]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'
