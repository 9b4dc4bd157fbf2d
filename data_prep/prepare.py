r"""Prepares the audio/sheet data set (both TFDS configs of a collection).

  python -m data_prep.prepare --midi_dir DIR --data_dir OUT \
      [--collections nottingham,oneills,airds] \
      [--engravings lilypond,verovio_leipzig,...] \
      [--config pairs|pieces|both] [--splits test] [--pieces N] \
      [--soundfont fluidr3 --tempo 1.0] [--soundfonts A,B --tempos X,Y,Z] \
      [--drawn N --draw_seed S --draw_soundfonts A,B,C --draw_tempos LO,HI] \
      [--extra_splits train]

DIR holds train/valid/test (or is Nottingham.zip); without --midi_dir the
environment variable DCCAFLAX_NOTTINGHAM is used, else the data set bundled
with the repository (datasets/nottingham, checked against its manifest).  Writes OUT/nottingham_audio_sheet/{pairs,pieces}/1.2.0 and
OUT/prep_report.json (every input file, ok or skipped with the reason).
Per-piece work is cached in OUT/cache, so a re-run redoes only what changed.

--collections prepares other collections the repository ships (their MIDI
files in datasets/<name>, written by data_prep.convert_tunebooks) into
their own configs, <name>_pairs and <name>_pieces, and their reports into
OUT/prep_report_<name>.json; each collection has its own splits.

--engravings engraves each collection by other engravers too, each into its
own configs: verovio_<font> is Verovio in one of its fonts (Leipzig,
Bravura, Gootville, Petaluma; Leland is held out for evaluation and only
prepared with --splits test), verovio_drawn a training font drawn per
piece, lilypond_drawn LilyPond with a staff size, spacing and line
thicknesses drawn per piece (lilypond_source.drawn_style); e.g.
verovio_leland_pairs or oneills_verovio_bravura_pieces, with the report
prep_report[_<collection>]_<engraving>.json (each piece's drawn values in
its item's engraving_params).  Training pools them as
data sources: --collections nottingham,nottingham:verovio_bravura.

Renderings: --soundfont/--tempo give the primary rendering (the audio of the
``pairs`` config and of ``pieces``' ``spec_codes``).  --soundfonts and
--tempos add extra renderings for augmentation, stored in ``pieces``'
``extra_*`` features: all of soundfonts x tempos (an empty list means the
primary's soundfont or tempo), the primary first, then the others
soundfont-major in the order given.  For example

  --soundfonts fluidr3,timgm6mb --tempos 0.9,1.0,1.1

gives 6 renderings: fluidr3_t1.00 (the primary), fluidr3_t0.90,
fluidr3_t1.10, timgm6mb_t0.90, timgm6mb_t1.00, timgm6mb_t1.10.  --drawn N
adds N drawn slots drawn0 ... drawn{N-1} after them: per piece, an
instrument, a soundfont of --draw_soundfonts, a tempo factor in
--draw_tempos, dynamics and timing, drawn from --draw_seed and the piece's
name (``data_prep.performance``; held-out instruments and soundfonts are
refused).  Each extra rendering costs one more synthesis and spectrogram per
piece; --extra_splits limits them to some splits (validation and the paper's
evaluation use the primary only).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from data_prep import build
from data_prep import performance
from data_prep import pipeline
from data_prep import source
from data_prep import synth

_MIDI_DIR = flags.DEFINE_string(
    'midi_dir', None, 'Folder with train/valid/test *.mid, or Nottingham.zip '
    f'(default: ${source.ENV_VAR}, else the bundled {source.BUNDLED}).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Output folder.',
                                required=True)
_CONFIG = flags.DEFINE_enum('config', 'both', ['pairs', 'pieces', 'both'],
                            'Which TFDS config(s) to build.')
_SPLITS = flags.DEFINE_list('splits', list(pipeline.SPLITS),
                            'Splits to prepare.')
_COLLECTIONS = flags.DEFINE_list(
    'collections', [source.NOTTINGHAM],
    f'Collections to prepare, of {list(source.COLLECTIONS)}, each into its '
    "own configs (Nottingham's: pairs, pieces; another's: <name>_pairs, "
    '<name>_pieces) with the same renderings; --midi_dir only with one.')
_ENGRAVINGS = flags.DEFINE_list(
    'engravings', [pipeline.LILYPOND],
    f'Engravings of each collection, of {list(pipeline.ENGRAVINGS)}, each '
    'into its own configs (see the module doc).')
_PIECES = flags.DEFINE_integer('pieces', None,
                               'At most this many pieces per split (the first '
                               'by name).')
_WORKERS = flags.DEFINE_integer('workers', None,
                                'Processes (default: all cores).')
_DOWNLOAD = flags.DEFINE_bool('download', False,
                              'Download Nottingham.zip if no data is given '
                              'and none is bundled.')
_SOUNDFONT = flags.DEFINE_string('soundfont', 'fluidr3',
                                 'fluidr3, timgm6mb or a path to an .sf2.')
_TEMPO = flags.DEFINE_float('tempo', 1.0, 'Tempo factor of the synthesis.')
_SOUNDFONTS = flags.DEFINE_list(
    'soundfonts', [], 'Soundfonts of the renderings (with --tempos: all '
    'combinations, plus the primary --soundfont/--tempo); empty: '
    '--soundfont only.')
_TEMPOS = flags.DEFINE_list(
    'tempos', [], 'Tempo factors of the renderings, e.g. 0.9,1.0,1.1 (see '
    '--soundfonts); empty: --tempo only.')
_DRAWN = flags.DEFINE_integer('drawn', 0, 'Drawn rendering slots (see the '
                              'module doc); 0 = none.')
_DRAW_SEED = flags.DEFINE_integer('draw_seed', 0, 'Seed of the drawn slots.')
_DRAW_SOUNDFONTS = flags.DEFINE_list(
    'draw_soundfonts', list(performance.TRAIN_SOUNDFONTS),
    'Soundfonts the drawn slots draw from.')
_DRAW_TEMPOS = flags.DEFINE_list(
    'draw_tempos', [f'{t:g}' for t in performance.TEMPO_RANGE],
    'Range LOW,HIGH of the drawn slots\' tempo factors (log-uniform).')
_EXTRA_SPLITS = flags.DEFINE_list(
    'extra_splits', None, 'Splits that get the extra renderings (default: '
    'all of --splits).')
def extra_renderings(primary: synth.SynthParams, soundfonts: list[str],
                     tempos: list[float]) -> tuple[synth.SynthParams, ...]:
  """The renderings soundfonts x tempos other than the primary.

  Args:
    primary: the primary rendering (--soundfont, --tempo).
    soundfonts: soundfont keys or paths; empty: the primary's.
    tempos: tempo factors; empty: the primary's.

  Returns:
    Soundfont-major, in the order given, without the primary.

  Raises:
    ValueError: a soundfont or a tempo listed twice.
  """
  for flag, values in (('--soundfonts', soundfonts), ('--tempos', tempos)):
    twice = sorted({str(v) for v in values if values.count(v) > 1})
    if twice:
      raise ValueError(f'{flag} lists {", ".join(twice)} more than once')
  out = []
  for sf in soundfonts or [primary.soundfont]:
    for tempo in tempos or [primary.tempo]:
      params = dataclasses.replace(primary, soundfont=sf, tempo=tempo)
      if params != primary:
        out.append(params)
  return tuple(out)


def drawn_slots(n: int, seed: int, soundfonts: list[str],
                tempos: list[str]) -> tuple[performance.Draw, ...]:
  """The --drawn slots; ValueError naming the flag on a bad value."""
  if n < 0:
    raise ValueError(f'--drawn must be >= 0, got {n}')
  if len(tempos) != 2:
    raise ValueError(f'--draw_tempos: expected LOW,HIGH, got {tempos}')
  lo, hi = (synth.parse_tempo(t, '--draw_tempos') for t in tempos)
  if lo > hi:
    raise ValueError(f'--draw_tempos: {lo} > {hi}')
  try:
    return performance.draws(n, seed, soundfonts, (lo, hi))
  except performance.HeldOutError as e:
    raise ValueError(f'--draw_soundfonts: {e}') from None


def _renderings() -> tuple[synth.SynthParams, tuple]:
  """The primary and extra renderings from the flags; exits on a bad one."""
  try:
    primary = synth.SynthParams(soundfont=_SOUNDFONT.value,
                                tempo=synth.parse_tempo(_TEMPO.value, '--tempo'))
    extras = extra_renderings(primary, _SOUNDFONTS.value,
                              [synth.parse_tempo(t) for t in _TEMPOS.value])
    extras += drawn_slots(_DRAWN.value, _DRAW_SEED.value,
                          _DRAW_SOUNDFONTS.value, _DRAW_TEMPOS.value)
  except ValueError as e:
    sys.exit(f'error: {e}')
  for flag, names in (('--soundfont', [_SOUNDFONT.value]),
                      ('--soundfonts', _SOUNDFONTS.value),
                      ('--draw_soundfonts',
                       _DRAW_SOUNDFONTS.value if _DRAWN.value else [])):
    for name in names:
      try:
        synth.soundfont_path(name)
      except synth.SynthError as e:
        sys.exit(f'error: {flag}: {e}')
  return primary, extras


def main(argv):
  del argv
  configs = ('pairs', 'pieces') if _CONFIG.value == 'both' else (
      _CONFIG.value,)
  primary, extras = _renderings()
  unknown = sorted(set(_COLLECTIONS.value) - set(source.COLLECTIONS))
  if unknown or not _COLLECTIONS.value:
    sys.exit(f'error: --collections: unknown {unknown}; have '
             f'{list(source.COLLECTIONS)}')
  if _MIDI_DIR.value and len(_COLLECTIONS.value) > 1:
    sys.exit('error: --midi_dir names the MIDI folder of one collection, '
             f'not of {_COLLECTIONS.value}')
  for engraving in _ENGRAVINGS.value:
    try:
      pipeline.check_engraving(engraving, _SPLITS.value)
    except pipeline.PrepareError as e:
      sys.exit(f'error: --engravings: {e}')
  for collection in _COLLECTIONS.value:
    for engraving in _ENGRAVINGS.value:
      _prepare(collection, engraving, configs, primary, extras)


def _prepare(collection, engraving, configs, primary, extras):
  """One collection in one engraving; prints its summary line."""
  t0 = time.time()
  try:
    report = build.prepare(_MIDI_DIR.value, _DATA_DIR.value, configs,
                           tuple(_SPLITS.value), _PIECES.value,
                           _WORKERS.value, _DOWNLOAD.value, primary,
                           renderings=extras,
                           extra_splits=_EXTRA_SPLITS.value,
                           collection=collection, engraving=engraving)
  except (pipeline.PrepareError, synth.SynthError) as e:
    sys.exit(f'error: {e}')
  minutes = (time.time() - t0) / 60
  logging.info('report: %s', source.report_path(
      _DATA_DIR.value, collection, engraving))
  print(f'{collection} ({engraving}): {report["inputs"]} inputs: '
        f'{report["ok"]} ok, '
        f'{report["skipped"]} skipped {report["skipped_by_stage"] or ""}; '
        'pieces with overlapping melody notes: '
        f'{report["pieces_with_overlaps"]}; onsets per split: '
        f'{report["onsets"]}; renderings {report["renderings"]}; '
        f'{minutes:.1f} min; configs {list(configs)} in {_DATA_DIR.value}')


if __name__ == '__main__':
  app.run(main)
