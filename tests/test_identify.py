"""Piece identification: windows, voting, real and outside recordings, eval."""

import json

import numpy as np
import pytest

from data_prep import heldout
from data_prep import melody
from data_prep import synth
from dccaflax import audio
from dccaflax import frontends
from dccaflax import identify
from dccaflax import index as index_lib
from dccaflax import presentation
from dccaflax.evaluators import identification
from experiments import commands
from tests.test_index import run_cli


def test_window_centres():
  np.testing.assert_array_equal(identify.window_centres(100), [50])
  np.testing.assert_array_equal(identify.window_centres(40), [20])
  np.testing.assert_array_equal(identify.window_centres(1), [0])
  # Every window lies inside the recording; the hop is 31 frames.
  c = identify.window_centres(1000)
  assert c[0] == 50 and c[-1] + 50 <= 1000 and 1000 - (c[-1] + 50) < 31
  assert np.all(np.diff(c) == 31)
  with pytest.raises(ValueError):
    identify.window_centres(0)


def test_quiet_windows_do_not_vote():
  spec = np.zeros((136, 400), np.float32)
  spec[:, 250:] = 3.0
  centres, excerpts, voting = identify.windows(spec)
  assert excerpts.shape == (len(centres), 136, 100)
  np.testing.assert_array_equal(voting, centres + 50 > 250)


def test_vote_weights_ranks(index):
  names = index.pieces
  rows = np.stack([index.rows_of(names[0])[:3],
                   index.rows_of(names[1])[:3]])
  rows = np.concatenate([rows, rows[::-1]], axis=1)  # (2, 6)
  ident = identify.vote(index, rows, np.array([True, False]),
                        np.array([50, 81]))
  h3 = 1 + 1 / 2 + 1 / 3
  assert ident.ranking[0] == (names[0], pytest.approx(h3))
  assert ident.ranking[1] == (names[1], pytest.approx(1 / 4 + 1 / 5 + 1 / 6))
  assert ident.ranking[2] == (names[2], 0.0)
  assert ident.rank_of(names[1]) == 2
  np.testing.assert_array_equal(ident.best_rank, [1, 4])
  np.testing.assert_array_equal(ident.best_row, [rows[0, 0], rows[1, 3]])
  assert ident.best_bar[0] == index.bar[rows[0, 0]]


def test_identifies_the_pipelines_own_rendering(recordings, model, index):
  """The wav is the pipeline's rendering of an indexed piece (FluidR3, 22,050
  Hz mono), the audio the model was trained on: it is found, far ahead."""
  samples = frontends.read_span(recordings['wav'])
  ident = identify.identify(model, index, audio.spectrogram(samples))
  assert ident.ranking[0][0] == recordings['name'], ident.ranking
  assert ident.ranking[0][1] > 1.5 * ident.ranking[1][1]
  assert ident.voting.all()
  # The score position moves forward with the recording (a tune's repeated
  # phrases can match either occurrence; 0.5-0.85 for this fixture model on
  # AVX-512, AVX2 and SSE4.2 code and other seeds, ~0 for positions that do
  # not follow the recording).
  t = ident.best_time_s[ident.best_rank > 0]
  corr = np.corrcoef(ident.centre_s[ident.best_rank > 0], t)[0, 1]
  assert corr > 0.3, corr
  text = presentation.format_identification(ident)
  assert recordings['name'] in text.splitlines()[2]


def test_an_mp3_made_outside_is_identified_like_the_pipeline_audio(
    recordings, model, index):
  """The mp3 (TimGM6mb, stereo 44.1 kHz, right channel at 70 %, made outside
  the pipeline) goes through the front end to the spectrogram of the same
  rendering made by the pipeline at the level of its mono mix, so its
  identification is that audio's: the same votes, window by window.  (How
  well the tiny fixture model knows a timbre it never heard is not this
  test's business: the evaluation on unseen soundfonts measures that.)"""
  spec = audio.spectrogram(frontends.read_span(recordings['mp3']))
  ref = audio.spectrogram(recordings['mp3_mono'])
  n = min(spec.shape[1], ref.shape[1])
  assert abs(spec.shape[1] - ref.shape[1]) <= 1    # codec padding at most
  # Codec noise: 0.007 (a gain of 0.85 -> 1 is 0.03, one frame's shift 0.11).
  assert np.abs(spec[:, :n] - ref[:, :n]).mean() < 0.015
  got, want = (identify.identify(model, index, s) for s in (spec, ref))
  got_votes, want_votes = dict(got.ranking), dict(want.ranking)
  assert set(got_votes) == set(want_votes) == set(index.pieces)
  total = sum(want_votes.values())    # differences seen: <= 2 % of it
  for piece, votes in want_votes.items():
    assert abs(got_votes[piece] - votes) < 0.05 * total, (got.ranking,
                                                          want.ranking)
  assert got.voting.all() and want.voting.all()
  assert np.mean(np.abs(got.best_time_s - want.best_time_s) < 0.05) > 0.6


