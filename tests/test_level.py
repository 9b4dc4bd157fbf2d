"""Loudness: re-levelling, level normalisation, gain augmentation, and a
recording's level not mattering to a level-normalised model."""

import functools
import json

import jax
import numpy as np
import pytest
import soundfile

import dccaflax
from dccaflax import audio
from dccaflax import augment
from dccaflax import config as config_lib
from dccaflax import frontends
from dccaflax import identify
from dccaflax import index as index_lib
from dccaflax import level
from dccaflax import models
from dccaflax import snippets
from dccaflax import steps
from experiments import commands
from tests.test_index import run_cli

GAINS = (0.1, 0.3, 2.0, 10.0)    # -20 to +20 dB


@pytest.fixture(scope='module')
def wave(recordings):
  return audio.load_audio(recordings['wav'])


def test_relevel_is_the_spectrogram_of_the_scaled_waveform(wave):
  spec = audio.spectrogram(wave)
  for g in GAINS:
    np.testing.assert_allclose(level.relevel(spec, g),
                               audio.spectrogram(g * wave), atol=1e-4)
  np.testing.assert_allclose(level.relevel(spec, 1.0), spec, atol=1e-6)


def _excerpts(wave, step=97):
  spec = audio.spectrogram(wave)
  return np.stack([snippets.spec_excerpt(spec, c)
                   for c in range(0, spec.shape[1], step)])


@pytest.mark.parametrize('method', [level.PEAK, level.MEAN])
def test_normalize_removes_a_global_gain(wave, method):
  excerpts = _excerpts(wave)
  # Exact above the floor: every excerpt here, even the last, mostly past
  # the end of the piece, at -20 dB.
  stat = np.asarray(level.statistic(np.expm1(excerpts), method))
  assert stat.min() * min(GAINS) > level.floor(method)
  want = np.asarray(level.normalize(excerpts, method))
  for g in GAINS:
    np.testing.assert_allclose(
        level.normalize(level.relevel(excerpts, g), method), want, atol=1e-4)
  # A typical excerpt keeps about its level (the reference is FluidR3's).
  assert 0.5 < np.mean(np.expm1(want)) / np.mean(np.expm1(excerpts)) < 2
  # Silence stays silence; a very quiet excerpt is not blown up past the
  # floor, so its noise does not become music.
  assert np.all(np.asarray(level.normalize(np.zeros((1, 136, 100)),
                                           method)) == 0)
  quiet = level.relevel(excerpts[3:4], 1e-6)        # -120 dB
  assert np.asarray(level.statistic(
      np.expm1(level.normalize(quiet, method)), method)).max() < (
          0.01 * level.REFERENCE[method])


def test_peak_level_scales_a_training_rendering_least(wave):
  """On the pipeline's own rendering (FluidR3, velocity 90), the peak
  statistic moves excerpts by a few dB at most, the mean by far more: the
  peak-normalised input stays close to the paper's."""
  excerpts = _excerpts(wave, step=7)
  spread = {}
  for method in (level.PEAK, level.MEAN):
    stat = np.asarray(level.statistic(np.expm1(excerpts), method)).ravel()
    db = 20 * np.log10(stat[stat > 0])     # the last one is past the end
    spread[method] = np.percentile(db, 95) - np.percentile(db, 5)
  assert spread[level.PEAK] < 5.0 and spread[level.MEAN] > 1.5 * spread[
      level.PEAK], spread
  np.testing.assert_array_equal(level.normalize(excerpts, level.NONE),
                                excerpts)


def test_level_methods_are_checked():
  assert level.check_method(True) == level.MEAN      # an older config.json
  assert level.check_method(False) == level.NONE
  with pytest.raises(ValueError, match='unknown level normalisation'):
    level.check_method('loud')
  old = config_lib.TrainConfig.from_json({'level_norm': True})
  assert old.level_norm == level.MEAN
  # A run from before the field existed fed the paper's input.
  assert config_lib.TrainConfig.from_json({'width': 0.5}).level_norm == (
      level.NONE)
  assert config_lib.TrainConfig().level_norm == level.PEAK
  assert config_lib.TrainConfig(level_norm=True).level_norm == level.MEAN
  with pytest.raises(ValueError, match="unknown level normalisation 'loud'"):
    config_lib.TrainConfig(level_norm='loud')


