"""experiments.render: a MIDI file's melody as a recording to query with."""

import os
import subprocess
import sys

import numpy as np
import soundfile

from data_prep import melody
from dccaflax import snippets

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _render(*args):
  return subprocess.run([sys.executable, '-m', 'experiments.render', *args],
                        cwd=_REPO, capture_output=True, text=True,
                        check=False)


def test_render_plays_the_melody_at_the_tempo(tmp_path, test_pieces):
  midi = str(test_pieces[0])
  last = max(n.end_s for n in melody.read_melody(midi).notes)
  lengths = {}
  for tempo in (1.0, 1.25):
    out = tmp_path / f'{tempo}.wav'
    run = _render(f'--midi={midi}', f'--out={out}', '--soundfont=musescore',
                  f'--tempo={tempo}')
    assert run.returncode == 0, run.stderr[-2000:]
    wave, rate = soundfile.read(out)
    assert rate == snippets.SAMPLE_RATE and wave.ndim == 1
    assert np.abs(wave).max() > 0.01                     # not silence
    lengths[tempo] = len(wave) / rate
    # the last note ends inside the file (plus at most a release tail)
    assert last / tempo <= lengths[tempo] <= last / tempo + 3, lengths
  assert lengths[1.25] < lengths[1.0]


def test_render_names_the_file_it_cannot_read(tmp_path):
  bad = tmp_path / 'not_midi.mid'
  bad.write_text('no MIDI here')
  run = _render(f'--midi={bad}', f'--out={tmp_path / "x.wav"}')
  assert run.returncode != 0
  assert str(bad) in run.stderr and 'Traceback' not in run.stderr
  assert not (tmp_path / 'x.wav').exists()
