r"""Draws a prepared piece: strip with notehead marks over its spectrogram with
onset marks (same colour = same onset), and a row of snippet pairs like the
paper's Figure 1.

  python -m data_prep.show --data_dir OUT --piece NAME --out fig.png \
      [--start 0 --seconds 10] [--renderings_out renderings.png] \
      [--augment_out augment.png] [--collections_out collections.png] \
      [--sheets_out sheets.png --engravings lilypond,verovio_leland]

--renderings_out also draws a few pairs in every prepared rendering (data
prepared with --soundfonts/--tempos): one sheet snippet over the excerpts of
each rendering at its own onset frame; --augment_out the same excerpts under
each audio augmentation of training (``dccaflax.audio_augment``);
--collections_out each prepared collection's px of strip per audio frame,
with one snippet rescaled as the sheet scale augmentation does;
--sheets_out the piece's sheet snippets in each prepared engraving
(--engravings) and under each scan-like sheet augmentation.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from data_prep import figures
from data_prep import source

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'prepare.py output folder.',
                                required=True)
_PIECE = flags.DEFINE_string('piece', None,
                             'Piece name (default: the first one).')
_SPLIT = flags.DEFINE_string('split', None,
                             'Split to look in (default: all prepared).')
_OUT = flags.DEFINE_string('out', 'piece.png', 'Output PNG.')
_START = flags.DEFINE_float('start', 0.0, 'First second shown.')
_SECONDS = flags.DEFINE_float('seconds', 10.0, 'Seconds shown.')
_PAIRS = flags.DEFINE_integer('pairs', 6, 'Snippet pairs in the bottom row.')
_RENDERINGS_OUT = flags.DEFINE_string(
    'renderings_out', None, 'Also write a PNG of a few pairs in every '
    'prepared rendering.')
_COLLECTIONS_OUT = flags.DEFINE_string(
    'collections_out', None, 'Also write a PNG of each prepared '
    "collection's px per frame, with a snippet rescaled as the sheet "
    'scale augmentation does.')
_COLLECTIONS = flags.DEFINE_list(
    'collections', list(source.COLLECTIONS), 'Collections of '
    '--collections_out (prepared in --data_dir).')
_SHEETS_OUT = flags.DEFINE_string(
    'sheets_out', None, 'Also write a PNG of the piece\'s sheet snippets in '
    'each engraving of --engravings and under each scan-like augmentation.')
_ENGRAVINGS = flags.DEFINE_list(
    'engravings', ['lilypond'], 'Engravings of --sheets_out (prepared in '
    '--data_dir for the piece\'s split).')
_AUGMENT_OUT = flags.DEFINE_string(
    'augment_out', None, 'Also write a PNG of a few excerpts under each '
    'audio augmentation.')


def main(argv):
  del argv
  try:
    ex, split = figures.find_piece(_DATA_DIR.value, _PIECE.value, _SPLIT.value)
  except (KeyError, FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  try:
    figures.draw(ex, _OUT.value, _START.value, _SECONDS.value, _PAIRS.value)
  except ValueError as e:
    sys.exit(f'error: {e}')
  print(f'wrote {_OUT.value} ({ex["piece"].decode()}, {split})')
  if _RENDERINGS_OUT.value:
    figures.draw_renderings(ex, _RENDERINGS_OUT.value, _PAIRS.value)
    print(f'wrote {_RENDERINGS_OUT.value} ({len(ex["extra_frames"]) + 1} '
          'renderings)')
  if _COLLECTIONS_OUT.value:
    try:
      figures.draw_collections(_DATA_DIR.value, _COLLECTIONS.value,
                               _COLLECTIONS_OUT.value, _SPLIT.value or 'test')
    except (FileNotFoundError, ValueError) as e:
      sys.exit(f'error: {e}')
    print(f'wrote {_COLLECTIONS_OUT.value} ({", ".join(_COLLECTIONS.value)})')
  if _SHEETS_OUT.value:
    try:
      figures.draw_sheets(_DATA_DIR.value, ex['piece'].decode(), split,
                          [f'nottingham:{e}' for e in _ENGRAVINGS.value],
                          _SHEETS_OUT.value, _PAIRS.value)
    except (KeyError, FileNotFoundError, ValueError) as e:
      sys.exit(f'error: {e}')
    print(f'wrote {_SHEETS_OUT.value} ({", ".join(_ENGRAVINGS.value)})')
  if _AUGMENT_OUT.value:
    figures.draw_augmentations(ex, _AUGMENT_OUT.value, _PAIRS.value)
    print(f'wrote {_AUGMENT_OUT.value} ({len(figures.AUGMENTATIONS)} '
          'augmentations)')


if __name__ == '__main__':
  app.run(main)