def test_random_gains_stay_in_range_and_vary_slowly():
  g = np.asarray(level.random_gains(jax.random.key(0), 2000, 100, 20.0, 6.0,
                                    snippets.FPS))
  assert g.shape == (2000, 1, 100) and np.all(g > 0)
  db = 20 * np.log10(g)
  assert db.min() >= -26.01 and db.max() <= 26.01
  assert db.min() < -22 and db.max() > 22           # the range is used
  # The curve: within 6 dB of each excerpt's mean, smooth frame to frame
  # (a period >= 2 s = 62.5 frames).
  assert np.all(np.abs(db - db.mean(-1, keepdims=True)) <= 12.01)
  assert np.abs(np.diff(db, axis=-1)).max() < 2 * np.pi * 6 / 62.5 + 1e-3
  flat = np.asarray(level.random_gains(jax.random.key(0), 10, 100, 20.0, 0.0,
                                       snippets.FPS))
  assert np.all(flat == flat[..., :1])


def test_level_normalised_audio_tower_ignores_the_gain(recordings):
  """Any weights: the audio tower with either level normalisation gives the
  same output for a recording at any level; the paper's tower does not."""
  towers = {m: models.create_model(width=0.25, out_dim=8, level_norm=m)
            for m in level.METHODS}
  variables = models.init_variables(jax.random.key(0),
                                    towers[level.NONE])
  gains = (1.0, *GAINS)
  for which in ('wav', 'mp3'):
    spec = audio.spectrogram(frontends.read_span(recordings[which]))
    _, excerpts, _ = identify.windows(spec)
    x = np.concatenate([level.relevel(excerpts, g) for g in gains])
    for method, model in towers.items():
      out = np.asarray(jax.jit(functools.partial(
          model.apply, method=model.embed_audio))(variables, x))
      out = out.reshape(len(gains), len(excerpts), -1)
      if method == level.NONE:
        change = np.linalg.norm(out[1] - out[0])    # gain 0.1
        assert change > 0.1 * np.linalg.norm(out[0]), which
      else:
        for k in range(1, len(gains)):
          np.testing.assert_allclose(out[k], out[0], atol=1e-3, rtol=1e-3,
                                     err_msg=f'{which} {method} {gains[k]}')


def _scaled(path, gain, tmp_path):
  samples, rate = soundfile.read(path, dtype='float32')
  assert np.abs(gain * samples).max() < 1, 'the scaled file would clip'
  out = tmp_path / f'{gain:g}x_{path.stem}.wav'
  soundfile.write(out, gain * samples, rate, subtype='FLOAT')
  return out


@pytest.mark.parametrize('which', ['wav', 'mp3'])
def test_identify_and_retrieve_ignore_the_recordings_level(
    which, recordings, real_model, real_index, tmp_path):
  """-20 dB and +12 dB: the (level-normalised) model's embeddings agree
  (cosine >= 0.99), identify ranks the same pieces with the same votes,
  retrieve returns the same top snippets."""
  model = dccaflax.load(real_model)
  assert model.config.level_norm == level.PEAK
  index = index_lib.load(real_index)
  path = recordings[which]
  if which == 'mp3':   # decoded once, so every level has the same samples
    path = _scaled(path, 1.0, tmp_path)
  base_spec = audio.spectrogram(frontends.read_span(path))
  base = identify.identify(model, index, base_spec)
  base_emb = dccaflax.embed_audio(model, identify.windows(base_spec)[1])
  top = commands.retrieve(str(real_model), str(real_index),
                          audio_path=str(path), start=12, duration=3.2,
                          top=10, echo=lambda *a: None)
  for db in (-20, 12):
    scaled = _scaled(path, 10 ** (db / 20), tmp_path)
    spec = audio.spectrogram(frontends.read_span(scaled))
    emb = dccaflax.embed_audio(model, identify.windows(spec)[1])
    assert np.sum(emb * base_emb, axis=1).min() >= 0.99, db
    got = identify.identify(model, index, spec)
    assert [p for p, _ in got.ranking] == [p for p, _ in base.ranking], db
    np.testing.assert_allclose([v for _, v in got.ranking],
                               [v for _, v in base.ranking], atol=1e-3)
    np.testing.assert_array_equal(got.best_rank, base.best_rank)
    ranking = commands.retrieve(str(real_model), str(real_index),
                                audio_path=str(scaled), start=12,
                                duration=3.2, top=10, echo=lambda *a: None)
    assert [r.row for r in ranking.results] == [r.row for r in top.results]


