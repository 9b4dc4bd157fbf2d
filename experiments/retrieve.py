r"""Cross-modal retrieval against an index, with a Figure-3 style picture.

Audio -> sheet (any file librosa reads: wav, flac, ogg, mp3; any rate; mono
or stereo)::

  python -m experiments.retrieve --workdir MODEL --index index.npz \
      --audio FILE [--start S --duration D] [--top 10] [--figure out.png] \
      [--piece NAME [--notehead N]]

  The excerpt is the 3.2 s centred in the span [S, S + D) (default: the whole
  file); a shorter span is padded with silence on both sides (as training
  pads at piece edges).  --piece names the piece the recording plays, which
  marks the correct snippet: the N-th (0-based) onset with --notehead, else
  the onset nearest the excerpt centre, assuming the recording starts with
  the piece at the indexed tempo (true for renderings like the data's).

Sheet -> audio::

  python -m experiments.retrieve ... --sheet snippet.png [--sheet_x 0.5]
  python -m experiments.retrieve ... --piece NAME --notehead N

  --sheet: a 40x100 snippet as is, or a larger image of one staff, scaled so
  its staff lines are 4 px apart and cut around the staff (rules in
  ``dccaflax.frontends``).  --piece/--notehead alone: the indexed snippet of the
  N-th (0-based) onset of the piece (--modality audio: its audio excerpt
  queries the sheet snippets instead); the correct result is marked.

  A --sheet image with more than one staff is a page (title, text and all):
  its staves are found, joined in reading order, and a snippet every
  --page_step px along them queries the audio; the pieces are ranked by
  their votes, with the best piece's bar and time along the page
  (``dccaflax.identify.identify_page``).

Prints the ranked list (piece, bar, onset number, time, cosine score) and,
with --figure, draws the query above its top results with their ranks (the
paper's Figure 3); the results' pixels are re-read from the prepared data
the index was built from (--data_dir if it moved).
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from dccaflax import audio
from dccaflax import frontends
from experiments import commands

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained model: a workdir, '
                               'or the name of a shipped model (models/).',
                               required=True)
_INDEX = flags.DEFINE_string('index', None, 'Index built by '
                             'experiments.index with this model.',
                             required=True)
_AUDIO = flags.DEFINE_string('audio', None, 'Audio query file.')
_START = flags.DEFINE_float('start', 0.0, 'Span start in the audio file (s).')
_DURATION = flags.DEFINE_float('duration', None, 'Span length (s; default: '
                               'to the end).')
_SHEET = flags.DEFINE_string('sheet', None, 'Sheet image query (PNG).')
_SHEET_X = flags.DEFINE_float('sheet_x', 0.5, 'Horizontal centre of the '
                              'snippet in a larger --sheet image (fraction '
                              'of its width).')
_PAGE_STEP = flags.DEFINE_integer(
    'page_step', frontends.PAGE_STEP, 'Px of the page\'s 4-px-per-staff-space strip between '
    'the snippets of a --sheet page.')
_PIECE = flags.DEFINE_string('piece', None, 'Indexed piece: the query (with '
                             '--notehead) or the truth of an --audio query.')
_NOTEHEAD = flags.DEFINE_integer('notehead', None, '0-based onset number in '
                                 '--piece.')
_MODALITY = flags.DEFINE_enum('modality', 'sheet', ['sheet', 'audio'],
                              'With --piece/--notehead alone: query with the '
                              'indexed sheet snippet or audio excerpt.')
_TOP = flags.DEFINE_integer('top', 10, 'Results to show.')
_FIGURE = flags.DEFINE_string('figure', None, 'Write a Figure-3 style PNG.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared data for the '
                                'figure (default: where the index was built).')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'], 'Checkpoint.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    with commands.as_flags('start', 'duration', 'notehead'):
      commands.retrieve(
          _WORKDIR.value, _INDEX.value, audio_path=_AUDIO.value,
          start=_START.value, duration=_DURATION.value, sheet=_SHEET.value,
          sheet_x=_SHEET_X.value, piece=_PIECE.value,
          notehead=_NOTEHEAD.value, modality=_MODALITY.value, top=_TOP.value,
          figure_path=_FIGURE.value, data_dir=_DATA_DIR.value,
          which=_WHICH.value, page_step=_PAGE_STEP.value, echo=print)
  except (commands.QueryError, audio.AudioError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
