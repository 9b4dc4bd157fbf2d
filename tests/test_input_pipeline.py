"""Input pipeline: device windows equal the snippets windows; epoch order."""

import jax
import numpy as np
import pytest

from data_prep import packing
from dccaflax import audio
from dccaflax import augment
from dccaflax import input_pipeline as ip
from dccaflax import pieceset
from dccaflax import snippets
from tests.conftest import synthetic_split
from tests.conftest import with_synthetic_renderings

_windows = jax.jit(ip.batch_windows)


def _cut(ps, *offsets, rendering=0):
  """All windows of a PieceSet (device arrays) in one rendering."""
  return _windows(jax.device_put(ps.arrays), np.arange(len(ps)), rendering,
                  *offsets)


def _stored(spec):
  """The values a float spectrogram has once stored as 6-bit codes."""
  return audio.dequantize(*audio.quantize(spec))


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
    specs.append(snippets.spec_excerpt(_stored(p['spec']),
                                       ps.onset_frame[i] + dframe))
  return np.stack(sheets), np.stack(specs)


def test_windows_equal_snippets_at_the_edges():
  pieces = _edge_pieces()
  ps = pieceset.concat_pieces(pieces)
  sheets, specs = _cut(ps)
  assert sheets.dtype == np.uint8 and sheets.shape == (len(ps), 40, 100)
  assert specs.dtype == np.float32 and specs.shape == (len(ps), 136, 100)
  want_sheets, want_specs = _expected(pieces, ps)
  np.testing.assert_array_equal(sheets, want_sheets)
  np.testing.assert_array_equal(specs, want_specs)


@pytest.mark.parametrize('dx, dy, dframe', [
    (augment.MAX_DX, snippets.STRIP_MARGIN, augment.MAX_DFRAME),
    (-augment.MAX_DX, -snippets.STRIP_MARGIN, -augment.MAX_DFRAME),
    (3, -2, 1)])
def test_shifted_windows_equal_shifted_snippets(dx, dy, dframe):
  pieces = _edge_pieces()
  ps = pieceset.concat_pieces(pieces)
  sheets, specs = _cut(ps, dx, dy, dframe)
  want_sheets, want_specs = _expected(pieces, ps, dx, dy, dframe)
  np.testing.assert_array_equal(sheets, want_sheets)
  np.testing.assert_array_equal(specs, want_specs)


def test_per_example_offsets():
  pieces = _edge_pieces()
  ps = pieceset.concat_pieces(pieces)
  most = augment.AugmentConfig(dx=augment.MAX_DX, dy=snippets.STRIP_MARGIN,
                               dframe=augment.MAX_DFRAME)
  offsets = augment.offsets(jax.random.key(3), len(ps), most)
  dx, dy, dframe = offsets['dx'], offsets['dy'], offsets['dframe']
  sheets, specs = _cut(ps, dx, dy, dframe)
  for i in range(len(ps)):
    p = pieces[ps.piece_id[i]]
    np.testing.assert_array_equal(sheets[i], snippets.sheet_snippet(
        p['strip'], ps.notehead_x[i] + int(dx[i]), int(dy[i])))
    np.testing.assert_array_equal(specs[i], snippets.spec_excerpt(
        _stored(p['spec']), ps.onset_frame[i] + int(dframe[i])))


def test_random_offsets_range_and_determinism():
  config = augment.AugmentConfig(dx=5, dy=2, dframe=1)
  a = augment.offsets(jax.random.key(0), 4000, config)
  b = augment.offsets(jax.random.key(0), 4000, config)
  for name, m in (('dx', 5), ('dy', 2), ('dframe', 1)):
    v = a[name]
    assert v.dtype == np.int32 and int(v.min()) == -m and int(v.max()) == m
    np.testing.assert_array_equal(v, b[name])
  assert not augment.offsets(jax.random.key(0), 8, augment.AugmentConfig())
  with pytest.raises(ValueError, match='aug_dx'):
    augment.AugmentConfig(dx=augment.MAX_DX + 1)


