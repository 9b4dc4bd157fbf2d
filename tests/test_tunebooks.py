"""Tune books -> MIDI: real tunes of both books, repeats as written, skips
reported; splits by melody group; the bundled collections."""

import json
import os

import mido
import numpy as np
import pytest

from data_prep import abc_reading
from data_prep import melody
from data_prep import source
from data_prep import tunebooks
from data_prep import tunesplits

ONEILLS = tunebooks.COLLECTIONS['oneills']
AIRDS = tunebooks.COLLECTIONS['airds']


def _tune(collection, file_suffix, number):
  for rel, num, text in tunebooks.iter_tunes(collection):
    if rel.endswith(file_suffix) and num == number:
      return tunebooks.convert_tune(collection, rel, num, text)
  raise AssertionError(f'{collection.name} {file_suffix} X:{number} not in '
                       'the corpus')


def _pitches(tune):
  mel = melody.melody_from_midi_bytes(tune.midi, tune.name)
  return [n.pitch for n in mel.notes], mel


def test_oneills_repeats_and_endings_expanded_as_written():
  # O'Neill's 97, "Sleep on my Kathleen dear", 4/4 in G: a pickup and an
  # 8-bar strain repeated (the pickup with it), then |: a pickup and a
  # strain with first and second endings :|.  The pitches below were read
  # off the ABC by hand; accidentals hold to the end of their bar (=f in
  # the strain's first bar is F natural for all its f's; the next bar's f
  # is F sharp again); grace notes are dropped.
  tune = _tune(ONEILLS, '0051-0100.abc', '97')
  assert tune.status == 'ok', tune.reason
  a = [67, 72, 74, 72, 71, 69, 67, 67, 71, 69, 71, 74, 79, 76, 74, 71, 69, 67,
       64, 62, 64, 67, 67, 62, 72, 72, 74, 72, 71, 69, 67, 67, 71, 69, 71, 74,
       76, 79, 76, 74, 71, 69, 67, 64, 62, 64, 67, 67]
  b = [76, 77, 76, 77, 79, 77, 76, 74, 71, 74, 76, 79, 79, 77, 78, 76, 79, 76,
       76, 74, 79, 76, 74, 71, 72, 71, 69, 67, 64, 62, 76, 77, 76, 77, 79, 76,
       79, 67, 71, 74, 76, 79, 76]
  first = [74, 71, 69, 67, 64, 62, 64, 67, 67]
  second = [74, 71, 69, 67, 64, 72, 71, 72, 71, 69, 67, 67]
  pitches, mel = _pitches(tune)
  assert pitches == a + a + b + first + b + second
  assert tune.n_grace == 9
  # the pipeline reads the form: 4/4, G major, a one-beat pickup, 4/4 bars
  assert mel.time_signatures == ((0, 4, 4),)
  assert mel.key_signatures == ((0, 7),)
  assert mel.notes[0].start == 0 and mel.bar_lines[0] == 480
  assert mel.bar_lines[1] - mel.bar_lines[0] == 4 * 480
  # 120 quarter notes per minute, as the Nottingham files
  assert mel.notes[1].start_s == pytest.approx(0.5)


def test_airds_pickup_repeated_with_its_section():
  # Aird's volume 1, X:1 "The Ranting Highlandman": AG|B2B2 B2AG|...:: then
  # the second strain :|, each strain played twice.
  tune = _tune(AIRDS, 'book1.abc', '0001')
  assert tune.status == 'ok', tune.reason
  pitches, _ = _pitches(tune)
  n_a, n_b = 43, 41          # notes of each strain, counted in the ABC
  assert len(pitches) == 2 * (n_a + n_b)
  assert pitches[:7] == [69, 67, 71, 71, 71, 69, 67]   # AG|B2B2 B2AG
  assert pitches[:n_a] == pitches[n_a:2 * n_a]
  second = pitches[2 * n_a:]
  assert second[:n_b] == second[n_b:]
  assert second[:2] == [71, 72]                       # Bc|
  assert tune.name == 'airds_b1_0001'


