r"""Evaluations of trained models: one command, one evaluator per question.

  python -m experiments.eval --workdir MODEL[,MODEL2,...] \
      [--evals paper,level,collections,robust,identify] [--data_dir DATA] \
      [--which best|last] [--out_dir DIR] [--limit 16000] ...

``--evals`` picks the evaluators (``dccaflax.evaluators``); each writes its
table and rows (``<name>.md`` / ``<name>.json``) next to each model, or into
--out_dir:

* ``paper`` (``eval.*``): the paper's protocol (Table 2), for each of
  --splits the first --limit pairs, both directions, R@1/5/10, MR, MRR next
  to the paper's numbers; with --full also every pair of the split.
* ``level`` (``level.*``, ``level.png``): the same on --split at each of
  --gains and under slow gain curves of up to each of --curves dB.
* ``collections`` (``collections_eval.*``; ``engravings_eval.*`` for other
  --engravings than LilyPond alone; ``_scales`` with --sheet_scales): the
  first --limit pairs of --split of each of --collections in each of
  --engravings, with px of strip per audio frame.
* ``robust`` (``robust_eval.*``; ``robust_eval_<engraving>.*`` for another
  engraving): the first --limit test pairs and the first --pieces test
  pieces, rendered afresh in the in-distribution condition and held out
  (held-out instruments in --soundfont at each of --tempos, with drawn
  dynamics and timing, --seed; and the named --conditions of
  ``data_prep.heldout.CONDITIONS``): snippet retrieval and identification,
  for each of --engravings.
* ``identify`` (``identify_eval.*``): the first --pieces test pieces
  rendered with --soundfont at each of --tempos, identified against all
  indexed scores.

``robust`` and ``identify`` use --index (built by ``experiments.index`` with
the model) or index the test split in memory.  With several models (e.g.
seeds) ``paper`` and ``collections`` also print their mean ± sd.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

import dccaflax
from data_prep import heldout
from data_prep import pipeline
from data_prep import source
from data_prep import synth
from dccaflax import checkpoints
from dccaflax import identify
from dccaflax import index as index_lib
from dccaflax import input_pipeline
from dccaflax import sources
from dccaflax.evaluators import collections as collections_lib
from dccaflax.evaluators import identification
from dccaflax.evaluators import level as level_lib
from dccaflax.evaluators import paper as paper_lib
from dccaflax.evaluators import results
from dccaflax.evaluators import robust as robust_lib

_WORKDIR = flags.DEFINE_list('workdir', None, 'Trained model(s): workdirs or '
                             'names of shipped models (models/), e.g. the '
                             'seeds of one recipe.', required=True)
_EVALS = flags.DEFINE_list('evals', ['paper'], 'Evaluators: paper, level, '
                           'collections, robust, identify.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared TFDS data '
                                '(default: the one the first model trained '
                                'on).')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'],
                           'Checkpoint: best validation R@10 or the last.')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Write the tables here '
                               "(default: each model's folder).")
_LIMIT = flags.DEFINE_integer('limit', results.PAPER_LIMIT, 'Pairs: the '
                              'first N of each evaluated split (all where '
                              'fewer).')
_SPLITS = flags.DEFINE_list('splits', ['train', 'valid', 'test'],
                            'paper: the splits evaluated.')
_FULL = flags.DEFINE_bool('full', True, 'paper: also every pair of each '
                          'split.')
_SPLIT = flags.DEFINE_enum('split', 'test', ['train', 'valid', 'test'],
                           'level, collections: the split evaluated.')
_GAINS = flags.DEFINE_list('gains', None, 'level: amplitude gains (1 = as '
                           'prepared; default 0.1 ... 10).')
_CURVES = flags.DEFINE_list('curves', None, 'level: at gain 1, a slow gain '
                            'curve of up to this many dB within each '
                            'excerpt (default 3,6,10; empty: none).')
_COLLECTIONS = flags.DEFINE_list('collections', None, 'collections: which, '
                                 'in table order (default: every one '
                                 'prepared in the data dir).')
_ENGRAVINGS = flags.DEFINE_list('engravings', ['lilypond'], 'collections, '
                                'robust: the engravings whose sheet snippets '
                                'are evaluated (data_prep.prepare '
                                '--engravings), e.g. lilypond,verovio_leland.')
_SHEET_SCALES = flags.DEFINE_list(
    'sheet_scales', None, 'collections: search over sheet scales at query '
    'time, e.g. 0.8,1,1.25,1.6: every snippet embedded at each horizontal '
    'scale about its notehead (> 1 shows more music), a pair scoring its '
    'best one.')
_INDEX = flags.DEFINE_string('index', None, 'robust, identify: an index of '
                             'the test split built by experiments.index with '
                             'the model (default: built in memory).')
_MIDI_DIR = flags.DEFINE_string('midi_dir', None, 'robust, identify: '
                                'Nottingham MIDI folder (train/valid/test) or '
                                'zip; default $DCCAFLAX_NOTTINGHAM, else the '
                                'data set bundled with the repository.')
_TEMPOS = flags.DEFINE_list('tempos', None, 'robust, identify: tempo factors '
                            'of the renderings (default: robust 0.67,0.8,1,'
                            '1.25,1.5; identify 0.8,1,1.25).')
_CONDITIONS = flags.DEFINE_list('conditions', [], 'robust: named held-out '
                                'conditions beside the tempos '
                                '(data_prep.heldout.CONDITIONS).')
_SOUNDFONT = flags.DEFINE_string('soundfont', 'musescore', 'robust, '
                                 'identify: the held-out soundfont, a key or '
                                 'an .sf2/.sf3 path.')
_SEED = flags.DEFINE_integer('seed', 0, 'robust: seed of the held-out '
                             'draws.')
_PIECES = flags.DEFINE_integer('pieces', None, 'robust, identify: identify '
                               'only the first N test pieces (all indexed '
                               'pieces stay candidates); default: all.')
_WORKERS = flags.DEFINE_integer('workers', None, 'robust, identify: '
                                'rendering processes (default: all cores).')
_K = flags.DEFINE_integer('k', None, 'robust, identify: sheet snippets '
                         'retrieved per window (default: identify.TOP_K).')
_HOP = flags.DEFINE_integer('hop', None, 'robust, identify: frames between '
                           'windows (default: identify.HOP_FRAMES).')


class EvalError(ValueError):
  """A flag or input that an evaluation refuses; the message says which."""


def _floats(values, flag: str, check, what: str) -> list[float]:
  """Numbers from a list flag, each passing ``check``; EvalError naming the
  flag and the bad value."""
  out = []
  for v in values:
    try:
      x = float(v)
    except ValueError:
      raise EvalError(f'--{flag}: {v!r} is not a number') from None
    if not check(x):
      raise EvalError(f'--{flag}: {v} is not {what}')
    out.append(x)
  return out


class Run:
  """The models, their data and where each one's tables go."""

  def __init__(self):
    try:
      self.workdirs = [checkpoints.resolve(w) for w in _WORKDIR.value]
      self.models = [dccaflax.load(w, _WHICH.value) for w in self.workdirs]
    except (FileNotFoundError, ValueError) as e:
      raise EvalError(f'--workdir: cannot load a model: {e}') from e
    self.data_dir = _DATA_DIR.value or self.models[0].config.data_dir
    self.which = _WHICH.value

  def out_dir(self, workdir: str) -> str:
    return _OUT_DIR.value or workdir

  def write(self, workdir, model, stem, table, **fields):
    print(table)
    paths = results.write(workdir, stem, table, model, self.which,
                          self.data_dir, out_dir=_OUT_DIR.value, **fields)
    logging.info('wrote %s and %s', *paths)

  def mean_title(self) -> str:
    """The title of the mean ± sd table of several models."""
    return (f'mean ± sd over {len(self.models)} runs '
            f'({", ".join(_WORKDIR.value)})')


