"""Tests for data_prep.melody (real Nottingham pieces + synthetic MIDI)."""


import pretty_midi
import pytest

from data_prep import melody as M

def _write_midi(path, notes, tpb=480, ts=(4, 4), key=None):
  """Write a one-instrument MIDI; ``notes`` = (pitch, start_beat, end_beat, velocity)."""
  pm = pretty_midi.PrettyMIDI(resolution=tpb, initial_tempo=120.0)
  pm.time_signature_changes.append(pretty_midi.TimeSignature(ts[0], ts[1], 0.0))
  if key is not None:
    pm.key_signature_changes.append(pretty_midi.KeySignature(key, 0.0))
  inst = pretty_midi.Instrument(0)
  for p, s, e, v in notes:
    inst.notes.append(pretty_midi.Note(velocity=v, pitch=p, start=s * 0.5, end=e * 0.5))
  pm.instruments.append(inst)
  pm.write(str(path))
  return path


def test_real_jig(midi_dir):
  mel = M.read_melody(midi_dir / 'train' / 'jigs_simple_chords_1.mid')
  assert mel.name == 'jigs_simple_chords_1'
  assert mel.ticks_per_beat == 480
  assert mel.time_signatures[0] == (0, 6, 8)     # melody track overrides track 0's 4/4
  assert mel.key_signatures[0] == (0, 9)         # A major
  assert any(k == 2 for _, k in mel.key_signatures[1:])   # D major for part B
  assert mel.pickup == 240                       # one eighth anacrusis
  assert mel.n_overlaps == 0
  starts = [n.start for n in mel.notes]
  assert starts == sorted(starts)
  assert all(a.end <= b.start for a, b in zip(mel.notes, mel.notes[1:]))
  assert all(n.start % 20 == 0 and n.end % 20 == 0 for n in mel.notes)
  assert mel.notes[1].start_s == pytest.approx(0.25)


def test_real_overlaps_and_type0(midi_dir):
  mel = M.read_melody(midi_dir / 'test' / 'jigs_simple_chords_197.mid')   # rolled chords
  assert mel.n_overlaps > 0
  assert all(a.end <= b.start for a, b in zip(mel.notes, mel.notes[1:]))
  mel0 = M.read_melody(midi_dir / 'train' / 'jigs_simple_chords_6.mid')  # type 0, 9/8 bars
  assert len(mel0.time_signatures) > 1


def test_overlap_resolution(tmp_path):
  path = _write_midi(tmp_path / 'ov.mid', [
      (60, 0, 1, 105), (67, 0, 1, 80),     # same onset: keep the highest
      (62, 1, 3, 80), (64, 2, 3, 80),      # cut 62 at 64's onset
  ])
  mel = M.read_melody(path)
  assert [(n.pitch, n.start, n.end) for n in mel.notes] == [
      (67, 0, 480), (62, 480, 960), (64, 960, 1440)]
  assert mel.n_overlaps == 2


def test_quantization(tmp_path):
  # note-offs one tick early and a rolled chord (10-tick steps)
  pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=120.0)
  inst = pretty_midi.Instrument(0)
  t = lambda ticks: ticks / 960.0
  inst.notes += [pretty_midi.Note(105, 60, t(0), t(479)),
                 pretty_midi.Note(80, 64, t(480), t(959)),
                 pretty_midi.Note(80, 67, t(490), t(959)),
                 pretty_midi.Note(80, 72, t(500), t(959))]
  pm.instruments.append(inst)
  pm.write(str(tmp_path / 'q.mid'))
  mel = M.read_melody(tmp_path / 'q.mid')
  assert [(n.pitch, n.start, n.end) for n in mel.notes] == [(60, 0, 480), (72, 480, 960)]
  assert mel.n_overlaps == 2


def test_pickup_from_accents(tmp_path):
  # 4/4, a quarter pickup: accents (velocity 105) on the bar starts
  notes = [(67, 0, 1, 105)] + [(60 + i, 1 + i, 2 + i, 105 if i % 4 == 0 else 80) for i in range(8)]
  mel = M.read_melody(_write_midi(tmp_path / 'p.mid', notes))
  assert mel.pickup == 480
  assert mel.bar_lines[:3] == (480, 2400, 4320)


@pytest.mark.parametrize('content,reason', [
    (b'', 'empty'), (b'hello, not a midi file', 'not a readable MIDI'),
    (b'MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x01\x00\x90', 'not a readable MIDI')])
def test_bad_files(tmp_path, content, reason):
  path = tmp_path / 'bad.mid'
  path.write_bytes(content)
  with pytest.raises(M.MidiError, match=reason) as info:
    M.read_melody(path)
  assert str(path) in str(info.value)


def test_no_notes(tmp_path):
  pm = pretty_midi.PrettyMIDI()
  pm.instruments.append(pretty_midi.Instrument(0))
  pm.write(str(tmp_path / 'empty.mid'))
  with pytest.raises(M.MidiError, match='no notes') as info:
    M.read_melody(tmp_path / 'empty.mid')
  assert 'empty.mid' in str(info.value)


def test_missing_file(tmp_path):
  with pytest.raises(M.MidiError, match='nope.mid'):
    M.read_melody(tmp_path / 'nope.mid')
