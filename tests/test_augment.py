"""The augmentation registry: settings, limits, layout, keys, replay."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dccaflax import augment
from dccaflax import checkpoints
from dccaflax import config as config_lib
from dccaflax import pieceset
from dccaflax import snippets
from dccaflax import steps
from tests.conftest import synthetic_split
from tests.conftest import with_synthetic_renderings

_REPO = pathlib.Path(__file__).resolve().parents[1]

# Every augmentation there was before the registry on, below its limit.
ALL_ON = dict(aug_dx=3, aug_dy=2, aug_dframe=1, aug_gain_db=3.0,
              aug_gain_curve_db=6.0, aug_eq_db=6.0, aug_noise_db=25.0,
              aug_tune_bins=0.5, aug_stretch=0.1, aug_time_mask=8,
              aug_freq_mask=6, aug_sheet_scale=0.2, aug_sheet_rotate=1.0,
              aug_sheet_zoom=0.15, aug_sheet_stroke=0.5, aug_sheet_blur=0.8,
              aug_sheet_contrast=0.5, aug_sheet_noise=0.3)

# The batch below as the step cut and augmented it before the registry:
# per window, the sum of its pixels or values and the sum weighted by the
# column (so a shift shows too).
REFERENCE = {
    'sheets': [861043, 973480, 885031, 837961, 795720],
    'sheets_w': [41837201, 47573033, 43948303, 42071500, 40300811],
    'specs': [638.8341022136574, 499.20620623262516, 832.316945829079,
              1494.345989827696, 1210.7187965118646],
    'specs_w': [39267.63711520201, 28429.275919107327, 36301.44327712235,
                57458.96812535408, 46745.05650190616]}


def test_every_setting_is_a_flag_and_a_config_key():
  config = config_lib.TrainConfig.from_flat(**ALL_ON)
  flat = config.to_json()
  assert {k: flat[k] for k in ALL_ON} == ALL_ON
  assert {k for k in flat if k.startswith('aug_')} == {
      augment.PREFIX + n for n in augment.SETTINGS}
  assert config_lib.TrainConfig.from_json(flat) == config
  assert all(f.default == 0 for f in dataclasses.fields(
      augment.AugmentConfig))                     # off unless asked
  with pytest.raises(TypeError, match='aug_sheet_smudge'):
    config_lib.TrainConfig.from_flat(aug_sheet_smudge=1.0)


def test_shipped_config_reads_back_identically():
  raw = json.loads((_REPO / 'models/nottingham_paper/config.json')
                   .read_text())
  config = config_lib.TrainConfig.from_json(raw)
  flat = config.to_json()
  assert {k: flat[k] for k in raw} == raw
  # a setting added since reads as its default; an augmentation is off
  added = set(flat) - set(raw)
  defaults = config_lib.TrainConfig().to_json()
  assert {k: flat[k] for k in added} == {k: defaults[k] for k in added}
  assert all(flat[k] == 0 for k in added if k.startswith('aug_'))
  assert config.augment == augment.AugmentConfig()


def test_resuming_an_older_run_changes_no_setting(tmp_path, monkeypatch):
  """A config.json from before an augmentation existed: resuming with the
  same flags warns of nothing."""
  raw = json.loads((_REPO / 'models/nottingham_paper/config.json')
                   .read_text())
  older = {k: v for k, v in raw.items() if k != 'aug_sheet_scale'}
  (tmp_path / checkpoints.CONFIG_FILE).write_text(json.dumps(older))
  warnings = []
  monkeypatch.setattr(checkpoints.logging, 'warning',
                      lambda *args: warnings.append(args))
  checkpoints.write_config(str(tmp_path), config_lib.TrainConfig.from_json(raw))
  assert not warnings
  checkpoints.write_config(str(tmp_path), config_lib.TrainConfig.from_flat(
      **{**raw, 'aug_dx': 2}))
  assert len(warnings) == 1 and warnings[0][2] == {'aug_dx': (0, 2)}


@pytest.mark.parametrize('name', sorted(augment.SETTINGS))
def test_limits_are_refused_beyond(name):
  setting = augment.SETTINGS[name]
  if np.isfinite(setting.limit):
    augment.AugmentConfig(**{name: setting.limit})
    beyond = setting.limit + (1 if setting.kind is int else 1e-3)
  else:
    beyond = float('nan')
  for bad in (-1, beyond):
    with pytest.raises(ValueError, match=f'aug_{name} must be in'):
      augment.AugmentConfig(**{name: bad})
  if setting.kind is int:
    with pytest.raises(ValueError, match=f'aug_{name} must be a whole'):
      augment.AugmentConfig(**{name: 1.5})


def test_the_layout_leaves_room_for_every_augmentation():
  assert pieceset.SHEET_GAP == (snippets.SHEET_WIDTH // 2 + augment.MAX_DX
                                + augment.SHEET_SCALE_MARGIN + 1) == 77
  assert pieceset.SPEC_GAP == (snippets.SPEC_FRAMES // 2 + augment.MAX_DFRAME
                               + augment.STRETCH_MARGIN + 1) == 59
  most = augment.AugmentConfig(**{
      n: s.limit for n, s in augment.SETTINGS.items()
      if np.isfinite(s.limit)})
  assert augment.margin(most, augment.AUDIO) == augment.STRETCH_MARGIN
  assert augment.margin(most, augment.SHEET) == augment.SHEET_SCALE_MARGIN
  assert augment.margin(augment.AugmentConfig(), augment.SHEET) == 0


@pytest.mark.parametrize('modality', [augment.AUDIO, augment.SHEET])
def test_figures_show_each_augmentation(modality):
  rows = augment.figure_rows(modality)
  assert rows[-1][0] == 'all of them' and len(rows) > 2
  for label, setting in rows:
    config = augment.AugmentConfig(**setting)   # within the limits
    assert label and any(dataclasses.astuple(config))


def test_a_batch_replays_the_augmentation_of_earlier_runs():
  """The windows of a step (``steps._step``) with every key and order as
  before the registry: a resumed run draws what it drew."""
  pieces = [with_synthetic_renderings(p) for p in synthetic_split(3, 3)]
  arrays = jax.device_put(pieceset.concat_pieces(pieces, 'all').arrays)
  config = config_lib.TrainConfig.from_flat(**ALL_ON).augment
  n = arrays.x.shape[0]
  idx = jnp.asarray(np.r_[0, 1, n // 2, n - 2, n - 1], jnp.int32)  # the ends
  sheets, specs = steps.augmented_batch(
      arrays, idx, jax.random.fold_in(jax.random.key(5), 7), config)
  sheets, specs = np.asarray(sheets), np.asarray(specs)
  cols = np.arange(snippets.SHEET_WIDTH)
  assert [int(s.astype(np.int64).sum()) for s in sheets] == (
      REFERENCE['sheets'])
  assert [int((s.astype(np.int64) * cols).sum()) for s in sheets] == (
      REFERENCE['sheets_w'])
  np.testing.assert_allclose(specs.astype(np.float64).sum(axis=(1, 2)),
                             REFERENCE['specs'], rtol=1e-5)
  np.testing.assert_allclose(
      (specs.astype(np.float64) * cols).sum(axis=(1, 2)),
      REFERENCE['specs_w'], rtol=1e-5)