def paper(run: Run) -> None:
  rows_per_model = paper_lib.run(run.models, run.data_dir, _SPLITS.value,
                                 _LIMIT.value, _FULL.value, logging.info)
  for workdir, model, rows in zip(run.workdirs, run.models, rows_per_model):
    cfg = model.config
    title = (f'{checkpoints.portable_path(workdir)}: {run.which} checkpoint '
             f'(epoch {model.epoch}), width {cfg.width:g}'
             + ('' if cfg.width == 1.0 else ' (NARROW, not the paper\'s model)')
             + f', data {checkpoints.portable_path(run.data_dir)}')
    run.write(workdir, model, paper_lib.NAME, paper_lib.markdown(rows, title),
              rows=rows, paper=paper_lib.PAPER)
  if len(run.models) > 1:
    print(paper_lib.markdown(results.mean_sd(rows_per_model),
                             run.mean_title()))


def _levels() -> tuple[list[float], list[float]]:
  """--gains and --curves, checked (defaults: ``level_lib``)."""
  gains = _floats(_GAINS.value or [f'{g:g}' for g in level_lib.GAINS], 'gains',
                  lambda g: np.isfinite(g) and g > 0, 'a positive gain')
  curves = _floats([f'{c:g}' for c in level_lib.CURVES_DB]
                   if _CURVES.value is None else _CURVES.value, 'curves',
                   lambda c: np.isfinite(c) and c >= 0, 'a level in dB >= 0')
  return gains, curves