def test_concat_layout_and_errors():
  pieces = synthetic_split(5, 3)
  ps = pieceset.concat_pieces(pieces)
  assert len(ps) == sum(len(p['onset_frames']) for p in pieces)
  assert ps.names == tuple(p['piece'] for p in pieces)
  assert ps.renderings == ('primary',) and ps.arrays.frame.shape == (
      1, len(ps))
  # A float spectrogram is stored as the 6-bit codes the TFDS data hold.
  floats = pieceset.concat_pieces([
      {k: v for k, v in p.items() if k not in ('spec_codes', 'spec_scale')}
      for p in pieces])
  for a, b in zip(ps.arrays, floats.arrays):
    np.testing.assert_array_equal(a, b)
  assert ps.arrays.specs.dtype == np.uint8 and ps.arrays.specs.max() <= 63
  # Gaps of paper / silence before, between and after the pieces.
  assert np.all(ps.arrays.strips[:, :pieceset.SHEET_GAP] == 255)
  assert np.all(ps.arrays.strips[:, -pieceset.SHEET_GAP:] == 255)
  assert np.all(ps.arrays.specs[:, :pieceset.SPEC_GAP] == 0)
  assert np.all(ps.arrays.specs[:, -pieceset.SPEC_GAP:] == 0)
  bad = dict(pieces[0], notehead_x=pieces[0]['notehead_x'] + 1e4)
  with pytest.raises(ValueError, match='synth5_000: noteheads outside the '
                     r'strip \(W=\d+\): x in \[1\d\d\d\d, '):
    pieceset.concat_pieces([bad])
  with pytest.raises(ValueError, match='no pieces'):
    pieceset.concat_pieces([])


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



def test_shorter_epochs_cut_the_same_passes():
  """``epoch_steps``: epochs of a few batches follow the stream of full
  passes, crossing pass ends, and one pass long equals the default."""
  passes = np.concatenate([ip.epoch_batches(1, p, 1050, 100)
                           for p in range(6)])
  short = np.concatenate([ip.epoch_batches(1, e, 1050, 100, epoch_steps=3)
                          for e in range(13)])
  np.testing.assert_array_equal(short, passes[:39])
  np.testing.assert_array_equal(ip.epoch_batches(1, 2, 1050, 100, 10),
                                ip.epoch_batches(1, 2, 1050, 100))
  long = ip.epoch_batches(1, 1, 1050, 100, epoch_steps=25)   # 2.5 passes
  np.testing.assert_array_equal(long, passes[25:50])
  with pytest.raises(ValueError, match='epoch_steps'):
    ip.epoch_batches(1, 0, 1050, 100, epoch_steps=0)

def test_tfds_pairs_and_pieces_agree(synthetic_data):
  pairs = ip.load_pairs(synthetic_data, 'valid')
  ps = ip.load_pieces(synthetic_data, 'valid')
  assert len(pairs['sheet']) == len(ps)
  np.testing.assert_array_equal(pairs['piece'],
                                np.array(ps.names)[ps.piece_id])
  np.testing.assert_array_equal(pairs['onset_frame'], ps.onset_frame)
  np.testing.assert_array_equal(pairs['notehead_x'], ps.notehead_x)
  sheets, specs = _cut(ps)
  np.testing.assert_array_equal(sheets, pairs['sheet'])
  # This stand-in's pairs hold the float spectrogram (the real builder's hold
  # the dequantised codes: see the next test), pieces its 6-bit codes.
  np.testing.assert_allclose(specs, pairs['spec'], atol=5 / 126)
  first = ip.load_pairs(synthetic_data, 'valid', limit=7)
  np.testing.assert_array_equal(first['sheet'], pairs['sheet'][:7])
  assert ip.load_pieces(synthetic_data, 'valid', max_pieces=2).names == (
      ps.names[:2])


def test_real_pairs_equal_real_piece_windows(prepared):
  """On real engraved/synthesised pieces: same order, identical windows."""
  data_dir, _ = prepared
  pairs = ip.load_pairs(data_dir, 'test')
  ps = ip.load_pieces(data_dir, 'test')
  assert len(ps) == len(pairs['sheet']) > 100
  np.testing.assert_array_equal(pairs['piece'],
                                np.array(ps.names)[ps.piece_id])
  np.testing.assert_array_equal(pairs['onset_frame'], ps.onset_frame)
  sheets, specs = _cut(ps)
  np.testing.assert_array_equal(sheets, pairs['sheet'])
  np.testing.assert_array_equal(specs, pairs['spec'])


