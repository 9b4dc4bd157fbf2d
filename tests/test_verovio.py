"""Tests for the Verovio engraver (data_prep.engraving.verovio: MEI, Verovio
SVG, exact notehead links) and the held-out font's exclusion from training
data."""

import json
import re

import numpy as np
import pytest

from data_prep import build
from data_prep import melody as M
from data_prep import pipeline
from data_prep.engraving import lilypond_source as S
from data_prep.engraving import notation as N
from data_prep.engraving import verovio as V
from dccaflax import input_pipeline
from dccaflax.snippets import STRIP_HEIGHT

_STEPS = {c: i for i, c in enumerate('cdefgab')}


def _melody(notes, ts=(4, 4), key=0, bar_lines=()):
  """Melody from ``(pitch, start, end)`` ticks at 480 per beat, 120 bpm."""
  return M.Melody(
      name='synthetic',
      notes=tuple(M.Note(p, s, e, s / 960, e / 960) for p, s, e in notes),
      ticks_per_beat=480, time_signatures=((0,) + ts,),
      key_signatures=((0, key),), n_overlaps=0, bar_lines=tuple(bar_lines))


def _row(pitch, fifths):
  """Strip row of a notehead's centre: the middle line (treble B4) is row
  24, a diatonic step is half a 4-px staff space."""
  letter, _, octave = N.spelled(pitch, fifths)
  steps = 7 * octave + _STEPS[letter] - (7 * 4 + _STEPS['b'])
  return STRIP_HEIGHT // 2 - 2 * steps


def _check_links(mel, eng, fifths):
  """Every onset has exactly one notehead, in order, and there is ink
  where its pitch puts it (rows of filled noteheads)."""
  assert len(eng.noteheads) == len(mel.notes)
  assert all(len(h) == 1 for h in eng.noteheads)
  xs = np.array([h[0] for h in eng.noteheads])
  assert np.all(np.diff(xs) > 0)
  assert 0 <= xs[0] and xs[-1] < eng.strip.shape[1]
  inked = 0
  for n, x in zip(mel.notes, xs):
    row = _row(n.pitch, fifths)
    if 0 <= row < STRIP_HEIGHT:
      # the notehead is ~5 px wide: its centre column is dark on its row
      inked += eng.strip[row, int(round(x)) - 1:int(round(x)) + 2].min() < 128
  return inked


def test_mei_accidentals_ties_tuplets_beams():
  # C major, 4/4: f#'' twice in a bar (one sign), f'' natural after it, a
  # tie over the bar line, then a triplet of eighths, a rest and f#'' again.
  notes = [(78, 0, 240), (78, 240, 480), (77, 480, 960), (76, 960, 2400),
           (72, 2400, 2560), (74, 2560, 2720), (76, 2720, 2880),
           (78, 3360, 3840)]
  mei = V.mei_source(_melody(notes))
  first, second = mei.split('<measure')[1:3]
  assert re.findall(r'accid="(\w+)"', first) == ['s', 'n']
  assert re.findall(r'accid="(\w+)"', second) == ['s']   # a new bar
  assert 'tie="i"' in first and 'tie="t"' in second
  assert second.count('<tuplet num="3" numbase="2">') == 1
  assert re.search(r'<tuplet[^>]*><beam>(<note [^>]*/>){3}</beam></tuplet>',
                   second)
  assert '<beam><note xml:id="n0"' in first      # the two eighths
  assert '<rest dur="4"/>' in second and 'right="end"' in second
  # each onset carries its note's id once; continuations carry others
  for i in range(len(notes)):
    assert mei.count(f'xml:id="n{i}"') == 1


def test_pickup_is_not_a_full_bar():
  mel = _melody([(67, 0, 480), (72, 480, 2400)], ts=(4, 4),
                bar_lines=(480, 2400))
  mei = V.mei_source(mel)
  assert mei.split('<measure')[1].startswith(' metcon="false"')


@pytest.mark.parametrize('font', V.FONTS)
def test_real_piece_every_font(midi_dir, font):
  mel = M.read_melody(midi_dir / 'valid' / 'morris_simple_chords_4.mid')
  eng = V.engrave(mel, font)
  assert eng.strip.dtype == np.uint8 and eng.strip.shape[0] == STRIP_HEIGHT
  fifths = N.key_fifths(mel.key_signatures[0][1])
  inked = _check_links(mel, eng, fifths)
  # nearly all noteheads are filled (the rest are hollow half/whole notes)
  assert inked >= 0.8 * len(mel.notes), (inked, len(mel.notes))
  # the five staff lines, 4 px apart, the middle one on row 24
  profile = eng.strip.astype(float).mean(axis=1)
  lines = sorted(np.argsort(profile[8:40])[:5] + 8)
  assert lines == [16, 20, 24, 28, 32]
  assert eng.source.startswith('<?xml')


