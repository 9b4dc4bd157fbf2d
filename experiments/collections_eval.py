r"""Retrieval across collections: the paper's protocol on each one's test split.

  python -m experiments.collections_eval --workdir DIR[,DIR2,...] \
      [--data_dir DATA] [--collections nottingham,oneills,airds] \
      [--engravings lilypond,verovio_leland,...] \
      [--split test] [--limit 16000] [--which best|last]

For each collection prepared in the data dir (``data_prep.prepare
--collections ...``; default: every one of ``data_prep.source.COLLECTIONS``
that is there), the first ``--limit`` pairs of its ``--split`` (all where
fewer) are queries and candidates in both directions: A->S and S->A R@1,
R@10 and MR, as ``experiments.evaluate`` reports the paper's Table 2.  Beside
each row: the collection's engraving speed against its audio, px of strip
per audio frame (median and 10th-90th percentile over the evaluated pieces,
``evaluation.px_per_frame``): a 100-px sheet window holds less music where
it is larger.

--engravings evaluates each collection in each of these engravings
(``data_prep.prepare --engravings``; the sheet side of the test): S->A with
that engraving's snippets as queries, A->S with them as candidates, the
audio the same in every row.  Its table goes to ``engravings_eval.md/json``
(for the held-out font: ``--engravings lilypond,verovio_leland``, the
in-distribution LilyPond row beside it).

--sheet_scales searches over horizontal scales of the sheet snippets at query
time (each snippet embedded at every scale, a pair scoring its best one): an
engraving with another px per second than the training data's needs no
retraining to be read at its own scale.

Writes ``collections_eval.md`` and ``.json`` (with --sheet_scales:
``collections_eval_scales.*``) into each workdir; with several workdirs
(seeds) it also prints their mean ± sd.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging

import dccaflax
from data_prep import source
from dccaflax import evaluation
from dccaflax import input_pipeline

_WORKDIR = flags.DEFINE_list('workdir', None, 'Training workdir(s), e.g. '
                             'the seeds of one recipe.', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared TFDS data '
                                '(default: the one the first run trained on).')
_COLLECTIONS = flags.DEFINE_list(
    'collections', None, 'Collections, in table order (default: every one '
    f'of {list(source.COLLECTIONS)} prepared in the data dir).')
_ENGRAVINGS = flags.DEFINE_list(
    'engravings', [input_pipeline.LILYPOND], 'Engravings of each collection, '
    'in table order (prepared with data_prep.prepare --engravings); other '
    'than LilyPond alone, the table goes to engravings_eval.md/json.')
_SPLIT = flags.DEFINE_enum('split', 'test', ['train', 'valid', 'test'],
                           'Which split of each collection.')
_LIMIT = flags.DEFINE_integer('limit', evaluation.PAPER_LIMIT, 'The first N '
                              'pairs of each collection (all where fewer).')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'],
                           'Checkpoint: best validation R@10 or the last.')
_SHEET_SCALES = flags.DEFINE_list(
    'sheet_scales', None, 'Search over sheet scales at query time, e.g. '
    '0.8,1,1.25,1.6: every snippet embedded at each horizontal scale about '
    'its notehead (> 1 shows more music), a pair scoring its best one '
    '(evaluation.scaled_sheets); default: the paper\'s snippets. Writes '
    'collections_eval_scales.md/json.')


def prepared(data_dir: str, engraving: str = input_pipeline.LILYPOND
             ) -> list[str]:
  """The collections whose ``pairs`` config in ``engraving`` is prepared in
  ``data_dir``."""
  out = []
  for c in source.COLLECTIONS:
    try:
      input_pipeline.config_dir(data_dir, input_pipeline.config_name(
          'pairs', input_pipeline.source_name(c, engraving)))
    except FileNotFoundError:
      continue
    out.append(c)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  models = [dccaflax.load(w, _WHICH.value) for w in _WORKDIR.value]
  data_dir = _DATA_DIR.value or models[0].config.data_dir
  engravings = _ENGRAVINGS.value or [input_pipeline.LILYPOND]
  collections = _COLLECTIONS.value or prepared(data_dir, engravings[0])
  if not collections:
    raise app.UsageError(f'no collection is prepared in {data_dir}; run '
                         'python -m data_prep.prepare --collections ...')
  unknown = sorted(set(collections) - set(source.COLLECTIONS))
  if unknown:
    raise app.UsageError(f'--collections: unknown {unknown}; have '
                         f'{list(source.COLLECTIONS)}')
  for engraving in engravings:
    missing = sorted(set(collections) - set(prepared(data_dir, engraving)))
    if missing:
      raise app.UsageError(
          f'{engraving}: {missing} not prepared in {data_dir}; run python -m '
          f'data_prep.prepare --collections {",".join(missing)} '
          f'--engravings {engraving} --splits {_SPLIT.value}')
  sources = [input_pipeline.source_name(c, e) for c in collections
             for e in engravings]
  scales = None
  if _SHEET_SCALES.value:
    try:
      scales = [float(v) for v in _SHEET_SCALES.value]
    except ValueError:
      raise app.UsageError(f'--sheet_scales: not numbers: '
                           f'{_SHEET_SCALES.value}') from None
    if not all(0.5 <= v <= 2.0 for v in scales):
      raise app.UsageError(f'--sheet_scales must lie in [0.5, 2], got '
                           f'{scales}')
  stem = ('collections_eval' if engravings == [input_pipeline.LILYPOND]
          else 'engravings_eval') + ('_scales' if scales else '')
  rows_per_model = evaluation.collection_protocol(
      models, data_dir, sources, _SPLIT.value, _LIMIT.value, logging.info,
      sheet_scales=scales)
  for workdir, model, rows in zip(_WORKDIR.value, models, rows_per_model):
    cfg = model.config
    title = (f'{os.path.abspath(workdir)}: {_WHICH.value} checkpoint (epoch '
             f'{model.epoch}), width {cfg.width:g}, trained on '
             f'{cfg.collections}, data {data_dir}'
             + (f', sheet snippets searched over scales {scales}' if scales
                else ''))
    table = evaluation.collections_table(rows, title)
    print(table)
    paths = evaluation.write_results(workdir, stem, table,
                                     model, _WHICH.value, data_dir,
                                     split=_SPLIT.value, limit=_LIMIT.value,
                                     sheet_scales=scales, rows=rows)
    logging.info('wrote %s and %s', *paths)
  if len(models) > 1:
    print(evaluation.collections_table(
        evaluation.mean_sd(rows_per_model),
        f'mean ± sd over {len(models)} runs ({", ".join(_WORKDIR.value)})'))


if __name__ == '__main__':
  app.run(main)