def level(run: Run) -> None:
  gains, curves = _levels()
  pairs = input_pipeline.load_pairs(run.data_dir, _SPLIT.value, _LIMIT.value)
  n = len(pairs['sheet'])
  for workdir, model in zip(run.workdirs, run.models):
    rows = level_lib.run(model, pairs, gains, [c for c in curves if c > 0],
                         logging.info)
    cfg = model.config
    title = (f'{_SPLIT.value} ({n} pairs), {run.which} checkpoint (epoch '
             f'{model.epoch}), width {cfg.width:g}, level_norm '
             f'{cfg.level_norm}, gain augmentation ±{cfg.augment.gain_db:g} dB, '
             f'curve ≤ {cfg.augment.gain_curve_db:g} dB')
    run.write(workdir, model, level_lib.NAME, level_lib.markdown(rows, title),
              split=_SPLIT.value, n=n, rows=rows)
    level_lib.figure(rows, title, os.path.join(run.out_dir(workdir),
                                               f'{level_lib.NAME}.png'))


def prepared(data_dir: str, engraving: str = sources.LILYPOND
             ) -> list[str]:
  """The collections whose ``pairs`` config in ``engraving`` is prepared in
  ``data_dir``."""
  out = []
  for c in source.COLLECTIONS:
    try:
      input_pipeline.config_dir(data_dir, sources.config_name(
          'pairs', sources.source_name(c, engraving)))
    except FileNotFoundError:
      continue
    out.append(c)
  return out


def collections(run: Run) -> None:
  engravings = _ENGRAVINGS.value or [sources.LILYPOND]
  names = _COLLECTIONS.value or prepared(run.data_dir, engravings[0])
  if not names:
    raise EvalError(f'no collection is prepared in {run.data_dir}; run '
                    'python -m data_prep.prepare --collections ...')
  unknown = sorted(set(names) - set(source.COLLECTIONS))
  if unknown:
    raise EvalError(f'--collections: unknown {unknown}; have '
                    f'{list(source.COLLECTIONS)}')
  for engraving in engravings:
    missing = sorted(set(names) - set(prepared(run.data_dir, engraving)))
    if missing:
      raise EvalError(
          f'{engraving}: {missing} not prepared in {run.data_dir}; run '
          f'python -m data_prep.prepare --collections {",".join(missing)} '
          f'--engravings {engraving} --splits {_SPLIT.value}')
  scales = None
  if _SHEET_SCALES.value:
    scales = _floats(_SHEET_SCALES.value, 'sheet_scales',
                     lambda v: 0.5 <= v <= 2.0, 'in [0.5, 2]')
  data_sources = [sources.source_name(c, e) for c in names
                  for e in engravings]
  stem = ('collections_eval' if engravings == [sources.LILYPOND]
          else 'engravings_eval') + ('_scales' if scales else '')
  rows_per_model = collections_lib.run(
      run.models, run.data_dir, data_sources, _SPLIT.value, _LIMIT.value,
      logging.info, sheet_scales=scales)
  for workdir, model, rows in zip(run.workdirs, run.models, rows_per_model):
    cfg = model.config
    title = (f'{os.path.abspath(workdir)}: {run.which} checkpoint (epoch '
             f'{model.epoch}), width {cfg.width:g}, trained on '
             f'{cfg.collections}, data {run.data_dir}'
             + (f', sheet snippets searched over scales {scales}' if scales
                else ''))
    run.write(workdir, model, stem, collections_lib.markdown(rows, title),
              split=_SPLIT.value, limit=_LIMIT.value, sheet_scales=scales,
              rows=rows)
  if len(run.models) > 1:
    print(collections_lib.markdown(results.mean_sd(rows_per_model),
                                   run.mean_title()))


def _tempos(default) -> list[float]:
  """--tempos (or ``default``), each checked (``synth.parse_tempo``)."""
  values = _TEMPOS.value if _TEMPOS.value is not None else default
  return [synth.parse_tempo(t) for t in values]


def _midi_dir(workdir: str) -> str:
  try:
    return source.resolve(_MIDI_DIR.value,
                          os.path.join(_OUT_DIR.value or workdir, 'midi'))
  except pipeline.PrepareError as e:
    raise EvalError(str(e)) from e