def test_gain_augmentation_in_the_training_step(synthetic_data):
  """The step draws a gain per excerpt: finite, a different loss than
  without, the same again for the same step (replay)."""
  from dccaflax import input_pipeline  # pylint: disable=g-import-not-at-top
  pieces = input_pipeline.load_pieces(str(synthetic_data), 'train')
  arrays = jax.device_put(pieces.arrays)
  model = models.create_model(width=0.125, out_dim=8)
  optimizer = steps.make_optimizer(0.1, 0.9, 25, 10)
  state = steps.create_train_state(jax.random.key(0), model, optimizer)
  idx = np.arange(32, dtype=np.int32)
  loss = lambda aug: float(steps.train_step(
      state, arrays, idx, model=model, optimizer=optimizer, reg=1e-3,
      augment=aug, seed=5)[1]['loss'])
  gains = augment.AugmentConfig(gain_db=20.0, gain_curve_db=6.0)
  plain = loss(augment.AugmentConfig())
  gained = loss(gains)
  assert np.isfinite(gained) and gained != plain
  assert loss(gains) == gained
  with pytest.raises(ValueError, match='aug_gain_db'):
    config_lib.TrainConfig.from_flat(aug_gain_db=-1.0)


def test_level_eval_writes_its_table(real_model, tmp_path):
  rc, log = run_cli('experiments.eval', '--workdir', real_model, '--evals',
                    'level', '--limit', 300, '--gains', '0.5,1,2', '--curves',
                    '6')
  assert rc == 0, log
  assert '| 0.5 | -6.0 | – |' in log and '| 1 | +0.0 | ≤ 6 |' in log
  result = json.loads((real_model / 'level.json').read_text())
  assert [(r['gain'], r['curve_db']) for r in result['rows']] == [
      (0.5, 0.0), (1.0, 0.0), (2.0, 0.0), (1.0, 6.0)]
  assert result['n'] == 300
  assert result['config']['level_norm'] == level.PEAK
  # Level-normalised: the same retrieval at every gain (a float-rounding
  # tie may move a rank: 1 point is 3 of the 300 queries) ...
  rows = result['rows']
  for r in rows[:3]:
    for d in ('a2s', 's2a'):
      assert abs(r[d]['R@10'] - rows[1][d]['R@10']) <= 1.0, (r, rows[1])
  # ... but a curve within the excerpts is not a global gain.
  assert rows[3]['a2s'] != rows[1]['a2s']
  for r in result['rows']:
    for d in ('a2s', 's2a'):
      assert 0 <= r[d]['R@1'] <= r[d]['R@10'] <= 100 and r[d]['MR'] >= 1
  # In distribution (gain 1, no curve): far above chance (10 of 300
  # candidates: 3.3 %; measured 59 % on CPU).
  assert min(rows[1]['a2s']['R@10'], rows[1]['s2a']['R@10']) > 40
  assert (real_model / 'level.png').stat().st_size > 5000
  assert (real_model / 'level.md').read_text() in log
  rc, log = run_cli('experiments.eval', '--workdir', real_model, '--evals',
                    'level', '--gains', '1,-2')
  assert rc != 0 and 'error: --gains: -2 is not a positive gain' in log