def test_identify_entry_point(recordings, real_model, real_index, tmp_path):
  rc, log = run_cli('experiments.identify', '--workdir', real_model,
                    '--index', real_index, '--audio', recordings['wav'])
  assert rc == 0, log
  lines = log.splitlines()
  first = [i for i, l in enumerate(lines) if l.strip().startswith('1 ')][0]
  assert recordings['name'] in lines[first], log
  assert 'best-matching position in ' + recordings['name'] in log
  # Refused before the model is loaded (fast).
  for audio_path, message in (
      (recordings['silent'], 'the recording is silent'),
      (tmp_path / 'missing.wav', 'no such file'),
      (recordings['garbage'], 'cannot read audio')):
    rc, log = run_cli('experiments.identify', '--workdir', real_model,
                      '--index', real_index, '--audio', audio_path)
    assert rc != 0 and 'error: ' in log and message in log, log


def test_short_recordings_are_one_padded_window(recordings, real_model,
                                                real_index):
  printed = []
  ident = commands.identify_file(str(real_model), str(real_index),
                                 str(recordings['short']), echo=printed.append)
  assert len(ident.centre_s) == 1 and ident.voting.all()
  assert 'shorter than one window' in printed[0]
  assert '1 windows' in '\n'.join(printed)


def test_an_index_of_another_model_is_refused(real_model, real_data,
                                              recordings, model, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  other = model._replace(variables=jax.tree.map(lambda x: x + 1e-3,
                                                model.variables))
  path = index_lib.save(index_lib.build(other, str(real_data), 'test',
                                        limit=20), tmp_path / 'other.npz')
  rc, log = run_cli('experiments.identify', '--workdir', real_model,
                    '--index', path, '--audio', recordings['wav'])
  assert rc != 0 and 'error: ' in log and 'another model' in log, log
  # retrieve and identify share commands.load_model_and_index.
  with pytest.raises(frontends.QueryError, match='built by another model'):
    commands.retrieve(str(real_model), str(path),
                      audio_path=str(recordings['wav']))
  with pytest.raises(frontends.QueryError, match='built by another model'):
    commands.load_model_and_index(str(real_model), str(path))


def test_evaluation_on_an_unseen_soundfont(real_model, real_index, real_midi,
                                           tmp_path):
  # TimGM6mb (an .sf2 inside pretty_midi, quick to load) is not a training
  # soundfont either; the default MuseScore .sf3 takes ~5 s per load.
  rc, log = run_cli('experiments.eval', '--workdir', real_model, '--evals',
                    'identify', '--index', real_index, '--midi_dir',
                    real_midi, '--soundfont', 'timgm6mb', '--tempos',
                    '0.8,1.25', '--pieces', 2, '--out_dir', tmp_path)
  assert rc == 0, log
  assert '| tempo factor |' in log and '| 0.8 |' in log and '| 1.25 |' in log
  with open(tmp_path / 'identify_eval.json') as f:
    result = json.load(f)
  assert list(result['tempos']) == ['0.8', '1.25']
  for m in result['tempos'].values():
    assert m['n'] == 2 and 0 <= m['top1'] <= m['top5'] == 100.0
    assert 1 / 3 <= m['MRR'] <= 1
  assert len(result['per_piece']) == 4
  assert result['n_pieces'] == 2 and result['n_candidate_pieces'] == 3
  assert (tmp_path / 'identify_eval.md').read_text() == (
      identification.markdown(result, 'Piece identification (quick model)'))
  # Refused before the model is loaded.
  rc, log = run_cli('experiments.eval', '--workdir', real_model, '--evals',
                    'identify', '--index', real_index, '--midi_dir',
                    tmp_path / 'none')
  assert rc != 0 and 'error: ' in log and 'MIDI folder' in log
  rc, log = run_cli('experiments.eval', '--workdir', real_model, '--evals',
                    'identify', '--index', real_index, '--midi_dir',
                    real_midi, '--soundfont', tmp_path / 'none.sf2')
  assert rc != 0 and 'error: ' in log and 'none.sf2' in log


def test_identification_in_distribution_is_far_above_chance(model, index,
                                                            real_midi):
  """Fresh renderings in the training soundfont at tempo 1: every piece
  identified (chance: 1 of the 3 indexed pieces)."""
  result = heldout.identification_eval(
      model, index, str(real_midi), synth.soundfont_path('fluidr3'), (1.0,),
      workers=1, log=lambda *a: None)
  assert result['tempos']['1'] == {'top1': 100.0, 'top5': 100.0,
                                   'MRR': 1.0, 'n': 3}
  assert 'the training soundfont!' in identification.markdown(result)


def test_render_batch_cuts_each_piece_at_its_tempo(real_midi):
  files = sorted(str(p) for p in (real_midi / 'test').glob('*.mid'))[:2]
  out = synth.render_batch(([(files[0], 1.0), (files[1], 1.25),
                            (files[0], 0.8)], 'fluidr3'))
  assert [o[1] for o in out] == [1.0, 1.25, 0.8]
  n1, n2 = out[0][2].shape[1], out[2][2].shape[1]
  tail = synth.TAIL_S * 31.25
  assert (n2 - tail) == pytest.approx((n1 - tail) / 0.8, rel=0.01)
  # Piece 1 at tempo 1 is the pipeline's own rendering (same soundfont).
  mel = melody.read_melody(files[0])
  ref = audio.spectrogram(synth.synthesize(mel.notes))
  n = min(ref.shape[1], n1) - 5
  assert np.mean(np.abs(out[0][2][:, :n] - ref[:, :n])) < 0.02
