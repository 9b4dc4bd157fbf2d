"""Tests for the LilyPond engraver (data_prep.engraving.lilypond_source and
lilypond: source, rendering, notehead links)."""


import numpy as np
import pytest

from data_prep import melody as M
from data_prep.engraving import lilypond as L
from data_prep.engraving import lilypond_source as S
from dccaflax.snippets import STRIP_HEIGHT

def _melody(notes, ts=(4, 4), key=0, bar_lines=()):
  """Melody from ``(pitch, start, end)`` ticks at 480 per beat, 120 bpm."""
  return M.Melody(
      name='synthetic',
      notes=tuple(M.Note(p, s, e, s / 960, e / 960) for p, s, e in notes),
      ticks_per_beat=480, time_signatures=((0,) + ts,), key_signatures=((0, key),),
      n_overlaps=0, bar_lines=tuple(bar_lines))


def _body(src):
  """Source lines after the opening brace, without the closing one."""
  lines = src.splitlines()
  return lines[lines.index('{') + 2:-1]


def test_tie_across_bar_line():
  mel = _melody([(72, 0, 1440), (74, 1440, 2400), (72, 2400, 3840)])
  src, pos = S.lilypond_source(mel)
  body = _body(src)
  assert body[0].split() == ["c''2.", "d''4~", '|']
  # a dotted half on beat 2 would cross the bar middle: quarter ~ half
  assert body[1].split() == ["d''4", "c''4~", "c''2", '\\bar', '"|."']
  lines = src.splitlines()
  for (line, col), tok in zip(pos, ["c''2.", "d''4~", "c''4~"]):
    assert lines[line - 1][col:].startswith(tok)


def test_four_four_middle_and_syncopation():
  # a half note on beat 2 crosses the bar middle: quarter ~ quarter
  mel = _melody([(67, 0, 480), (69, 480, 1440), (71, 1440, 1920)])
  assert _body(S.lilypond_source(mel)[0])[0].split()[:4] == ["g'4", "a'4~", "a'4", "b'4"]


def test_six_eight_grouping():
  notes = [(62, 0, 720), (64, 720, 960), (66, 960, 1440),         # 4. 8 4
           (67, 1440, 1920), (69, 1920, 2400), (71, 2400, 2640),  # 4 8~8 8 8
           (72, 2640, 2880)]
  src, _ = S.lilypond_source(_melody(notes, ts=(6, 8), key=2))
  assert '\\key d \\major \\time 6/8' in src
  body = _body(src)
  assert body[0].split()[:3] == ["d'4.", "e'8", "fis'4"]
  assert body[1].split()[:5] == ["g'4", "a'8~", "a'8", "b'8", "c''8"]


def test_pickup_and_triplets():
  notes = [(60, 0, 240), (62, 240, 400), (64, 400, 560), (65, 560, 720), (67, 720, 2160)]
  mel = _melody(notes, ts=(4, 4), bar_lines=(240, 2160))
  src, _ = S.lilypond_source(mel)
  body = _body(src)
  assert body[0].split() == ['\\partial', '8', "c'8", '|']
  assert body[1].startswith("  \\tuplet 3/2 { d'8 e'8 f'8 }")


def test_bass_clef():
  src, _ = S.lilypond_source(_melody([(43, 0, 480), (48, 480, 960), (64, 960, 1440)]))
  assert '\\clef bass' in src


def test_real_piece(midi_dir, tmp_path):
  mel = M.read_melody(midi_dir / 'valid' / 'morris_simple_chords_4.mid')
  eng = L.engrave(mel, workdir=tmp_path)
  assert eng.strip.dtype == np.uint8
  assert eng.strip.ndim == 2 and eng.strip.shape[0] == STRIP_HEIGHT
  assert eng.strip.shape[1] > 200
  assert len(eng.noteheads) == len(mel.notes)
  assert all(len(h) == 1 for h in eng.noteheads)
  xs = [h[0] for h in eng.noteheads]
  assert all(b > a for a, b in zip(xs, xs[1:]))
  assert 0 <= xs[0] and xs[-1] < eng.strip.shape[1]
  # staff centred: the middle line is the darkest row around the centre
  profile = eng.strip.astype(float).mean(axis=1)
  assert abs(int(np.argmin(profile[16:33])) + 16 - STRIP_HEIGHT // 2) <= 4
  assert eng.source.startswith('\\version')


def test_engrave_many(midi_dir, tmp_path):
  mels = [M.read_melody(midi_dir / 'test' / 'morris_simple_chords_5.mid'),
          M.read_melody(midi_dir / 'valid' / 'morris_simple_chords_4.mid')]
  res = L.engrave_many(mels, workdir=tmp_path)
  assert [all(len(h) == 1 for h in r.noteheads) for r in res] == [True, True]


def test_syntax_error(monkeypatch, tmp_path):
  mel = _melody([(60, 0, 480)])
  monkeypatch.setattr(L, 'lilypond_source',
                      lambda m, *style: ('\\version "2.25.12"\n{ c\'4 \\nosuchcommand }\n', [(2, 2)]))
  with pytest.raises(L.EngraveError, match='synthetic'):
    L.engrave(mel, workdir=tmp_path)


def test_default_style_leaves_the_source_alone():
  mel = _melody([(60, 0, 480), (62, 480, 960)])
  assert S.lilypond_source(mel, S.Style()) == S.lilypond_source(mel)
  src, pos = S.lilypond_source(mel, S.Style(staff_size=16,
                                            spacing_increment=1.5))
  assert '#(set-global-staff-size 16)' in src
  assert 'spacing-increment = #1.500' in src
  lines = src.splitlines()     # the onset positions follow the extra lines
  for line, col in pos:
    assert lines[line - 1][col:].startswith(("c'4", "d'4"))


def test_drawn_styles():
  styles = [S.drawn_style(f'piece_{i}') for i in range(60)]
  assert styles == [S.drawn_style(f'piece_{i}') for i in range(60)]
  assert S.drawn_style('piece_0', seed=1) != styles[0]
  assert {s.staff_size for s in styles} == set(S.STAFF_SIZES)
  for s in styles:
    for k, (lo, hi) in S.STYLE_RANGES.items():
      assert lo <= getattr(s, k) <= hi


@pytest.mark.parametrize('style', [S.Style(staff_size=16),
                                   S.Style(staff_size=24, spacing_increment=1.8,
                                           staff_thickness=1.8,
                                           stem_thickness=2.5)])
def test_real_piece_in_another_style(midi_dir, tmp_path, style):
  mel = M.read_melody(midi_dir / 'valid' / 'morris_simple_chords_4.mid')
  eng = L.engrave(mel, workdir=tmp_path, style=style)
  assert all(len(h) == 1 for h in eng.noteheads)
  xs = [h[0] for h in eng.noteheads]
  assert all(b > a for a, b in zip(xs, xs[1:]))
  # normalised to the strip's staff: five lines 4 px apart about row 24
  profile = eng.strip.astype(float).mean(axis=1)
  assert sorted(np.argsort(profile[8:40])[:5] + 8) == [16, 20, 24, 28, 32]
