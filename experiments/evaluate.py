r"""The paper's retrieval protocol (Table 2) for a trained workdir.

  python -m experiments.evaluate --workdir DIR [--data_dir DATA] \
      [--splits train,valid,test] [--which best|last] [--full]

For each split, audio-to-sheet (A->S: an audio excerpt queries all sheet
snippets) and sheet-to-audio (S->A): R@1, R@5, R@10 (percent of queries whose
partner is among the first k), MR (median rank of the partner, 1 = first) and
MRR, with cosine similarity in the CCA space (``dccaflax.embed_*``) and ties
counted against the query (``dccaflax.retrieval``).

* ``split (16000)``: the paper's protocol, the first 16,000 pairs of the
  split in stored order (piece name, onset), read from the TFDS ``pairs``
  config; all 16,000 are the candidates.  (A split with fewer pairs uses all.)
* ``split (all N)`` (``--full``): every pair of the split as query and
  candidate, windows cut from the ``pieces`` config (6-bit spectrograms,
  within 0.03 of the ``pairs`` ones).  Skipped for a split of at most
  ``--limit`` pairs, whose first row already holds all of them (``= all``).

Prints the table next to the paper's numbers and writes ``eval.json`` and
``eval.md`` into the workdir.
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

import dccaflax
from dccaflax import input_pipeline
from dccaflax import retrieval

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir.',
                               required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared TFDS data '
                                '(default: the one the run trained on).')
_SPLITS = flags.DEFINE_list('splits', ['train', 'valid', 'test'],
                            'Splits to evaluate.')
_LIMIT = flags.DEFINE_integer('limit', 16000, 'Pairs of the paper protocol '
                              '(the first N of each split).')
_FULL = flags.DEFINE_bool('full', True, 'Also evaluate each whole split.')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'],
                           'Checkpoint: best validation R@10 or the last.')

# Dorfer, Arzt, Widmer (2016), Table 2: (R@1, R@5, R@10, MR) per direction.
PAPER = {
    'train': {'a2s': (82.7, 97.5, 98.6, 1), 's2a': (81.0, 97.2, 98.7, 1)},
    'valid': {'a2s': (42.0, 86.6, 93.1, 2), 's2a': (44.2, 85.2, 92.5, 2)},
    'test': {'a2s': (43.1, 89.1, 94.2, 2), 's2a': (45.5, 87.8, 93.7, 2)},
}
_CUT_BATCH = 2000


def embed_pairs(model: dccaflax.Model, pairs: dict) -> tuple[np.ndarray,
                                                            np.ndarray]:
  """(sheet, audio) embeddings of ``input_pipeline.load_pairs`` output."""
  return (dccaflax.embed_sheet(model, pairs['sheet']),
          dccaflax.embed_audio(model, pairs['spec']))


def embed_pieces(model: dccaflax.Model, pieces: input_pipeline.PieceSet
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(sheet, audio) embeddings of every pair of a ``PieceSet``."""
  arrays = jax.device_put(pieces.arrays)
  cut = jax.jit(input_pipeline.batch_windows)
  sheets, audios = [], []
  for start in range(0, len(pieces), _CUT_BATCH):
    stop = min(start + _CUT_BATCH, len(pieces))
    s, a = cut(arrays, np.arange(start, stop))
    sheets.append(dccaflax.embed_sheet(model, np.asarray(s)))
    audios.append(dccaflax.embed_audio(model, np.asarray(a)))
  return np.concatenate(sheets), np.concatenate(audios)


def _fmt(value: float, key: str) -> str:
  if key == 'MR':
    return f'{value:g}'
  if key == 'MRR':
    return f'{value:.3f}'
  return f'{value:.1f}'


def markdown_table(rows: list[dict], title: str) -> str:
  """Table 2 layout: set | A->S R@1 R@5 R@10 MR MRR | S->A ... ; each of our
  rows followed by the paper's row for that split."""
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
      cells = [f'paper: {row["split"]} (16000)']
      for d in ('a2s', 's2a'):
        cells += [f'{v:g}' if k == 'MR' else f'{v:.1f}'
                  for k, v in zip(retrieval.METRIC_KEYS, paper[d])] + ['–']
      lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  workdir = _WORKDIR.value
  model = dccaflax.load(workdir, _WHICH.value)
  data_dir = _DATA_DIR.value or model.config.data_dir
  rows = []
  for split in _SPLITS.value:
    t0 = time.time()
    pairs = input_pipeline.load_pairs(data_dir, split, _LIMIT.value)
    n_first = len(pairs['sheet'])
    whole = n_first < _LIMIT.value   # the split has no more pairs
    m = retrieval.both_directions(*embed_pairs(model, pairs))
    del pairs
    rows.append({'split': split, 'protocol': 'first',
                 'label': f'{split} ({n_first}{" = all" if whole else ""})',
                 **m})
    logging.info('%s: first %d pairs in %.1f s', split, n_first,
                 time.time() - t0)
    if _FULL.value and not whole:
      t0 = time.time()
      pieces = input_pipeline.load_pieces(data_dir, split)
      m = retrieval.both_directions(*embed_pieces(model, pieces))
      rows.append({'split': split, 'protocol': 'all',
                   'label': f'{split} (all {len(pieces)})', **m})
      logging.info('%s: all %d pairs in %.1f s', split, len(pieces),
                   time.time() - t0)
  cfg = model.config
  title = (f'{os.path.abspath(workdir)}: {_WHICH.value} checkpoint (epoch '
           f'{model.epoch}), width {cfg.width:g}'
           + ('' if cfg.width == 1.0 else ' (NARROW, not the paper\'s model)')
           + f', data {data_dir}')
  table = markdown_table(rows, title)
  print(table)
  with open(os.path.join(workdir, 'eval.md'), 'w') as f:
    f.write(table)
  with open(os.path.join(workdir, 'eval.json'), 'w') as f:
    json.dump({'workdir': os.path.abspath(workdir), 'which': _WHICH.value,
               'epoch': model.epoch, 'data_dir': data_dir,
               'config': cfg.to_json(), 'rows': rows, 'paper': PAPER}, f,
              indent=2)
  logging.info('wrote %s and %s', os.path.join(workdir, 'eval.md'),
               os.path.join(workdir, 'eval.json'))


if __name__ == '__main__':
  app.run(main)
