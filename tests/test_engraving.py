"""Tests for the engravers' registry (data_prep.engraving) and the
engraver-neutral notation."""

import pytest

from data_prep import engraving
from data_prep import pipeline
from data_prep.engraving import notation

_LETTER_PC = {'c': 0, 'd': 2, 'e': 4, 'f': 5, 'g': 7, 'a': 9, 'b': 11}


def test_engravers_by_name():
  assert set(engraving.ENGRAVERS) == {'lilypond', 'verovio'}
  for name, engraver in engraving.ENGRAVERS.items():
    assert engraving.get(name) is engraver and engraver.name == name
    assert set(engraver.heldout_engravings) <= set(engraver.engravings)
    for g in engraver.engravings:
      assert engraving.engraver_of(g) is engraver
  assert len(set(engraving.ENGRAVINGS)) == len(engraving.ENGRAVINGS)
  assert engraving.engraver_of('verovio_leland').name == 'verovio'
  assert 'verovio_leland' in engraving.HELDOUT_ENGRAVINGS
  with pytest.raises(ValueError, match="'finale'; known: lilypond, verovio"):
    engraving.get('finale')
  with pytest.raises(ValueError, match='unknown engraving.*lilypond_drawn'):
    engraving.engraver_of('finale')


def test_engraving_params_name_the_engraver():
  for g in engraving.ENGRAVINGS:
    params = pipeline.engraving_params(g, 'piece_0')
    assert params['engraver'] == engraving.engraver_of(g).name
  assert pipeline.engraving_params('lilypond', 'x') == {
      'engraver': 'lilypond', 'staff_size': 20, 'spacing_increment': 1.2,
      'shortest_space': 2.0, 'staff_thickness': 1.0, 'stem_thickness': 1.3,
      'beam_thickness': 0.48}
  assert pipeline.engraving_params('verovio_bravura', 'x') == {
      'engraver': 'verovio', 'font': 'Bravura'}


def test_spelling_keeps_the_pitch():
  for fifths in range(-5, 7):
    in_key = notation.key_alterations(fifths)
    for pitch in range(21, 109):
      letter, alter, octave = notation.spelled(pitch, fifths)
      assert 12 * (octave + 1) + _LETTER_PC[letter] + alter == pitch
      # a pitch of the key's scale is spelled as the signature alters it
      if pitch % 12 in {(_LETTER_PC[c] + a) % 12 for c, a in in_key.items()}:
        assert alter == in_key[letter], (pitch, fifths)


def test_note_values():
  values = notation.note_values(480)
  assert values[480] == (4, 0) and values[720] == (4, 1)
  assert values[1920] == (1, 0) and values[30] == (64, 0)
  assert 600 not in values            # a quarter tied to a sixteenth
