"""The robustness evaluation: held-out performances of the test pieces."""

import json

import numpy as np

from data_prep import melody
from data_prep import performance
from data_prep import heldout
from data_prep import synth
from dccaflax import input_pipeline
from dccaflax import snippets
from dccaflax.evaluators import robust
from tests.test_index import run_cli


def test_fresh_renderings_are_cut_at_each_pairs_note(real_data, real_midi):
  """A fresh FluidR3 piano rendering, cut where the evaluation cuts a
  held-out one (each pair's note, its performed onset), gives the prepared
  pairs' excerpts."""
  pairs = input_pipeline.load_pairs(str(real_data), 'test')
  files = sorted(str(p) for p in (real_midi / 'test').glob('*.mid'))
  mels = {melody.piece_name(f): melody.read_melody(f) for f in files}
  notes = heldout.pair_rows(pairs, mels)
  rendered = synth.render_batch(([(f, synth.SynthParams()) for f in files],
                                 'fluidr3'))
  specs = {name: (spec, on) for name, _, spec, on in rendered}
  got = np.stack([
      snippets.spec_excerpt(specs[name][0], int(np.floor(
          specs[name][1][note] * snippets.FPS + 0.5)))
      for name, note in heldout.notes_of_pairs(pairs, notes)])
  assert got.shape == pairs['spec'].shape
  assert np.mean(np.abs(got - pairs['spec'])) < 0.03
  # A pair one note off would not match.
  shifted = np.roll(got, 1, axis=0)
  assert np.mean(np.abs(shifted - pairs['spec'])) > 0.1


def test_robust_eval_writes_its_table(real_model, real_index, real_midi,
                                      tmp_path):
  rc, log = run_cli('experiments.eval', '--workdir', real_model, '--evals',
                    'robust', '--index', real_index, '--midi_dir', real_midi,
                    '--tempos', '0.8', '--conditions', 'musescore_piano',
                    '--limit', 300, '--out_dir', tmp_path, timeout=600)
  assert rc == 0, log[-3000:]
  result = json.loads((tmp_path / 'robust_eval.json').read_text())
  md = (tmp_path / 'robust_eval.md').read_text()
  assert [r['rendering'] for r in result['rows']] == [
      robust.IN_DISTRIBUTION.name, 'held out, tempo 0.8',
      heldout.CONDITIONS['musescore_piano'].name]
  assert result['n_pairs'] == 300 and 'MuseScore' in result['soundfont']
  for row in result['rows']:
    assert row['n_pieces'] == 3 and 0 <= row['top1'] <= 100
    assert 0 <= row['a2s']['R@10'] <= 100 and row['s2a']['MR'] >= 1
    assert f'| {row["rendering"]} |' in md
  assert list(result['programs']) == ['held out, tempo 0.8']  # drawn
  programs = result['programs']['held out, tempo 0.8'].values()
  assert set(programs) <= set(performance.HELDOUT_PROGRAMS.values())
  # In distribution: far above chance (10 of 300 candidates: 3.3 %; one
  # of 3 pieces: 33 %).
  first = result['rows'][0]
  assert min(first['a2s']['R@10'], first['s2a']['R@10']) > 40
  assert first['top1'] == 100
  rc, log = run_cli('experiments.eval', '--workdir', real_model, '--evals',
                    'robust', '--tempos', '0')
  assert rc != 0 and 'error: --tempos' in log


def test_robust_eval_against_another_engraving(real_model, real_index,
                                               real_midi, leland_data,
                                               tmp_path):
  """--engravings: held-out performances against the Leland snippets of the
  same pairs, in files of their own; an index of LilyPond's is refused."""
  rc, log = run_cli('experiments.eval', '--workdir', real_model, '--evals',
                    'robust', '--data_dir', leland_data, '--midi_dir',
                    real_midi, '--engravings', 'verovio_leland', '--tempos',
                    '1', '--limit', 300, '--out_dir', tmp_path, timeout=600)
  assert rc == 0, log[-3000:]
  assert not (tmp_path / 'robust_eval.json').exists()
  result = json.loads(
      (tmp_path / 'robust_eval_verovio_leland.json').read_text())
  assert result['collection'] == 'nottingham:verovio_leland'
  assert result['n_pairs'] == 300 and len(result['rows']) == 2
  assert "verovio_leland's sheet snippets" in (
      tmp_path / 'robust_eval_verovio_leland.md').read_text()
  rc, log = run_cli('experiments.eval', '--workdir', real_model, '--evals',
                    'robust', '--index', real_index, '--engravings',
                    'verovio_leland')
  assert rc != 0 and 'indexes nottingham, --engravings asks' in log, log
