import numpy as np
import pytest

from dccaflax import snippets as sn


def _strip(width):
  rng = np.random.default_rng(0)
  return rng.integers(0, 255, (sn.STRIP_HEIGHT, width), dtype=np.uint8)


def test_sheet_snippet_centred_inside():
  strip = _strip(500)
  s = sn.sheet_snippet(strip, 200.0)
  assert s.shape == (sn.SHEET_HEIGHT, sn.SHEET_WIDTH) and s.dtype == np.uint8
  np.testing.assert_array_equal(s, strip[4:44, 150:250])


def test_sheet_snippet_rounds_half_up_and_shifts_vertically():
  strip = _strip(500)
  np.testing.assert_array_equal(sn.sheet_snippet(strip, 200.5),
                                strip[4:44, 151:251])
  np.testing.assert_array_equal(sn.sheet_snippet(strip, 200.49, dy=-4),
                                strip[0:40, 150:250])
  with pytest.raises(ValueError, match='dy'):
    sn.sheet_snippet(strip, 200, dy=5)


@pytest.mark.parametrize('x, lo, hi', [(10, 40, 100), (495, 0, 55)])
def test_sheet_snippet_pads_with_paper(x, lo, hi):
  strip = _strip(500)
  s = sn.sheet_snippet(strip, x)
  inside = np.zeros(sn.SHEET_WIDTH, bool)
  inside[lo:hi] = True
  assert (s[:, ~inside] == 255).all()
  start = x - 50
  np.testing.assert_array_equal(s[:, inside], strip[4:44, start + lo:start + hi])


def test_spec_excerpt_pads_with_silence_both_ends():
  spec = np.arange(136 * 30, dtype=np.float32).reshape(136, 30) + 1
  e = sn.spec_excerpt(spec, 10)
  assert e.shape == (136, 100) and e.dtype == np.float32
  # window [-40, 60): 40 silent frames, the 30 real ones, 30 silent frames.
  assert (e[:, :40] == 0).all() and (e[:, 70:] == 0).all()
  np.testing.assert_array_equal(e[:, 40:70], spec)


def test_shape_errors():
  with pytest.raises(ValueError, match='strip'):
    sn.sheet_snippet(np.zeros((40, 10), np.uint8), 5)
  with pytest.raises(ValueError, match='spec'):
    sn.spec_excerpt(np.zeros((128, 10), np.float32), 5)