def test_real_renderings_windows(prepared_renderings):
  """Real renderings from the TFDS pieces config: every rendering's windows
  are its own spectrogram's excerpts at its own onsets, sheets are shared,
  and rendering 0 is the pairs config's audio."""
  data_dir, _ = prepared_renderings
  ps = ip.load_pieces(data_dir, 'test', renderings='all')
  assert ps.renderings == ('fluidr3_t1.00', 'fluidr3_t0.90',
                           'timgm6mb_t1.00')
  pairs = ip.load_pairs(data_dir, 'test')
  examples = list(ip.read_examples(ip.data_source(data_dir, 'pieces', 'test'),
                                  3))
  for k in range(3):
    sheets, specs = _cut(ps, rendering=k)
    np.testing.assert_array_equal(sheets, pairs['sheet'])
    if k == 0:
      np.testing.assert_array_equal(specs, pairs['spec'])
    for i in range(0, len(ps), 37):
      ex = examples[ps.piece_id[i]]
      j = i - int(np.flatnonzero(ps.piece_id == ps.piece_id[i])[0])
      spec, frames = _rendering(ex, k)
      np.testing.assert_array_equal(specs[i],
                                    snippets.spec_excerpt(spec, frames[j]))
  assert ps.nbytes == pieceset.footprint_bytes(
      ps.arrays.strips.shape[1], ps.arrays.specs.shape[1], len(ps), 3)
  primary = ip.load_pieces(data_dir, 'test')
  assert primary.renderings == ('fluidr3_t1.00',)
  # Audio of tempo factors 1, 1/0.9 and 1 (gaps included): 3.11x the primary.
  ratio = ps.arrays.specs.shape[1] / primary.arrays.specs.shape[1]
  assert 3.0 < ratio < 3.2, ratio
  np.testing.assert_array_equal(ps.arrays.strips, primary.arrays.strips)


def test_missing_data_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match='data_prep.prepare'):
    ip.load_pieces(tmp_path, 'train')


# --------------------------------------------------------------------------
# Renderings
# --------------------------------------------------------------------------


def _rendering(piece, k):
  """Reference decoding of rendering ``k`` of a ``pieces`` example (written
  out here, not taken from the library): (spectrogram, onset frames)."""
  if k == 0:
    return (audio.dequantize(piece['spec_codes'], piece['spec_scale']),
            piece['onset_frames'])
  end = int(np.cumsum(piece['extra_frames'])[k - 1])
  codes = piece['extra_codes'][:, end - piece['extra_frames'][k - 1]:end]
  return (audio.dequantize(codes, piece['extra_scales'][k - 1]),
          piece['extra_onsets'][k - 1])


def test_rendering_windows_equal_their_own_snippets():
  pieces = [with_synthetic_renderings(p) for p in synthetic_split(7, 3)]
  ps = pieceset.concat_pieces(pieces, 'all')
  assert ps.renderings == ('a_t1.00', 'a_t0.80', 'a_t1.25')
  assert ps.arrays.frame.shape == ps.arrays.step.shape == (3, len(ps))
  primary = pieceset.concat_pieces(pieces)
  assert primary.renderings == ('a_t1.00',)
  for k in range(3):
    sheets, specs = _cut(ps, rendering=k)
    np.testing.assert_array_equal(sheets, _cut(primary)[0])
    for i in range(0, len(ps), 7):
      p = pieces[ps.piece_id[i]]
      j = i - int(np.flatnonzero(ps.piece_id == ps.piece_id[i])[0])
      spec, frames = _rendering(p, k)
      np.testing.assert_array_equal(specs[i],
                                    snippets.spec_excerpt(spec, frames[j]))
  # Per-pair renderings pick row by row.
  r = ip.random_renderings(jax.random.key(0), len(ps), 3)
  assert set(np.unique(r).tolist()) == {0, 1, 2}
  mixed = _cut(ps, rendering=r)[1]
  for k in range(3):
    np.testing.assert_array_equal(np.asarray(mixed)[np.asarray(r) == k],
                                  np.asarray(_cut(ps, rendering=k)[1])[
                                      np.asarray(r) == k])


def test_rendering_selection_and_errors():
  pieces = [with_synthetic_renderings(p) for p in synthetic_split(8, 2)]
  ps = pieceset.concat_pieces(pieces, ['a_t1.25', 'a_t1.00'])
  assert ps.renderings == ('a_t1.25', 'a_t1.00')
  full = pieceset.concat_pieces(pieces, 'all')
  np.testing.assert_array_equal(ps.arrays.step[1], full.arrays.step[0])
  # Unused renderings take no device memory.
  assert ps.nbytes < full.nbytes
  with pytest.raises(ValueError, match=r"synth8_000: rendering\(s\) "
                     r"\['b_t1.00'\] not prepared.*--tempos"):
    pieceset.concat_pieces(pieces, ['b_t1.00'])
  with pytest.raises(ValueError, match="renderings must be"):
    pieceset.concat_pieces(pieces, 'primary')
  mixed = [pieces[0], with_synthetic_renderings(synthetic_split(8, 2)[1], (0.8,))]
  with pytest.raises(ValueError, match='synth8_001: renderings .* differ'):
    pieceset.concat_pieces(mixed, 'all')
  bad = dict(pieces[0], extra_onsets=pieces[0]['extra_onsets'][:, :-1])
  with pytest.raises(ValueError, match='onsets of rendering a_t0.80'):
    pieceset.concat_pieces([bad], 'all')


