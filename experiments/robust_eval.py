r"""Retrieval and identification on performances the model never heard.

  python -m experiments.robust_eval --workdir MODEL [--data_dir DATA] \
      [--index index.npz] [--midi_dir DIR] [--tempos 0.67,0.8,1,1.25,1.5] \
      [--limit 16000] [--pieces N] [--seed 0] [--engraving lilypond] \
      [--out_dir DIR]

The test pieces are rendered with held-out instruments (fiddle, viola,
piccolo, recorder, tango accordion, honky-tonk piano, alto sax, voice; one
per piece, drawn) in the held-out MuseScore General soundfont at each tempo
factor, with drawn dynamics and timing; for each rendering, the paper's
snippet protocol (the first --limit test pairs, the held-out rendering's
excerpt at the same note, A->S and S->A R@1/R@10/MR) and piece
identification (top-1/top-5/MRR), beside the in-distribution row
(``data_prep.robust_eval``).  Writes ``robust_eval.md`` and
``robust_eval.json`` into --out_dir (default: the workdir).  Without
--index, the test split of the data is indexed in memory first.

--engraving takes the sheet snippets from another engraving of the same
test pairs (``data_prep.prepare --engravings verovio_leland --splits
test``): held-out performances against a held-out engraving.  Its files are
``robust_eval_<engraving>.md`` / ``.json``.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags

from data_prep import pipeline
from data_prep import robust_eval
from data_prep import source
from data_prep import synth
from dccaflax import evaluation
from dccaflax import identify
from dccaflax import input_pipeline

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained model: a workdir, '
                               'or the name of a shipped model (models/).',
                               required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared data (default: '
                                "the model's training data).")
_INDEX = flags.DEFINE_string('index', None, 'Index of the test split built '
                             'by experiments.index with this model (default: '
                             'built here, in memory).')
_MIDI_DIR = flags.DEFINE_string('midi_dir', None, 'Nottingham MIDI folder '
                                '(train/valid/test) or zip; default '
                                '$DCCAFLAX_NOTTINGHAM, else the data set '
                                'bundled with the repository.')
_TEMPOS = flags.DEFINE_list('tempos', [f'{t:g}' for t in robust_eval.TEMPOS],
                            'Tempo factors of the held-out renderings.')
_LIMIT = flags.DEFINE_integer('limit', evaluation.PAPER_LIMIT,
                              'Test pairs of the snippet protocol.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the held-out draws.')
_PIECES = flags.DEFINE_integer('pieces', None, 'Identify only the first N '
                               'test pieces (all indexed pieces stay '
                               'candidates); default: all.')
_SOUNDFONT = flags.DEFINE_string('soundfont', 'musescore',
                                 'Held-out soundfont: a key or a path.')
_WORKERS = flags.DEFINE_integer('workers', None, 'Rendering processes '
                                '(default: all cores).')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Where to write the JSON and '
                               'Markdown (default: the workdir).')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'], 'Checkpoint.')
_ENGRAVING = flags.DEFINE_string(
    'engraving', input_pipeline.LILYPOND, 'Whose sheet snippets: an '
    'engraving the test split was prepared in (data_prep.prepare '
    '--engravings), e.g. verovio_leland.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Not at the top: loading JAX is slow, and --help needs none of it.
  from dccaflax import api  # pylint: disable=g-import-not-at-top
  from dccaflax import index as index_lib  # pylint: disable=g-import-not-at-top
  from experiments import commands  # pylint: disable=g-import-not-at-top
  try:
    tempos = [synth.parse_tempo(t) for t in _TEMPOS.value]
  except ValueError as e:
    sys.exit(f'error: {e}')
  if not tempos:
    sys.exit('error: --tempos: no tempo factor given')
  if _LIMIT.value < 1:
    sys.exit(f'error: --limit must be >= 1, got {_LIMIT.value}')
  out_dir = _OUT_DIR.value or _WORKDIR.value
  try:
    collection = input_pipeline.source_name(
        *input_pipeline.split_source(
            f'{input_pipeline.NOTTINGHAM}:{_ENGRAVING.value}'))
  except ValueError as e:
    sys.exit(f'error: --engraving: {e}')
  try:
    midi_dir = source.resolve(_MIDI_DIR.value, os.path.join(out_dir, 'midi'))
    synth.soundfont_path(_SOUNDFONT.value, synth.EVAL_SOUNDFONTS)
  except (pipeline.PrepareError, synth.SynthError) as e:
    sys.exit(f'error: {e}')
  try:
    if _INDEX.value:
      model, index = commands.load_model_and_index(
          _WORKDIR.value, _INDEX.value, _WHICH.value)
    else:
      model = api.load(_WORKDIR.value, _WHICH.value)
  except commands.QueryError as e:
    sys.exit(f'error: {e}')
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: cannot load a model from {_WORKDIR.value}: {e}')
  if _INDEX.value and index.collection != collection:
    sys.exit(f'error: {_INDEX.value} indexes {index.collection}, '
             f'--engraving asks for {collection}: build an index of it '
             f'(experiments.index --collection {collection}) or leave '
             '--index out')
  data_dir = _DATA_DIR.value or model.config.data_dir
  try:
    if not _INDEX.value:
      print(f'indexing the test split of {collection} in {data_dir} ...',
            flush=True)
      index = index_lib.build(model, data_dir, 'test',
                              workdir=_WORKDIR.value, collection=collection)
    result = robust_eval.evaluate(
        model, index, data_dir, midi_dir, tempos, limit=_LIMIT.value,
        seed=_SEED.value, soundfont=_SOUNDFONT.value, n_pieces=_PIECES.value,
        workers=_WORKERS.value,
        k=identify.TOP_K, hop=identify.HOP_FRAMES)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  result['workdir'] = os.path.abspath(_WORKDIR.value)
  result['data_dir'] = os.path.abspath(data_dir)
  md = robust_eval.markdown(result)
  stem = ('robust_eval' if _ENGRAVING.value == input_pipeline.LILYPOND
          else f'robust_eval_{_ENGRAVING.value}')
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f'{stem}.json'), 'w') as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(out_dir, f'{stem}.md'), 'w') as f:
    f.write(md)
  print(md)
  print(f'wrote {out_dir}/{stem}.json and {stem}.md '
        f'({result["seconds"]:.0f} s)')


if __name__ == '__main__':
  app.run(main)
