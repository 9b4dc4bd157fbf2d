"""The paper's protocol (Table 2) on loaded models.

For each split, the first 16,000 pairs in stored order (piece name, onset)
of the TFDS ``pairs`` config, all of them candidates, in both directions
(A->S: an audio excerpt queries all sheet snippets; S->A the reverse):
R@1, R@5, R@10, MR, MRR with cosine similarity in the CCA space and ties
counted against the query (``retrieval.both_directions``); and, optionally,
every pair of the split, windows cut from the ``pieces`` config (the same
windows: ``input_pipeline``).  Several models (e.g. seeds) read each split
once; ``results.mean_sd`` summarises their rows, ``markdown`` lays them out
like Table 2.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from dccaflax import embedding
from dccaflax import input_pipeline
from dccaflax import pieceset
from dccaflax import retrieval
from dccaflax.evaluators import results

NAME = 'eval'              # its files: eval.md, eval.json
# Dorfer, Arzt, Widmer (2016), Table 2: (R@1, R@5, R@10, MR) per direction.
PAPER = {
    'train': {'a2s': (82.7, 97.5, 98.6, 1), 's2a': (81.0, 97.2, 98.7, 1)},
    'valid': {'a2s': (42.0, 86.6, 93.1, 2), 's2a': (44.2, 85.2, 92.5, 2)},
    'test': {'a2s': (43.1, 89.1, 94.2, 2), 's2a': (45.5, 87.8, 93.7, 2)},
}


def embed_piece_set(model: embedding.Model, pieces: pieceset.PieceSet
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Unit-norm CCA-space (sheet, audio) embeddings (``embedding.embed_*``) of every
  pair of a ``PieceSet``, windows cut on the device: (N, k) each."""
  arrays = jax.device_put(pieces.arrays)
  cut = jax.jit(input_pipeline.batch_windows)
  sheets, audios = [], []
  for start in range(0, len(pieces), results.CUT_BATCH):
    stop = min(start + results.CUT_BATCH, len(pieces))
    s, a = cut(arrays, np.arange(start, stop))
    sheets.append(embedding.embed_sheet(model, np.asarray(s)))
    audios.append(embedding.embed_audio(model, np.asarray(a)))
  return np.concatenate(sheets), np.concatenate(audios)


def run(models: Sequence[embedding.Model], data_dir: str,
        splits: Sequence[str] = ('train', 'valid', 'test'),
        limit: int = results.PAPER_LIMIT, full: bool = True,
        log: Optional[Callable[[str], None]] = None) -> list[list[dict]]:
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
      m = retrieval.both_directions(embedding.embed_sheet(model, pairs['sheet']),
                                    embedding.embed_audio(model, pairs['spec']))
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


def markdown(rows: list[dict], title: str) -> str:
  """Table 2 layout: set | A->S R@1 R@5 R@10 MR MRR | S->A ... ; each
  'first' row followed by the paper's row for that split.  Rows of
  ``results.mean_sd`` show 'mean ± sd'."""
  head = ('| set | A→S R@1 | R@5 | R@10 | MR | MRR | S→A R@1 | R@5 | R@10 | '
          'MR | MRR |')
  lines = [f'### {title}', '', head, '|' + '---|' * 11]
  for row in rows:
    cells = [row['label']]
    for d in ('a2s', 's2a'):
      cells += [results.fmt(row[d][k], k) for k in retrieval.METRIC_KEYS]
    lines.append('| ' + ' | '.join(cells) + ' |')
    paper = PAPER.get(row['split'])
    if paper and row['protocol'] == 'first':
      cells = [f'paper: {row["split"]} ({results.PAPER_LIMIT})']
      for d in ('a2s', 's2a'):
        cells += [results.fmt(v, k) for k, v in zip(retrieval.METRIC_KEYS,
                                                     paper[d])] + ['–']
      lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'
