"""Audio augmentation on the device: each one does what it says."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import synthetic_split
from tests.conftest import tiny_train_config
from tests.conftest import with_synthetic_renderings
from dccaflax import audio_augment
from dccaflax import augment
from dccaflax import input_pipeline
from dccaflax import level
from dccaflax import pieceset

KEY = jax.random.key(0)


def _tone(n=4, bins=136, frames=100, bin_=60, onset=None):
  """Silent excerpts with one bin sounding (from frame ``onset``)."""
  x = np.zeros((n, bins, frames), np.float32)
  x[:, bin_, (0 if onset is None else onset):] = 2.0
  return jnp.asarray(x)


def test_stretch_moves_events_about_the_onset():
  wide = np.zeros((64, 136, 100 + 2 * augment.STRETCH_MARGIN), np.float32)
  event = augment.STRETCH_MARGIN + 50 + 40       # 40 frames after the onset
  wide[:, 10, event] = 2.0
  wide[:, 20, augment.STRETCH_MARGIN + 50] = 2.0  # the onset frame itself
  out = np.asarray(audio_augment.stretch_time(KEY, jnp.asarray(wide), 0.1))
  assert out.shape == (64, 136, 100)
  np.testing.assert_allclose(out[:, 20, 50], 2.0, atol=1e-5)  # onset fixed
  where = np.array([np.average(np.arange(100), weights=row[10] + 1e-12)
                    for row in out])
  # 40 frames later, played at factor s in [0.9, 1.1], lands at 50 + 40 / s.
  assert where.min() >= 50 + 40 / 1.1 - 0.5 and where.max() <= 50 + 40 / 0.9 + 0.5
  assert where.max() - where.min() > 4       # factors are drawn
  same = audio_augment.stretch_time(KEY, jnp.asarray(wide), 0.0)
  m = augment.STRETCH_MARGIN
  np.testing.assert_allclose(same, wide[:, :, m:-m], atol=1e-6)


def test_tuning_shifts_by_a_fraction_of_a_bin():
  out = np.asarray(audio_augment.shift_bins(KEY, _tone(64), 0.5))
  centre = np.array([np.average(np.arange(136), weights=np.expm1(e[:, 50]))
                     for e in out])
  assert np.all(np.abs(centre - 60) <= 0.5 + 1e-4)
  assert np.ptp(centre) > 0.3
  np.testing.assert_allclose(audio_augment.shift_bins(KEY, _tone(), 0.0),
                             _tone(), atol=1e-6)


def test_eq_is_a_smooth_gain_per_bin():
  spec = jnp.full((8, 136, 100), 1.0)
  out = np.asarray(audio_augment.random_eq(KEY, spec, 6.0))
  db = 20 * np.log10(np.expm1(out[:, :, 0]) / np.expm1(1.0))
  assert np.abs(db).max() <= 6 / 2 + 3 * 6 / 4 + 1e-3
  assert np.abs(db).max() > 1.0                      # it does something
  assert np.abs(np.diff(db, axis=1)).max() < 0.5      # smooth across bins
  np.testing.assert_allclose(out[:, :, :1].repeat(100, 2), out, atol=1e-6)
  silent = audio_augment.random_eq(KEY, jnp.zeros((2, 136, 100)), 6.0)
  assert float(jnp.abs(silent).max()) == 0.0


def test_noise_floor_lies_below_the_peak():
  spec = _tone(16, onset=50)
  out = np.asarray(audio_augment.add_noise_floor(KEY, spec, 20.0))
  mag = np.expm1(out)
  peak = np.asarray(level.statistic(np.expm1(np.asarray(spec)), level.PEAK))
  floor = mag[:, :, :50].mean(axis=(1, 2))          # before the tone: noise
  ratio_db = 20 * np.log10(peak[:, 0, 0] / floor)
  assert ratio_db.min() > 20 - 1 and ratio_db.max() < 20 + 30 + 1
  assert np.all(floor > 0)


def test_masks_silence_bands_of_at_most_the_width():
  out = np.asarray(audio_augment.mask(KEY, jnp.ones((32, 136, 100)), 10, 8))
  frames_off = (out == 0).all(axis=1).sum(axis=1)
  bins_off = (out == 0).all(axis=2).sum(axis=1)
  assert frames_off.max() <= 10 and bins_off.max() <= 8
  assert frames_off.max() > 0 and bins_off.max() > 0


ALL_ON = dict(aug_gain_db=3.0, aug_gain_curve_db=6.0, aug_eq_db=6.0,
              aug_noise_db=25.0, aug_tune_bins=0.5, aug_stretch=0.1,
              aug_time_mask=8, aug_freq_mask=6)


@pytest.fixture(scope='module')
def piece_arrays():
  pieces = [with_synthetic_renderings(p) for p in synthetic_split(3, 3)]
  ps = pieceset.concat_pieces(pieces, 'all')
  return jax.device_put(ps.arrays)


@pytest.mark.parametrize('setting', sorted(ALL_ON) + ['all'])
def test_each_augmentation_on_the_device_path(piece_arrays, setting):
  overrides = ALL_ON if setting == 'all' else {setting: ALL_ON[setting]}
  config = tiny_train_config('unused', **overrides)
  aug = config.augment
  margin = augment.margin(aug, augment.AUDIO)
  assert margin == (augment.STRETCH_MARGIN if aug.stretch else 0)
  # Pairs at the first and last onsets too: the widest windows stay inside
  # the gaps around each piece.
  n = piece_arrays.x.shape[0]
  idx = jnp.asarray(np.r_[0, 1, n // 2, n - 2, n - 1], jnp.int32)
  _, specs = input_pipeline.batch_windows(piece_arrays, idx, 1, margin=margin)
  out = augment.apply(augment.AUDIO, KEY, specs, aug)   # as in the step
  assert out.shape == (5, 136, 100) and out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out))) and float(out.min()) >= 0.0
  _, plain = input_pipeline.batch_windows(piece_arrays, idx, 1)
  assert float(jnp.abs(out - plain).max()) > 1e-3    # it changed something


def test_settings_out_of_range_are_refused():
  for name, bad in (('aug_stretch', 0.2), ('aug_tune_bins', -0.1),
                    ('aug_eq_db', float('nan')), ('aug_time_mask', 101)):
    with pytest.raises(ValueError, match=name):
      tiny_train_config('unused', **{name: bad})