def _index(run: Run, workdir: str, model, collection: str):
  """--index (checked against the model and ``collection``), else the test
  split of ``collection`` indexed in memory."""
  if _INDEX.value:
    try:
      index = index_lib.load(_INDEX.value)
      index.check_model(model)
    except (index_lib.IndexFileError, index_lib.ModelMismatchError) as e:
      raise EvalError(f'--index {_INDEX.value}: {e}') from e
    if index.collection != collection:
      raise EvalError(
          f'--index {_INDEX.value} indexes {index.collection}, --engravings '
          f'asks for {collection}: build an index of it (experiments.index '
          f'--collection {collection}) or leave --index out')
    return index
  print(f'indexing the test split of {collection} in {run.data_dir} ...',
        flush=True)
  return index_lib.build(model, run.data_dir, 'test', workdir=workdir,
                         collection=collection)


def _settings() -> dict:
  return dict(n_pieces=_PIECES.value, workers=_WORKERS.value,
              k=identify.TOP_K if _K.value is None else _K.value,
              hop=identify.HOP_FRAMES if _HOP.value is None else _HOP.value)


def _conditions() -> list[robust_lib.Condition]:
  """The held-out conditions of ``robust``: --tempos in --soundfont, then
  --conditions."""
  return (heldout.tempo_conditions(_tempos(heldout.ROBUST_TEMPOS),
                                   _SOUNDFONT.value)
          + heldout.conditions(_CONDITIONS.value))


def check_flags(evals) -> None:
  """Checks the flags of ``evals`` before any model is loaded.

  Raises:
    EvalError, ValueError, FileNotFoundError: naming the flag.
  """
  if _LIMIT.value < 1:
    raise EvalError(f'--limit must be >= 1, got {_LIMIT.value}')
  for flag in (_PIECES, _K, _HOP):
    if flag.value is not None and flag.value < 1:
      raise EvalError(f'--{flag.name} must be >= 1, got {flag.value}')
  if 'level' in evals:
    _levels()
  if 'robust' in evals:
    for c in _conditions():
      heldout.eval_soundfont(c.soundfont)
  if 'identify' in evals:
    _tempos(heldout.IDENTIFY_TEMPOS)
    heldout.eval_soundfont(_SOUNDFONT.value)
  if {'robust', 'identify'} & set(evals):
    _midi_dir(checkpoints.resolve(_WORKDIR.value[0]))


def robust(run: Run) -> None:
  conditions = _conditions()
  for engraving in _ENGRAVINGS.value or [sources.LILYPOND]:
    try:
      collection = sources.source_name(*sources.split_source(
          f'{sources.NOTTINGHAM}:{engraving}'))
    except ValueError as e:
      raise EvalError(f'--engravings: {e}') from e
    stem = (robust_lib.NAME if engraving == sources.LILYPOND
            else f'{robust_lib.NAME}_{engraving}')
    for workdir, model in zip(run.workdirs, run.models):
      midi_dir = _midi_dir(workdir)
      index = _index(run, workdir, model, collection)
      result = heldout.robustness(model, index, run.data_dir, midi_dir,
                                  conditions, _LIMIT.value, _SEED.value,
                                  **_settings())
      run.write(workdir, model, stem, robust_lib.markdown(result), **result)


def identify_(run: Run) -> None:
  tempos = _tempos(heldout.IDENTIFY_TEMPOS)
  soundfont = heldout.eval_soundfont(_SOUNDFONT.value)
  for workdir, model in zip(run.workdirs, run.models):
    midi_dir = _midi_dir(workdir)
    index = _index(run, workdir, model, sources.NOTTINGHAM)
    result = heldout.identification_eval(model, index, midi_dir, soundfont,
                                         tempos, **_settings())
    run.write(workdir, model, identification.NAME, identification.markdown(
        result, 'Piece identification (quick model)'
        if model.config.width != 1.0 else ''), **result)


RUNNERS = {'paper': paper, 'level': level, 'collections': collections,
           'robust': robust, 'identify': identify_}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  unknown = [e for e in _EVALS.value if e not in RUNNERS]
  if unknown or not _EVALS.value:
    sys.exit(f'error: --evals: unknown {unknown}; have {list(RUNNERS)}')
  try:
    check_flags(_EVALS.value)
    run = Run()
    for name in _EVALS.value:
      RUNNERS[name](run)
  except (EvalError, FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
