r"""Piece identification on renderings the model never heard.

  python -m experiments.identify_eval --workdir MODEL --index index.npz \
      [--midi_dir DIR] [--soundfont musescore] \
      [--tempos 0.8,1,1.25] [--limit N] [--out_dir DIR]

Every piece of the index (the Nottingham test split: 170 pieces) is rendered
from its MIDI file with a soundfont NOT used for the training data (default:
MuseScore General, Debian ``musescore-general-soundfont-small``) at each
tempo factor, and identified against all indexed scores by sliding-window
voting (``data_prep.identify_eval``, ``dccaflax.identify``).  Reports top-1 /
top-5 accuracy (%) and MRR of the true piece per tempo; writes
``identify_eval.json`` (with every piece's rank) and ``identify_eval.md``
into --out_dir (default: the workdir).  Rendering runs in --workers processes while the main process
embeds.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags

from data_prep import identify_eval
from data_prep import pipeline
from data_prep import source
from data_prep import synth
from dccaflax import identify

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained model: a workdir, '
                               'or the name of a shipped model (models/).',
                               required=True)
_INDEX = flags.DEFINE_string('index', None, 'Index built by '
                             'experiments.index with this model.',
                             required=True)
_MIDI_DIR = flags.DEFINE_string('midi_dir', None, 'Nottingham MIDI folder '
                                '(train/valid/test) or zip; default '
                                '$DCCAFLAX_NOTTINGHAM, else the data set '
                                'bundled with the repository.')
_SOUNDFONT = flags.DEFINE_string('soundfont', 'musescore', "'musescore', "
                                 "'fluidr3mono' or an .sf2/.sf3 path.")
_TEMPOS = flags.DEFINE_list('tempos',
                            [f'{t:g}' for t in identify_eval.EVAL_TEMPOS],
                            'Tempo factors (1.25 = 25% faster).')
_LIMIT = flags.DEFINE_integer('limit', None, 'Only the first N pieces.')
_WORKERS = flags.DEFINE_integer('workers', None, 'Rendering processes '
                                '(default: all cores).')
_K = flags.DEFINE_integer('k', identify.TOP_K, 'Sheet snippets retrieved per '
                         'window.')
_HOP = flags.DEFINE_integer('hop', identify.HOP_FRAMES, 'Frames between '
                           'windows.')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Where to write the JSON and '
                               'Markdown (default: the workdir).')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'], 'Checkpoint.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from experiments import commands  # pylint: disable=g-import-not-at-top
  try:
    tempos = [synth.parse_tempo(t) for t in _TEMPOS.value]
  except ValueError as e:
    sys.exit(f'error: {e}')
  if not tempos:
    sys.exit('error: --tempos: no tempo factor given')
  out_dir = _OUT_DIR.value or _WORKDIR.value
  try:
    midi_dir = source.resolve(_MIDI_DIR.value, os.path.join(out_dir, 'midi'))
  except pipeline.PrepareError as e:
    sys.exit(f'error: {e}')
  try:
    soundfont = identify_eval.eval_soundfont(_SOUNDFONT.value)
    model, index = commands.load_model_and_index(_WORKDIR.value, _INDEX.value,
                                                 _WHICH.value)
    if _LIMIT.value is not None and _LIMIT.value < 1:
      raise commands.QueryError(f'--limit must be >= 1, got {_LIMIT.value}')
    result = identify_eval.evaluate(
        model, index, midi_dir, soundfont, tempos, limit=_LIMIT.value,
        workers=_WORKERS.value, k=_K.value, hop=_HOP.value)
  except (FileNotFoundError, commands.QueryError) as e:
    sys.exit(f'error: {e}')
  result['workdir'] = os.path.abspath(_WORKDIR.value)
  result['index'] = os.path.abspath(_INDEX.value)
  os.makedirs(out_dir, exist_ok=True)
  md = identify_eval.markdown(result, 'Piece identification (quick model)'
                              if model.config.width != 1.0 else '')
  with open(os.path.join(out_dir, 'identify_eval.json'), 'w') as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(out_dir, 'identify_eval.md'), 'w') as f:
    f.write(md)
  print(md)
  print(f'wrote {out_dir}/identify_eval.json and identify_eval.md '
        f'({result["seconds"]:.0f} s)')


if __name__ == '__main__':
  app.run(main)