def test_ambiguous_repeat_is_reported_skipped():
  # Aird's volume 2, X:355 "Gallway Girls.": the second strain opens a
  # repeat (::) that no :| closes.
  tune = _tune(AIRDS, 'book2.abc', '0355')
  assert tune.status == 'skipped'
  assert tune.reason.startswith('ambiguous repeat'), tune.reason
  assert 'never closed' in tune.reason and not tune.midi


def test_play_order():
  f, t = False, True
  # A:| B:|  -- the second strain repeats from the end of the first
  assert abc_reading.play_order([f] * 4, [f, t, f, t], {}) == [
      0, 1, 0, 1, 2, 3, 2, 3]
  # |:A:| |:B :|  with first and second endings on bars 3 and 4
  assert abc_reading.play_order([t, f, t, f, f], [t, f, f, t, f],
                              {3: (1,), 4: (2,)}) == [
                                  0, 0, 1, 2, 3, 2, 4]
  # a second ending before its first, and a |: never closed
  with pytest.raises(tunebooks.ConversionError, match='second ending'):
    abc_reading.play_order([f] * 3, [f] * 3, {1: (2,)})
  with pytest.raises(tunebooks.ConversionError, match='never closed'):
    abc_reading.play_order([f, t, f], [f] * 3, {})


def _abc(body, extra=''):
  return f'X:1\nT:Test\nM:2/4\nL:1/8\n{extra}K:G\n{body}\n'


@pytest.mark.parametrize('body,extra,reason', [
    ('GABc|d2d2|"^D.C."G4|]', '', 'a jump'),
    ('GABc|d2d2|G4|]', 'N:Aird uses a dal segno\n', 'a jump'),
    ('GABc|d2d2|G4|]', 'V:1\nV:2\n', '2 voices'),
    ('|:GABc|d2d2|G4|]', '', 'ambiguous repeat'),
    ('GABc|d2d2d2|G4|]', '', 'bars longer than their time signature'),
])
def test_unreadable_tunes_are_skipped_with_the_reason(body, extra, reason):
  tune = tunebooks.convert_tune(ONEILLS, 'test.abc', '1', _abc(body, extra))
  assert tune.status == 'skipped' and reason in tune.reason, tune.reason


def test_staccato_notes_are_not_a_da_capo():
  tune = tunebooks.convert_tune(ONEILLS, 'test.abc', '1',
                                _abc('.D.C.B.A|G2G2|G4|]'))
  assert tune.status == 'ok', tune.reason
  assert _pitches(tune)[0] == [62, 60, 71, 69, 67, 67, 67]


def test_chord_in_the_melody_keeps_its_highest_note():
  tune = tunebooks.convert_tune(ONEILLS, 'test.abc', '1',
                                _abc('[GB]A Bc|[G2d2] G2|G4|]'))
  assert tune.status == 'ok' and tune.n_chords == 2
  assert _pitches(tune)[0] == [71, 69, 71, 72, 74, 67, 67]


# ------------------------------------------------------ melody screening ---


def test_fingerprint_ignores_key_and_repeated_notes():
  tune = [67, 71, 74, 74, 72, 71, 69, 67, 66, 67, 62]
  moved = [p + 5 for p in tune]
  moved.insert(3, moved[3])  # a repeated note more
  assert tunesplits.fingerprint(tune) == tunesplits.fingerprint(moved)
  other = [60, 67, 64, 72, 65, 62, 71, 60, 69, 64, 66]
  assert tunesplits.similarity(tunesplits.fingerprint(tune),
                               tunesplits.fingerprint(other)) == 0.0


def test_assign_keeps_a_group_in_its_fixed_split():
  prints = {'n1': tunesplits.fingerprint([60, 62, 64, 65, 67, 69, 71, 72, 74]),
            'o1': tunesplits.fingerprint([65, 67, 69, 70, 72, 74, 76, 77, 79]),
            'o2': tunesplits.fingerprint([60, 64, 62, 65, 64, 67, 65, 69, 67,
                                          71])}
  pairs = tunesplits.near_duplicates(prints)
  assert [p[:2] for p in pairs] == [('n1', 'o1')]
  groups = tunesplits.groups(prints, pairs)
  split, conflicts = tunesplits.assign(groups, {'n1': 'valid'})
  assert split['o1'] == 'valid' and not conflicts
  assert split['o2'] == tunesplits.hashed_split('o2')


