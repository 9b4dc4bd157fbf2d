"""Drawn performances: reproducible, linked to the noteheads, never held out."""

import json

import numpy as np
import pytest

from data_prep import align
from data_prep import build
from data_prep import melody
from data_prep import performance
from data_prep import pipeline
from data_prep import synth
from dccaflax import audio
from dccaflax import input_pipeline


def test_draws_are_reproducible_and_in_range():
  a = performance.draws(3, seed=7)
  b = performance.draws(3, seed=7)
  names = [f'piece_{i}' for i in range(40)]
  drawn = [[d.params_for(n) for n in names] for d in a]
  assert drawn == [[d.params_for(n) for n in names] for d in b]
  assert drawn[0] != [performance.draws(1, seed=8)[0].params_for(n)
                      for n in names]
  assert drawn[0] != drawn[1]   # slots differ
  flat = [p for row in drawn for p in row]
  assert {p.slot for p in flat} == {'drawn0', 'drawn1', 'drawn2'}
  assert all(p.program in performance.TRAIN_PROGRAMS for p in flat)
  assert all(p.soundfont in performance.TRAIN_SOUNDFONTS for p in flat)
  lo, hi = performance.TEMPO_RANGE
  tempos = np.array([p.tempo for p in flat])
  assert tempos.min() >= lo and tempos.max() <= hi
  assert tempos.min() < 0.8 and tempos.max() > 1.4   # a wide range is used
  assert len({p.program for p in flat}) > 15
  assert len({p.soundfont for p in flat}) == len(performance.TRAIN_SOUNDFONTS)


def test_held_out_instruments_and_soundfonts_never_reach_training():
  assert not set(performance.TRAIN_PROGRAMS) & set(
      performance.HELDOUT_PROGRAMS)
  assert not set(performance.TRAIN_SOUNDFONTS) & set(
      performance.HELDOUT_SOUNDFONTS)
  musescore = synth.soundfont_path('musescore', synth.EVAL_SOUNDFONTS)
  for bad in (dict(soundfonts=('musescore',)), dict(soundfonts=(musescore,)),
              dict(programs=(0, 110))):
    with pytest.raises(performance.HeldOutError, match='held out'):
      performance.Draw(slot=0, **bad)
  for split in ('train', 'valid'):
    for rendering in (performance.heldout(1.0),
                      synth.SynthParams(program=41),
                      synth.SynthParams(soundfont=musescore, tempo=0.8)):
      with pytest.raises(pipeline.PrepareError, match='held.out'):
        pipeline.check_renderings(synth.SynthParams(), [rendering], [split])
    with pytest.raises(pipeline.PrepareError, match='held out'):  # primary
      pipeline.check_renderings(synth.SynthParams(soundfont='musescore'), [],
                                [split])
  # For the test split alone they are fine (evaluation renderings).
  pipeline.check_renderings(synth.SynthParams(), [performance.heldout(1.0)],
                            ['test'])
  # The preparation refuses them before any work.
  with pytest.raises(pipeline.PrepareError, match='held out'):
    build.prepare(None, '/nonexistent', splits=('train',),
                  renderings=(synth.SynthParams(program=110),))


def test_performed_keeps_order_and_is_the_score_without_a_touch(
    test_pieces):
  mel = melody.read_melody(str(test_pieces[0]))
  plain, vel = synth.performed(mel.notes, synth.SynthParams(tempo=1.25))
  assert plain == synth.at_tempo(mel.notes, 1.25) and set(vel) == {90}
  params = synth.SynthParams(tempo=0.7, velocity=70, dynamics=25, accent=10,
                             timing_s=0.02, seed=3)
  played, vel = synth.performed(mel.notes, params)
  again, vel2 = synth.performed(mel.notes, params)
  assert played == again and np.array_equal(vel, vel2)
  starts = np.array([n.start_s for n in played])
  written = np.array([n.start_s / 0.7 for n in mel.notes])
  assert np.all(np.diff(starts) > 0)
  dev = starts - written
  assert 0.005 < np.std(dev) < 0.03
  gaps = np.diff(written)
  room = 0.25 * np.minimum(np.append(gaps, np.inf), np.insert(gaps, 0, np.inf))
  assert np.all(np.abs(dev) <= room + 1e-9)
  assert vel.min() >= 15 and vel.max() <= 127 and np.std(vel) > 5
  assert all(n.end_s > n.start_s for n in played)


def _flux(spec):
  """Onset strength per frame: summed positive spectral difference."""
  return np.maximum(np.diff(spec, axis=1, prepend=spec[:, :1]), 0).sum(0)


def test_drawn_renderings_keep_every_notehead_onset_link(tmp_path,
                                                        midi_dir):
  draws = performance.draws(2, seed=5)
  build.prepare(str(midi_dir), str(tmp_path), configs=('pieces',),
                splits=('train',), limit=2, workers=1, progress=False,
                renderings=draws)
  source = input_pipeline.data_source(str(tmp_path), 'pieces', 'train')
  pieces = list(input_pipeline.read_examples(source, len(source)))
  assert len(pieces) == 2
  for ex in pieces:
    name = ex['piece'].decode()
    assert ex['renderings'].decode() == 'fluidr3_t1.00,drawn0,drawn1'
    params = json.loads(ex['rendering_params'])
    mel = melody.read_melody(str(midi_dir / 'train' / f'{name}.mid'))
    frames, notes = align.pair_notes(mel.notes)
    np.testing.assert_array_equal(ex['onset_frames'], frames)
    ends = np.cumsum(ex['extra_frames'])
    for e, draw in enumerate(draws):
      # The drawn values are stored and are the slot's draw for the piece.
      drawn = draw.params_for(name)
      assert params[1 + e] == drawn.to_json()
      # Each pair's onset is its note's performed start in this rendering.
      played, _ = synth.performed(mel.notes, drawn)
      want = audio.onset_frame([played[i].start_s for i in notes])
      np.testing.assert_array_equal(ex['extra_onsets'][e], want)
      # ... and the audio has its attacks there: onset strength at the
      # pairs' frames (+-1) well above the piece's median frame.
      spec = ex['extra_codes'][:, ends[e] - ex['extra_frames'][e]:ends[e]]
      flux = _flux(spec.astype(np.float32))
      at = np.max([flux[np.clip(want + d, 0, len(flux) - 1)]
                   for d in (-1, 0, 1)], axis=0)
      assert np.median(at) > 3 * np.median(flux), (name, drawn)
