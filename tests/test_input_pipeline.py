"""Input pipeline: device windows equal the snippets windows; epoch order."""

import jax
import numpy as np
import pytest

from dccaflax import input_pipeline as ip
from dccaflax import snippets
from tests.conftest import synthetic_split

_cut = jax.jit(ip.cut_windows)


def _edge_pieces():
  """Random-content pieces with pairs on every edge (x = 0, x = W, frame 0,
  frame T) and half-pixel positions (rounding)."""
  rng = np.random.default_rng(0)
  pieces = []
  for i, (w, t) in enumerate([(130, 90), (57, 240), (400, 33)]):
    x = np.array([0, 0.49, 0.5, w / 2, w - 1, w - 0.51, w], np.float32)
    f = np.array([0, t, 1, t // 2, t - 1, 5, 0], np.int32)
    pieces.append({
        'piece': f'p{i}',
        'strip': rng.integers(0, 255, (48, w), dtype=np.uint8),
        'spec': rng.uniform(0, 4, (136, t)).astype(np.float32),
        'onset_frames': f, 'notehead_x': x,
        'onset_bars': np.arange(len(x), dtype=np.int32)})
  return pieces


def _expected(pieces, ps, dx=0, dy=0, dframe=0):
  sheets, specs = [], []
  for i in range(len(ps)):
    p = pieces[ps.piece_id[i]]
    sheets.append(snippets.sheet_snippet(
        p['strip'], ps.notehead_x[i] + dx, dy))
    specs.append(snippets.spec_excerpt(p['spec'], ps.onset_frame[i] + dframe))
  return np.stack(sheets), np.stack(specs)


def test_windows_equal_snippets_at_the_edges():
  pieces = _edge_pieces()
  ps = ip.concat_pieces(pieces)
  sheets, specs = _cut(*ps.arrays)
  assert sheets.dtype == np.uint8 and sheets.shape == (len(ps), 40, 100)
  assert specs.dtype == np.float32 and specs.shape == (len(ps), 136, 100)
  want_sheets, want_specs = _expected(pieces, ps)
  np.testing.assert_array_equal(sheets, want_sheets)
  np.testing.assert_array_equal(specs, want_specs)


@pytest.mark.parametrize('dx, dy, dframe', [
    (ip.MAX_DX, ip.MAX_DY, ip.MAX_DFRAME),
    (-ip.MAX_DX, -ip.MAX_DY, -ip.MAX_DFRAME), (3, -2, 1)])
def test_shifted_windows_equal_shifted_snippets(dx, dy, dframe):
  pieces = _edge_pieces()
  ps = ip.concat_pieces(pieces)
  sheets, specs = _cut(*ps.arrays, dx, dy, dframe)
  want_sheets, want_specs = _expected(pieces, ps, dx, dy, dframe)
  np.testing.assert_array_equal(sheets, want_sheets)
  np.testing.assert_array_equal(specs, want_specs)


def test_per_example_offsets():
  pieces = _edge_pieces()
  ps = ip.concat_pieces(pieces)
  dx, dy, dframe = ip.random_offsets(jax.random.key(3), len(ps), ip.MAX_DX,
                                     ip.MAX_DY, ip.MAX_DFRAME)
  sheets, specs = _cut(*ps.arrays, dx, dy, dframe)
  for i in range(len(ps)):
    p = pieces[ps.piece_id[i]]
    np.testing.assert_array_equal(sheets[i], snippets.sheet_snippet(
        p['strip'], ps.notehead_x[i] + int(dx[i]), int(dy[i])))
    np.testing.assert_array_equal(specs[i], snippets.spec_excerpt(
        p['spec'], ps.onset_frame[i] + int(dframe[i])))


def test_random_offsets_range_and_determinism():
  a = ip.random_offsets(jax.random.key(0), 4000, 5, 2, 1)
  b = ip.random_offsets(jax.random.key(0), 4000, 5, 2, 1)
  for v, m in zip(a, (5, 2, 1)):
    assert v.dtype == np.int32 and int(v.min()) == -m and int(v.max()) == m
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  zero = ip.random_offsets(jax.random.key(0), 8)
  assert all(not np.any(v) for v in zero)
  with pytest.raises(ValueError, match='max_dx'):
    ip.random_offsets(jax.random.key(0), 8, ip.MAX_DX + 1)


def test_concat_layout_and_errors():
  pieces = synthetic_split(5, 3)
  ps = ip.concat_pieces(pieces)
  assert len(ps) == sum(len(p['onset_frames']) for p in pieces)
  assert ps.names == tuple(p['piece'] for p in pieces)
  # The float spectrogram is used as is; 6-bit codes are dequantised.
  coded = ip.concat_pieces([{k: v for k, v in p.items() if k != 'spec'}
                            for p in pieces])
  np.testing.assert_array_equal(ps.arrays.strips, coded.arrays.strips)
  assert np.abs(ps.arrays.specs - coded.arrays.specs).max() <= max(
      p['spec_scale'] for p in pieces) / 126 + 1e-6
  # Gaps of paper / silence before, between and after the pieces.
  assert np.all(ps.arrays.strips[:, :ip.SHEET_GAP] == 255)
  assert np.all(ps.arrays.strips[:, -ip.SHEET_GAP:] == 255)
  assert np.all(ps.arrays.specs[:, :ip.SPEC_GAP] == 0)
  bad = dict(pieces[0], notehead_x=pieces[0]['notehead_x'] + 1e4)
  with pytest.raises(ValueError, match='outside the piece'):
    ip.concat_pieces([bad])
  with pytest.raises(ValueError, match='no pieces'):
    ip.concat_pieces([])


def test_epoch_batches_deterministic():
  a = ip.epoch_batches(seed=1, epoch=3, n=1050, batch_size=100)
  assert a.shape == (10, 100) and a.dtype == np.int32
  np.testing.assert_array_equal(a, ip.epoch_batches(1, 3, 1050, 100))
  assert len(np.unique(a)) == 1000 and a.min() >= 0 and a.max() < 1050
  assert not np.array_equal(a, ip.epoch_batches(1, 4, 1050, 100))
  assert not np.array_equal(a, ip.epoch_batches(2, 3, 1050, 100))
  assert ip.steps_per_epoch(1050, 100) == 10
  with pytest.raises(ValueError, match='less than one batch'):
    ip.epoch_batches(0, 0, 99, 100)


def test_tfds_pairs_and_pieces_agree(synthetic_data):
  pairs = ip.load_pairs(synthetic_data, 'valid')
  ps = ip.load_pieces(synthetic_data, 'valid')
  assert len(pairs['sheet']) == len(ps)
  np.testing.assert_array_equal(pairs['piece'],
                                np.array(ps.names)[ps.piece_id])
  np.testing.assert_array_equal(pairs['onset_frame'], ps.onset_frame)
  np.testing.assert_array_equal(pairs['notehead_x'], ps.notehead_x)
  sheets, specs = _cut(*ps.arrays)
  np.testing.assert_array_equal(sheets, pairs['sheet'])
  # pairs hold the float spectrogram, pieces its 6-bit codes
  np.testing.assert_allclose(specs, pairs['spec'], atol=5 / 126)
  first = ip.load_pairs(synthetic_data, 'valid', limit=7)
  np.testing.assert_array_equal(first['sheet'], pairs['sheet'][:7])
  assert ip.load_pieces(synthetic_data, 'valid', max_pieces=2).names == (
      ps.names[:2])


def test_real_pairs_equal_real_piece_windows(prepared):
  """On real engraved/synthesised pieces: same order, identical sheets."""
  data_dir, _ = prepared
  pairs = ip.load_pairs(data_dir, 'test')
  ps = ip.load_pieces(data_dir, 'test')
  assert len(ps) == len(pairs['sheet']) > 100
  np.testing.assert_array_equal(pairs['piece'],
                                np.array(ps.names)[ps.piece_id])
  np.testing.assert_array_equal(pairs['onset_frame'], ps.onset_frame)
  sheets, specs = _cut(*ps.arrays)
  np.testing.assert_array_equal(sheets, pairs['sheet'])
  assert np.abs(np.asarray(specs) - pairs['spec']).max() < 0.05


def test_missing_data_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match='data_prep.prepare'):
    ip.load_pieces(tmp_path, 'train')