def _melody_track_pitches(path):
  """Pitches of a file's melody read with mido alone (not the pipeline's
  reader): note-ons of the first track that plays, notes starting together
  (or rolled within 15 ticks) reduced to the highest."""
  mf = mido.MidiFile(path)
  for track in mf.tracks:
    tick, notes = 0, []
    for msg in track:
      tick += msg.time
      if msg.type == 'note_on' and msg.velocity > 0:
        if notes and tick - notes[-1][0] <= 15:
          notes[-1] = (tick, max(notes[-1][1], msg.note))
        else:
          notes.append((tick, msg.note))
    if notes:
      return [p for _, p in notes]
  return []


@pytest.fixture(scope='module')
def bundled_melodies():
  """name -> (collection, split, pitches) of every bundled MIDI file."""
  out = {}
  for collection in source.COLLECTIONS:
    root = source.verify(source.bundled(collection))
    for split in tunesplits.SPLITS:
      folder = os.path.join(root, split)
      for name in sorted(os.listdir(folder)):
        out[name[:-4]] = (collection, split, _melody_track_pitches(
            os.path.join(folder, name)))
  return out


def test_no_melody_is_in_two_splits(bundled_melodies):
  # Screened again from the files, read by another reader than the one the
  # splits were made with: no near-duplicate pair spans two splits, but in
  # the groups that Nottingham's own split (the paper's, fixed) already puts
  # in two splits, listed in datasets/melody_groups.json.
  prints = {n: tunesplits.fingerprint(p)
            for n, (_, _, p) in bundled_melodies.items()}
  pairs = tunesplits.near_duplicates(prints)
  with open(os.path.join(source.DATASETS, 'melody_groups.json')) as f:
    conflicted = {n for g in json.load(f)['nottingham_conflicts']
                  for n in g['members']}
  crossing = [(a, b, round(s, 2)) for a, b, s in pairs
              if bundled_melodies[a][1] != bundled_melodies[b][1]
              and not {a, b} <= conflicted]
  assert not crossing, crossing[:10]
  # and the screen does find near-duplicates across the books
  across = [(a, b) for a, b, _ in pairs
            if bundled_melodies[a][0] != bundled_melodies[b][0]]
  assert len(across) >= 20, across


def test_bundled_collections_match_their_reports(bundled_melodies):
  for name in ('oneills', 'airds'):
    root = source.bundled(name)
    with open(os.path.join(root, 'conversion_report.json')) as f:
      report = json.load(f)
    on_disk = {n: s for n, (c, s, _) in bundled_melodies.items() if c == name}
    ok = {t['name']: t['split'] for t in report['tunes']
          if t['status'] == 'ok'}
    assert on_disk == ok
    skipped = [t for t in report['tunes'] if t['status'] != 'ok']
    assert all(t['reason'] for t in skipped)
    assert report['ok'] + report['skipped'] == report['inputs'] == len(
        report['tunes'])
    counts = np.array([report['splits'][s] for s in tunesplits.SPLITS])
    assert counts.sum() == report['ok']
    # every split holds a fair share (the hash of the group decides)
    assert np.all(counts / counts.sum() > 0.08), counts


def test_only_the_two_books_reach_the_data():
  # Every other collection of music21's corpus is reserved for independent
  # evaluation: no converter, no folder, no tune of it here.
  assert {c.corpus_dir for c in tunebooks.COLLECTIONS.values()} == {
      'oneills1850', 'airdsAirs'}
  assert set(source.COLLECTIONS) == {'nottingham', 'oneills', 'airds'}
  folders = {f for f in os.listdir(source.DATASETS)
             if os.path.isdir(os.path.join(source.DATASETS, f))}
  assert folders == set(source.COLLECTIONS)
  for name, collection in tunebooks.COLLECTIONS.items():
    with open(os.path.join(source.bundled(name),
                           'conversion_report.json')) as f:
      report = json.load(f)
    assert report['corpus'].endswith('corpus/' + collection.corpus_dir)
    assert all(t['file'].startswith(collection.corpus_dir + '/')
               for t in report['tunes'])
