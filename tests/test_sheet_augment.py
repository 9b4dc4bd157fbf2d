"""Sheet augmentation on the device: the horizontal scale."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import synthetic_split
from tests.conftest import tiny_train_config
from dccaflax import augment
from dccaflax import input_pipeline
from dccaflax import pieceset
from dccaflax import sheet_augment
from dccaflax import snippets

KEY = jax.random.key(0)


def test_scale_moves_ink_about_the_notehead():
  m = augment.SHEET_SCALE_MARGIN
  wide = np.full((64, 40, snippets.SHEET_WIDTH + 2 * m), 255, np.uint8)
  centre = m + 50
  wide[:, :, centre] = 0         # the notehead's column
  wide[:, :, centre + 30] = 0    # a line 30 px to its right
  out = np.asarray(sheet_augment.scale_width(KEY, jnp.asarray(wide), 0.3))
  factors = np.asarray(sheet_augment.scale_factors(KEY, 64, 0.3))[:, 0]
  assert out.shape == (64, 40, 100) and out.dtype == np.uint8
  assert np.all(factors >= 1 / 1.3 - 1e-6) and np.all(factors <= 1.3 + 1e-6)
  assert factors.min() < 0.9 and factors.max() > 1.1   # both ways
  for o, f in zip(out, factors):
    row = o[20].astype(int)
    assert row[50] == 0                                 # the notehead stays
    # the line moves to 50 + 30 / f (interpolated: its darkest column)
    assert abs(55 + np.argmin(row[55:]) - (50 + 30 / f)) <= 1.0
  # paper stays paper: no ink where the window had none
  assert np.all(out[:, :, :45] == 255)


@pytest.fixture(scope='module')
def piece_arrays():
  return jax.device_put(pieceset.concat_pieces(synthetic_split(5, 3)).arrays)


def test_scale_on_the_device_path(piece_arrays):
  aug = tiny_train_config('unused', aug_sheet_scale=0.3).augment
  assert augment.margin(aug, augment.SHEET) == augment.SHEET_SCALE_MARGIN
  n = piece_arrays.x.shape[0]
  # the first and last pairs too: the widest windows stay in the gaps
  idx = jnp.asarray(np.r_[0, 1, n // 2, n - 2, n - 1], jnp.int32)
  wide, _ = input_pipeline.batch_windows(
      piece_arrays, idx, sheet_margin=augment.SHEET_SCALE_MARGIN)
  plain, _ = input_pipeline.batch_windows(piece_arrays, idx)
  assert wide.shape == (5, 40, 100 + 2 * augment.SHEET_SCALE_MARGIN)
  # the wide window is the plain one with MARGIN px more each side
  m = augment.SHEET_SCALE_MARGIN
  assert np.array_equal(np.asarray(wide[:, :, m:-m]), np.asarray(plain))
  out = augment.apply(augment.SHEET, KEY, wide, aug)   # as in the step
  assert out.shape == plain.shape and out.dtype == jnp.uint8
  assert int(jnp.abs(out.astype(int) - plain.astype(int)).max()) > 0
  # a scale of exactly 1 gives the plain window back, bit for bit
  same = sheet_augment.scale_width(KEY, wide, 0.0)
  assert np.array_equal(np.asarray(same), np.asarray(plain))


def test_sheet_scale_out_of_range_is_refused():
  for bad in (0.31, -0.1, float('nan')):
    with pytest.raises(ValueError, match='aug_sheet_scale'):
      tiny_train_config('unused', aug_sheet_scale=bad)


# ------------------------------------------------------------ scan-like ---

def _blank(n=8):
  return np.full((n, snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH), 255,
                 np.uint8)


def test_rotate_zoom_identity_and_geometry():
  sheets = _blank(3)
  sheets[:, 20, :] = 0                 # a staff line through the centre
  sheets[:, :, 70] = 0                 # a bar line 20 px right of it
  ink = 255.0 - jnp.asarray(sheets, jnp.float32)
  same = sheet_augment.rotate_zoom(ink, jnp.zeros(3), jnp.ones(3))
  np.testing.assert_array_equal(np.asarray(same), np.asarray(ink))
  out = np.asarray(sheet_augment.rotate_zoom(
      ink, jnp.array([2.0, 0.0, 0.0]), jnp.array([1.0, 1.25, 0.8])))
  # clockwise by 2 degrees: 40 px right of the centre the staff line is
  # 40 sin(2 deg) = 1.40 px lower (its ink-weighted row)
  col = out[0, :, 90]
  assert abs((col * np.arange(40)).sum() / col.sum() - (20 + 1.40)) < 0.15
  # zoom about the centre: the bar line moves to 50 + 20 z
  for k, z in ((1, 1.25), (2, 0.8)):
    row = out[k, 5]
    assert abs((row * np.arange(100)).sum() / row.sum() - (50 + 20 * z)) < 0.1


def test_stroke_blur_contrast_noise():
  sheets = _blank(2)
  sheets[:, 20, 10:90] = 0             # a 1-px line
  ink = 255.0 - jnp.asarray(sheets, jnp.float32)
  thick = np.asarray(sheet_augment.stroke(ink, jnp.array([1.0, -1.0])[:, None,
                                                                      None]))
  assert np.all(thick[0, 19:22, 20:80] == 255)        # 3 px thick
  assert np.all(thick[1] == 0)                        # thinned away
  blurred = np.asarray(sheet_augment.blur(ink, jnp.full((2, 1, 1), 1.0)))
  assert abs(blurred.sum() - np.asarray(ink).sum()) < 1e-3 * blurred.sum()
  assert 50 < blurred[0, 20, 50] < 150 and blurred[0, 18, 50] > 10
  keys = jax.random.split(KEY, 64)
  many = np.concatenate([_blank(1)] * 64)
  many[:, 20, 10:90] = 100                            # grey ink
  contrast = np.stack([np.asarray(sheet_augment.scan(
      k, jnp.asarray(many[:1]), contrast=1.0))[0] for k in keys])
  binary = np.all(np.isin(contrast, (0, 255)), axis=(1, 2))
  assert 0 < binary.sum() < 64                        # sometimes thresholded
  assert (contrast[~binary][:, 5, 5] < 255).mean() > 0.9   # grey paper
  noisy = np.asarray(sheet_augment.scan(KEY, jnp.asarray(_blank(16)),
                                        noise=1.0))
  assert (noisy != 255).mean() > 0.05 and (noisy == 0).any()   # specks


_SCAN = next(a for a in augment.REGISTRY if a.fn is sheet_augment.scan)


@pytest.mark.parametrize('setting', _SCAN.settings, ids=lambda s: s.name)
def test_each_scan_setting_on_the_device_path(piece_arrays, setting):
  name, limit = setting.name, setting.limit
  aug = tiny_train_config('unused', **{f'aug_{name}': limit}).augment
  assert [s.name for s in _SCAN.settings if getattr(aug, s.name)] == [name]
  n = piece_arrays.x.shape[0]
  idx = jnp.asarray(np.r_[0, 1, n // 2, n - 1], jnp.int32)
  plain, _ = input_pipeline.batch_windows(piece_arrays, idx)
  fn = jax.jit(functools.partial(augment.apply, augment.SHEET),
               static_argnums=2)                        # as in the step
  out = fn(KEY, plain, aug)
  assert out.shape == plain.shape and out.dtype == jnp.uint8
  assert int(jnp.abs(out.astype(int) - plain.astype(int)).max()) > 0
  off = fn(KEY, plain, augment.AugmentConfig())
  assert np.array_equal(np.asarray(off), np.asarray(plain))
  for bad in (-0.01, limit * 1.01, float('nan')):
    with pytest.raises(ValueError, match=f'aug_{name}'):
      tiny_train_config('unused', **{f'aug_{name}': bad})


def test_erase_paints_one_band_of_columns_with_paper(piece_arrays):
  aug = tiny_train_config('unused', aug_sheet_erase=20).augment
  n = piece_arrays.x.shape[0]
  plain, _ = input_pipeline.batch_windows(piece_arrays, jnp.arange(n))
  out = np.asarray(augment.apply(augment.SHEET, KEY, plain, aug))
  changed = out != np.asarray(plain)
  assert np.all(out[changed] == 255)                  # only paper added
  for columns in changed.any(axis=1):
    where = np.flatnonzero(columns)
    assert where.size == 0 or where[-1] - where[0] < 20   # one band
  assert changed.any(axis=(1, 2)).mean() > 0.5
  for bad in (-1, 26, 2.5):
    with pytest.raises(ValueError, match='aug_sheet_erase'):
      tiny_train_config('unused', aug_sheet_erase=bad)
