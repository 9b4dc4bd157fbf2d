r"""Renders a MIDI file's melody to audio: a recording to query with.

  python -m experiments.render --midi FILE.mid --out rec.wav \
      [--soundfont musescore] [--tempo 1.0] [--program 0]

The melody (track 1 of a Nottingham file) as data preparation reads it
(``data_prep.melody``), played by FluidSynth (``data_prep.synth``) with a
soundfont of the training data (fluidr3, timgm6mb, gmbank) or one held out
for evaluation (musescore, fluidr3mono), at a tempo factor (1.1 = 10 %
faster), as a 22,050 Hz mono WAV.  ``experiments.retrieve --piece NAME``
marks the right snippet of a rendering at tempo 1.0.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from data_prep import melody
from data_prep import synth
from dccaflax import snippets

_MIDI = flags.DEFINE_string('midi', None, 'MIDI file.', required=True)
_OUT = flags.DEFINE_string('out', None, 'Output WAV file.', required=True)
_SOUNDFONT = flags.DEFINE_string(
    'soundfont', 'musescore', 'Soundfont: one of '
    f'{", ".join(sorted(synth.SOUNDFONTS) + sorted(synth.EVAL_SOUNDFONTS))}'
    ' (the first three make training data), or a path to an .sf2/.sf3.')
_TEMPO = flags.DEFINE_float('tempo', 1.0, 'Tempo factor (1.1 = 10 % faster).')
_PROGRAM = flags.DEFINE_integer('program', 0, 'General MIDI program (0 = '
                                'acoustic grand piano).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  import soundfile  # pylint: disable=g-import-not-at-top
  try:
    mel = melody.read_melody(_MIDI.value)
    params = synth.SynthParams(soundfont=synth.soundfont_path(
        _SOUNDFONT.value, synth.ALL_SOUNDFONTS),
                               tempo=_TEMPO.value, program=_PROGRAM.value)
    wave = synth.synthesize(mel.notes, params)
  except (OSError, ValueError, RuntimeError) as e:
    sys.exit(f'error: {_MIDI.value}: {e}')
  soundfile.write(_OUT.value, wave, snippets.SAMPLE_RATE)
  print(f'{_OUT.value}: {mel.name}, {len(mel.notes)} notes, '
        f'{len(wave) / snippets.SAMPLE_RATE:.1f} s, {_SOUNDFONT.value}, '
        f'tempo {_TEMPO.value:g}')


if __name__ == '__main__':
  app.run(main)
