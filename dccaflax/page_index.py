"""Page indexes: the sheet snippets of score pages a user has, without audio.

A page index (``build``; ``experiments.index --pages``) is a
``dccaflax.index.Index`` in that module's file format (``index.save`` /
``index.load``): ``piece`` is the page's file name, ``bar`` its system (1 =
the top one), ``notehead_x`` the snippet's centre in the page's strip,
``onset_frame`` -1, ``audio_emb`` zeros, ``split`` 'pages', ``data_dir`` the
pages' folder, and one more array::

  page_xy      (N, 2) float32   snippet centre on the page (x, and y of its
                                system's middle line), px of the image

It answers audio queries (audio -> sheet) only; ``read_rows`` re-cuts its
snippets from the pages (for figures), as ``index.read_rows`` re-reads a
split's pairs, and ``snippet_boxes`` says where on its page each snippet
lies (for drawing it there).

Pages come as images (``page_paths``: a folder or files) or as a PDF
(``pdf_pages``: pypdfium2, the ``demo`` extra, imported only there).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

import numpy as np

from dccaflax import embedding
from dccaflax import frontends
from dccaflax import index as index_lib
from dccaflax import snippets


IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')


def page_paths(pages: list[str]) -> list[str]:
  """The page images named by a user: a folder's (sorted), or the files
  named (``experiments.index --pages``).

  Raises:
    ValueError: a missing file or folder, or a folder without images.
  """
  if len(pages) == 1 and os.path.isdir(pages[0]):
    out = sorted(os.path.join(pages[0], f) for f in os.listdir(pages[0])
                 if f.lower().endswith(IMAGE_EXTENSIONS))
    if not out:
      raise ValueError(f'{pages[0]}: no page images '
                       f'({", ".join(IMAGE_EXTENSIONS)})')
    return out
  missing = [p for p in pages if not os.path.isfile(p)]
  if missing:
    raise ValueError(f'no such page image: {", ".join(missing)}')
  return pages


PDF_DPI = 150             # px per inch of the page images of a PDF
PDF_MAX_PAGES = 50        # a longer PDF is refused


def pdf_pages(path: str | os.PathLike, out_dir: str | os.PathLike,
              dpi: float = PDF_DPI, max_pages: int = PDF_MAX_PAGES
              ) -> list[str]:
  """Renders every page of a PDF as a grey PNG, for ``build``.

  Args:
    path: the PDF.
    out_dir: an existing folder; page ``i`` (1-based) is written as
      ``<stem>_p<i>.png`` there.
    dpi: resolution (150: about 10 px between staff lines of a printed
      score, well above the 2 px ``frontends.page_staves`` needs).
    max_pages: more pages are refused.

  Returns:
    the PNG paths, in page order.

  Raises:
    frontends.QueryError: pypdfium2 missing (``pip install -e .[demo]``), an
    unreadable or empty PDF, or too many pages.
  """
  try:
    import pypdfium2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise frontends.QueryError(f'{path}: reading a PDF needs pypdfium2 '
                               "(pip install -e '.[demo]')") from e
  try:
    pdf = pypdfium2.PdfDocument(os.fspath(path))
  except pypdfium2.PdfiumError as e:
    raise frontends.QueryError(f'{path}: cannot read PDF ({e})') from e
  try:
    if len(pdf) == 0:
      raise frontends.QueryError(f'{path}: the PDF has no page')
    if len(pdf) > max_pages:
      raise frontends.QueryError(f'{path}: {len(pdf)} pages, more than '
                                 f'{max_pages}')
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    out = []
    for i in range(len(pdf)):
      image = pdf[i].render(scale=dpi / 72, grayscale=True).to_pil()
      out.append(os.path.join(os.fspath(out_dir), f'{stem}_p{i + 1}.png'))
      image.convert('L').save(out[-1])
    return out
  finally:
    pdf.close()


def build(model, paths, step: int = frontends.PAGE_STEP, workdir: str = '',
          progress: Optional[Callable[[int, int, float], None]] = None
          ) -> index_lib.Index:
  """A page index of score pages: the sheet snippets along every page's
  systems (``frontends.page_snippets``), embedded.

  Args:
    model: ``dccaflax.Model``.
    paths: page images, all in one folder (it is recorded, so figures can
      re-cut the snippets).
    step: px of strip between a page's snippets.
    workdir: the model's workdir, recorded for messages.
    progress: called as ``progress(pages_done, pages, seconds)``.

  Raises:
    frontends.QueryError: a page that cannot be read or has no staff;
    ValueError: no page, pages in several folders or with one name twice.
  """
  paths = [os.path.abspath(os.fspath(p)) for p in paths]
  if not paths:
    raise ValueError('no page to index')
  folders = sorted({os.path.dirname(p) for p in paths})
  if len(folders) > 1:
    raise ValueError(f'pages must be in one folder, got {folders}')
  names = [os.path.basename(p) for p in paths]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise ValueError(f'pages named twice: {twice}')
  parts, t0 = [], time.time()
  for i, (path, name) in enumerate(sorted(zip(paths, names),
                                          key=lambda pn: pn[1])):
    page = frontends.page_snippets(path, step)
    parts.append((name, page, embedding.embed_sheet(model, page.sheets)))
    if progress is not None:
      progress(i + 1, len(paths), time.time() - t0)
  emb = np.concatenate([e for _, _, e in parts]).astype(np.float32)
  n = emb.shape[0]
  return index_lib.Index(
      sheet_emb=emb, audio_emb=np.zeros_like(emb),
      piece=np.concatenate([[name] * len(p) for name, p, _ in parts]
                           ).astype(str),
      notehead_x=np.concatenate([p.strip_x for _, p, _ in parts]),
      onset_frame=np.full(n, -1, np.int32),
      bar=np.concatenate([p.system + 1 for _, p, _ in parts]).astype(
          np.int32),
      split='pages', data_dir=folders[0],
      fingerprint=index_lib.model_fingerprint(model),
      workdir=os.path.abspath(os.fspath(workdir)) if workdir else '',
      page_xy=np.concatenate([p.page_xy for _, p, _ in parts]).astype(
          np.float32))


def read_rows(index: index_lib.Index, rows, data_dir: Optional[str] = None
              ) -> dict[str, np.ndarray]:
  """Re-cuts a page index's snippets from its pages (for figures).

  Args:
    index: a page index (``build``).
    rows: ``(R,)`` row numbers.
    data_dir: where the pages are now (default: ``index.data_dir``).

  Returns:
    dict: 'sheet' (R, 40, 100) uint8; 'spec' (R, 136, 100) float32 zeros
    (no audio).

  Raises:
    FileNotFoundError: a page is gone or cannot be read; ValueError: not a
    page index.
  """
  if not index.is_pages:
    raise ValueError('not a page index: index.read_rows re-reads its pairs')
  rows = [int(r) for r in np.asarray(rows).reshape(-1)]
  strips = {}
  sheets = []
  for r in rows:
    name = str(index.piece[r])
    if name not in strips:
      path = os.path.join(data_dir or index.data_dir, name)
      try:
        strips[name] = frontends.page_snippets(path).strip
      except frontends.QueryError as e:
        raise FileNotFoundError(str(e)) from e
    sheets.append(snippets.sheet_snippet(strips[name], index.notehead_x[r]))
  return {'sheet': np.stack(sheets) if sheets else np.zeros(
      (0, snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH), np.uint8),
          'spec': np.zeros((len(rows), snippets.SPEC_BINS,
                            snippets.SPEC_FRAMES), np.float32)}


def page_scale(index: index_lib.Index, page: str) -> float:
  """Strip px per page px of one page of a page index (``frontends.
  PageSnippets.scale``), from its snippets' strip and page positions.

  Raises:
    KeyError: unknown page; ValueError: not a page index, or a page whose
    systems hold one snippet each (no two positions to compare).
  """
  if not index.is_pages:
    raise ValueError('not a page index: its rows have no place on a page')
  rows = index.rows_of(page)
  same = index.bar[rows][1:] == index.bar[rows][:-1]     # one system
  d_strip = np.diff(index.notehead_x[rows])[same]
  d_page = np.diff(index.page_xy[rows, 0])[same]
  if not np.any(d_page > 0):
    raise ValueError(f'{page}: no system with two snippets')
  return float(np.median(d_strip[d_page > 0] / d_page[d_page > 0]))


def snippet_boxes(index: index_lib.Index, rows) -> np.ndarray:
  """Where a page index's snippets lie on their pages.

  Args:
    index: a page index (``build``).
    rows: ``(R,)`` row numbers.

  Returns:
    ``(R, 4)`` float32 ``x0, y0, x1, y1``, px of each row's page image: the
    40 x 100 px snippet (``snippets.SHEET_HEIGHT`` x ``SHEET_WIDTH`` of the
    strip) around its centre ``page_xy``, at its page's ``page_scale``.
  """
  rows = [int(r) for r in np.asarray(rows).reshape(-1)]
  scales: dict[str, float] = {}
  out = np.zeros((len(rows), 4), np.float32)
  for i, r in enumerate(rows):
    name = str(index.piece[r])
    if name not in scales:
      scales[name] = page_scale(index, name)
    half_w = snippets.SHEET_WIDTH / 2 / scales[name]
    half_h = snippets.SHEET_HEIGHT / 2 / scales[name]
    x, y = index.page_xy[r]
    out[i] = (x - half_w, y - half_h, x + half_w, y + half_h)
  return out
