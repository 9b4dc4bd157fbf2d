r"""Prepares the Nottingham audio/sheet data set (both TFDS configs).

  python -m data_prep.prepare --midi_dir DIR --data_dir OUT \
      [--config pairs|pieces|both] [--splits test] [--limit N]

DIR holds train/valid/test (or is Nottingham.zip); without --midi_dir the
environment variable DCCAFLAX_NOTTINGHAM is used, and --download fetches the
public zip.  Writes OUT/nottingham_audio_sheet/{pairs,pieces}/1.0.0 and
OUT/prep_report.json (every input file, ok or skipped with the reason).
Per-piece work is cached in OUT/cache, so a re-run redoes only what changed.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from data_prep import build
from data_prep import pipeline
from data_prep import source
from data_prep import synth

_MIDI_DIR = flags.DEFINE_string(
    'midi_dir', None, 'Folder with train/valid/test *.mid, or Nottingham.zip '
    f'(default: ${source.ENV_VAR}).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Output folder.',
                                required=True)
_CONFIG = flags.DEFINE_enum('config', 'both', ['pairs', 'pieces', 'both'],
                            'Which TFDS config(s) to build.')
_SPLITS = flags.DEFINE_list('splits', list(pipeline.SPLITS),
                            'Splits to prepare.')
_LIMIT = flags.DEFINE_integer('limit', None,
                              'At most this many pieces per split.')
_WORKERS = flags.DEFINE_integer('workers', None,
                                'Processes (default: all cores).')
_DOWNLOAD = flags.DEFINE_bool('download', False,
                              'Download Nottingham.zip if no data is given.')
_SOUNDFONT = flags.DEFINE_string('soundfont', 'fluidr3',
                                 'fluidr3, timgm6mb or a path to an .sf2.')
_TEMPO = flags.DEFINE_float('tempo', 1.0, 'Tempo factor of the synthesis.')


def main(argv):
  del argv
  configs = ('pairs', 'pieces') if _CONFIG.value == 'both' else (
      _CONFIG.value,)
  t0 = time.time()
  try:
    report = build.prepare(_MIDI_DIR.value, _DATA_DIR.value, configs,
                     tuple(_SPLITS.value), _LIMIT.value, _WORKERS.value,
                     _DOWNLOAD.value,
                     synth.SynthParams(soundfont=_SOUNDFONT.value,
                                       tempo=_TEMPO.value))
  except (pipeline.PrepareError, synth.SynthError) as e:
    sys.exit(f'error: {e}')
  minutes = (time.time() - t0) / 60
  logging.info('report: %s', os.path.join(_DATA_DIR.value,
                                          'prep_report.json'))
  print(f'{report["inputs"]} inputs: {report["ok"]} ok, {report["skipped"]} '
        f'skipped {report["skipped_by_stage"] or ""}; pieces with overlapping '
        f'melody notes: {report["pieces_with_overlaps"]}; onsets per split: '
        f'{report["onsets"]}; {minutes:.1f} min; configs {list(configs)} in '
        f'{_DATA_DIR.value}')


if __name__ == '__main__':
  app.run(main)
