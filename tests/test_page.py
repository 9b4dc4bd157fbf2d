"""A whole page as input (dccaflax.frontends.page_snippets), on pages of both
engravers: titled, several systems, as a user has them."""

import numpy as np
import pytest
from PIL import Image

from data_prep import melody as M
from data_prep.engraving import lilypond as L
from data_prep.engraving import lilypond_source as S
from data_prep.engraving import strip as strip_lib
from data_prep.engraving import verovio as V
from dccaflax import frontends
from dccaflax import snippets

PIECE = 'train/reels_simple_chords_1.mid'     # 8 systems on an A4 page


@pytest.fixture(scope='module')
def mel(midi_dir):
  return M.read_melody(midi_dir / PIECE)


def _best_corr(a, b, shifts=range(-2, 3)):
  """Best correlation of two strips over small horizontal shifts."""
  w = min(a.shape[1], b.shape[1]) - 10
  a = a[:, 5:5 + w].astype(float)
  return max(np.corrcoef(a.ravel(), np.roll(b, d, 1)[:, 5:5 + w].astype(
      float).ravel())[0, 1] for d in shifts)


def _check(page, eng, n_systems):
  assert len(np.unique(page.system)) == n_systems
  assert np.all(np.diff(page.system) >= 0)
  assert np.all(np.diff(page.strip_x) == frontends.PAGE_STEP)
  assert page.sheets.shape == (len(page), snippets.SHEET_HEIGHT,
                               snippets.SHEET_WIDTH)
  # the page's strip is the engraving's strip, cut the same way
  assert abs(page.strip.shape[1] - eng.strip.shape[1]) <= 0.01 * (
      eng.strip.shape[1])
  assert _best_corr(eng.strip, page.strip) > 0.8
  # each snippet's page position lies on its system
  ys = np.unique(page.page_xy[:, 1])
  assert len(ys) == n_systems and np.all(np.diff(ys) > 0)


def test_lilypond_page(mel, tmp_path):
  path = L.page_png(mel, str(tmp_path / 'page.png'), title='Reel of Test')
  grey = np.asarray(Image.open(path), np.float32)
  truth = strip_lib.find_staves(grey.astype(np.uint8),  # known spacing
                                S.Style().px_per_space)
  found = frontends.page_staves(grey)
  assert len(found) == len(truth) >= 4               # the title is no staff
  np.testing.assert_allclose([l[2] for l, _, _ in found],
                             [m for m, _, _ in truth], atol=0.5)
  assert frontends.is_page(path)
  page = frontends.page_snippets(path)
  assert page.scale == pytest.approx(0.2, abs=0.005)   # 20 px per space
  _check(page, L.engrave(mel), len(truth))


def test_verovio_page(mel, tmp_path):
  path = V.page_png(mel, str(tmp_path / 'page.png'), 'Petaluma',
                    title='Reel of Test')
  page = frontends.page_snippets(path)
  eng = V.engrave(mel, 'Petaluma')
  tk = V.toolkit('Petaluma')
  tk.loadData(V.mei_source(mel))
  n_systems = len(V.svg_layout(tk.renderToSVG(1), 'Petaluma')[0])
  assert page.scale == pytest.approx(4 / V.PX_PER_SPACE, abs=0.01)
  _check(page, eng, n_systems)


def test_not_a_page(tmp_path, mel):
  Image.fromarray(np.full((300, 400), 255, np.uint8)).save(tmp_path / 'w.png')
  with pytest.raises(frontends.QueryError, match='blank'):
    frontends.page_snippets(tmp_path / 'w.png')
  text = np.full((300, 400), 255, np.uint8)
  text[100:110, 50:120] = 0                          # a word, no staff
  Image.fromarray(text).save(tmp_path / 't.png')
  with pytest.raises(frontends.QueryError, match='no five-line staff'):
    frontends.page_snippets(tmp_path / 't.png')
  with pytest.raises(frontends.QueryError, match='step must be'):
    frontends.page_snippets(tmp_path / 't.png', step=0)
  # one staff is a snippet's image, not a page
  strip = L.engrave(mel).strip
  Image.fromarray(strip[:, :300]).save(tmp_path / 'one.png')
  assert not frontends.is_page(tmp_path / 'one.png')
