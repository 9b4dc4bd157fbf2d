r"""Builds a search index: every sheet snippet and audio excerpt of a split.

  python -m experiments.index --workdir MODEL --data_dir DATA --split test \
      --out index.npz

MODEL is a training workdir (``experiments.train``), DATA the ``--data_dir``
of ``data_prep.prepare`` (default: the data the model trained on).  The index
(``dccaflax.index``) holds both embeddings of every pair, its piece / bar /
onset / notehead position and the model's fingerprint; query it with
``experiments.retrieve`` and ``experiments.identify``.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags

from dccaflax import api
from dccaflax import index as index_lib
from dccaflax import input_pipeline

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained model workdir.',
                               required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared TFDS data '
                                '(default: the model\'s training data).')
_SPLIT = flags.DEFINE_string('split', 'test', 'Split to index.')
_OUT = flags.DEFINE_string('out', 'index.npz', 'Index file (.npz).')
_LIMIT = flags.DEFINE_integer('limit', None, 'Only the first N pairs.')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'], 'Checkpoint.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _DATA_DIR.value:   # fail fast, before loading the model
    try:
      input_pipeline.config_dir(_DATA_DIR.value, 'pairs')
    except FileNotFoundError as e:
      sys.exit(f'error: {e}')
  try:
    model = api.load(_WORKDIR.value, _WHICH.value)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: cannot load model from {_WORKDIR.value}: {e}')
  data_dir = _DATA_DIR.value or model.config.data_dir

  def progress(done, total, seconds):
    rate = done / max(seconds, 1e-9)
    print(f'\rembedded {done:,}/{total:,} pairs ({rate:,.0f} pairs/s)',
          end='\n' if done == total else '', file=sys.stderr, flush=True)

  try:
    index = index_lib.build(model, data_dir, _SPLIT.value, _LIMIT.value,
                            workdir=_WORKDIR.value, progress=progress)
    path = index_lib.save(index, _OUT.value)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  print(f'wrote {path}: {len(index):,} pairs of {len(index.pieces)} pieces '
        f'({index.split} split of {index.data_dir}), model {index.fingerprint}'
        f', {os.path.getsize(path) / 1e6:.1f} MB')


if __name__ == '__main__':
  app.run(main)