# --------------------------------------------------------------------------
# Memory footprint
# --------------------------------------------------------------------------


def test_footprint_is_what_the_device_holds():
  pieces = [with_synthetic_renderings(p) for p in synthetic_split(9, 4)]
  ps = pieceset.concat_pieces(pieces, 'all')
  a = ps.arrays
  want = pieceset.footprint_bytes(a.strips.shape[1], a.specs.shape[1], len(ps), 3)
  assert ps.nbytes == want
  on_device = jax.device_put(a)
  assert sum(x.nbytes for x in jax.tree.leaves(on_device)) == want
  assert sum(sum(s.data.nbytes for s in x.addressable_shards)
             for x in jax.tree.leaves(on_device)) == want


def test_nottingham_training_split_fits_well_under_2_gb(midi_dir):
  """The whole training split with six renderings (tempo factors 0.9, 1.0,
  1.1 x two soundfonts), bounded from its MIDI files: exact spectrogram
  lengths (audio ends with the last note), an upper bound on pairs (one per
  note) and strips at 30 px per note (the prepared training pieces average
  13.9 px per pair, 26.6 at most)."""
  from data_prep import melody  # pylint: disable=g-import-not-at-top
  files = sorted((midi_dir / 'train').glob('*.mid'))
  assert len(files) == 694
  notes, frames = 0, 0
  tempos = (0.9, 1.0, 1.1)
  for f in files:
    mel = melody.read_melody(str(f))
    end = max(n.end_s for n in mel.notes)
    notes += len(mel.notes)
    frames += sum(int(np.ceil(end / t * snippets.FPS)) + 1 + pieceset.SPEC_GAP
                  for t in tempos) * 2
  px = 30 * notes + pieceset.SHEET_GAP * (len(files) + 1)
  total = pieceset.footprint_bytes(px, frames, notes, renderings=6)
  print(f'training split, 6 renderings: at most {total / 1e9:.2f} GB')
  assert total < 1.6e9, total / 1e9


def test_packed_data_equal_tfds(prepared, tmp_path):
  """``data_prep.pack`` output, read with NumPy alone, gives the TFDS
  windows, pairs and pieces bit for bit; a partial pack says so."""
  data_dir, _ = prepared
  full = ip.load_pairs(data_dir, 'test')
  n = len(full['sheet'])
  first = int(np.flatnonzero(np.diff(
      ip.load_pieces(data_dir, 'test').piece_id))[0]) + 1   # piece 0's pairs
  packs = packing.pack(str(data_dir), str(tmp_path), {'test': None}, log=print)
  assert packs['test']['pairs'] == packs['test']['split_pairs'] == n
  pairs = ip.load_pairs(tmp_path, 'test')
  assert sorted(pairs) == sorted(full)
  for key in full:
    np.testing.assert_array_equal(pairs[key], full[key])
    assert pairs[key].dtype == full[key].dtype, key
  tfds_pieces = ip.load_pieces(data_dir, 'test')
  packed_pieces = ip.load_pieces(tmp_path, 'test')
  assert packed_pieces.names == tfds_pieces.names
  for a, b in zip(packed_pieces.arrays, tfds_pieces.arrays):
    np.testing.assert_array_equal(a, b)
  sheets, specs = _cut(tfds_pieces)
  np.testing.assert_array_equal(pieceset.cut(packed_pieces, np.arange(n))[0],
                                sheets)
  np.testing.assert_array_equal(pieceset.cut(packed_pieces, np.arange(n))[1],
                                specs)
  # Only the pieces of the first pairs: enough for them, refused for more.
  partial = tmp_path / 'partial'
  packs = packing.pack(str(data_dir), str(partial), {'test': first - 1},
                    log=print)
  assert packs['test']['pieces'] == 1 and packs['test']['pairs'] == first
  some = ip.load_pairs(partial, 'test', first - 1)
  np.testing.assert_array_equal(some['spec'], full['spec'][:first - 1])
  with pytest.raises(ValueError, match='holds only the first pieces'):
    ip.load_pieces(partial, 'test')
  with pytest.raises(ValueError, match='pack more of it'):
    ip.load_pairs(partial, 'test', first + 1)
  assert packing.parse_splits(['train', 'test:16000']) == {'train': None,
                                                         'test': 16000}
  with pytest.raises(ValueError, match='NAME:PAIRS'):
    packing.parse_splits(['test:x'])
