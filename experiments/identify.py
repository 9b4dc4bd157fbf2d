r"""Which indexed piece does a recording play?  Sliding-window voting.

  python -m experiments.identify --workdir MODEL --index index.npz \
      --audio FILE [--top 5] [--k 10] [--hop 31] [--notimeline]

Slides a 3.2 s window over the whole recording every --hop frames (31 =
0.99 s), retrieves the --k best sheet snippets per window and lets each vote
1/rank for its piece (``dccaflax.identify``).  Prints the ranked pieces with
their scores (votes per voting window) and, per window, the bar of the best
match in the winning piece: the score position over time.  A recording
shorter than 3.2 s is one window padded with silence; a silent recording is
refused.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from dccaflax import audio
from dccaflax import identify
from experiments import commands

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained model: a workdir, '
                               'or the name of a shipped model (models/).',
                               required=True)
_INDEX = flags.DEFINE_string('index', None, 'Index built by '
                             'experiments.index with this model.',
                             required=True)
_AUDIO = flags.DEFINE_string('audio', None, 'Recording (any file librosa '
                             'reads).', required=True)
_TOP = flags.DEFINE_integer('top', 5, 'Pieces to list.')
_K = flags.DEFINE_integer('k', identify.TOP_K, 'Sheet snippets retrieved per '
                         'window.')
_HOP = flags.DEFINE_integer('hop', identify.HOP_FRAMES, 'Frames between '
                           'windows (31.25 = 1 s).')
_TIMELINE = flags.DEFINE_bool('timeline', True, 'Print the best-matching bar '
                              'per window.')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'], 'Checkpoint.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    commands.identify_file(_WORKDIR.value, _INDEX.value, _AUDIO.value,
                           k=_K.value, hop=_HOP.value, top=_TOP.value,
                           timeline=_TIMELINE.value, which=_WHICH.value)
  except (commands.QueryError, audio.AudioError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
