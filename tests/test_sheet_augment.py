"""Sheet augmentation on the device: the horizontal scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import synthetic_split
from tests.conftest import tiny_train_config
from dccaflax import input_pipeline
from dccaflax import pieceset
from dccaflax import sheet_augment
from dccaflax import snippets
from dccaflax import steps

KEY = jax.random.key(0)


def test_scale_moves_ink_about_the_notehead():
  w = snippets.SHEET_WIDTH + 2 * sheet_augment.MARGIN
  wide = np.full((64, 40, w), 255, np.uint8)
  centre = sheet_augment.MARGIN + 50
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
  aug = steps.augment_of(tiny_train_config('unused', aug_sheet_scale=0.3))
  n = piece_arrays.x.shape[0]
  # the first and last pairs too: the widest windows stay in the gaps
  idx = jnp.asarray(np.r_[0, 1, n // 2, n - 2, n - 1], jnp.int32)
  wide, _ = input_pipeline.batch_windows(
      piece_arrays, idx, sheet_margin=sheet_augment.MARGIN)
  plain, _ = input_pipeline.batch_windows(piece_arrays, idx)
  assert wide.shape == (5, 40, 100 + 2 * sheet_augment.MARGIN)
  # the wide window is the plain one with MARGIN px more each side
  m = sheet_augment.MARGIN
  assert np.array_equal(np.asarray(wide[:, :, m:-m]), np.asarray(plain))
  out = steps.augment_sheets(KEY, wide, aug)           # as traced in the step
  assert out.shape == plain.shape and out.dtype == jnp.uint8
  assert int(jnp.abs(out.astype(int) - plain.astype(int)).max()) > 0
  # a scale of exactly 1 gives the plain window back, bit for bit
  same = sheet_augment.scale_width(KEY, wide, 0.0)
  assert np.array_equal(np.asarray(same), np.asarray(plain))


def test_sheet_scale_out_of_range_is_refused():
  for bad in (0.31, -0.1, float('nan')):
    with pytest.raises(ValueError, match='aug_sheet_scale'):
      steps.augment_of(tiny_train_config('unused', aug_sheet_scale=bad))