def test_synthetic_links_land_on_ink():
  # a scale over two octaves in quarters with a sharp key: every notehead
  # is filled, so each must sit on ink at its pitch's row
  pitches = [62, 64, 66, 67, 69, 71, 73, 74, 76, 78, 79, 81]
  notes = [(p, 480 * i, 480 * (i + 1)) for i, p in enumerate(pitches)]
  mel = _melody(notes, key=2)
  eng = V.engrave(mel, 'Bravura')
  assert _check_links(mel, eng, 2) == len(pitches)


def test_unknown_font():
  with pytest.raises(ValueError, match='unknown Verovio font'):
    V.font_name('comic')
  assert V.font_name('verovio_leland') == 'Leland'


def test_heldout_engraving_never_reaches_training_data(tmp_path):
  assert set(V.HELDOUT_ENGRAVINGS) and not (
      set(V.HELDOUT_ENGRAVINGS) & {f'verovio_{f.lower()}'
                                   for f in V.TRAINING_FONTS})
  for held in V.HELDOUT_ENGRAVINGS:
    pipeline.check_engraving(held, ['test'])
    for split in ('train', 'valid'):
      with pytest.raises(pipeline.PrepareError, match='held out'):
        pipeline.check_engraving(held, [split, 'test'])
      # the pipeline and the builder refuse before anything is made
      with pytest.raises(pipeline.PrepareError, match='held out'):
        pipeline.run({split: ['nothing.mid']}, str(tmp_path / 'cache'),
                     engraving=held, progress=False)
      with pytest.raises(pipeline.PrepareError, match='held out'):
        build.prepare(None, str(tmp_path / 'data'), splits=(split,),
                      engraving=held, progress=False)
  assert not (tmp_path / 'cache').exists()
  assert not (tmp_path / 'data' / input_pipeline.DATASET).exists()
  with pytest.raises(pipeline.PrepareError, match='unknown engraving'):
    pipeline.check_engraving('finale')
  # the drawn engraving draws every training font and never a held-out one
  pipeline.check_engraving(V.DRAWN, ['train', 'valid'])
  drawn = [V.engraving_font(V.DRAWN, f'piece_{i}') for i in range(200)]
  assert set(drawn) == set(V.TRAINING_FONTS)
  assert drawn == [V.drawn_font(f'piece_{i}') for i in range(200)]


def test_prepared_engraving_pairs_match_lilypond(tmp_path, midi_dir):
  """A real preparation by Verovio: the same pairs as LilyPond's (same
  onsets, same audio), other sheet snippets, readable as a data source."""
  data = str(tmp_path / 'data')
  for engraving in ('lilypond', 'verovio_leland', 'lilypond_drawn'):
    report = build.prepare(str(midi_dir), data, splits=('test',), limit=2,
                           workers=1, progress=False, engraving=engraving)
    assert report['ok'] == 2 and report['engraving'] == engraving
    # what the engraving gave each piece is in its report item
    params = [json.loads(it['engraving_params']) for it in report['items']]
    if engraving == 'verovio_leland':
      assert params == [{'engraver': 'verovio', 'font': 'Leland'}] * 2
    elif engraving == 'lilypond_drawn':
      assert [p['staff_size'] for p in params] == [
          S.drawn_style(it['file'].rsplit('/', 1)[-1][:-4]).staff_size
          for it in report['items']]
  lily = input_pipeline.load_pairs(data, 'test')
  vero = input_pipeline.load_pairs(data, 'test',
                                   collection='nottingham:verovio_leland')
  np.testing.assert_array_equal(lily['onset_frame'], vero['onset_frame'])
  np.testing.assert_array_equal(lily['spec'], vero['spec'])
  assert not np.array_equal(lily['sheet'], vero['sheet'])
  # a snippet is centred on its notehead: ink in the middle columns
  assert (vero['sheet'][:, :, 48:53] < 128).any(axis=(1, 2)).mean() > 0.95


def test_benchmark_times_every_font(midi_dir, tmp_path):
  from tests.test_index import run_cli  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'bench.json'
  rc, log = run_cli('data_prep.benchmark', '--midi_dir', midi_dir, '--n', 1,
                    '--verovio', '--out', out)
  assert rc == 0, log
  assert 'Verovio' in log and 'core-s' in log
  r = json.loads(out.read_text())['verovio']
  assert r['pieces'] == 1 and set(r['fonts']) == set(V.FONTS)
  assert all(v['core_s_per_piece'] > 0 and v['wall_s_per_piece'] > 0
             for v in r['fonts'].values())
