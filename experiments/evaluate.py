r"""The paper's retrieval protocol (Table 2) for a trained workdir.

  python -m experiments.evaluate --workdir DIR [--data_dir DATA] \
      [--splits train,valid,test] [--which best|last] [--full]

For each split, audio-to-sheet (A->S: an audio excerpt queries all sheet
snippets) and sheet-to-audio (S->A): R@1, R@5, R@10 (percent of queries whose
partner is among the first k), MR (median rank of the partner, 1 = first) and
MRR, with cosine similarity in the CCA space (``dccaflax.embed_*``) and ties
counted against the query (``dccaflax.retrieval``); the protocol itself is
``dccaflax.evaluation.paper_protocol``.

* ``split (16000)``: the paper's protocol, the first 16,000 pairs of the
  split in stored order (piece name, onset), read from the TFDS ``pairs``
  config; all 16,000 are the candidates.  (A split with fewer pairs uses all.)
* ``split (all N)`` (``--full``): every pair of the split as query and
  candidate, windows cut from the ``pieces`` config (6-bit spectrograms,
  within 0.03 of the ``pairs`` ones).  Skipped for a split of at most
  ``--limit`` pairs, whose first row already holds all of them (``= all``).

Prints the table next to the paper's numbers and writes ``eval.json`` and
``eval.md`` into the workdir (or --out_dir).
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging

import dccaflax
from dccaflax import checkpoints
from dccaflax import evaluation

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained model: a workdir, '
                               'or the name of a shipped model (models/).',
                               required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared TFDS data '
                                '(default: the one the run trained on).')
_SPLITS = flags.DEFINE_list('splits', ['train', 'valid', 'test'],
                            'Splits to evaluate.')
_LIMIT = flags.DEFINE_integer('limit', evaluation.PAPER_LIMIT, 'Pairs of the '
                              'paper protocol (the first N of each split).')
_FULL = flags.DEFINE_bool('full', True, 'Also evaluate each whole split.')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Write eval.md/json here '
                               "(default: the model's folder).")
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'],
                           'Checkpoint: best validation R@10 or the last.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    workdir = checkpoints.resolve(_WORKDIR.value)   # a folder or a name
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from e
  model = dccaflax.load(workdir, _WHICH.value)
  data_dir = _DATA_DIR.value or model.config.data_dir
  rows, = evaluation.paper_protocol([model], data_dir, _SPLITS.value,
                                    _LIMIT.value, _FULL.value, logging.info)
  cfg = model.config
  title = (f'{checkpoints.portable_path(workdir)}: {_WHICH.value} checkpoint '
           f'(epoch {model.epoch}), width {cfg.width:g}'
           + ('' if cfg.width == 1.0 else ' (NARROW, not the paper\'s model)')
           + f', data {checkpoints.portable_path(data_dir)}')
  table = evaluation.markdown_table(rows, title)
  print(table)
  paths = evaluation.write_results(workdir, 'eval', table, model,
                                   _WHICH.value, data_dir,
                                   out_dir=_OUT_DIR.value, rows=rows,
                                   paper=evaluation.PAPER)
  logging.info('wrote %s and %s', *paths)


if __name__ == '__main__':
  app.run(main)
