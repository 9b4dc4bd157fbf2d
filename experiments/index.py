r"""Builds a search index: every sheet snippet and audio excerpt of a split,
or the sheet snippets of score pages.

  python -m experiments.index --workdir MODEL --data_dir DATA --split test \
      [--collection nottingham:verovio_leland] --out index.npz
  python -m experiments.index --workdir MODEL --pages DIR_OR_PNGS \
      [--page_step 20] --out pages.npz

MODEL is a training workdir (``experiments.train``), DATA the ``--data_dir``
of ``data_prep.prepare`` (default: the data the model trained on).  The index
(``dccaflax.index``) holds both embeddings of every pair, its piece / bar /
onset / notehead position and the model's fingerprint; query it with
``experiments.retrieve`` and ``experiments.identify``.  --collection picks
the data source: another collection, or the same pairs in another engraving
(``data_prep.prepare --engravings``).

--pages indexes pages of score as they are (several systems, title, text;
``dccaflax.frontends.page_snippets``): a folder of images (.png, .jpg,
.jpeg, .tif, .tiff, .bmp) or a comma-separated list of images in one folder.
Every snippet along every page's systems is embedded; audio queries
(``experiments.retrieve --audio``) then find the page, system and place.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags

from dccaflax import api
from dccaflax import frontends
from dccaflax import index as index_lib
from dccaflax import input_pipeline
from dccaflax import page_index
from dccaflax import sources

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained model: a workdir, '
                               'or the name of a shipped model (models/).',
                               required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared TFDS data '
                                '(default: the model\'s training data).')
_SPLIT = flags.DEFINE_string('split', 'test', 'Split to index.')
_OUT = flags.DEFINE_string('out', 'index.npz', 'Index file (.npz).')
_LIMIT = flags.DEFINE_integer('limit', None, 'Only the first N pairs.')
_COLLECTION = flags.DEFINE_string(
    'collection', 'nottingham', "Whose pairs: '<collection>' or "
    "'<collection>:<engraving>', e.g. nottingham:verovio_leland.")
_PAGES = flags.DEFINE_list('pages', None, 'Index score pages instead: a '
                           'folder of images or images in one folder.')
_PAGE_STEP = flags.DEFINE_integer('page_step', frontends.PAGE_STEP,
                                  'Px of page strip between snippets.')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'], 'Checkpoint.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  pages = None
  if _PAGES.value:      # fail fast, before loading the model
    try:
      pages = page_index.page_paths(_PAGES.value)
    except ValueError as e:
      sys.exit(f'error: --pages: {e}')
  else:
    try:
      config = sources.config_name('pairs', _COLLECTION.value)
      if _DATA_DIR.value:
        input_pipeline.config_dir(_DATA_DIR.value, config)
    except (FileNotFoundError, ValueError) as e:
      sys.exit(f'error: --collection / --data_dir: {e}')
  try:
    model = api.load(_WORKDIR.value, _WHICH.value)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: cannot load model from {_WORKDIR.value}: {e}')
  data_dir = _DATA_DIR.value or model.config.data_dir
  if pages:
    _index_pages(model, pages)
    return

  def progress(done, total, seconds):
    rate = done / max(seconds, 1e-9)
    print(f'\rembedded {done:,}/{total:,} pairs ({rate:,.0f} pairs/s)',
          end='\n' if done == total else '', file=sys.stderr, flush=True)

  try:
    index = index_lib.build(model, data_dir, _SPLIT.value, _LIMIT.value,
                            workdir=_WORKDIR.value, progress=progress,
                            collection=_COLLECTION.value)
    path = index_lib.save(index, _OUT.value)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  print(f'wrote {path}: {len(index):,} pairs of {len(index.pieces)} pieces '
        f'({index.split} split of {index.collection} in {index.data_dir}), '
        f'model {index.fingerprint}'
        f', {os.path.getsize(path) / 1e6:.1f} MB')


def _index_pages(model, pages):
  def progress(done, total, seconds):
    print(f'\rindexed {done}/{total} pages ({seconds:.0f} s)',
          end='\n' if done == total else '', file=sys.stderr, flush=True)
  try:
    index = page_index.build(model, pages, _PAGE_STEP.value,
                             workdir=_WORKDIR.value, progress=progress)
    path = index_lib.save(index, _OUT.value)
  except (ValueError, frontends.QueryError) as e:
    sys.exit(f'error: {e}')
  print(f'wrote {path}: {len(index):,} sheet snippets of '
        f'{len(index.pieces)} pages in {index.data_dir}, model '
        f'{index.fingerprint}, {os.path.getsize(path) / 1e6:.1f} MB')


if __name__ == '__main__':
  app.run(main)
